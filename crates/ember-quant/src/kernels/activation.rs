//! Activation quantization: an f32 row converted to the vec-dot type of a weight, as ggml's CPU
//! backend does before every quantized matrix product (`type_traits_cpu[vec_dot_type].from_float`).
//!
//! Which ggml code each type follows (ggml d99724f2):
//! - Q8_0, Q8_1: the x86 AVX/AVX2 `quantize_row_q8_0` / `quantize_row_q8_1` in
//!   `ggml-cpu/arch/x86/quants.c`, which every x86-64 llama.cpp build with AVX runs (AVX-512 builds
//!   included). It differs from `quantize_row_q8_0_ref` in `ggml-quants.c` (which non-x86 generic
//!   builds run): the multiplier is `127 / amax` rather than `1 / (amax / 127)`, rounding is to
//!   nearest-even (`_mm256_round_ps`) rather than half-away-from-zero (`roundf`), and Q8_1's `s` is
//!   `d * sum` over the unsaturated integers. The max-reduction order and the `maxps` NaN rule are
//!   reproduced too, so even NaN inputs give the same bytes.
//! - Q8_K: `quantize_row_q8_K_ref` (x86's `quantize_row_q8_K` is a plain call to it). All-zero blocks
//!   get zero `bsums` (ggml leaves them unwritten; they are only ever multiplied by `d = 0`).
//! - F16: `ggml_cpu_fp32_to_fp16` (F16C `vcvtps2ph`, round-to-nearest-even; NaN payloads are not
//!   reproduced).
//! - BF16: `ggml_cpu_fp32_to_bf16`, i.e. `ggml_compute_fp32_to_bf16` (nearest-even, quiet NaN).
//! - F32: a copy.
//!
//! Other architectures differ for Q8_0/Q8_1: the aarch64 NEON `quantize_row_q8_0` in
//! `ggml-cpu/arch/arm/quants.c` multiplies by `1 / d` (like `_ref`) but rounds to nearest-even (like
//! x86), so matching an ARM llama.cpp bit for bit would need a third variant.

use half::f16;

use crate::blocks::{BlockQ8_0, BlockQ8_1, BlockQ8K, QK, QK_K};

/// `maxps` semantics: the first operand only if it is strictly greater, so a NaN in either position
/// yields the second operand (that is what makes the reduction order matter).
#[inline(always)]
fn max_ps(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `max(|x|)` over a block, reduced in the order of the AVX code: eight lanes over the four
/// 8-value loads, then high half against low half, then `movehl`, then `movehdup`.
#[inline(always)]
fn amax_avx(x: &[f32; QK]) -> f32 {
    let abs = |v: f32| f32::from_bits(v.to_bits() & 0x7fff_ffff);
    let m: [f32; 8] = core::array::from_fn(|l| {
        let m = max_ps(abs(x[l]), abs(x[8 + l]));
        max_ps(max_ps(m, abs(x[16 + l])), abs(x[24 + l]))
    });
    let m4: [f32; 4] = core::array::from_fn(|l| max_ps(m[4 + l], m[l]));
    max_ps(max_ps(m4[0], m4[2]), max_ps(m4[1], m4[3]))
}

/// `_mm256_cvtps_epi32` of an already rounded value: out of range and NaN give `i32::MIN`.
#[inline(always)]
fn cvtps_epi32(v: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    }
}

/// `packs_epi32` then `packs_epi16`: saturation to `i8`.
#[inline]
fn saturate_i8(v: i32) -> i8 {
    v.clamp(-128, 127) as i8
}

#[inline]
fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

/// The shared part of the x86 Q8_0/Q8_1 quantizers: fills `qs`, returns `d` (unrounded) and the
/// wrapping sum of the integers before saturation (what Q8_1's `hsum_i32_8` sees).
#[inline(always)]
fn q8_avx(x: &[f32; QK], qs: &mut [i8; QK]) -> (f32, i32) {
    let amax = amax_avx(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let i = cvtps_epi32((v * id).round_ties_even());
        sum = sum.wrapping_add(i);
        *q = saturate_i8(i);
    }
    (d, sum)
}

/// x86 `quantize_row_q8_0` for one block.
#[inline(always)]
pub fn quantize_block_q8_0(x: &[f32; QK], y: &mut BlockQ8_0) {
    let (d, _) = q8_avx(x, &mut y.qs);
    y.d = f16_bytes(d);
}

/// x86 `quantize_row_q8_1` for one block (`s = d * sum(q)`, both stored as f16).
#[inline(always)]
pub fn quantize_block_q8_1(x: &[f32; QK], y: &mut BlockQ8_1) {
    let (d, sum) = q8_avx(x, &mut y.qs);
    y.d = f16_bytes(d);
    y.s = f16_bytes(d * sum as f32);
}

/// ggml's `nearest_int`: round to nearest-even through the float mantissa (exact for
/// `|v| <= 4194303`; other inputs give the same garbage the C code gives).
#[inline]
fn nearest_int(v: f32) -> i32 {
    let val = v + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `quantize_row_q8_K_ref` for one block.
#[inline(always)]
pub fn quantize_block_q8_k(x: &[f32; QK_K], y: &mut BlockQ8K) {
    // The signed value of largest magnitude, first one on ties; NaNs never compare greater.
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax == 0.0 {
        *y = bytemuck::Zeroable::zeroed();
        return;
    }
    // -127 rather than -128 so that the AVX dot products for IQ2_XXS stay in range (ggml's comment).
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        // `MIN(127, v)` then C's int -> int8_t conversion, which wraps.
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, group) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        let sum: i32 = group.iter().map(|&q| i32::from(q)).sum();
        *s = (sum as i16).to_le_bytes();
    }
    y.d = (1.0 / iscale).to_le_bytes();
}

