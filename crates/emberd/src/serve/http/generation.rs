//! One generation as the HTTP layer sees it: submission to the engine, the event stream, and the
//! guard that logs the request (one line, target `emberd::request`) and records its metrics when
//! it ends — including when it ends because the client went away: the response body (or the
//! handler future) owns the [`Running`] generation, so hyper dropping it drops the engine's
//! `EventStream` (which cancels the request and frees the slot) and the guard logs `cancelled`.

use super::error::ApiError;
use super::metrics::{GenerationSample, Metrics, Outcome};
use super::{AppState, Loaded};
use ember_engine::generate::{FinishReason, GenerateParams};
use ember_engine::service::{Event, EventStream, Finished, Request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Per-request facts the outer middleware puts in the request extensions.
#[derive(Debug, Clone)]
pub(crate) struct RequestCtx {
    pub id: String,
    /// The matched route (metrics label), `other` when none matched.
    pub route: String,
    pub peer: Option<String>,
    pub started: Instant,
}

/// What the guard reports once the generation finished.
#[derive(Debug, Clone, Default)]
struct Summary {
    cached: usize,
    generated: usize,
    ttft_ms: f64,
    prefill_ms: f64,
    decode_ms: f64,
    finish: &'static str,
}

/// Logs and counts one generation request when dropped.
#[derive(Debug)]
pub(crate) struct GenLog {
    ctx: RequestCtx,
    model: String,
    metrics: Arc<Metrics>,
    prompt_tokens: usize,
    max_tokens: usize,
    deadline: Option<Instant>,
    outcome: Option<Outcome>,
    summary: Summary,
}

impl GenLog {
    /// Records a finished generation; returns its OpenAI `finish_reason`.
    fn finished(&mut self, f: &Finished) -> &'static str {
        let g = &f.generation;
        let t = &g.timings;
        let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
        let (finish, outcome) = match g.finish_reason {
            FinishReason::Stop => ("stop", Outcome::Ok),
            // A deadline also ends generation with `Length` (the answer was cut short).
            FinishReason::Length if timed_out && g.tokens.len() < self.max_tokens => {
                ("length", Outcome::Timeout)
            }
            FinishReason::Length => ("length", Outcome::Ok),
            // Only a drain (`cancel_all`) ends a request whose client is still there: it was cut.
            FinishReason::Cancelled => ("length", Outcome::Cancelled),
        };
        self.outcome = Some(outcome);
        self.summary = Summary {
            cached: f.prompt_cached,
            generated: g.tokens.len(),
            ttft_ms: f.queued_ms + t.ttft_ms,
            prefill_ms: t.prompt_ms,
            decode_ms: t.predicted_ms,
            finish,
        };
        let per_s = |n: usize, ms: f64| (ms > 0.0 && n > 0).then(|| n as f64 / (ms / 1e3));
        self.metrics.record_generation(&GenerationSample {
            ttft_s: (!g.tokens.is_empty()).then_some(self.summary.ttft_ms / 1e3),
            prefill_tok_s: per_s(t.prompt_n, t.prompt_ms),
            // The first token comes from the prefill's logits: decode time covers the others.
            decode_tok_s: per_s(t.predicted_n.saturating_sub(1), t.predicted_ms),
        });
        finish
    }

    fn failed(&mut self, e: &ApiError) {
        self.outcome = Some(e.outcome);
        self.summary.finish = "error";
    }
}

impl Drop for GenLog {
    fn drop(&mut self) {
        // No end recorded: the response was dropped before the last event, i.e. the client left.
        let outcome = self.outcome.unwrap_or(Outcome::Cancelled);
        let secs = self.ctx.started.elapsed().as_secs_f64();
        self.metrics.record_request(&self.ctx.route, outcome, secs);
        let s = &self.summary;
        tracing::info!(
            target: "emberd::request",
            id = %self.ctx.id,
            route = %self.ctx.route,
            model = %self.model,
            peer = %self.ctx.peer.as_deref().unwrap_or("-"),
            outcome = %outcome.as_str(),
            finish = %if s.finish.is_empty() { "-" } else { s.finish },
            prompt_tokens = self.prompt_tokens,
            cached_tokens = s.cached,
            generated_tokens = s.generated,
            ttft_ms = format_args!("{:.1}", s.ttft_ms),
            prefill_ms = format_args!("{:.1}", s.prefill_ms),
            decode_ms = format_args!("{:.1}", s.decode_ms),
            total_ms = format_args!("{:.1}", secs * 1e3),
            "generation"
        );
    }
}

/// What a running generation yields next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Text (may be empty: an end-of-generation token has none).
    Delta(String),
    /// The end; `finish` is the OpenAI `finish_reason`.
    Done {
        finished: Box<Finished>,
        finish: &'static str,
    },
    /// A failure after acceptance (already logged: `logged` is set).
    Failed(ApiError),
}

