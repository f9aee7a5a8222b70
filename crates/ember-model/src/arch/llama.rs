//! `llama` (Llama 2/3, SmolLM2): the plain decoder — no biases, NORM rope (adjacent pairs), Llama 3
//! rope frequency factors from `rope_freqs.weight` when present. As llama.cpp `src/models/llama.cpp`.

use crate::model::DecoderSpec;

pub const SPEC: DecoderSpec = DecoderSpec { qkv_bias: false };
