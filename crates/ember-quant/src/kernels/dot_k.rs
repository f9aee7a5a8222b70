//! Scalar dot products of the K-quant super-blocks against Q8_K activations.
//!
//! Follows `ggml_vec_dot_{q2_K,q3_K,q4_K,q5_K,q6_K}_q8_K_generic` in `ggml/src/ggml-cpu/quants.c`
//! (ggml d99724f2). The float structure is what matters for equality and is kept exactly: Q2_K sums
//! `dall * isum - dmin * summs` per block; Q3_K..Q6_K keep eight float lanes (`sums[8]`, lane `l`
//! holding the integer sum of positions `l mod 8` of each block, scaled by that block's `d`) and add
//! them up only after the last block, Q4_K/Q5_K having subtracted every block's min term first.
//! The integer parts are exact, so they are computed in whatever order vectorizes best.

use super::fp16_le as f16_le;
use crate::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};
use crate::dequant_k::{get_scale_min_k4, unpack_q3_k_scales};

/// The activation's sixteen group sums.
#[inline]
fn bsums(a: &BlockQ8K) -> [i32; 16] {
    core::array::from_fn(|j| i32::from(i16::from_le_bytes(a.bsums[j])))
}

/// The per-lane integer sums `aux32[l] = sum_c scale(c) * q[8c + l] * y[8c + l]` over the 32 chunks
/// of 8 values, `scale(c) = scales[c / CHUNKS_PER_SCALE]`.
///
/// Exact integer arithmetic, so any order gives ggml's result. The products of one scale group are
/// first summed per lane in i16, which cannot overflow: at most 4 chunks of `|q| * |y| <= 31 * 128`
/// (Q5_K) or 2 chunks of `32 * 128` (Q6_K). i16 products vectorize far better than i32 ones on
/// baseline x86-64 (SSE2 has no 32-bit multiply).
#[inline]
fn lane_sums<const CHUNKS_PER_SCALE: usize>(
    q: &[i8; QK_K],
    y: &[i8; QK_K],
    scales: &[i16],
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    let groups = q
        .chunks_exact(8 * CHUNKS_PER_SCALE)
        .zip(y.chunks_exact(8 * CHUNKS_PER_SCALE));
    for ((q, y), &scale) in groups.zip(scales) {
        let mut p = [0i16; 8];
        for (q, y) in q.as_chunks::<8>().0.iter().zip(y.as_chunks::<8>().0) {
            for l in 0..8 {
                p[l] += i16::from(q[l]) * i16::from(y[l]);
            }
        }
        for l in 0..8 {
            aux32[l] += i32::from(p[l]) * i32::from(scale);
        }
    }
    aux32
}

/// `sums[l] += d * aux32[l]`.
#[inline]
fn add_lanes(sums: &mut [f32; 8], d: f32, aux32: &[i32; 8]) {
    for (s, &a) in sums.iter_mut().zip(aux32) {
        *s += d * a as f32;
    }
}

