//! ember-engine: sampler chain, generation loop, sequences/KV ownership, scheduler and
//! `EngineHandle`.
//!
//! So far only the sampling side lives here:
//! - [`sampler`]: llama.cpp's sampler chain (logit bias → penalties → top-k → top-p → min-p →
//!   temperature → dist, or greedy) over one row of logits;
//! - [`stop`]: stop strings over streamed text, holding back partial matches like llama-server.

pub mod sampler;
pub mod stop;
