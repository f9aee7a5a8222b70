//! llama.cpp's sampler chain over one row of logits, following src/llama-sampling.cpp and the
//! chain `common_sampler_init` (common/sampling.cpp) builds from the common defaults:
//!
//! logit bias → penalties → top-k → top-p → min-p → temperature → dist
//!
//! or, when `temperature <= 0`, logit bias → penalties → greedy (argmax, lowest id on ties). In
//! llama.cpp temperature 0 keeps the truncation samplers and masks all but the argmax; those
//! samplers always keep the argmax, so skipping them gives the same token.
//!
//! Logits policy: NaN or `+inf` logits are an error ([`SamplerError::InvalidLogit`]), never a
//! panic; `-inf` is a legitimate mask. If nothing unmasked is left after bias and penalties,
//! sampling fails with [`SamplerError::AllMasked`].
//!
//! Randomness: Xoshiro256++ seeded from [`SamplingParams::seed`], so a seed reproduces the same
//! tokens for the same logits (it does not reproduce llama.cpp's `mt19937` stream). The seed
//! actually used, random ones included, is reported by [`Sampler::seed`].

mod ops;
mod params;
mod penalties;

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Serialize;

pub use params::SamplingParams;

use ops::Candidates;
use penalties::Penalties;

/// One candidate token: its id, its (processed) logit and its probability after the chain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenData {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("invalid sampling parameter `{field}` = {value}: expected {expected}")]
    InvalidParam {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("invalid vocabulary size {n_vocab}: must be between 1 and 2^32 - 1")]
    InvalidVocab { n_vocab: usize },
    #[error("logits have {got} entries but the vocabulary has {expected}")]
    LogitsLength { expected: usize, got: usize },
    #[error("logit of token {token} is {logit}; the forward pass produced a non-finite value")]
    InvalidLogit { token: u32, logit: f32 },
    #[error("every token is masked (-inf) after logit bias and penalties")]
    AllMasked,
}

/// A configured sampler chain for one sequence. Reuses its buffers: after the first call,
/// sampling does not allocate.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    n_vocab: usize,
    /// The seed the RNG was last seeded with (resolved from `params.seed`).
    seed: u64,
    rng: Xoshiro256PlusPlus,
    penalties: Penalties,
    cands: Candidates,
}

impl Sampler {
    /// Validate `params` for a vocabulary of `n_vocab` tokens and build the chain.
    pub fn new(params: &SamplingParams, n_vocab: usize) -> Result<Self, SamplerError> {
        params.validate(n_vocab)?;
        let seed = params.seed.unwrap_or_else(random_seed);
        Ok(Self {
            params: params.clone(),
            n_vocab,
            seed,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            penalties: Penalties::new(
                params.penalty_last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            ),
            cands: Candidates::with_capacity(n_vocab),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The seed in use: `params.seed`, or the random one drawn when it was `None`.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Choose the next token from a full row of logits (`logits.len() == n_vocab`).
    ///
    /// Does not record the token: call [`Sampler::accept`] with the token actually appended to
    /// the sequence (as llama-server does), or use [`Sampler::sample_and_accept`].
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.len() != self.n_vocab {
            return Err(SamplerError::LogitsLength {
                expected: self.n_vocab,
                got: logits.len(),
            });
        }
        let cands = &mut self.cands;
        cands.fill(logits)?;
        // Both steps index by token id, so they run while the list is still in id order.
        for &(token, bias) in &self.params.logit_bias {
            // Ids were checked against n_vocab in `new`; `get_mut` keeps this panic-free anyway.
            if let Some(t) = cands.data.get_mut(token as usize) {
                t.logit += bias;
            }
        }
        self.penalties.apply(&mut cands.data);
        cands.drop_masked()?;

        let chosen = if self.params.is_greedy() {
            let best = cands.argmax();
            // Greedy reports just the chosen token (index 0 afterwards).
            cands.keep_only(best);
            0
        } else {
            // top_k <= 0 disables it; a negative value maps to 0 here.
            cands.top_k(usize::try_from(self.params.top_k).unwrap_or(0));
            cands.top_p(self.params.top_p, self.params.min_keep);
            cands.min_p(self.params.min_p, self.params.min_keep);
            cands.temperature(self.params.temperature);
            cands.dist(&mut self.rng)
        };
        // In range: `drop_masked` left at least one candidate and no processor removes the last.
        cands
            .data
            .get(chosen)
            .map(|t| t.id)
            .ok_or(SamplerError::AllMasked)
    }

    /// [`Sampler::sample`] followed by [`Sampler::accept`] of the chosen token.
    pub fn sample_and_accept(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        let token = self.sample(logits)?;
        self.accept(token);
        Ok(token)
    }

    /// Record a token appended to the sequence, for the penalties. Ids outside the vocabulary
    /// cannot be penalized and are ignored.
    pub fn accept(&mut self, token: u32) {
        if (token as usize) < self.n_vocab {
            self.penalties.accept(token);
        }
    }

    /// Feed the prompt into the penalty history, as llama-server does once the prompt is
    /// processed, so that penalties also discourage repeating the prompt.
    pub fn prime(&mut self, prompt_tokens: &[u32]) {
        for &token in prompt_tokens {
            self.accept(token);
        }
    }

    /// Forget the penalty history and reseed the RNG like llama.cpp's `dist` reset: a fixed seed
    /// restarts the same random stream, `seed: None` draws a fresh random seed.
    pub fn reset(&mut self) {
        self.penalties.reset();
        self.seed = self.params.seed.unwrap_or_else(random_seed);
        self.rng = Xoshiro256PlusPlus::seed_from_u64(self.seed);
    }

    /// The candidates that survived the last [`Sampler::sample`], with their final logits and
    /// probabilities (for `n_probs`-style reporting). Greedy leaves only the chosen token, with
    /// `p = 1`, as llama.cpp's temperature-0 chain does. Empty before the first sample; after an
    /// error its content is unspecified.
    pub fn last_candidates(&self) -> &[TokenData] {
        &self.cands.data
    }
}

/// A seed for `seed: None`. Not cryptographic, just different per call and per process: std's
/// `RandomState` keys come from the OS RNG, mixed with the clock and a counter. This avoids a
/// dependency on an OS-RNG crate for something that only needs to differ between requests.
fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests;
