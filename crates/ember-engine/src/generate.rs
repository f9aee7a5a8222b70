//! The generation loop: the prompt in one batched pass (prefill), then one token at a time
//! (decode) through the sampler chain, streaming text deltas that never split a UTF-8 character,
//! stopping at an end-of-generation token, a stop string or the token limit. As llama.cpp's
//! `tools/main` loop and llama-server's `process_token`.

use crate::constraint::{ActiveConstraint, Constraint, ConstraintError};
use crate::sampler::{Sampler, SamplerError, SamplingParams};
use crate::stop::StopMatcher;
use ember_model::{KvCache, Model, ModelError};
use ember_tokenizer::{Tokenizer, TokenizerError};
use serde::Serialize;
use std::ops::ControlFlow;
use std::time::Instant;

/// Why generation ended (OpenAI's `finish_reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// The caller stopped it.
    Cancelled,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// How many of the largest logits to report per generated token (0: none).
    pub logits_top: usize,
    /// A compiled grammar the output must follow (constrained decoding), if any.
    pub constraint: Option<Constraint>,
}

/// One generated token, as streamed.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEvent {
    /// The token; `None` for the final flush of text held back (a partial character or a possible
    /// stop-string prefix that never completed).
    pub id: Option<u32>,
    /// Text that became complete with this token (may be empty).
    pub delta: String,
    /// The `logits_top` largest logits before sampling: `[id, logit]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(u32, f32)>,
}

/// Timings, llama.cpp-style.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    /// From the start of prefill to the first generated token.
    pub ttft_ms: f64,
}

/// The result of a generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub timings: Timings,
    /// The seed the sampler used (for reproducing a random run).
    pub seed: u64,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt has {prompt} tokens; the context holds {n_ctx}")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("empty prompt: nothing to continue from")]
    EmptyPrompt,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("reading logits: {0}")]
    Logits(String),
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
}

pub(crate) fn logits_vec(t: burn::tensor::Tensor<2>) -> Result<Vec<f32>, GenerateError> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| GenerateError::Logits(format!("{e:?}")))
}

fn top_logits(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let k = k.min(idx.len());
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// The sampling side of one sequence: turns each row of logits into the next token and a text
/// delta, and decides when generation ends. The model side (prefill, KV cache, forward) belongs to
/// the caller, so [`generate`] and the engine's scheduler, which batches several sequences into one
/// forward, share this one piece.
#[derive(Debug)]
pub struct Decoder<'t> {
    tok: &'t Tokenizer,
    sampler: Sampler,
    stream: ember_tokenizer::StreamDecoder<'t>,
    stops: StopMatcher,
    max_tokens: usize,
    logits_top: usize,
    text: String,
    tokens: Vec<u32>,
    timings: Timings,
    t0: Instant,
    t_decode: Option<Instant>,
    finish: Option<FinishReason>,
    /// The grammar state, for a constrained request.
    constraint: Option<ActiveConstraint>,
    /// The masked copy of a row of logits (constrained requests only).
    masked: Vec<f32>,
}

impl<'t> Decoder<'t> {
    /// A decoder for `prompt` (primes the penalties); `t0` is when prefill started (for TTFT).
    pub fn new(
        tok: &'t Tokenizer,
        n_vocab: usize,
        prompt: &[u32],
        params: &GenerateParams,
        t0: Instant,
    ) -> Result<Self, GenerateError> {
        let mut sampler = Sampler::new(&params.sampling, n_vocab)?;
        sampler.prime(prompt);
        Ok(Decoder {
            tok,
            sampler,
            stream: tok.stream(false),
            stops: StopMatcher::new(params.stop.clone()),
            max_tokens: params.max_tokens,
            logits_top: params.logits_top,
            text: String::new(),
            tokens: Vec::new(),
            timings: Timings {
                prompt_n: prompt.len(),
                ..Timings::default()
            },
            t0,
            t_decode: None,
            finish: if params.max_tokens == 0 {
                Some(FinishReason::Length)
            } else {
                None
            },
            constraint: params.constraint.as_ref().map(Constraint::start),
            masked: Vec::new(),
        })
    }

    /// `cached` prompt tokens came from the KV cache: `timings.prompt_n` counts only the ones
    /// evaluated (llama.cpp's `prompt_n`, beside its `cache_n`).
    pub fn prompt_cached(&mut self, cached: usize) {
        self.timings.prompt_n = self.timings.prompt_n.saturating_sub(cached);
    }

    /// Records the end of prefill (the logits of the last prompt token are ready).
    pub fn prefill_done(&mut self) {
        self.timings.prompt_ms = self.t0.elapsed().as_secs_f64() * 1e3;
        self.t_decode = Some(Instant::now());
    }

