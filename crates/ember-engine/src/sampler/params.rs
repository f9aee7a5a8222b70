//! Sampling parameters a request may set, with the defaults of llama.cpp's
//! `common_params_sampling` (common/common.h) and the validation `Sampler::new` runs on them.
//!
//! Field names follow llama-server's `/completion` request (`temperature`, `top_k`, `top_p`,
//! `min_p`, `repeat_penalty`, `repeat_last_n`, `presence_penalty`, `frequency_penalty`, `seed`,
//! `min_keep`, `logit_bias`) so a request body can be deserialized straight into this struct.

use serde::{Deserialize, Deserializer, Serialize};

use super::SamplerError;

/// Parameters of the sampler chain. Missing fields take llama.cpp's common defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Divides the logits before `dist`. `<= 0` selects greedy decoding (argmax), as in
    /// llama.cpp. Must be finite.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `<= 0` disables it (llama.cpp's convention, so the
    /// `-1` some clients send means "off" rather than an error).
    pub top_k: i32,
    /// Nucleus sampling: keep the smallest prefix whose cumulative probability reaches `top_p`.
    /// In `[0, 1]`; `1` disables it.
    pub top_p: f32,
    /// Keep tokens with `p >= min_p * p_max`. In `[0, 1]`; `0` disables it.
    pub min_p: f32,
    /// Lower bound on how many candidates top-p and min-p keep (at least one is always kept).
    pub min_keep: usize,
    /// Repetition penalty: positive logits of recent tokens are divided by it, negative ones
    /// multiplied. Must be finite and `> 0`; `1` disables it.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token present in the penalty window.
    /// Must be finite; `0` disables it.
    pub presence_penalty: f32,
    /// Subtracted `count` times from the logit of every token in the penalty window.
    /// Must be finite; `0` disables it.
    pub frequency_penalty: f32,
    /// How many of the most recent accepted tokens the penalties look at: `0` disables the
    /// penalties, `-1` means the whole history (llama.cpp's "context size": a sequence can never
    /// be longer than its context). Other negative values are rejected.
    #[serde(alias = "repeat_last_n")]
    pub penalty_last_n: i32,
    /// RNG seed for `dist`. `None` picks a random seed (reported by `Sampler::seed`). In JSON a
    /// negative number (llama-server sends `-1`) or `null` also means random.
    #[serde(deserialize_with = "deserialize_seed")]
    pub seed: Option<u64>,
    /// OpenAI-style `(token, bias)` pairs added to the logits before anything else. A bias of
    /// `-inf` bans the token. Token ids must be `< n_vocab`; biases must not be NaN or `+inf`.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    /// llama.cpp's `common_params_sampling` defaults.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            min_keep: 0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0): always the most likely token, lowest id on ties. Logit
    /// bias and penalties, if set afterwards, still apply.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether these parameters select greedy decoding (`temperature <= 0`).
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Check every field; the error names the first offending one.
    pub fn validate(&self, n_vocab: usize) -> Result<(), SamplerError> {
        if n_vocab == 0 || u32::try_from(n_vocab).is_err() {
            return Err(SamplerError::InvalidVocab { n_vocab });
        }
        check(
            "temperature",
            self.temperature,
            self.temperature.is_finite(),
            "a finite number (<= 0 means greedy)",
        )?;
        check(
            "top_p",
            self.top_p,
            (0.0..=1.0).contains(&self.top_p),
            "a number in [0, 1]",
        )?;
        check(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "a number in [0, 1]",
        )?;
        check(
            "repeat_penalty",
            self.repeat_penalty,
            self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0,
            "a finite number > 0 (1 disables it)",
        )?;
        check(
            "presence_penalty",
            self.presence_penalty,
            self.presence_penalty.is_finite(),
            "a finite number",
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            self.frequency_penalty.is_finite(),
            "a finite number",
        )?;
        check(
            "penalty_last_n",
            self.penalty_last_n,
            self.penalty_last_n >= -1,
            ">= -1 (0 disables, -1 means the whole history)",
        )?;
        for &(token, bias) in &self.logit_bias {
            if token as usize >= n_vocab {
                return Err(SamplerError::InvalidParam {
                    field: "logit_bias",
                    value: format!("token {token}"),
                    expected: "token ids below the vocabulary size",
                });
            }
            check(
                "logit_bias",
                bias,
                !bias.is_nan() && bias != f32::INFINITY,
                "a finite bias or -inf (ban)",
            )?;
        }
        Ok(())
    }
}

fn check(
    field: &'static str,
    value: impl std::fmt::Display,
    ok: bool,
    expected: &'static str,
) -> Result<(), SamplerError> {
    if ok {
        Ok(())
    } else {
        Err(SamplerError::InvalidParam {
            field,
            value: value.to_string(),
            expected,
        })
    }
}

/// Accepts `null`, an unsigned seed, or a negative number meaning "random" (llama-server's `-1`).
fn deserialize_seed<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seed {
        Fixed(u64),
        // Only reached for negative numbers (the others fit `Fixed`); the value is irrelevant.
        Negative(#[allow(dead_code)] i64),
    }
    Ok(match Option::<Seed>::deserialize(de)? {
        Some(Seed::Fixed(seed)) => Some(seed),
        Some(Seed::Negative(_)) | None => None,
    })
}