/// A submitted generation: the engine's stream plus its log guard. Dropping it cancels.
#[derive(Debug)]
pub(crate) struct Running {
    events: EventStream,
    pub log: GenLog,
    ended: bool,
    /// Prompt length as submitted (for `usage`).
    pub prompt_tokens: usize,
}

impl Running {
    /// The next step; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<Step> {
        if self.ended {
            return None;
        }
        let step = match self.events.recv().await {
            Some(Event::Token(t)) => return Some(Step::Delta(t.delta)),
            Some(Event::Done(f)) => {
                let finish = self.log.finished(&f);
                Step::Done {
                    finished: f,
                    finish,
                }
            }
            Some(Event::Error(e)) => self.fail(ApiError::from_engine(&e)),
            None => self.fail(ApiError::internal(
                "the engine ended the request without a result",
            )),
        };
        self.ended = true;
        Some(step)
    }

    fn fail(&mut self, mut e: ApiError) -> Step {
        self.log.failed(&e);
        e.logged = true;
        Step::Failed(e)
    }

    /// Waits for the end (the non-streaming routes): the finished generation and its
    /// `finish_reason`.
    pub async fn collect(&mut self) -> Result<(Box<Finished>, &'static str), ApiError> {
        while let Some(step) = self.next().await {
            match step {
                Step::Delta(_) => {}
                Step::Done { finished, finish } => return Ok((finished, finish)),
                Step::Failed(e) => return Err(e),
            }
        }
        // Only reachable when called again after the end.
        let mut e = ApiError::internal("the generation already ended");
        e.logged = true;
        Err(e)
    }
}

/// Submits a prompt: the deadline comes from the daemon's request timeout, `start_by` from the
/// caller (an MQTT request's Message Expiry); a refusal maps to its HTTP error (busy → 503 with
/// `Retry-After`).
pub(crate) fn submit(
    state: &AppState,
    loaded: &Loaded,
    ctx: &RequestCtx,
    prompt: Vec<u32>,
    params: GenerateParams,
    start_by: Option<Instant>,
) -> Result<Running, ApiError> {
    // `checked_add`: a configured timeout too large for an `Instant` means no deadline.
    let deadline = state
        .limits
        .request_timeout
        .and_then(|t| ctx.started.checked_add(t));
    let prompt_tokens = prompt.len();
    let max_tokens = params.max_tokens;
    let req = Request {
        prompt,
        params,
        deadline,
        start_by,
    };
    let events = loaded
        .engine
        .submit(req)
        .map_err(|e| ApiError::from_submit(&e, &loaded.engine.stats()))?;
    Ok(Running {
        events,
        log: GenLog {
            ctx: ctx.clone(),
            model: loaded.model_id.clone(),
            metrics: state.metrics.clone(),
            prompt_tokens,
            max_tokens,
            deadline,
            outcome: None,
            summary: Summary::default(),
        },
        ended: false,
        prompt_tokens,
    })
}

/// OpenAI's `usage` (with `prompt_tokens_details.cached_tokens`).
pub(crate) fn usage_json(prompt_tokens: usize, f: &Finished) -> Value {
    let completion = f.generation.tokens.len();
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": f.prompt_cached},
    })
}

/// llama-server's `timings` object.
pub(crate) fn timings_json(f: &Finished) -> Value {
    let t = &f.generation.timings;
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let per_tok = |n: usize, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
    json!({
        "cache_n": f.prompt_cached,
        "prompt_n": t.prompt_n,
        "prompt_ms": t.prompt_ms,
        "prompt_per_token_ms": per_tok(t.prompt_n, t.prompt_ms),
        "prompt_per_second": per_s(t.prompt_n, t.prompt_ms),
        "predicted_n": t.predicted_n,
        "predicted_ms": t.predicted_ms,
        "predicted_per_token_ms": per_tok(t.predicted_n, t.predicted_ms),
        "predicted_per_second": per_s(t.predicted_n, t.predicted_ms),
    })
}

/// Unix seconds now (`created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random id with a prefix (`chatcmpl-…`, `req-…`): 96 bits, hex.
pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{:016x}{:08x}", random_u64(), random_u64() as u32)
}

/// A random number from a per-thread generator seeded by the OS (ids, retry jitter).
pub(crate) fn random_u64() -> u64 {
    use rand::Rng;
    use std::cell::RefCell;
    thread_local! {
        static RNG: RefCell<rand::rngs::StdRng> = RefCell::new(seed_rng());
    }
    RNG.with(|r| r.borrow_mut().next_u64())
}

fn seed_rng() -> rand::rngs::StdRng {
    use rand::SeedableRng;
    use std::hash::{BuildHasher, Hasher};
    rand::rngs::StdRng::try_from_rng(&mut rand::rngs::SysRng).unwrap_or_else(|_| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        rand::rngs::StdRng::seed_from_u64(h.finish())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = random_id("chatcmpl-");
        let b = random_id("chatcmpl-");
        assert!(a.starts_with("chatcmpl-") && a.len() == 9 + 24);
        assert_ne!(a, b);
    }
}
