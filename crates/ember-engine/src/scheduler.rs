//! The engine thread: owns the model and one KV cache per slot, takes requests from the bounded
//! queue into free slots, and runs continuous batching like llama-server's `update_slots`: every
//! step is one forward holding the next token of every decoding slot plus one prefill chunk of
//! one prefilling slot. Between steps it drops requests whose caller went away or whose deadline
//! passed, so a cancelled long prompt stops within one chunk.
//!
//! Prefix reuse: a slot keeps the tokens its cache holds after a request ends. A new request goes
//! to the free slot whose cached tokens share the longest prefix with its prompt, and prefill
//! starts after that prefix (llama-server's `cache_prompt`). The results are the same bits as
//! without reuse: rows of a product do not depend on their batch, and attention reads the cache.

use crate::generate::{Decoder, FinishReason, TokenEvent, logits_vec};
use crate::service::{EngineConfig, EngineError, EngineHandle, Event, Finished, Job, Shared};
use ember_model::{KvCache, Model, SeqInput};
use ember_tokenizer::Tokenizer;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("engine configuration: {0}")]
    Config(String),
    #[error("starting the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The engine's OS thread. It ends once the engine is closed and idle, or every handle is gone.
#[derive(Debug)]
pub struct EngineThread {
    join: JoinHandle<()>,
}

impl EngineThread {
    /// Waits for the thread to end; `false` if it panicked.
    pub fn join(self) -> bool {
        self.join.join().is_ok()
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// Starts the engine thread with `model` and one KV cache of `cfg.n_ctx` per slot.
pub fn spawn(
    model: Model,
    tok: Arc<Tokenizer>,
    cfg: EngineConfig,
) -> Result<(EngineHandle, EngineThread), SpawnError> {
    if cfg.slots == 0 || cfg.queue == 0 || cfg.prefill_chunk == 0 || cfg.n_ctx < 2 {
        return Err(SpawnError::Config(format!(
            "slots, queue and prefill_chunk must be at least 1 and n_ctx at least 2 (got {cfg:?})"
        )));
    }
    let (tx, rx) = mpsc::sync_channel(cfg.queue);
    let shared = Arc::new(Shared {
        queued: Default::default(),
        active: Default::default(),
        prompt_tokens: Default::default(),
        generated_tokens: Default::default(),
        closed: Default::default(),
        running: AtomicBool::new(true),
        abort: Default::default(),
        n_vocab: model.config().n_vocab,
        cfg,
    });
    let handle = EngineHandle::new(tx, Arc::clone(&shared));
    let join = std::thread::Builder::new()
        .name("ember-engine".into())
        .spawn(move || {
            // Cleared when the thread ends, by return or by panic.
            struct Running<'a>(&'a AtomicBool);
            impl Drop for Running<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let _running = Running(&shared.running);
            let slots = (0..shared.cfg.slots)
                .map(|_| Slot {
                    cache: model.new_cache(shared.cfg.n_ctx),
                    cached: Vec::new(),
                    active: None,
                })
                .collect();
            Engine {
                model: &model,
                tok: &tok,
                shared: &shared,
                rx,
                slots,
                admitted: 0,
            }
            .run();
        })?;
    Ok((handle, EngineThread { join }))
}

/// A request being served in a slot.
struct Active<'t> {
    tx: UnboundedSender<Event>,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    pos: usize,
    dec: Decoder<'t>,
    /// The sampled token to feed next (decode phase).
    next: Option<u32>,
    deadline: Option<Instant>,
    prompt_cached: usize,
    queued_ms: f64,
    /// Admission order, for first-come prefill.
    order: u64,
}

struct Slot<'t> {
    cache: KvCache,
    /// The tokens whose K/V are in `cache[..cache.len()]`.
    cached: Vec<u32>,
    active: Option<Active<'t>>,
}

struct Engine<'t> {
    model: &'t Model,
    tok: &'t Tokenizer,
    shared: &'t Shared,
    rx: mpsc::Receiver<Job>,
    slots: Vec<Slot<'t>>,
    admitted: u64,
}

