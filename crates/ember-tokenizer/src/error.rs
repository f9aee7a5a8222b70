//! Errors of the tokenizer: bad or unsupported GGUF vocabulary metadata and invalid token ids.
//!
//! The messages follow the ones llama.cpp raises in `src/llama-vocab.cpp` (`llama_vocab::impl::load`)
//! where there is one, so a user comparing the two sees the same complaint.

use ember_gguf::MetadataError;

/// Why a tokenizer could not be built, or an id could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A `tokenizer.ggml.*` key is missing or has the wrong type.
    #[error(transparent)]
    Metadata(#[from] MetadataError),

    /// `tokenizer.ggml.model` names a tokenizer ember does not implement.
    #[error(
        "unsupported tokenizer model '{model}' (tokenizer.ggml.model); ember implements 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)"
    )]
    UnsupportedModel { model: String },

    /// `tokenizer.ggml.pre` is not a pre-tokenizer llama.cpp knows (llama.cpp refuses it too).
    #[error("unknown pre-tokenizer type: '{pre}' (tokenizer.ggml.pre)")]
    UnknownPre { pre: String },

    /// `tokenizer.ggml.pre` is known to llama.cpp but ember does not reproduce it (yet).
    #[error("pre-tokenizer '{pre}' (tokenizer.ggml.pre) is not supported by ember: {reason}")]
    UnsupportedPre { pre: String, reason: &'static str },

    /// The vocabulary arrays contradict each other (lengths, sizes).
    #[error("inconsistent tokenizer metadata: {0}")]
    Inconsistent(String),

    /// Two vocabulary entries have the same text (llama.cpp refuses such a vocabulary).
    #[error("duplicate token in vocabulary: {text:?} has ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },

    /// `add_bos_token`/`add_eos_token` is set but the token id it needs is not.
    #[error("{add_key} is true, but {id_key} is not set")]
    MissingSpecialToken {
        add_key: &'static str,
        id_key: &'static str,
    },

    /// The BPE model could not be built from the vocabulary and merges.
    #[error("cannot build the BPE model: {0}")]
    Bpe(String),

    /// A token id past the end of the vocabulary.
    #[error("token id {id} is out of range (the vocabulary has {n_vocab} tokens)")]
    InvalidTokenId { id: u32, n_vocab: usize },
}
