//! Scalar dot products of the 32-value block types and the plain float types against their
//! activation types.
//!
//! Follows `ggml_vec_dot_{q4_0_q8_0,q4_1_q8_1,q5_0_q8_0,q5_1_q8_1,q8_0_q8_0}_generic` in
//! `ggml/src/ggml-cpu/quants.c` and the scalar (`!GGML_SIMD`) branches of `ggml_vec_dot_f32`,
//! `ggml_vec_dot_f16` and `ggml_vec_dot_bf16` in `ggml/src/ggml-cpu/vec.cpp` (ggml d99724f2).
//! Integer sums are exact, so only the float operations must keep ggml's order; they do, and Rust
//! never contracts `a * b + c` into an FMA, so results equal ggml's generic C built without FP
//! contraction bit for bit. ggml's SIMD builds sum in a different order and differ in the last bits.

use super::fp16_le as f16_le;
use crate::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, bf16_le};

/// Blocks per pass of [`blocks_dot`].
const CHUNK: usize = 32;

/// The shape of every `*_generic` dot here: per block an exact integer sum (`int`), then one float
/// accumulation step (`step(sumf, sumi, w, x)`) in block order. Doing the integer parts of a chunk of
/// blocks first, in their own loop, lets LLVM vectorize them; the float steps keep ggml's order.
#[inline(always)]
fn blocks_dot<W, A>(
    w: &[W],
    x: &[A],
    int: impl Fn(&W, &A) -> i32,
    step: impl Fn(f32, i32, &W, &A) -> f32,
) -> f32 {
    let mut sumf = 0.0f32;
    for (w, x) in w.chunks(CHUNK).zip(x.chunks(CHUNK)) {
        let mut sumi = [0i32; CHUNK];
        for ((s, b), a) in sumi.iter_mut().zip(w).zip(x) {
            *s = int(b, a);
        }
        for ((&s, b), a) in sumi.iter().zip(w).zip(x) {
            sumf = step(sumf, s, b, a);
        }
    }
    sumf
}

/// `sum_j (lo_j - offset) * y_j + (hi_j - offset) * y_{j+16}` for the 16 bytes of a 4-bit block.
#[inline(always)]
fn nibble_dot(qs: &[u8; 16], offset: i32, y: &[i8; 32]) -> i32 {
    let (lo, hi) = y.split_at(16);
    let mut sumi = 0i32;
    for ((&q, &y0), &y1) in qs.iter().zip(lo).zip(hi) {
        let v0 = i32::from(q & 0x0f) - offset;
        let v1 = i32::from(q >> 4) - offset;
        sumi += v0 * i32::from(y0) + v1 * i32::from(y1);
    }
    sumi
}

/// `ggml_vec_dot_q4_0_q8_0_generic`.
pub(super) fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    blocks_dot(
        w,
        x,
        |b, a| nibble_dot(&b.qs, 8, &a.qs),
        // `sumi*d_x*d_y`: left to right.
        |sumf, sumi, b, a| sumf + sumi as f32 * f16_le(b.d) * f16_le(a.d),
    )
}

/// `ggml_vec_dot_q4_1_q8_1_generic`: the min term uses the activation's `s = d * sum(q)`.
pub(super) fn dot_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    blocks_dot(
        w,
        x,
        |b, a| nibble_dot(&b.qs, 0, &a.qs),
        |sumf, sumi, b, a| {
            sumf + ((f16_le(b.d) * f16_le(a.d)) * sumi as f32 + f16_le(b.m) * f16_le(a.s))
        },
    )
}

/// The 5-bit values of a Q5 block minus `offset` (16 for Q5_0, 0 for Q5_1): low nibbles from `qs`,
/// fifth bits from `qh` (bit `j` for value `j`, bit `j + 16` for value `j + 16`).
#[inline(always)]
fn q5_values(qs: &[u8; 16], qh: [u8; 4], offset: i8) -> [i8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut v = [0i8; 32];
    // Tests against constant masks rather than `qh >> j`: baseline x86-64 has no per-lane shifts.
    for (j, &q) in qs.iter().enumerate() {
        let h0 = if qh & (1 << j) != 0 { 0x10 } else { 0 };
        let h1 = if qh & (1 << (j + 16)) != 0 { 0x10 } else { 0 };
        v[j] = ((q & 0x0f) | h0) as i8 - offset;
        v[j + 16] = ((q >> 4) | h1) as i8 - offset;
    }
    v
}

/// `sum_i w_i * y_i` over one block.
#[inline(always)]
fn dot32(w: &[i8; 32], y: &[i8; 32]) -> i32 {
    w.iter()
        .zip(y)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

/// `ggml_vec_dot_q5_0_q8_0_generic`.
pub(super) fn dot_q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    blocks_dot(
        w,
        x,
        |b, a| dot32(&q5_values(&b.qs, b.qh, 16), &a.qs),
        |sumf, sumi, b, a| sumf + (f16_le(b.d) * f16_le(a.d)) * sumi as f32,
    )
}

