//! Errors of model loading and evaluation.

use ember_gguf::MetadataError;
use ember_quant::QuantError;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("architecture '{0}' is not supported (ember runs llama, qwen2 and deepseek2)")]
    UnsupportedArch(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("model configuration: {0}")]
    Config(String),
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error("context full: {needed} positions needed, the KV cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    #[error("empty batch: every sequence needs at least one token")]
    EmptyBatch,
    #[error("the KV cache has {layers} layers; this model has {expected}")]
    CacheMismatch { layers: usize, expected: usize },
}