/// What one slot contributes to a step.
enum Part {
    Decode(u32),
    Prefill { from: usize, to: usize },
}

fn send_token(tx: &UnboundedSender<Event>, ev: &TokenEvent) -> ControlFlow<()> {
    match tx.send(Event::Token(ev.clone())) {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    }
}

impl<'t> Engine<'t> {
    fn run(mut self) {
        loop {
            if self.shared.abort.load(Ordering::Acquire) {
                self.abort_all();
            }
            let busy = self.slots.iter().any(|s| s.active.is_some());
            if !self.admit(busy) {
                return;
            }
            self.drop_gone();
            self.step();
        }
    }

    /// Moves queued requests into free slots. Waits (briefly, to notice `close`) when nothing is
    /// running. Returns `false` when the engine should end.
    fn admit(&mut self, busy: bool) -> bool {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let running = self.slots.iter().any(|s| s.active.is_some());
            let job = if running || busy {
                match self.rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return running,
                }
            } else {
                match self.rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        return !self.shared.closed.load(Ordering::Acquire);
                    }
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            };
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.start(job);
        }
        true
    }

    fn start(&mut self, job: Job) {
        let Job { req, tx, submitted } = job;
        if tx.is_closed() {
            return;
        }
        if self.shared.abort.load(Ordering::Acquire) {
            let _ = tx.send(Event::Error(EngineError::ShuttingDown));
            return;
        }
        let now = Instant::now();
        if req.deadline.is_some_and(|d| d <= now) || req.start_by.is_some_and(|d| d <= now) {
            let _ = tx.send(Event::Error(EngineError::DeadlineExpired));
            return;
        }
        // The free slot sharing the longest prefix with the prompt; on a tie the one holding the
        // least, so other cached prefixes survive.
        let reuse = self.shared.cfg.prefix_reuse;
        let Some((idx, common)) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| {
                let common = if reuse {
                    common_prefix(&s.cached, &req.prompt)
                } else {
                    0
                };
                (i, common, s.cached.len())
            })
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(i, c, _)| (i, c))
        else {
            return;
        };
        // The last prompt token is always computed: its logits give the first token.
        let keep = common.min(req.prompt.len() - 1);
        let mut dec = match Decoder::new(
            self.tok,
            self.model.config().n_vocab,
            &req.prompt,
            &req.params,
            now,
        ) {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Event::Error(EngineError::Failed(e.to_string())));
                return;
            }
        };
        dec.prompt_cached(keep);
        let slot = &mut self.slots[idx];
        slot.cache.truncate(keep);
        slot.cached.truncate(keep);
        self.admitted += 1;
        slot.active = Some(Active {
            tx,
            prompt: req.prompt,
            pos: keep,
            dec,
            next: None,
            deadline: req.deadline,
            prompt_cached: keep,
            queued_ms: now.duration_since(submitted).as_secs_f64() * 1e3,
            order: self.admitted,
        });
        self.shared.active.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends requests whose caller dropped the stream (cancelled) or whose deadline passed.
    fn drop_gone(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(a) = &mut self.slots[i].active else {
                continue;
            };
            if a.tx.is_closed() {
                a.dec.stop(FinishReason::Cancelled);
                self.finish(i);
            } else if a.deadline.is_some_and(|d| d <= now) {
                a.dec.stop(FinishReason::Length);
                self.finish(i);
            }
        }
    }

    fn abort_all(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(a) = &mut self.slots[i].active {
                a.dec.stop(FinishReason::Cancelled);
                self.finish(i);
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = job.tx.send(Event::Error(EngineError::ShuttingDown));
        }
    }

    /// Sends the final event of slot `i` and frees it (its cache stays for prefix reuse).
    fn finish(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(a) = slot.active.take() else {
            return;
        };
        // The slot counts as free before the caller can see the end.
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        let tx = a.tx;
        let generation = a.dec.finish(&mut |ev| send_token(&tx, ev));
        let _ = tx.send(Event::Done(Box::new(Finished {
            generation,
            prompt_cached: a.prompt_cached,
            queued_ms: a.queued_ms,
        })));
    }

    /// Fails slot `i`'s request and forgets its cache (its state is unknown after a failure).
    fn fail(&mut self, i: usize, msg: &str) {
        let slot = &mut self.slots[i];
        slot.cache.truncate(0);
        slot.cached.clear();
        if let Some(a) = slot.active.take() {
            self.shared.active.fetch_sub(1, Ordering::AcqRel);
            let _ = a.tx.send(Event::Error(EngineError::Failed(msg.to_owned())));
        }
    }

    /// One forward: the next token of every decoding slot and one chunk of the first-admitted
    /// prefilling slot.
    fn step(&mut self) {
        let chunk = self.shared.cfg.prefill_chunk;
        let prefill = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.active.as_ref().map(|a| (i, a)))
            .filter(|(_, a)| a.next.is_none())
            .min_by_key(|(_, a)| a.order)
            .map(|(i, _)| i);
        let mut parts: Vec<(usize, Part)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let Some(a) = &s.active else { continue };
            if let Some(id) = a.next {
                parts.push((i, Part::Decode(id)));
            } else if Some(i) == prefill {
                let to = (a.pos + chunk).min(a.prompt.len());
                parts.push((i, Part::Prefill { from: a.pos, to }));
            }
        }
        if parts.is_empty() {
            return;
        }
        let result = {
            let mut seqs = Vec::with_capacity(parts.len());
            let mut slots: Vec<Option<&mut Slot<'t>>> = self.slots.iter_mut().map(Some).collect();
            for (i, part) in &parts {
                let Some(slot) = slots[*i].take() else {
                    continue;
                };
                let Some(a) = &slot.active else { continue };
                let tokens: &[u32] = match part {
                    Part::Decode(id) => std::slice::from_ref(id),
                    Part::Prefill { from, to } => &a.prompt[*from..*to],
                };
                seqs.push(SeqInput {
                    tokens,
                    cache: &mut slot.cache,
                });
            }
            let model = self.model;
            catch_unwind(AssertUnwindSafe(|| model.forward_batch(&mut seqs, false)))
        };
        let logits = match result {
            Ok(Ok(l)) if l.len() == parts.len() => l,
            other => {
                let msg = match other {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "the batch returned the wrong number of rows".to_owned(),
                    Err(_) => "the model panicked".to_owned(),
                };
                tracing::error!(error = %msg, "forward failed; failing the batch's requests");
                for (i, _) in &parts {
                    self.fail(*i, &msg);
                }
                return;
            }
        };
        for ((i, part), logits) in parts.into_iter().zip(logits) {
            let fed = match &part {
                Part::Decode(_) => 1,
                Part::Prefill { from, to } => to - from,
            };
            let slot = &mut self.slots[i];
            let Some(a) = &mut slot.active else { continue };
            match part {
                Part::Decode(id) => {
                    slot.cached.push(id);
                }
                Part::Prefill { from, to } => {
                    slot.cached.extend_from_slice(&a.prompt[from..to]);
                    a.pos = to;
                    self.shared
                        .prompt_tokens
                        .fetch_add(fed as u64, Ordering::Relaxed);
                    if to < a.prompt.len() {
                        continue;
                    }
                    a.dec.prefill_done();
                }
            }
            let row = match logits_vec(logits) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(i, &e.to_string());
                    continue;
                }
            };
            let room = slot.cache.len() < slot.cache.capacity();
            let tx = a.tx.clone();
            match a.dec.step(&row, room, &mut |ev| send_token(&tx, ev)) {
                Ok(Some(id)) => {
                    a.next = Some(id);
                    self.shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {
                    self.shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    self.finish(i);
                }
                Err(e) => self.fail(i, &e.to_string()),
            }
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
