//! The candidate list and the processors of the chain (top-k, top-p, min-p, temperature, dist,
//! greedy), following the samplers of the same names in llama.cpp's src/llama-sampling.cpp.
//!
//! Differences from llama.cpp, all deliberate:
//! - the sort order is total (logit descending, then token id ascending), so ties never depend on
//!   an unstable sort and results are reproducible across platforms;
//! - candidates with a `-inf` logit are dropped before the processors run, so a banned token can
//!   never be drawn and `dist` never sees an all-zero distribution;
//! - partial sorts use `select_nth_unstable` instead of llama.cpp's bucket sort (same kept set
//!   whenever logits are distinct, no scratch buffer).

use std::cmp::Ordering;

use rand::Rng;

use super::{SamplerError, TokenData};

/// Below this many candidates top-p simply sorts everything (llama.cpp uses the same cut-off).
const TOP_P_FULL_SORT_MAX: usize = 1024;
/// How many candidates top-p sorts first on a large unsorted list, hoping the nucleus is inside.
const TOP_P_FIRST_PASS: usize = 256;

/// Descending by logit, ascending by id on ties: a total order, so every sort is deterministic.
fn by_logit_desc(a: &TokenData, b: &TokenData) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// The working set of one sampling step. The buffer is reused across steps so sampling does not
/// allocate once it has reached vocabulary size.
#[derive(Debug, Clone, Default)]
pub(crate) struct Candidates {
    pub(crate) data: Vec<TokenData>,
    /// `data` is sorted by [`by_logit_desc`]; lets later processors skip their own sort.
    sorted: bool,
}