/// The final `for (l = 0; l < 8; ++l) sumf += sums[l]`.
#[inline]
fn reduce(mut sumf: f32, sums: &[f32; 8]) -> f32 {
    for &s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q2_K_q8_K_generic`.
pub(super) fn dot_q2_k(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let summs: i32 = bsums(a)
            .iter()
            .zip(&b.scales)
            .map(|(&s, &sc)| s * i32::from(sc >> 4))
            .sum();
        let dall = a.d() * f16_le(b.d);
        let dmin = a.d() * f16_le(b.dmin);
        // Group g (16 values of y) = 128-value half g / 8, shift 2 * ((g / 2) % 4), bytes
        // 16 * (g % 2) .. + 16 of that half's 32 bytes of qs.
        let mut isum = 0i32;
        for (g, (y, &sc)) in a.qs.as_chunks::<16>().0.iter().zip(&b.scales).enumerate() {
            let base = 32 * (g / 8) + 16 * (g % 2);
            let shift = 2 * ((g / 2) % 4);
            let q = &b.qs[base..base + 16];
            // 16 products of at most 128 * 3: the group sum fits an i16, which vectorizes better.
            let isuml: i16 = q
                .iter()
                .zip(y)
                .map(|(&q, &y)| i16::from(y) * i16::from((q >> shift) & 3))
                .sum();
            isum += i32::from(sc & 0x0f) * i32::from(isuml);
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_q3_K_q8_K_generic`.
pub(super) fn dot_q3_k(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (b, a) in w.iter().zip(x) {
        // aux8: value 128h + 32s + l = ((qs[32h + l] >> 2s) & 3) - (hmask[l] has bit 4h + s ? 0 : 4).
        let mut q = [0i8; QK_K];
        for (h, (out, qs)) in q
            .chunks_exact_mut(128)
            .zip(b.qs.chunks_exact(32))
            .enumerate()
        {
            for (s, out) in out.chunks_exact_mut(32).enumerate() {
                let m = 1u8 << (4 * h + s);
                for ((o, &ql), &hm) in out.iter_mut().zip(qs).zip(&b.hmask) {
                    let low = ((ql >> (2 * s)) & 3) as i8;
                    *o = low - if hm & m != 0 { 0 } else { 4 };
                }
            }
        }
        let scales = unpack_q3_k_scales(&b.scales).map(|s| i16::from(s as i8) - 32);
        let aux32 = lane_sums::<2>(&q, &a.qs, &scales);
        add_lanes(&mut sums, f16_le(b.d) * a.d(), &aux32);
    }
    reduce(0.0, &sums)
}

/// The 6-bit scales and mins of a Q4_K/Q5_K block.
#[inline]
fn scales_mins_k4(packed: &[u8; 12]) -> ([i16; 8], [i32; 8]) {
    let mut scales = [0i16; 8];
    let mut mins = [0i32; 8];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, packed);
        scales[j] = i16::from(s);
        mins[j] = i32::from(m);
    }
    (scales, mins)
}

/// `sum_j bsums[j] * mins[j / 2]`: the min term of Q4_K/Q5_K.
#[inline]
fn min_sum(a: &BlockQ8K, mins: &[i32; 8]) -> i32 {
    bsums(a)
        .iter()
        .enumerate()
        .map(|(j, &s)| s * mins[j / 2])
        .sum()
}

/// `ggml_vec_dot_q4_K_q8_K_generic`.
pub(super) fn dot_q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        // aux8: each 32 bytes of qs give 32 low nibbles then 32 high nibbles.
        let mut q = [0i8; QK_K];
        for (out, qs) in q.chunks_exact_mut(64).zip(b.qs.chunks_exact(32)) {
            let (lo, hi) = out.split_at_mut(32);
            for ((l, h), &v) in lo.iter_mut().zip(hi).zip(qs) {
                *l = (v & 0x0f) as i8;
                *h = (v >> 4) as i8;
            }
        }
        let (scales, mins) = scales_mins_k4(&b.scales);
        let sumi = min_sum(a, &mins);
        let aux32 = lane_sums::<4>(&q, &a.qs, &scales);
        add_lanes(&mut sums, f16_le(b.d) * a.d(), &aux32);
        let dmin = f16_le(b.dmin) * a.d();
        sumf -= dmin * sumi as f32;
    }
    reduce(sumf, &sums)
}

/// `ggml_vec_dot_q5_K_q8_K_generic`.
pub(super) fn dot_q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        // As Q4_K, plus 16 where qh has bit 2j (low nibbles of chunk j) or 2j + 1 (high nibbles).
        let mut q = [0i8; QK_K];
        for (j, (out, qs)) in q
            .chunks_exact_mut(64)
            .zip(b.qs.chunks_exact(32))
            .enumerate()
        {
            let (m1, m2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let (lo, hi) = out.split_at_mut(32);
            for (((l, h), &v), &qh) in lo.iter_mut().zip(hi).zip(qs).zip(&b.qh) {
                *l = ((v & 0x0f) + if qh & m1 != 0 { 16 } else { 0 }) as i8;
                *h = ((v >> 4) + if qh & m2 != 0 { 16 } else { 0 }) as i8;
            }
        }
        let (scales, mins) = scales_mins_k4(&b.scales);
        let sumi = min_sum(a, &mins);
        let aux32 = lane_sums::<4>(&q, &a.qs, &scales);
        add_lanes(&mut sums, f16_le(b.d) * a.d(), &aux32);
        let dmin = f16_le(b.dmin) * a.d();
        sumf -= dmin * sumi as f32;
    }
    reduce(sumf, &sums)
}

