//! Repetition / frequency / presence penalties over a window of recently accepted tokens,
//! following the `penalties` sampler of llama.cpp's src/llama-sampling.cpp.
//!
//! The window is a ring buffer of the last `penalty_last_n` accepted tokens plus a count per
//! distinct token, kept up to date on every accept so that applying the penalties costs
//! O(distinct tokens in the window), not O(window) or O(vocab).

use std::collections::{HashMap, VecDeque};

use super::TokenData;

/// Don't reserve more than this up front: `penalty_last_n` comes from requests and may be huge
/// (or unbounded); the buffers grow on demand past it.
const MAX_PREALLOC: usize = 4096;

#[derive(Debug, Clone)]
pub(crate) struct Penalties {
    /// `None`: unbounded window (`penalty_last_n == -1`); `Some(0)`: penalties disabled.
    last_n: Option<usize>,
    repeat: f32,
    frequency: f32,
    presence: f32,
    window: VecDeque<u32>,
    counts: HashMap<u32, u32>,
}

impl Penalties {
    /// `penalty_last_n` must already be validated (`>= -1`).
    pub(crate) fn new(penalty_last_n: i32, repeat: f32, frequency: f32, presence: f32) -> Self {
        let last_n = usize::try_from(penalty_last_n).ok();
        let prealloc = last_n.unwrap_or(MAX_PREALLOC).min(MAX_PREALLOC);
        Self {
            last_n,
            repeat,
            frequency,
            presence,
            window: VecDeque::with_capacity(prealloc),
            counts: HashMap::with_capacity(prealloc),
        }
    }

    /// Record an accepted token. With a zero window nothing is kept (llama.cpp does the same).
    pub(crate) fn accept(&mut self, token: u32) {
        if self.last_n == Some(0) {
            return;
        }
        if let Some(last_n) = self.last_n
            && self.window.len() >= last_n
            && let Some(old) = self.window.pop_front()
        {
            // The oldest token leaves the window: drop its count, and the entry once it is zero so
            // that `apply` only visits tokens actually present.
            if let Some(count) = self.counts.get_mut(&old) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&old);
                }
            }
        }
        self.window.push_back(token);
        *self.counts.entry(token).or_insert(0) += 1;
    }

    /// Whether `apply` would change anything for some history.
    fn is_active(&self) -> bool {
        self.last_n != Some(0)
            && (self.repeat != 1.0 || self.frequency != 0.0 || self.presence != 0.0)
    }

    /// Penalize the tokens in the window. `cands` must still be in token-id order (one entry per
    /// vocabulary id, `cands[id].id == id`), which holds because penalties run before any
    /// truncation or sort.
    pub(crate) fn apply(&self, cands: &mut [TokenData]) {
        if !self.is_active() {
            return;
        }
        // Each token's adjustment is independent of the others, so the map's iteration order
        // does not affect the result.
        for (&token, &count) in &self.counts {
            let Some(cand) = cands.get_mut(token as usize) else {
                continue;
            };
            debug_assert_eq!(cand.id, token);
            // Dividing a negative logit would make the token *more* likely, hence llama.cpp's
            // (and CTRL's common fix) multiply-for-negative rule.
            if cand.logit <= 0.0 {
                cand.logit *= self.repeat;
            } else {
                cand.logit /= self.repeat;
            }
            cand.logit -= count as f32 * self.frequency + self.presence;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.window.clear();
        self.counts.clear();
    }

    /// Occurrences of `token` in the current window (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn count(&self, token: u32) -> u32 {
        self.counts.get(&token).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<TokenData> {
        logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| TokenData {
                id: id as u32,
                logit,
                p: 0.0,
            })
            .collect()
    }

    fn logits(c: &[TokenData]) -> Vec<f32> {
        c.iter().map(|t| t.logit).collect()
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative() {
        let mut pen = Penalties::new(64, 2.0, 0.0, 0.0);
        pen.accept(0);
        pen.accept(1);
        pen.accept(1);
        let mut c = cands(&[4.0, -4.0, 3.0, 0.0]);
        pen.apply(&mut c);
        // Repeat penalty ignores the count: once present, the factor applies once.
        assert_eq!(logits(&c), vec![2.0, -8.0, 3.0, 0.0]);
    }

    #[test]
    fn frequency_and_presence_subtract() {
        let mut pen = Penalties::new(64, 1.0, 0.5, 1.0);
        for t in [2, 2, 2, 0] {
            pen.accept(t);
        }
        let mut c = cands(&[1.0, 1.0, 1.0]);
        pen.apply(&mut c);
        // token 0: 1 - (1*0.5 + 1); token 2: 1 - (3*0.5 + 1); token 1 untouched.
        assert_eq!(logits(&c), vec![-0.5, 1.0, -1.5]);
    }

    #[test]
    fn window_evicts_oldest() {
        let mut pen = Penalties::new(2, 1.0, 1.0, 0.0);
        for t in [0, 1, 1, 2] {
            pen.accept(t);
        }
        // Window is now [1, 2]: token 0 left, one of the two 1s left.
        assert_eq!(pen.count(0), 0);
        assert_eq!(pen.count(1), 1);
        assert_eq!(pen.count(2), 1);
        let mut c = cands(&[0.0, 0.0, 0.0]);
        pen.apply(&mut c);
        assert_eq!(logits(&c), vec![0.0, -1.0, -1.0]);
    }

    #[test]
    fn unbounded_window_keeps_everything() {
        let mut pen = Penalties::new(-1, 1.0, 1.0, 0.0);
        for _ in 0..10_000 {
            pen.accept(3);
        }
        assert_eq!(pen.count(3), 10_000);
    }

    #[test]
    fn zero_window_or_neutral_params_do_nothing() {
        let mut off = Penalties::new(0, 2.0, 1.0, 1.0);
        off.accept(0);
        assert_eq!(off.count(0), 0);
        let mut c = cands(&[1.0]);
        off.apply(&mut c);
        assert_eq!(logits(&c), vec![1.0]);

        let mut neutral = Penalties::new(64, 1.0, 0.0, 0.0);
        neutral.accept(0);
        neutral.apply(&mut c);
        assert_eq!(logits(&c), vec![1.0]);
    }

    #[test]
    fn out_of_vocab_history_is_ignored_and_reset_clears() {
        let mut pen = Penalties::new(8, 1.0, 1.0, 0.0);
        pen.accept(1000);
        pen.accept(0);
        let mut c = cands(&[0.0, 0.0]);
        pen.apply(&mut c);
        assert_eq!(logits(&c), vec![-1.0, 0.0]);
        pen.reset();
        assert_eq!(pen.count(0), 0);
    }
}