/// `ggml_vec_dot_q5_1_q8_1_generic`.
pub(super) fn dot_q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    blocks_dot(
        w,
        x,
        |b, a| dot32(&q5_values(&b.qs, b.qh, 0), &a.qs),
        |sumf, sumi, b, a| {
            sumf + ((f16_le(b.d) * f16_le(a.d)) * sumi as f32 + f16_le(b.m) * f16_le(a.s))
        },
    )
}

/// `ggml_vec_dot_q8_0_q8_0_generic`.
pub(super) fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    blocks_dot(
        w,
        x,
        |b, a| dot32(&b.qs, &a.qs),
        |sumf, sumi, b, a| sumf + sumi as f32 * (f16_le(b.d) * f16_le(a.d)),
    )
}

/// Scalar `ggml_vec_dot_f32`: f32 products summed in f64 (`ggml_float`), rounded once at the end.
pub(super) fn dot_f32(w: &[u8], x: &[u8]) -> f32 {
    let (w, _) = w.as_chunks::<4>();
    let (x, _) = x.as_chunks::<4>();
    let mut sum = 0.0f64;
    for (a, b) in w.iter().zip(x) {
        sum += f64::from(f32::from_le_bytes(*a) * f32::from_le_bytes(*b));
    }
    sum as f32
}

/// Scalar `ggml_vec_dot_f16`: both sides widened to f32, products summed in f64.
pub(super) fn dot_f16(w: &[u8], x: &[u8]) -> f32 {
    let (w, _) = w.as_chunks::<2>();
    let (x, _) = x.as_chunks::<2>();
    let mut sum = 0.0f64;
    for (a, b) in w.iter().zip(x) {
        sum += f64::from(f16_le(*a) * f16_le(*b));
    }
    sum as f32
}

/// Scalar `ggml_vec_dot_bf16`: as [`dot_f16`] with bf16 inputs.
pub(super) fn dot_bf16(w: &[u8], x: &[u8]) -> f32 {
    let (w, _) = w.as_chunks::<2>();
    let (x, _) = x.as_chunks::<2>();
    let mut sum = 0.0f64;
    for (a, b) in w.iter().zip(x) {
        sum += f64::from(bf16_le(*a) * bf16_le(*b));
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn q4_0_hand_computed() {
        // Weights: value j = (j % 16) - 8 for the low nibbles, 7 - (j % 16) for the high ones.
        let qs: [u8; 16] = core::array::from_fn(|j| j as u8 | ((15 - j as u8) << 4));
        let w = BlockQ4_0 { d: h(0.5), qs };
        let x = BlockQ8_0 {
            d: h(2.0),
            qs: [1; 32],
        };
        // sum(j - 8) + sum(7 - j) over j < 16 = -8 - 8, times d_w * d_x = 1.
        assert_eq!(dot_q4_0(&[w], &[x]), -16.0);
        let mut x = x;
        x.qs[0] = 3; // adds 2 * (0 - 8)
        assert_eq!(dot_q4_0(&[w], &[x]), -32.0);
    }

    #[test]
    fn q4_1_uses_activation_sum() {
        let w = BlockQ4_1 {
            d: h(1.0),
            m: h(0.5),
            qs: [0x11; 16],
        };
        // s is taken as given (ggml never recomputes it).
        let x = BlockQ8_1 {
            d: h(0.25),
            s: h(10.0),
            qs: [2; 32],
        };
        assert_eq!(dot_q4_1(&[w], &[x]), 0.25 * 64.0 + 0.5 * 10.0);
    }

    #[test]
    fn q5_fifth_bits() {
        let qh = (1u32 | (1 << 16)).to_le_bytes();
        let v = q5_values(&[0x00; 16], qh, 0);
        assert_eq!((v[0], v[1], v[16], v[17]), (16, 0, 16, 0));
        let w = BlockQ5_0 {
            d: h(1.0),
            qh,
            qs: [0; 16],
        };
        let mut x = BlockQ8_0 {
            d: h(1.0),
            qs: [0; 32],
        };
        x.qs[1] = 1; // value 1 is 0 - 16
        assert_eq!(dot_q5_0(&[w], &[x]), -16.0);
    }

    #[test]
    fn float_dots_accumulate_in_f64() {
        // 1e8 + 1 - 1e8 loses the 1 in f32 but not in f64.
        let w: Vec<u8> = [1e8f32, 1.0, -1e8]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let x: Vec<u8> = [1.0f32; 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dot_f32(&w, &x), 1.0);
        let w16 = [h(2.0), h(-3.0)].concat();
        let x16 = [h(0.5), h(0.25)].concat();
        assert_eq!(dot_f16(&w16, &x16), 0.25);
        assert_eq!(
            dot_bf16(&[0x80, 0x3f, 0x00, 0x40], &[0x00, 0x40, 0x40, 0x40]),
            8.0
        );
    }
}