impl Candidates {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            data: Vec::with_capacity(n),
            sorted: false,
        }
    }

    /// Load one logit per token id, in id order. NaN and `+inf` are rejected: they come from a
    /// broken forward pass and any token chosen from them would be arbitrary.
    pub(crate) fn fill(&mut self, logits: &[f32]) -> Result<(), SamplerError> {
        self.data.clear();
        self.sorted = false;
        // Validate first in a separate, branch-light pass; the copy below then vectorizes.
        if let Some(id) = logits
            .iter()
            .position(|&l| l.is_nan() || l == f32::INFINITY)
        {
            let logit = logits.get(id).copied().unwrap_or(f32::NAN);
            return Err(SamplerError::InvalidLogit {
                token: u32::try_from(id).unwrap_or(u32::MAX),
                logit,
            });
        }
        self.data.extend(
            (0u32..)
                .zip(logits)
                .map(|(id, &logit)| TokenData { id, logit, p: 0.0 }),
        );
        Ok(())
    }

    /// Drop banned (`-inf`) candidates and clamp overflowed `+inf` ones (a large bias or a tiny
    /// repeat penalty can overflow) to `f32::MAX` so softmax stays finite.
    pub(crate) fn drop_masked(&mut self) -> Result<(), SamplerError> {
        self.data.retain_mut(|t| {
            if t.logit == f32::INFINITY {
                t.logit = f32::MAX;
            }
            t.logit != f32::NEG_INFINITY
        });
        if self.data.is_empty() {
            return Err(SamplerError::AllMasked);
        }
        Ok(())
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.data.sort_unstable_by(by_logit_desc);
            self.sorted = true;
        }
    }

    /// Fill `p` with the softmax of the logits (the order is left alone).
    fn softmax(&mut self) {
        let max = self
            .data
            .iter()
            .map(|t| t.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for t in &mut self.data {
            t.p = (t.logit - max).exp();
            sum += t.p;
        }
        // sum >= 1 because the max element contributes exp(0); no division by zero.
        for t in &mut self.data {
            t.p /= sum;
        }
    }

    /// Keep the `k` highest logits, sorted. `k == 0` disables it.
    pub(crate) fn top_k(&mut self, k: usize) {
        if k == 0 || k >= self.data.len() {
            return;
        }
        if !self.sorted {
            self.data.select_nth_unstable_by(k - 1, by_logit_desc);
            self.data.truncate(k);
            self.data.sort_unstable_by(by_logit_desc);
            self.sorted = true;
        } else {
            self.data.truncate(k);
        }
    }

    /// Keep the smallest prefix (by probability) whose cumulative probability reaches `p`, and at
    /// least `min_keep` (>= 1) tokens. Leaves the list sorted.
    pub(crate) fn top_p(&mut self, p: f32, min_keep: usize) {
        if p >= 1.0 || self.data.len() <= 1 {
            return;
        }
        self.softmax();
        let min_keep = min_keep.max(1);
        // A nucleus is usually a handful of tokens: on a large unsorted list sort only a first
        // block, and fall back to sorting the rest if the nucleus turns out to be bigger.
        let mut sorted_len = self.data.len();
        if !self.sorted && self.data.len() > TOP_P_FULL_SORT_MAX {
            sorted_len = TOP_P_FIRST_PASS;
            self.data
                .select_nth_unstable_by(sorted_len - 1, by_logit_desc);
            self.data[..sorted_len].sort_unstable_by(by_logit_desc);
        } else {
            self.sort();
        }
        let mut cum = 0.0f32;
        let mut keep = self.data.len();
        let mut i = 0;
        while i < self.data.len() {
            if i == sorted_len {
                // Every element of the tail is <= every element of the head (select_nth), so
                // sorting the tail alone completes a full sort.
                self.data[sorted_len..].sort_unstable_by(by_logit_desc);
                sorted_len = self.data.len();
            }
            cum += self.data[i].p;
            if cum >= p && i + 1 >= min_keep {
                keep = i + 1;
                break;
            }
            i += 1;
        }
        // `keep <= sorted_len` here: the loop sorts the tail before reading any of it.
        self.data.truncate(keep);
        self.sorted = true;
    }

    /// Keep tokens with `p >= min_p * p_max`, i.e. `logit >= max_logit + ln(min_p)`, and at least
    /// `min_keep` (>= 1) tokens. `min_p <= 0` disables it.
    pub(crate) fn min_p(&mut self, min_p: f32, min_keep: usize) {
        if min_p <= 0.0 || self.data.is_empty() {
            return;
        }
        let min_keep = min_keep.max(1);
        let max = if self.sorted {
            self.data[0].logit
        } else {
            self.data
                .iter()
                .map(|t| t.logit)
                .fold(f32::NEG_INFINITY, f32::max)
        };
        let threshold = max + min_p.ln();
        let passing = self.data.iter().filter(|t| t.logit >= threshold).count();
        if passing >= min_keep {
            // Order-preserving filter: no sort needed, and a sorted list stays sorted.
            self.data.retain(|t| t.logit >= threshold);
            return;
        }
        // Too few pass: take the `min_keep` best instead, which needs them sorted.
        self.sort();
        self.data.truncate(min_keep);
    }

    /// Divide the logits by `temp` (> 0). Order is preserved.
    pub(crate) fn temperature(&mut self, temp: f32) {
        if temp == 1.0 {
            return;
        }
        for t in &mut self.data {
            // A tiny temperature can overflow; clamp so softmax stays finite and the max still
            // wins.
            t.logit = (t.logit / temp).clamp(-f32::MAX, f32::MAX);
        }
    }

    /// Draw one candidate from the softmax of the logits; fills `p` (normalized) for all.
    /// Returns the index of the chosen candidate. The list must be non-empty.
    pub(crate) fn dist(&mut self, rng: &mut impl Rng) -> usize {
        let max = self
            .data
            .iter()
            .map(|t| t.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        // Like llama.cpp: unnormalized weights in f32, the sum and the running sum in f64.
        let mut sum = 0.0f64;
        for t in &mut self.data {
            t.p = (t.logit - max).exp();
            sum += f64::from(t.p);
        }
        let target = sum * uniform_f64(rng);
        let mut run = 0.0f64;
        let mut chosen = None;
        for (i, t) in self.data.iter().enumerate() {
            run += f64::from(t.p);
            // Strictly greater: a zero-weight candidate can never be chosen, even for a draw of 0.
            if run > target {
                chosen = Some(i);
                break;
            }
        }
        // Rounding can leave `target == sum`; then take the last candidate with any weight.
        let chosen = chosen
            .or_else(|| self.data.iter().rposition(|t| t.p > 0.0))
            .unwrap_or(0);
        let inv = (1.0 / sum) as f32;
        for t in &mut self.data {
            t.p *= inv;
        }
        chosen
    }

    /// Index of the highest logit, lowest token id on ties. The list must be non-empty.
    pub(crate) fn argmax(&self) -> usize {
        let mut best = 0;
        let mut best_logit = f32::NEG_INFINITY;
        let mut best_id = u32::MAX;
        for (i, t) in self.data.iter().enumerate() {
            // No NaN can be present (`fill` rejects them), so `>` is a total order here.
            if t.logit > best_logit || (t.logit == best_logit && t.id < best_id) {
                best = i;
                best_logit = t.logit;
                best_id = t.id;
            }
        }
        best
    }

    /// Reduce the list to the chosen candidate with probability 1 (what greedy reports).
    pub(crate) fn keep_only(&mut self, index: usize) {
        if index < self.data.len() {
            self.data.swap(0, index);
            self.data.truncate(1);
        }
        if let Some(t) = self.data.first_mut() {
            t.p = 1.0;
        }
        self.sorted = self.data.len() <= 1;
    }
}

/// Uniform in [0, 1) with 53 random bits, computed here rather than through `rand`'s
/// distributions so a seed keeps producing the same tokens across `rand` upgrades (the generator
/// itself, Xoshiro256++, has a fixed output).
fn uniform_f64(rng: &mut impl Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

#[cfg(test)]
mod tests;