    /// Samples the next token from `logits`, reports it through `on_token`, and returns the token
    /// to feed next, or `None` when generation has ended. `room` says whether the context holds
    /// one more position.
    pub fn step(
        &mut self,
        logits: &[f32],
        room: bool,
        on_token: &mut dyn FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<Option<u32>, GenerateError> {
        if self.finish.is_some() {
            return Ok(None);
        }
        let top = top_logits(logits, self.logits_top);
        let id = match &mut self.constraint {
            Some(c) if c.is_constraining() => {
                // As llama.cpp samples with a grammar: first as if free, and a token the grammar
                // allows is kept (one token checked instead of a whole mask; for greedy exactly the
                // masked choice); else the masked logits are sampled.
                let free = self.sampler.sample(logits)?;
                if c.allows(free)? {
                    free
                } else {
                    self.masked.clear();
                    self.masked.extend_from_slice(logits);
                    c.apply(&mut self.masked)?;
                    self.sampler.sample(&self.masked)?
                }
            }
            _ => self.sampler.sample(logits)?,
        };
        self.sampler.accept(id);
        if let Some(c) = &mut self.constraint {
            let piece = self.tok.token_to_piece(id, true).unwrap_or_default();
            c.accept(id, &piece)?;
        }
        if self.tokens.is_empty() {
            self.timings.ttft_ms = self.t0.elapsed().as_secs_f64() * 1e3;
        }
        self.tokens.push(id);
        if self.tok.is_eog(id) {
            let _ = on_token(&TokenEvent {
                id: Some(id),
                delta: String::new(),
                top,
            });
            self.finish = Some(FinishReason::Stop);
            return Ok(None);
        }
        let out = self.stops.push(&self.stream.push(id)?);
        self.text.push_str(&out.text);
        let event = TokenEvent {
            id: Some(id),
            delta: out.text,
            top,
        };
        // A stop string, or a grammar that is complete and allows nothing more, ends it here.
        if out.stop.is_some()
            || self
                .constraint
                .as_ref()
                .is_some_and(ActiveConstraint::is_done)
        {
            let _ = on_token(&event);
            self.finish = Some(FinishReason::Stop);
            return Ok(None);
        }
        if on_token(&event).is_break() {
            self.finish = Some(FinishReason::Cancelled);
            return Ok(None);
        }
        if !room || self.tokens.len() >= self.max_tokens {
            self.finish = Some(FinishReason::Length);
            return Ok(None);
        }
        Ok(Some(id))
    }

    /// Ends generation now for `reason` (unless it has already ended).
    pub fn stop(&mut self, reason: FinishReason) {
        self.finish.get_or_insert(reason);
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.tokens.len()
    }

    /// Flushes the text held back (a partial character or stop-string prefix that never
    /// completed) through `on_token` and returns the result.
    pub fn finish(
        mut self,
        on_token: &mut dyn FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Generation {
        let finish = self.finish.unwrap_or(FinishReason::Length);
        if finish != FinishReason::Stop {
            let rest = self.stops.push(&self.stream.finish());
            let mut tail = rest.text;
            if rest.stop.is_none() {
                tail.push_str(&self.stops.finish());
            }
            if !tail.is_empty() {
                self.text.push_str(&tail);
                let _ = on_token(&TokenEvent {
                    id: None,
                    delta: tail,
                    top: Vec::new(),
                });
            }
        }
        self.timings.predicted_n = self.tokens.len();
        self.timings.predicted_ms = self
            .t_decode
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
        Generation {
            text: self.text,
            tokens: self.tokens,
            finish_reason: finish,
            timings: self.timings,
            seed: self.sampler.seed(),
        }
    }
}

/// Runs `prompt` through `model` in `cache` (reset first) and generates up to
/// `params.max_tokens` tokens. The context is `cache.capacity()`: a prompt that does not fit is an
/// error before any work; generation that reaches the end of the context stops with `Length`.
/// `on_token` sees every token; returning `Break` cancels.
pub fn generate(
    model: &Model,
    tok: &Tokenizer,
    cache: &mut KvCache,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<Generation, GenerateError> {
    let n_ctx = cache.capacity();
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt.len() >= n_ctx {
        return Err(GenerateError::PromptTooLong {
            prompt: prompt.len(),
            n_ctx,
        });
    }
    let mut dec = Decoder::new(tok, model.config().n_vocab, prompt, params, Instant::now())?;
    cache.reset();
    let mut logits = logits_vec(model.forward(prompt, cache, false)?)?;
    dec.prefill_done();
    while let Some(id) = dec.step(&logits, cache.len() < n_ctx, &mut on_token)? {
        logits = logits_vec(model.forward(&[id], cache, false)?)?;
    }
    Ok(dec.finish(&mut on_token))
}