/// `ggml_compute_fp32_to_bf16`: nearest-even, NaN forced quiet.
#[inline]
pub fn fp32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Row quantizers: the caller has checked that `x` is whole blocks and `out` is exactly the bytes
/// they take (should the lengths disagree anyway, the shorter side bounds the loop). On x86-64 CPUs
/// with AVX2 the same loop is compiled for AVX2 (checked at run time): the round-to-nearest-even
/// becomes one instruction instead of a libm `rintf` call per value (baseline x86-64 has no
/// `roundps`), and the block loops vectorise. The results are identical.
macro_rules! row_quantizers {
    ($($name:ident, $avx2:ident, $block:ty, $n:expr, $f:ident;)*) => {$(
        pub(super) fn $name(x: &[f32], out: &mut [u8]) {
            #[cfg(target_arch = "x86_64")]
            if super::x86::available() {
                // SAFETY: the CPU has AVX2 and FMA (`available` checked them).
                return unsafe { $avx2(x, out) };
            }
            let blocks: &mut [$block] = bytemuck::try_cast_slice_mut(out).unwrap_or_default();
            for (y, x) in blocks.iter_mut().zip(x.as_chunks::<{ $n }>().0) {
                $f(x, y);
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2(x: &[f32], out: &mut [u8]) {
            let blocks: &mut [$block] = bytemuck::try_cast_slice_mut(out).unwrap_or_default();
            for (y, x) in blocks.iter_mut().zip(x.as_chunks::<{ $n }>().0) {
                $f(x, y);
            }
        }
    )*};
}

row_quantizers! {
    quantize_q8_0, quantize_q8_0_avx2, BlockQ8_0, QK, quantize_block_q8_0;
    quantize_q8_1, quantize_q8_1_avx2, BlockQ8_1, QK, quantize_block_q8_1;
    quantize_q8_k, quantize_q8_k_avx2, BlockQ8K, QK_K, quantize_block_q8_k;
}

pub(super) fn convert_f16(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.as_chunks_mut::<2>().0.iter_mut().zip(x) {
        *o = f16_bytes(v);
    }
}

pub(super) fn convert_bf16(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.as_chunks_mut::<2>().0.iter_mut().zip(x) {
        *o = fp32_to_bf16(v).to_le_bytes();
    }
}

pub(super) fn convert_f32(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.as_chunks_mut::<4>().0.iter_mut().zip(x) {
        *o = v.to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::*;
    use crate::blocks::f16_le;

    #[test]
    fn q8_0_rounds_ties_to_even_like_avx() {
        // amax 127 makes d = 1 and the multiplier exactly 1, so x.5 values are exact ties.
        let mut x = [0.0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        x[4] = -0.5;
        let mut y: BlockQ8_0 = Zeroable::zeroed();
        quantize_block_q8_0(&x, &mut y);
        assert_eq!(f16_le(y.d), 1.0);
        // `roundf` (the _ref path) would give 3, -4, 1, -1.
        assert_eq!(&y.qs[..5], &[127, 2, -4, 0, 0]);
    }

    #[test]
    fn q8_1_sum_and_zero_block() {
        let x: [f32; QK] = core::array::from_fn(|i| i as f32 - 10.0);
        let mut y: BlockQ8_1 = Zeroable::zeroed();
        quantize_block_q8_1(&x, &mut y);
        let d = 21.0f32 / 127.0;
        assert_eq!(f16_le(y.d), f16::from_f32(d).to_f32());
        let sum: i32 = y.qs.iter().map(|&q| i32::from(q)).sum();
        assert_eq!(f16_le(y.s), f16::from_f32(d * sum as f32).to_f32());

        quantize_block_q8_1(&[0.0; QK], &mut y);
        assert_eq!((y.d, y.s, y.qs), ([0; 2], [0; 2], [0; QK]));
    }

    #[test]
    fn q8_0_nan_and_inf_do_not_panic() {
        let mut x = [1.0f32; QK];
        x[5] = f32::NAN;
        let mut y: BlockQ8_0 = Zeroable::zeroed();
        quantize_block_q8_0(&x, &mut y);
        x[5] = f32::INFINITY;
        quantize_block_q8_0(&x, &mut y);
        // id = 127 / inf = 0: finite values quantize to 0, inf * 0 = NaN saturates to -128.
        assert_eq!(y.qs[0], 0);
        assert_eq!(y.qs[5], -128);
    }

    #[test]
    fn q8_k_block() {
        let mut x = [0.0f32; QK_K];
        x[7] = -2.0;
        x[8] = 1.0;
        x[300 % QK_K] = 0.5;
        let mut y: BlockQ8K = Zeroable::zeroed();
        quantize_block_q8_k(&x, &mut y);
        // iscale = -127 / -2; d = 1 / iscale.
        assert_eq!(y.d(), 1.0 / 63.5);
        assert_eq!(y.qs[7], -127);
        assert_eq!(y.qs[8], 64); // 63.5 rounds to even
        assert_eq!(y.qs[44], 32); // 31.75
        assert_eq!(i16::from_le_bytes(y.bsums[0]), -127 + 64);
        assert_eq!(i16::from_le_bytes(y.bsums[2]), 32);
    }

    #[test]
    fn nearest_int_is_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(126.49), 126);
    }

    #[test]
    fn bf16_conversion() {
        assert_eq!(fp32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is a tie between 0x3f80 and 0x3f81: to even.
        assert_eq!(fp32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(fp32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(fp32_to_bf16(f32::NAN) & 0x7fc0, 0x7fc0);
        assert_eq!(fp32_to_bf16(f32::MAX), 0x7f80); // rounds up to inf
    }
}
