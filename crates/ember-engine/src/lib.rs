//! ember-engine: sampler chain, generation loop, sequences/KV ownership, scheduler and
//! `EngineHandle`.
//!
//! - [`constraint`]: constrained decoding — llguidance grammars (Lark, JSON schema, regex) mask the
//!   sampler's candidates per sequence, lazily from a trigger string for tool calls;
//! - [`generate`]: prefill in one batch, then decode token by token, streaming complete UTF-8 text;
//! - [`sampler`]: llama.cpp's sampler chain (logit bias → penalties → top-k → top-p → min-p →
//!   temperature → dist, or greedy) over one row of logits;
//! - [`service`]: the engine thread behind a cloneable [`service::EngineHandle`]: bounded queue,
//!   slots with batched decode, chunked prefill, cancellation, deadlines, prompt-prefix reuse;
//! - [`stop`]: stop strings over streamed text, holding back partial matches like llama-server.

pub mod constraint;
pub mod generate;
pub mod sampler;
mod scheduler;
pub mod service;
pub mod stop;