/// `ggml_vec_dot_q6_K_q8_K_generic`.
pub(super) fn dot_q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (b, a) in w.iter().zip(x) {
        // aux8, per 128-value half: ql bytes 0..32 and 32..64 give low nibbles (values 0..64) then
        // high nibbles (64..128); qh byte l gives the top two bits of values l, l+32, l+64, l+96.
        let mut q = [0i8; QK_K];
        let halves = q
            .chunks_exact_mut(128)
            .zip(b.ql.chunks_exact(64))
            .zip(b.qh.chunks_exact(32));
        for ((out, ql), qh) in halves {
            for l in 0..32 {
                let h = qh[l];
                out[l] = ((ql[l] & 0x0f) | ((h & 3) << 4)) as i8 - 32;
                out[l + 32] = ((ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
                out[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                out[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let scales = b.scales.map(i16::from);
        let aux32 = lane_sums::<2>(&q, &a.qs, &scales);
        add_lanes(&mut sums, f16_le(b.d) * a.d(), &aux32);
    }
    reduce(0.0, &sums)
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    fn q8k(d: f32, qs: [i8; QK_K]) -> BlockQ8K {
        let mut bsums = [[0u8; 2]; 16];
        for (s, g) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            *s = (g.iter().map(|&q| i16::from(q)).sum::<i16>()).to_le_bytes();
        }
        BlockQ8K {
            d: d.to_le_bytes(),
            qs,
            bsums,
        }
    }

    #[test]
    fn q2_k_hand_computed() {
        // Every 2-bit value 1, every scale 2 and min 1: dot = sum_y (d * 2 * 1 - dmin * 1) * y.
        let w = BlockQ2K {
            scales: [0x12; 16],
            qs: [0x55; 64],
            d: h(0.5),
            dmin: h(0.25),
        };
        let a = q8k(2.0, [1; QK_K]);
        let expect = 2.0 * 0.5 * 2.0 * 256.0 - 2.0 * 0.25 * 256.0;
        assert_eq!(dot_q2_k(&[w], &[a]), expect);
    }

    #[test]
    fn q6_k_single_value() {
        // All values 0 - 32 except where ql/qh say otherwise; y is one-hot at position 64.
        let mut ql = [0u8; 128];
        ql[0] = 0x50; // value 64: high nibble 5
        let mut qh = [0u8; 64];
        qh[0] = 0b0011_0000; // value 64: top bits 3 -> 5 | 48 = 53
        let w = BlockQ6K {
            ql,
            qh,
            scales: [-3; 16],
            d: h(0.5),
        };
        let mut y = [0i8; QK_K];
        y[64] = 7;
        let a = q8k(0.25, y);
        assert_eq!(
            dot_q6_k(&[w], &[a]),
            0.5 * 0.25 * (-3.0 * (53.0 - 32.0) * 7.0)
        );
    }

    #[test]
    fn lane_sums_layout() {
        let mut q = [0i8; QK_K];
        let mut y = [0i8; QK_K];
        q[8 * 5 + 3] = 2; // chunk 5, lane 3
        y[8 * 5 + 3] = -4;
        let scales: [i16; 16] = core::array::from_fn(|i| i as i16 + 1);
        assert_eq!(lane_sums::<2>(&q, &y, &scales)[3], 3 * 2 * -4);
        assert_eq!(lane_sums::<4>(&q, &y, &scales[..8])[3], 2 * 2 * -4);
    }
}
