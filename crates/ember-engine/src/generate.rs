//! The generation loop: the prompt in one batched pass (prefill), then one token at a time
//! (decode) through the sampler chain, streaming text deltas that never split a UTF-8 character,
//! stopping at an end-of-generation token, a stop string or the token limit. As llama.cpp's
//! `tools/main` loop and llama-server's `process_token`.

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
}

fn logits_vec(t: burn::tensor::Tensor<2>) -> Result<Vec<f32>, GenerateError> {
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
    let mut sampler = Sampler::new(&params.sampling, model.config().n_vocab)?;
    sampler.prime(prompt);
    cache.reset();
    let mut stream = tok.stream(false);
    let mut stops = StopMatcher::new(params.stop.clone());
    let mut timings = Timings {
        prompt_n: prompt.len(),
        ..Timings::default()
    };
    let (mut text, mut tokens) = (String::new(), Vec::new());

    let t0 = Instant::now();
    let mut logits = logits_vec(model.forward(prompt, cache, false)?)?;
    timings.prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut finish = FinishReason::Length;
    while tokens.len() < params.max_tokens {
        let top = top_logits(&logits, params.logits_top);
        let id = sampler.sample(&logits)?;
        sampler.accept(id);
        if tokens.is_empty() {
            timings.ttft_ms = t0.elapsed().as_secs_f64() * 1e3;
        }
        tokens.push(id);
        if tok.is_eog(id) {
            let event = TokenEvent {
                id: Some(id),
                delta: String::new(),
                top,
            };
            let _ = on_token(&event);
            finish = FinishReason::Stop;
            break;
        }
        let out = stops.push(&stream.push(id)?);
        text.push_str(&out.text);
        let event = TokenEvent {
            id: Some(id),
            delta: out.text,
            top,
        };
        if out.stop.is_some() {
            let _ = on_token(&event);
            finish = FinishReason::Stop;
            break;
        }
        if on_token(&event).is_break() {
            finish = FinishReason::Cancelled;
            break;
        }
        if cache.len() + 1 > n_ctx || tokens.len() >= params.max_tokens {
            break;
        }
        logits = logits_vec(model.forward(&[id], cache, false)?)?;
    }
    if finish != FinishReason::Stop {
        let rest = stops.push(&stream.finish());
        let mut tail = rest.text;
        if rest.stop.is_none() {
            tail.push_str(&stops.finish());
        }
        if !tail.is_empty() {
            text.push_str(&tail);
            let _ = on_token(&TokenEvent {
                id: None,
                delta: tail,
                top: Vec::new(),
            });
        }
    }
    timings.predicted_n = tokens.len();
    timings.predicted_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok(Generation {
        text,
        tokens,
        finish_reason: finish,
        timings,
        seed: sampler.seed(),
    })
}
