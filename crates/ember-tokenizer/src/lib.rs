//! ember-tokenizer: the GGUF vocabulary turned into a tokenizer that gives llama.cpp's ids, a streaming
//! detokenizer, and chat-template rendering.

pub mod template;
pub use template::{ChatTemplate, RenderRequest, TemplateError};
