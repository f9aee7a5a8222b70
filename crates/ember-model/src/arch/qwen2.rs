//! `qwen2` (Qwen2/2.5, DeepSeek-R1-Distill-Qwen): Q/K/V biases, NEOX rope (rotated halves, set in
//! `config.rs`), tied embeddings in the small models. As llama.cpp `src/models/qwen2.cpp`.

use crate::model::DecoderSpec;

pub const SPEC: DecoderSpec = DecoderSpec { qkv_bias: true };
