//! Unit tests of the individual processors on hand-made distributions.

use std::convert::Infallible;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{SeedableRng, TryRng};

use super::*;

fn cands(logits: &[f32]) -> Candidates {
    let mut c = Candidates::with_capacity(logits.len());
    assert_eq!(c.fill(logits), Ok(()));
    c
}

fn from_probs(probs: &[f32]) -> Candidates {
    cands(&probs.iter().map(|p| p.ln()).collect::<Vec<_>>())
}

fn ids(c: &Candidates) -> Vec<u32> {
    c.data.iter().map(|t| t.id).collect()
}

/// An RNG whose `next_u64` always returns the same value, to pin the uniform draw.
struct FixedRng(u64);

impl TryRng for FixedRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0 >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.fill(0);
        Ok(())
    }
}

/// Deterministic pseudo-random logits for the large-vocabulary paths.
fn lcg_logits(n: usize, scale: f32, mut state: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// Straightforward top-p: full sort, softmax, cut.
fn reference_top_p(logits: &[f32], p: f32) -> Vec<u32> {
    let mut c = cands(logits);
    c.softmax();
    c.sort();
    let mut cum = 0.0f32;
    let mut out = Vec::new();
    for t in &c.data {
        cum += t.p;
        out.push(t.id);
        if cum >= p {
            break;
        }
    }
    out
}

#[test]
fn fill_rejects_nan_and_pos_inf() {
    let mut c = Candidates::default();
    // (NaN != NaN, so match on the token instead of comparing the error.)
    assert!(matches!(
        c.fill(&[0.0, f32::NAN]),
        Err(SamplerError::InvalidLogit { token: 1, .. })
    ));
    assert!(matches!(
        c.fill(&[f32::INFINITY]),
        Err(SamplerError::InvalidLogit { token: 0, .. })
    ));
    assert_eq!(c.fill(&[f32::NEG_INFINITY, 1.0]), Ok(()));
}

#[test]
fn drop_masked_removes_neg_inf_and_errors_when_empty() {
    let mut c = cands(&[f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY]);
    assert_eq!(c.drop_masked(), Ok(()));
    assert_eq!(ids(&c), vec![1]);

    let mut all = cands(&[f32::NEG_INFINITY; 3]);
    assert_eq!(all.drop_masked(), Err(SamplerError::AllMasked));

    // Overflow from bias is clamped, not turned into NaN by softmax later.
    let mut c = cands(&[f32::MAX, 0.0]);
    c.data[0].logit += f32::MAX;
    assert_eq!(c.drop_masked(), Ok(()));
    assert_eq!(c.data[0].logit, f32::MAX);
}

#[test]
fn argmax_lowest_id_wins_ties() {
    let c = cands(&[1.0, 3.0, 2.0, 3.0]);
    assert_eq!(c.data[c.argmax()].id, 1);
    // Independent of the current order.
    let mut c = cands(&[1.0, 3.0, 2.0, 3.0]);
    c.data.reverse();
    assert_eq!(c.data[c.argmax()].id, 1);
}

#[test]
fn top_k_keeps_k_best_sorted() {
    let mut c = cands(&[0.1, 5.0, -2.0, 3.0, 5.0, 4.0]);
    c.top_k(3);
    // Tie at 5.0 resolved by id.
    assert_eq!(ids(&c), vec![1, 4, 5]);
    assert!(c.sorted);

    let mut c = cands(&[0.1, 5.0, -2.0]);
    c.top_k(0);
    assert_eq!(ids(&c), vec![0, 1, 2]);
    c.top_k(10);
    assert_eq!(ids(&c), vec![0, 1, 2]);
}

#[test]
fn top_p_cut_is_exact() {
    let probs = [0.15, 0.5, 0.05, 0.3];
    for (p, want) in [
        (0.49, vec![1]),
        (0.79, vec![1, 3]),
        (0.81, vec![1, 3, 0]),
        (0.96, vec![1, 3, 0, 2]),
        (0.0, vec![1]),
    ] {
        let mut c = from_probs(&probs);
        c.top_p(p, 0);
        assert_eq!(ids(&c), want, "top_p = {p}");
    }
    // min_keep wins over a small p.
    let mut c = from_probs(&probs);
    c.top_p(0.1, 3);
    assert_eq!(ids(&c), vec![1, 3, 0]);
    // p = 1 disables it (order untouched, nothing removed).
    let mut c = from_probs(&probs);
    c.top_p(1.0, 0);
    assert_eq!(ids(&c), vec![0, 1, 2, 3]);
}

#[test]
fn top_p_large_vocab_matches_full_sort() {
    // Peaked: the nucleus fits in the first partial-sort pass.
    let peaked = lcg_logits(5000, 400.0, 1);
    // Flat: the nucleus is thousands of tokens, forcing the fallback full sort.
    let flat = lcg_logits(5000, 0.5, 2);
    for (logits, p) in [(&peaked, 0.9), (&flat, 0.9), (&flat, 0.3)] {
        let mut c = cands(logits);
        c.top_p(p, 0);
        let want = reference_top_p(logits, p);
        assert_eq!(ids(&c), want, "p = {p}");
    }
    assert!(reference_top_p(&flat, 0.9).len() > TOP_P_FIRST_PASS);
    assert!(reference_top_p(&peaked, 0.9).len() < TOP_P_FIRST_PASS);
}

#[test]
fn min_p_keeps_relative_to_max() {
    // p_max = 0.5, min_p = 0.2 → threshold 0.1: keeps 0.5, 0.3, 0.15; drops 0.05.
    let mut c = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    c.min_p(0.2, 0);
    // Unsorted path filters in place, preserving order.
    assert_eq!(ids(&c), vec![0, 1, 3]);

    // Same on a sorted list.
    let mut c = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    c.sort();
    c.min_p(0.2, 0);
    assert_eq!(ids(&c), vec![1, 3, 0]);

    // min_keep forces the best min_keep tokens even below the threshold.
    let mut c = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    c.min_p(0.9, 2);
    assert_eq!(ids(&c), vec![1, 3]);

    // 0 disables it.
    let mut c = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    c.min_p(0.0, 0);
    assert_eq!(c.data.len(), 4);
}

#[test]
fn temperature_divides_and_clamps() {
    let mut c = cands(&[2.0, -1.0, 0.0]);
    c.temperature(0.5);
    assert_eq!(
        c.data.iter().map(|t| t.logit).collect::<Vec<_>>(),
        [4.0, -2.0, 0.0]
    );
    let mut c = cands(&[1e30, -1e30]);
    c.temperature(1e-30);
    assert_eq!(c.data[0].logit, f32::MAX);
    assert_eq!(c.data[1].logit, -f32::MAX);
}

#[test]
fn dist_normalizes_and_respects_the_draw() {
    let probs = [0.2, 0.5, 0.3];
    // A draw of 0 picks the first candidate.
    let mut c = from_probs(&probs);
    assert_eq!(c.dist(&mut FixedRng(0)), 0);
    let sum: f32 = c.data.iter().map(|t| t.p).sum();
    assert!((sum - 1.0).abs() < 1e-6);
    // Draw ≈ 0.6 falls in the second bucket [0.2, 0.7).
    let mut c = from_probs(&probs);
    let draw = ((0.6 * (1u64 << 53) as f64) as u64) << 11;
    assert_eq!(c.dist(&mut FixedRng(draw)), 1);
    // The largest draw picks the last.
    let mut c = from_probs(&probs);
    assert_eq!(c.dist(&mut FixedRng(u64::MAX)), 2);
}

#[test]
fn dist_never_picks_zero_weight() {
    // exp(-200) underflows to 0 in f32: that candidate must never be drawn, even for a 0 draw.
    let mut c = cands(&[-200.0, 0.0]);
    assert_eq!(c.dist(&mut FixedRng(0)), 1);
    let mut c = cands(&[0.0, -200.0]);
    assert_eq!(c.dist(&mut FixedRng(u64::MAX)), 0);
}

#[test]
fn dist_frequencies_match_probabilities() {
    let probs = [0.2f32, 0.5, 0.3];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1234);
    let mut counts = [0usize; 3];
    let n = 10_000;
    for _ in 0..n {
        let mut c = from_probs(&probs);
        let chosen = c.dist(&mut rng);
        counts[c.data[chosen].id as usize] += 1;
    }
    for (count, p) in counts.iter().zip(probs) {
        let freq = *count as f32 / n as f32;
        // Standard deviation is <= 0.005 at n = 10k; 0.02 is four of them.
        assert!((freq - p).abs() < 0.02, "freq {freq} vs p {p}: {counts:?}");
    }
}
