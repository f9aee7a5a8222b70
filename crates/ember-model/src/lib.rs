//! ember-model: Llama-family and DeepSeek (MLA + MoE) decoders as Burn modules over quantized
//! GGUF weights.
//!
//! Weights are read-only and shareable; per-sequence state (KV cache, position) is separate and
//! passed in. `config.rs` reads hyperparameters once, `layers.rs` holds the shared layers, and each
//! file under `arch/` only wires them.

mod arch;
mod config;
mod cpu_ops;
mod error;
mod kv_cache;
mod layers;
mod loader;
mod mla;
mod model;
mod moe;
mod qlinear;
#[cfg(feature = "wgpu")]
mod qlinear_cube;

pub use config::{Arch, Gating, MlaConfig, ModelConfig, MoeConfig, RopeConfig, RopeKind, Yarn};
pub use error::ModelError;
pub use kv_cache::KvCache;
pub use model::{
    DecoderSpec, ExpertPlacement, LoadOptions, Model, SeqInput, weight_bytes_per_token,
};
pub use moe::{Route, route};
pub use qlinear::{QLinear, QuantOps, load_f32};
