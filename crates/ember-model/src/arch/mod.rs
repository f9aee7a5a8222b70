//! One file per architecture: what it takes from the shared decoder.

pub mod llama;
pub mod qwen2;
