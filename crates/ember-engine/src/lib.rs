//! ember-engine: sampler chain, generation loop, sequences/KV ownership, scheduler and
//! `EngineHandle`.
//!
//! So far: generation and sampling.
//! - [`generate`]: prefill in one batch, then decode token by token, streaming complete UTF-8 text;
//! - [`sampler`]: llama.cpp's sampler chain (logit bias → penalties → top-k → top-p → min-p →
//!   temperature → dist, or greedy) over one row of logits;
//! - [`stop`]: stop strings over streamed text, holding back partial matches like llama-server.

pub mod generate;
pub mod sampler;
pub mod stop;
