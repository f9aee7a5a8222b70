//! ember-tokenizer: the GGUF vocabulary turned into a tokenizer that gives llama.cpp's ids, a streaming
//! detokenizer, and chat-template rendering.
//!
//! Tokenization follows llama.cpp `src/llama-vocab.cpp` / `src/unicode.cpp`: byte-level BPE
//! (`tokenizer.ggml.model = "gpt2"`, pre-tokenizer from `tokenizer.ggml.pre`) and SentencePiece BPE
//! (`"llama"`), special tokens cut out of the text first, BOS/EOS and end-of-generation ids as
//! llama.cpp derives them. The BPE merge loop, the regex splitting and the byte-level mapping come
//! from the Hugging Face `tokenizers` crate; the rest is written here (see each module's header).

mod bpe;
mod detok;
mod error;
mod pretok;
mod special;
mod spm;
mod tokenizer;
mod vocab;

pub use detok::StreamDecoder;
pub use error::TokenizerError;
pub use tokenizer::Tokenizer;

pub mod template;
pub use template::{ChatTemplate, RenderRequest, TemplateError};
