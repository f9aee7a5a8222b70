//! ember-model: Llama-family decoders as Burn modules over quantized GGUF weights.
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
mod model;
mod qlinear;

pub use config::{Arch, ModelConfig, RopeConfig, RopeKind};
pub use error::ModelError;
pub use kv_cache::KvCache;
pub use model::{DecoderSpec, Model, SeqInput};
pub use qlinear::{QLinear, QuantOps, load_f32};
