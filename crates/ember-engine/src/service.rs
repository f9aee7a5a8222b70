//! The engine service: the model lives on its own OS thread; callers hold a cloneable
//! [`EngineHandle`], submit a [`Request`] and read a stream of [`Event`]s (token deltas, then one
//! `Done` or one `Error`). The shape of mistral.rs's `Engine` and llama-server's slots, without a
//! lock around the model: the engine thread owns it and everything else talks to it by channel.
//!
//! - The queue is bounded: a full queue refuses at once with [`SubmitError::Busy`].
//! - Dropping the [`EventStream`] cancels the request; the engine notices between prefill chunks
//!   and between decode steps, and frees the slot.
//! - A request may carry a deadline; it is checked in the queue and between steps.
//! - Several sequences run at once (one slot each), their decode steps batched into one forward.
//! - A new prompt that shares a prefix with what a free slot's cache holds reuses that prefix.

pub use crate::scheduler::{EngineThread, SpawnError, spawn};

use crate::generate::{GenerateParams, Generation, TokenEvent};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::mpsc as tmpsc;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded at once (each with its own KV cache of `n_ctx` positions).
    pub slots: usize,
    /// Context of each slot, in tokens.
    pub n_ctx: usize,
    /// Requests that may wait for a slot; one more is refused with `Busy`.
    pub queue: usize,
    /// Prompt tokens per prefill step: cancellation and other slots' decode steps are served
    /// between chunks.
    pub prefill_chunk: usize,
    /// Reuse a cached prompt prefix (a free slot whose cache starts with the same tokens).
    pub prefix_reuse: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            slots: 1,
            n_ctx: 2048,
            queue: 8,
            prefill_chunk: 256,
            prefix_reuse: true,
        }
    }
}

/// One generation request: the prompt already tokenized (the daemon renders chat templates).
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Give up (in the queue) or stop (while generating) at this instant.
    pub deadline: Option<Instant>,
    /// Give up if no slot took the request by this instant (an MQTT request's Message Expiry):
    /// once started, it runs to its end.
    pub start_by: Option<Instant>,
}

/// What a request's stream carries: any number of `Token`, then exactly one `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum Event {
    Token(TokenEvent),
    Done(Box<Finished>),
    Error(EngineError),
}

/// The end of a successful request.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    #[serde(flatten)]
    pub generation: Generation,
    /// Prompt tokens taken from a cached prefix instead of being computed.
    pub prompt_cached: usize,
    /// Time spent waiting for a slot, in milliseconds.
    pub queued_ms: f64,
}

/// Why a request failed after it was accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("the request's deadline passed before it could start")]
    DeadlineExpired,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("generation failed: {0}")]
    Failed(String),
}

/// Why a request was refused at submission (nothing was queued).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("busy: {queued} requests are already waiting (queue capacity {capacity})")]
    Busy { queued: usize, capacity: usize },
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the prompt has {prompt} tokens; the context holds {n_ctx}")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("empty prompt: nothing to continue from")]
    EmptyPrompt,
    #[error("invalid sampling parameters: {0}")]
    BadParams(String),
}

/// A snapshot of the engine's load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EngineStats {
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Slots generating now.
    pub active: usize,
    pub slots: usize,
    pub queue_capacity: usize,
    pub n_ctx: usize,
    /// Prompt and generated tokens processed since start.
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

/// The receiving end of one request. Dropping it cancels the request.
#[derive(Debug)]
pub struct EventStream {
    rx: tmpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event (async); `None` after the final one.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }
}

/// A job as queued: the request plus the channel back and the submission time.
#[derive(Debug)]
pub(crate) struct Job {
    pub req: Request,
    pub tx: tmpsc::UnboundedSender<Event>,
    pub submitted: Instant,
}

/// State shared by the handles and the engine thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub closed: AtomicBool,
    /// True while the engine thread runs (false once it ended, also by a panic).
    pub running: AtomicBool,
    /// Set by `cancel_all`: the engine ends every running and queued request.
    pub abort: AtomicBool,
    pub cfg: EngineConfig,
    pub n_vocab: usize,
}

/// A cloneable handle to the engine thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::SyncSender<Job>,
    shared: Arc<Shared>,
}

impl EngineHandle {
    pub(crate) fn new(tx: mpsc::SyncSender<Job>, shared: Arc<Shared>) -> Self {
        EngineHandle { tx, shared }
    }

    /// Queues a request, or refuses it at once (`Busy` when the queue is full).
    pub fn submit(&self, req: Request) -> Result<EventStream, SubmitError> {
        let s = &self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.prompt.len() >= s.cfg.n_ctx {
            return Err(SubmitError::PromptTooLong {
                prompt: req.prompt.len(),
                n_ctx: s.cfg.n_ctx,
            });
        }
        crate::sampler::Sampler::new(&req.params.sampling, s.n_vocab)
            .map_err(|e| SubmitError::BadParams(e.to_string()))?;
        let (tx, rx) = tmpsc::unbounded_channel();
        let job = Job {
            req,
            tx,
            submitted: Instant::now(),
        };
        s.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(job) {
            Ok(()) => Ok(EventStream { rx }),
            Err(e) => {
                s.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    mpsc::TrySendError::Full(_) => SubmitError::Busy {
                        queued: s.queued.load(Ordering::Acquire),
                        capacity: s.cfg.queue,
                    },
                    mpsc::TrySendError::Disconnected(_) => SubmitError::ShuttingDown,
                })
            }
        }
    }

    /// The engine's load now.
    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        EngineStats {
            queued: s.queued.load(Ordering::Acquire),
            active: s.active.load(Ordering::Acquire),
            slots: s.cfg.slots,
            queue_capacity: s.cfg.queue,
            n_ctx: s.cfg.n_ctx,
            prompt_tokens: s.prompt_tokens.load(Ordering::Relaxed),
            generated_tokens: s.generated_tokens.load(Ordering::Relaxed),
        }
    }

    /// Whether the engine thread is still running (for a watchdog).
    pub fn is_alive(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }

    /// Stops accepting requests; queued and running ones go on to their end.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Stops accepting requests and ends the queued and running ones: running ones finish with
    /// `Cancelled` and the text so far, queued ones get `ShuttingDown`.
    pub fn cancel_all(&self) {
        self.close();
        self.shared.abort.store(true, Ordering::Release);
    }
}
