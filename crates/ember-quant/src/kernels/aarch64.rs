//! aarch64 NEON fused dequantize-and-dot kernels, in three sets chosen at run time:
//!
//! - [`Kernels::Neon`]: baseline ARMv8 NEON (Raspberry Pi 4's Cortex-A72): byte products widened
//!   with `smull`/`smlal` into i16 and pairwise-accumulated into i32 (`sadalp`);
//! - [`Kernels::NeonDotprod`]: the same kernels with `sdot` (FEAT_DotProd: Pi 5's Cortex-A76,
//!   Jetson Orin);
//! - [`Kernels::NeonI8mm`]: the `sdot` row kernels plus 2×2 tile kernels built on `smmla`
//!   (FEAT_I8MM: two weight rows × two activation rows per instruction, for prefill).
//!
//! Same math as the scalar kernels (`dot_legacy.rs`, `dot_k.rs`): per block an exact integer dot of
//! the quantized weights with the quantized activations, then the block's float scales; only the
//! float summation order differs, so results differ from the scalar reference in the last bits.
//! The ideas follow ggml's `ggml_vec_dot_*_q8_*` ARM paths (`ggml-cpu/arch/arm/quants.c`), written
//! anew. No sign trick: weights are unpacked to signed bytes (offsets subtracted in i8, where they
//! cannot wrap) and multiplied signed × signed, so every integer sum is exact for any input bytes,
//! -128 activations included. Where several products share an i16 lane (the widening path), the
//! bound is stated at the call; every i32 lane converted to f32 stays within ±2^24, so the
//! conversions are exact, as the scalar kernels' are.
//!
//! `sdot` and `smmla` have no stable intrinsics on the supported toolchain (`vdotq_s32` and
//! `vmmlaq_s32` are unstable), nor has the f16 → f32 conversion (`vcvt_f32_f16` needs the unstable
//! `f16` type): those three instructions are written with `asm!` in one small function each, inside
//! functions compiled with the matching `#[target_feature]`. Kernels needing `dotprod` or `i8mm` are
//! handed out only after run-time detection ([`dotprod`], [`i8mm`]); nothing depends on the
//! compile-time target CPU, so one binary runs on a Pi 4 and a Pi 5. All loads read whole
//! fixed-size block fields (`&[u8; N]` / `&[i8; N]` arrays) with unaligned `ld1`, so they stay in
//! bounds whatever the slices' alignment.

use std::arch::aarch64::{
    float32x4_t, int8x16_t, int16x8_t, int32x4_t, uint8x16_t, uint8x16x2_t, vaddq_f32, vaddvq_s32,
    vandq_u8, vcombine_s32, vcreate_u8, vcreate_u16, vcvtq_f32_s32, vdup_n_s32, vdupq_n_f32,
    vdupq_n_s8, vdupq_n_s32, vdupq_n_u8, vfmaq_f32, vfmaq_n_f32, vget_low_s8, vget_low_s16,
    vld1q_f32, vld1q_s8_x2, vld1q_s8_x4, vld1q_s32, vld1q_u8, vld1q_u8_x2, vld1q_u8_x4,
    vmlal_high_s8, vmlal_high_s16, vmlal_s8, vmlal_s16, vmlaq_n_s32, vmlaq_s32, vmovl_u8,
    vmull_high_s8, vmull_s8, vmull_s16, vmulq_f32, vmulq_n_s32, vorrq_u8, vpadalq_s16, vpaddq_s32,
    vreinterpretq_s8_s64, vreinterpretq_s8_u8, vreinterpretq_s16_u8, vreinterpretq_s16_u16,
    vreinterpretq_s64_s8, vreinterpretq_u8_s8, vshlq_n_u8, vshlq_u8, vshrq_n_u8, vst1q_f32,
    vsubq_f32, vsubq_s8, vzip1q_s16, vzip1q_s64, vzip2q_s16, vzip2q_s64,
};
use std::arch::asm;
use std::sync::OnceLock;

use super::{Kernels, RowKernel, TileKernel, fp16_le, scales_mins_k4};
use crate::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
    as_blocks,
};
use crate::types::GgmlType;

/// Whether this CPU has FEAT_DotProd (`sdot`), detected once.
pub(super) fn dotprod() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::arch::is_aarch64_feature_detected!("dotprod"))
}

/// Whether this CPU has FEAT_I8MM (`smmla`) and FEAT_DotProd (the [`Kernels::NeonI8mm`] set uses
/// both), detected once.
pub(super) fn i8mm() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| dotprod() && std::arch::is_aarch64_feature_detected!("i8mm"))
}

/// The row kernel of `set` for weights of type `ty`, or `None` where the set has none (the caller
/// falls back to scalar), `set` is not an aarch64 set, or this CPU cannot run it.
pub(super) fn row_kernel(set: Kernels, ty: GgmlType) -> Option<RowKernel> {
    use GgmlType::*;
    // Each wrapper is a `#[target_feature]` function; handing out the `sdot` ones only after
    // `set.is_available()` (run-time detection) is what makes calling them sound (see `run`).
    let kernel: RowKernel = match set {
        Kernels::Neon => match ty {
            Q4_0 => |w, x| run(w, x, widen::q4_0),
            Q4_1 => |w, x| run(w, x, widen::q4_1),
            Q8_0 => |w, x| run(w, x, widen::q8_0),
            Q4_K => |w, x| run(w, x, widen::q4_k),
            Q5_K => |w, x| run(w, x, widen::q5_k),
            Q6_K => |w, x| run(w, x, widen::q6_k),
            _ => return None,
        },
        Kernels::NeonDotprod | Kernels::NeonI8mm if set.is_available() => match ty {
            Q4_0 => |w, x| run(w, x, sdot::q4_0),
            Q4_1 => |w, x| run(w, x, sdot::q4_1),
            Q8_0 => |w, x| run(w, x, sdot::q8_0),
            Q4_K => |w, x| run(w, x, sdot::q4_k),
            Q5_K => |w, x| run(w, x, sdot::q5_k),
            Q6_K => |w, x| run(w, x, sdot::q6_k),
            _ => return None,
        },
        _ => return None,
    };
    Some(kernel)
}

/// The 2×2 tile kernel of `set` for weights of type `ty` (see [`TileKernel`]), or `None`. Only
/// [`Kernels::NeonI8mm`] has tiles, and only where this CPU runs it.
pub(super) fn tile_kernel(set: Kernels, ty: GgmlType) -> Option<TileKernel> {
    if set != Kernels::NeonI8mm || !set.is_available() {
        return None;
    }
    use GgmlType::*;
    let kernel: TileKernel = match ty {
        Q4_0 => |w, x| run_tile(w, x, q4_0_mm),
        Q4_1 => |w, x| run_tile(w, x, q4_1_mm),
        Q8_0 => |w, x| run_tile(w, x, q8_0_mm),
        Q4_K => |w, x| run_tile(w, x, q4_k_mm),
        Q5_K => |w, x| run_tile(w, x, q5_k_mm),
        Q6_K => |w, x| run_tile(w, x, q6_k_mm),
        _ => return None,
    };
    Some(kernel)
}

/// A block-level row dot: `unsafe` only because of `#[target_feature]`.
type BlockKernel<W, A> = unsafe fn(&[W], &[A]) -> f32;

/// A block-level 2×2 tile: `unsafe` only because of `#[target_feature]`.
type BlockTile<W, A> = unsafe fn([&[W]; 2], [&[A]; 2]) -> [[f32; 2]; 2];

/// Views both rows as blocks (misaligned lengths, impossible after validation, view as empty and
/// give 0) and runs `f`.
#[inline(always)]
fn run<W: Block, A: Block>(w: &[u8], x: &[u8], f: BlockKernel<W, A>) -> f32 {
    let w = as_blocks::<W>(w).unwrap_or_default();
    let x = as_blocks::<A>(x).unwrap_or_default();
    // SAFETY: `f` is a `widen::*` kernel, which needs only NEON (part of every aarch64 target), or
    // an `sdot::*` kernel, which `row_kernel` hands out only after run-time detection confirmed
    // dotprod. The kernels read only within `w` and `x`.
    unsafe { f(w, x) }
}

/// As [`run`] for a tile of two weight rows and two activation rows.
#[inline(always)]
fn run_tile<W: Block, A: Block>(w: [&[u8]; 2], x: [&[u8]; 2], f: BlockTile<W, A>) -> [[f32; 2]; 2] {
    let w = w.map(|r| as_blocks::<W>(r).unwrap_or_default());
    let x = x.map(|r| as_blocks::<A>(r).unwrap_or_default());
    // SAFETY: `f` is one of the `*_mm` kernels, which `tile_kernel` hands out only after run-time
    // detection confirmed i8mm (and dotprod). They read only within the four rows.
    unsafe { f(w, x) }
}

// ---------------------------------------------------------------------------------------------
// The three instructions without stable intrinsics.

/// `acc + sdot(a, b)`: lane `i` gains `sum_{k<4} a[4i+k] * b[4i+k]`, exactly (i32).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: SDOT is FEAT_DotProd, enabled for this function, so it only runs where the CPU has it
    // (calling a `#[target_feature]` function elsewhere is `unsafe`). Registers only.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `acc + smmla(a, b)`: `a` and `b` each hold two rows of eight bytes; lane `2i + j` gains
/// `a_row_i · b_row_j`, exactly (i32).
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: SMMLA is FEAT_I8MM, enabled for this function, so it only runs where the CPU has it.
    // Registers only.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Four f16s (little-endian bytes) to f32, exactly (subnormals included: Linux runs with FPCR's
/// flush-to-zero bits clear).
#[inline]
#[target_feature(enable = "neon")]
fn f16x4(h: [[u8; 2]; 4]) -> float32x4_t {
    let [a, b, c, d] = h;
    let halves = vcreate_u16(u64::from_le_bytes([
        a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1],
    ]));
    let out: float32x4_t;
    // SAFETY: FCVTL (half to single precision) is base ARMv8 floating point, present on every
    // aarch64 CPU. Registers only.
    unsafe {
        asm!(
            "fcvtl {out:v}.4s, {h:v}.4h",
            out = lateout(vreg) out,
            h = in(vreg) halves,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Loads and small helpers. NEON is part of every aarch64 target; `#[target_feature(enable =
// "neon")]` only makes the intrinsics safe to call here.

#[inline]
#[target_feature(enable = "neon")]
fn load16(bytes: &[u8; 16]) -> uint8x16_t {
    // SAFETY: reads exactly the 16 bytes of `bytes`; `ld1` has no alignment requirement.
    unsafe { vld1q_u8(bytes.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn load32(bytes: &[u8; 32]) -> uint8x16x2_t {
    // SAFETY: reads exactly the 32 bytes of `bytes`; unaligned.
    unsafe { vld1q_u8_x2(bytes.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn load32i(bytes: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: reads exactly the 32 bytes of `bytes`; unaligned.
    let v = unsafe { vld1q_s8_x2(bytes.as_ptr()) };
    [v.0, v.1]
}

#[inline]
#[target_feature(enable = "neon")]
fn load64(bytes: &[u8; 64]) -> [uint8x16_t; 4] {
    // SAFETY: reads exactly the 64 bytes of `bytes`; unaligned.
    let v = unsafe { vld1q_u8_x4(bytes.as_ptr()) };
    [v.0, v.1, v.2, v.3]
}

#[inline]
#[target_feature(enable = "neon")]
fn load64i(bytes: &[i8; 64]) -> [int8x16_t; 4] {
    // SAFETY: reads exactly the 64 bytes of `bytes`; unaligned.
    let v = unsafe { vld1q_s8_x4(bytes.as_ptr()) };
    [v.0, v.1, v.2, v.3]
}

/// The 128 bytes of `bytes` as eight registers.
#[inline]
#[target_feature(enable = "neon")]
fn load128i(bytes: &[i8; 128]) -> [int8x16_t; 8] {
    let p = bytes.as_ptr();
    // SAFETY: reads bytes 0..64 and 64..128 of the 128-byte array; unaligned.
    let (a, b) = unsafe { (vld1q_s8_x4(p), vld1q_s8_x4(p.add(64))) };
    [a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3]
}

#[inline]
#[target_feature(enable = "neon")]
fn f32x4(v: [f32; 4]) -> float32x4_t {
    // SAFETY: reads exactly the four floats of `v`.
    unsafe { vld1q_f32(v.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn i32x4(v: [i32; 4]) -> int32x4_t {
    // SAFETY: reads exactly the four ints of `v`.
    unsafe { vld1q_s32(v.as_ptr()) }
}

/// A tile result: lanes `[w0·x0, w0·x1, w1·x0, w1·x1]` as `[[w0·x0, w0·x1], [w1·x0, w1·x1]]`.
#[inline]
#[target_feature(enable = "neon")]
fn tile_out(v: float32x4_t) -> [[f32; 2]; 2] {
    let mut o = [0.0f32; 4];
    // SAFETY: writes exactly the four floats of `o`.
    unsafe { vst1q_f32(o.as_mut_ptr(), v) };
    [[o[0], o[1]], [o[2], o[3]]]
}

/// `[a * c, a * d, b * c, b * d]`: the scale products of a tile, weight scales `a`, `b` and
/// activation scales `c`, `d`.
#[inline]
#[target_feature(enable = "neon")]
fn outer(a: f32, b: f32, c: f32, d: f32) -> float32x4_t {
    vmulq_f32(f32x4([a, a, b, b]), f32x4([c, d, c, d]))
}

/// `[a, a, b, b]`: per-weight-row integer scales of a tile.
#[inline]
#[target_feature(enable = "neon")]
fn pair_scale(a: i32, b: i32) -> int32x4_t {
    vcombine_s32(vdup_n_s32(a), vdup_n_s32(b))
}

/// The 32 nibbles of a 4-bit block as values 0..16 (low nibbles) and 16..32 (high nibbles), the
/// order of the activation's 32 bytes; each 0..=15.
#[inline]
#[target_feature(enable = "neon")]
fn nibbles(qs: &[u8; 16]) -> [int8x16_t; 2] {
    let q = load16(qs);
    [
        vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)),
    ]
}

/// Q4_0's values `q - 8` (-8..=7), subtracted in i8, where they cannot wrap.
#[inline]
#[target_feature(enable = "neon")]
fn q4_0_values(qs: &[u8; 16]) -> [int8x16_t; 2] {
    let eight = vdupq_n_s8(8);
    let [lo, hi] = nibbles(qs);
    [vsubq_s8(lo, eight), vsubq_s8(hi, eight)]
}

/// The 64 values (each 0..=15) of 32 bytes of Q4_K quants: low nibbles (one group of 32), then
/// high nibbles (the next group).
#[inline]
#[target_feature(enable = "neon")]
fn nibbles32(qs: &[u8; 32]) -> ([int8x16_t; 2], [int8x16_t; 2]) {
    let q = load32(qs);
    let low = vdupq_n_u8(0x0f);
    let lo = [vandq_u8(q.0, low), vandq_u8(q.1, low)];
    let hi = [vshrq_n_u8::<4>(q.0), vshrq_n_u8::<4>(q.1)];
    (
        [vreinterpretq_s8_u8(lo[0]), vreinterpretq_s8_u8(lo[1])],
        [vreinterpretq_s8_u8(hi[0]), vreinterpretq_s8_u8(hi[1])],
    )
}

/// As [`nibbles32`] for chunk `j` of a Q5_K block, plus 16 where `qh` has bit `2j` (low nibbles)
/// or bit `2j + 1` (high nibbles); values 0..=31.
#[inline]
#[target_feature(enable = "neon")]
fn q5_k_values(qs: &[u8; 32], qh: uint8x16x2_t, j: usize) -> ([int8x16_t; 2], [int8x16_t; 2]) {
    let (lo, hi) = nibbles32(qs);
    // Bits 2j and 2j + 1 down to bits 0 and 1 (a negative `ushl` shift is a right shift).
    let shift = vdupq_n_s8(-2 * (j & 3) as i8);
    let qh = [vshlq_u8(qh.0, shift), vshlq_u8(qh.1, shift)];
    let one = vdupq_n_u8(1);
    let two = vdupq_n_u8(2);
    let h_lo = [
        vshlq_n_u8::<4>(vandq_u8(qh[0], one)),
        vshlq_n_u8::<4>(vandq_u8(qh[1], one)),
    ];
    let h_hi = [
        vshlq_n_u8::<3>(vandq_u8(qh[0], two)),
        vshlq_n_u8::<3>(vandq_u8(qh[1], two)),
    ];
    let or = |v: int8x16_t, h: uint8x16_t| vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(v), h));
    (
        [or(lo[0], h_lo[0]), or(lo[1], h_lo[1])],
        [or(hi[0], h_hi[0]), or(hi[1], h_hi[1])],
    )
}

/// The 128 values of one Q6_K half (`ql` 64 bytes, `qh` 32), minus 32 (-32..=31), as eight
/// registers of 16 consecutive values: register `r` is scale group `r` of the half.
#[inline]
#[target_feature(enable = "neon")]
fn q6_k_values(ql: &[u8; 64], qh: &[u8; 32]) -> [int8x16_t; 8] {
    let [l0, l1, l2, l3] = load64(ql);
    let h = load32(qh);
    let low = vdupq_n_u8(0x0f);
    let m = |v: u8| vdupq_n_u8(v);
    // Value l (0..32) of the half: low nibble of ql[l], qh[l] bits 0-1; l + 32: low nibble of
    // ql[l + 32], bits 2-3; l + 64: high nibble of ql[l], bits 4-5; l + 96: high nibble of
    // ql[l + 32], bits 6-7.
    let v = [
        vorrq_u8(vandq_u8(l0, low), vshlq_n_u8::<4>(vandq_u8(h.0, m(0x03)))),
        vorrq_u8(vandq_u8(l1, low), vshlq_n_u8::<4>(vandq_u8(h.1, m(0x03)))),
        vorrq_u8(vandq_u8(l2, low), vshlq_n_u8::<2>(vandq_u8(h.0, m(0x0c)))),
        vorrq_u8(vandq_u8(l3, low), vshlq_n_u8::<2>(vandq_u8(h.1, m(0x0c)))),
        vorrq_u8(vshrq_n_u8::<4>(l0), vandq_u8(h.0, m(0x30))),
        vorrq_u8(vshrq_n_u8::<4>(l1), vandq_u8(h.1, m(0x30))),
        vorrq_u8(vshrq_n_u8::<4>(l2), vshrq_n_u8::<2>(vandq_u8(h.0, m(0xc0)))),
        vorrq_u8(vshrq_n_u8::<4>(l3), vshrq_n_u8::<2>(vandq_u8(h.1, m(0xc0)))),
    ];
    let thirty_two = vdupq_n_s8(32);
    let sub = |v| vsubq_s8(vreinterpretq_s8_u8(v), thirty_two);
    [
        sub(v[0]),
        sub(v[1]),
        sub(v[2]),
        sub(v[3]),
        sub(v[4]),
        sub(v[5]),
        sub(v[6]),
        sub(v[7]),
    ]
}

/// `sum_j bsums[j] * mins[j / 2]` (the Q4_K/Q5_K min term), exactly: the sixteen i16 sums are
/// widened before they are added, so it holds for any bytes (as the scalar kernel's i32 sum).
#[inline]
#[target_feature(enable = "neon")]
fn min_sum(a: &BlockQ8K, mins: [u8; 8]) -> i32 {
    // SAFETY: `bsums` is sixteen two-byte values, 32 bytes; unaligned.
    let b = unsafe { vld1q_u8_x2(a.bsums.as_ptr().cast::<u8>()) };
    let (b0, b1) = (vreinterpretq_s16_u8(b.0), vreinterpretq_s16_u8(b.1));
    let m: int16x8_t = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(u64::from_le_bytes(mins))));
    // mins[j / 2] for j = 0..8 and 8..16.
    let (m0, m1) = (vzip1q_s16(m, m), vzip2q_s16(m, m));
    // Lanes: four products of at most 2^15 * 63 each.
    let p = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
    let p = vmlal_high_s16(p, b0, m0);
    let p = vmlal_s16(p, vget_low_s16(b1), vget_low_s16(m1));
    let p = vmlal_high_s16(p, b1, m1);
    vaddvq_s32(p)
}

// ---------------------------------------------------------------------------------------------
// Row kernels, generic over how byte products are summed.

/// How 16 or 32 signed byte products are summed into four i32 lanes. Implemented by zero-sized
/// tokens; a value of one proves the CPU runs the instructions it uses.
trait Dot: Copy {
    /// `acc` plus the 16 products `a_i * b_i`, four to each lane. Exact for any `b` when no `a_i`
    /// is -128.
    fn dot16(self, acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
    /// `acc` plus the 32 products of `a` and `b`, eight to each lane. Exact for any `b` when every
    /// `|a_i| <= 63`.
    fn dot32_small(self, acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t;
    /// `acc` plus the 32 products of `a` and `b`, eight to each lane. Exact for any bytes.
    fn dot32(self, acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t;
}

/// Baseline NEON: `smull`/`smlal` into i16 lanes, `sadalp` into i32.
#[derive(Clone, Copy)]
struct Widen;

#[inline]
#[target_feature(enable = "neon")]
fn widen_dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // Two products per i16 lane: at most 2 * 127 * 128 < 2^15 in magnitude when a != -128.
    let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    vpadalq_s16(acc, vmlal_high_s8(p, a, b))
}

#[inline]
#[target_feature(enable = "neon")]
fn widen_dot32_small(acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
    // Four products per i16 lane: at most 4 * 63 * 128 < 2^15 in magnitude.
    let p = vmull_s8(vget_low_s8(a[0]), vget_low_s8(b[0]));
    let p = vmlal_high_s8(p, a[0], b[0]);
    let p = vmlal_s8(p, vget_low_s8(a[1]), vget_low_s8(b[1]));
    vpadalq_s16(acc, vmlal_high_s8(p, a[1], b[1]))
}

#[inline]
#[target_feature(enable = "neon")]
fn widen_dot32(acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
    // One product per i16 lane (|-128 * -128| = 2^14), widened at once.
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a[0]), vget_low_s8(b[0])));
    let acc = vpadalq_s16(acc, vmull_high_s8(a[0], b[0]));
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a[1]), vget_low_s8(b[1])));
    vpadalq_s16(acc, vmull_high_s8(a[1], b[1]))
}

impl Dot for Widen {
    #[inline(always)]
    fn dot16(self, acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON only, part of every aarch64 target.
        unsafe { widen_dot16(acc, a, b) }
    }
    #[inline(always)]
    fn dot32_small(self, acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
        // SAFETY: NEON only, part of every aarch64 target.
        unsafe { widen_dot32_small(acc, a, b) }
    }
    #[inline(always)]
    fn dot32(self, acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
        // SAFETY: NEON only, part of every aarch64 target.
        unsafe { widen_dot32(acc, a, b) }
    }
}

/// FEAT_DotProd: `sdot`, exact for any bytes. Only constructed (by [`Sdot::assume`]) inside
/// functions compiled with `dotprod`, so a value proves the CPU has it.
#[derive(Clone, Copy)]
struct Sdot(());

impl Sdot {
    /// # Safety
    /// The CPU must have FEAT_DotProd.
    #[inline(always)]
    unsafe fn assume() -> Sdot {
        Sdot(())
    }
}

impl Dot for Sdot {
    #[inline(always)]
    fn dot16(self, acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: `self` exists, so the CPU has dotprod (see `Sdot::assume`).
        unsafe { sdot(acc, a, b) }
    }
    #[inline(always)]
    fn dot32_small(self, acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
        self.dot32(acc, a, b)
    }
    #[inline(always)]
    fn dot32(self, acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
        // SAFETY: as in `dot16`.
        unsafe { sdot(sdot(acc, a[0], b[0]), a[1], b[1]) }
    }
}

// The float structure, shared by every aarch64 kernel (all three sets' row kernels and the i8mm
// tiles), so that they all give the same bits for the same rows: a matrix product is then
// independent of how its rows are split into tiles or between threads, and a Pi 4 computes what a
// Pi 5 does. Integer sums are exact (and every sum converted to f32 is within ±2^24, so converted
// exactly); the float operations and their order are fixed per type:
//
// - Q4_0, Q8_0, Q4_1: block `i` goes to chain `i % 4`: `chain = fma(sumi, d_w * d_x, chain)`
//   (Q4_1 also `chain_ms = fma(m, s, chain_ms)`); the result is `(c0 + c1) + (c2 + c3)` (plus the
//   same of the `ms` chains).
// - Q4_K, Q5_K: each block's groups form `PARTS` parts (2 of four groups, 4 of two), each the
//   exact `sum_g scale_g * dot_g`; part `p` goes to chain `p`: `chain = fma(part, d * d_x, chain)`,
//   and the min term to its own: `chain_m = fma(summ, dmin * d_x, chain_m)`; the result is
//   `((chain_0 + chain_1) + ...) - chain_m`.
// - Q6_K: eight parts of 32 values (two groups of 16) per block, as above without min term.

/// `[sum(a), sum(b), sum(c), sum(d)]` of four vectors' i32 lanes, exactly.
#[inline]
#[target_feature(enable = "neon")]
fn hsum4(a: int32x4_t, b: int32x4_t, c: int32x4_t, d: int32x4_t) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d))
}

#[inline]
#[target_feature(enable = "neon")]
fn lanes(v: float32x4_t) -> [f32; 4] {
    let mut o = [0.0f32; 4];
    // SAFETY: writes exactly the four floats of `o`.
    unsafe { vst1q_f32(o.as_mut_ptr(), v) };
    o
}

/// `(c0 + c1) + (c2 + c3)`: the final sum of the four chains of the legacy types.
#[inline]
fn reduce4([c0, c1, c2, c3]: [f32; 4]) -> f32 {
    (c0 + c1) + (c2 + c3)
}

/// [`reduce4`] lane-wise, for four tile results at once.
#[inline]
#[target_feature(enable = "neon")]
fn reduce4_v(c: [float32x4_t; 4]) -> float32x4_t {
    vaddq_f32(vaddq_f32(c[0], c[1]), vaddq_f32(c[2], c[3]))
}

/// `((c0 + c1) + c2) + ...`: the final sum of the K-quant part chains.
#[inline]
fn fold(c: &[f32]) -> f32 {
    c.iter()
        .skip(1)
        .fold(c.first().copied().unwrap_or(0.0), |s, &v| s + v)
}

/// [`fold`] lane-wise.
#[inline]
#[target_feature(enable = "neon")]
fn fold_v(c: &[float32x4_t]) -> float32x4_t {
    let mut s = c.first().copied().unwrap_or(vdupq_n_f32(0.0));
    for &v in c.iter().skip(1) {
        s = vaddq_f32(s, v);
    }
    s
}

/// Q4_1's `(m, s)` f16 pair of a block (weight min, activation sum); `None` for the other types.
type MinSum<W, A> = fn(&W, &A) -> Option<([u8; 2], [u8; 2])>;

/// The legacy (32-value block) row dot: per block `sumi * (d_w * d_x)` (+ `m * s`), the chains of
/// the float structure above in the four lanes of one vector. `int` gives a block's integer dot as
/// four i32 lanes to be summed.
#[inline]
#[target_feature(enable = "neon")]
fn legacy_row<W, A>(
    w: &[W],
    x: &[A],
    d: impl Fn(&W, &A) -> ([u8; 2], [u8; 2]),
    ms: MinSum<W, A>,
    int: impl Fn(&W, &A) -> int32x4_t,
) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    let mut acc_ms = vdupq_n_f32(0.0);
    let (w4, w_rest) = w.as_chunks::<4>();
    let (x4, x_rest) = x.as_chunks::<4>();
    // (Written out: LLVM leaves `[T; N]::map` out of line in these loops.)
    for ([b0, b1, b2, b3], [a0, a1, a2, a3]) in w4.iter().zip(x4) {
        let (d0, d1, d2, d3) = (d(b0, a0), d(b1, a1), d(b2, a2), d(b3, a3));
        let dd = vmulq_f32(
            f16x4([d0.0, d1.0, d2.0, d3.0]),
            f16x4([d0.1, d1.1, d2.1, d3.1]),
        );
        let sumi = hsum4(int(b0, a0), int(b1, a1), int(b2, a2), int(b3, a3));
        acc = vfmaq_f32(acc, vcvtq_f32_s32(sumi), dd);
        if let (Some(m0), Some(m1), Some(m2), Some(m3)) =
            (ms(b0, a0), ms(b1, a1), ms(b2, a2), ms(b3, a3))
        {
            let m = f16x4([m0.0, m1.0, m2.0, m3.0]);
            acc_ms = vfmaq_f32(acc_ms, m, f16x4([m0.1, m1.1, m2.1, m3.1]));
        }
    }
    let (mut acc, mut acc_ms) = (lanes(acc), lanes(acc_ms));
    for (c, (b, a)) in w_rest.iter().zip(x_rest).enumerate() {
        let (dw, dx) = d(b, a);
        let sumi = vaddvq_s32(int(b, a)) as f32;
        acc[c] = sumi.mul_add(fp16_le(dw) * fp16_le(dx), acc[c]);
        if let Some((m, s)) = ms(b, a) {
            acc_ms[c] = fp16_le(m).mul_add(fp16_le(s), acc_ms[c]);
        }
    }
    reduce4(acc) + reduce4(acc_ms)
}

/// `ggml_vec_dot_q4_0_q8_0`: per block `d_w * d_x * sumi`.
#[inline]
#[target_feature(enable = "neon")]
fn q4_0<D: Dot>(w: &[BlockQ4_0], x: &[BlockQ8_0], dot: D) -> f32 {
    let zero = vdupq_n_s32(0);
    legacy_row(
        w,
        x,
        |b, a| (b.d, a.d),
        |_, _| None,
        // Weights -8..=7.
        |b, a| dot.dot32_small(zero, q4_0_values(&b.qs), load32i(&a.qs)),
    )
}

/// `ggml_vec_dot_q8_0_q8_0`: per block `sumi * (d_w * d_x)`.
#[inline]
#[target_feature(enable = "neon")]
fn q8_0<D: Dot>(w: &[BlockQ8_0], x: &[BlockQ8_0], dot: D) -> f32 {
    let zero = vdupq_n_s32(0);
    legacy_row(
        w,
        x,
        |b, a| (b.d, a.d),
        |_, _| None,
        // Any weight bytes, -128 included.
        |b, a| dot.dot32(zero, load32i(&b.qs), load32i(&a.qs)),
    )
}

/// `ggml_vec_dot_q4_1_q8_1`: per block `d_w * d_x * sumi + m * s`.
#[inline]
#[target_feature(enable = "neon")]
fn q4_1<D: Dot>(w: &[BlockQ4_1], x: &[BlockQ8_1], dot: D) -> f32 {
    let zero = vdupq_n_s32(0);
    legacy_row(
        w,
        x,
        |b, a| (b.d, a.d),
        |b, a| Some((b.m, a.s)),
        // Weights 0..=15.
        |b, a| dot.dot32_small(zero, nibbles(&b.qs), load32i(&a.qs)),
    )
}

/// Chunk `j` (0..4) of a Q4_K block: its 64 values (each 0..=15) as two groups of 32.
#[inline]
#[target_feature(enable = "neon")]
fn q4_k_chunk(b: &BlockQ4K, j: usize) -> ([int8x16_t; 2], [int8x16_t; 2]) {
    match b.qs.as_chunks::<32>().0.get(j) {
        Some(qs) => nibbles32(qs),
        None => ([vdupq_n_s8(0); 2], [vdupq_n_s8(0); 2]),
    }
}

/// Chunk `j` (0..4) of a Q5_K block: its 64 values (each 0..=31) as two groups of 32.
#[inline]
#[target_feature(enable = "neon")]
fn q5_k_chunk(b: &BlockQ5K, j: usize) -> ([int8x16_t; 2], [int8x16_t; 2]) {
    match b.qs.as_chunks::<32>().0.get(j) {
        Some(qs) => q5_k_values(qs, load32(&b.qh), j),
        None => ([vdupq_n_s8(0); 2], [vdupq_n_s8(0); 2]),
    }
}

/// A Q4_K/Q5_K block's `(scales and mins, d, dmin)`.
type KFields<W> = fn(&W) -> (&[u8; 12], [u8; 2], [u8; 2]);

/// A Q4_K/Q5_K block's chunk `j` as two groups of 32 values ([`q4_k_chunk`], [`q5_k_chunk`]).
type KChunk<W> = unsafe fn(&W, usize) -> ([int8x16_t; 2], [int8x16_t; 2]);

/// `ggml_vec_dot_q4_K_q8_K` / `ggml_vec_dot_q5_K_q8_K`: per block
/// `d * sum_g scale_g * dot_g - dmin * sum_j bsums_j * min_j`, the groups gathered into `PARTS`
/// parts (see the float structure above) in the lanes of one vector. Each part is at most
/// `4 * 32 * 15 * 128 * 63 < 2^24` (Q4_K, two parts) or `2 * 32 * 31 * 128 * 63 < 2^24` (Q5_K, four
/// parts).
#[inline]
#[target_feature(enable = "neon")]
fn k4_row<W, D: Dot, const PARTS: usize>(
    w: &[W],
    x: &[BlockQ8K],
    dot: D,
    fields: KFields<W>,
    chunk: KChunk<W>,
) -> f32 {
    let zero = vdupq_n_s32(0);
    let mut acc = vdupq_n_f32(0.0);
    let mut acc_m = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let (packed, d, dmin) = fields(b);
        let (scales, mins) = scales_mins_k4(packed);
        let mut part = [zero; 4];
        for (j, y) in a.qs.as_chunks::<64>().0.iter().enumerate() {
            // SAFETY: `chunk` is `q4_k_chunk` or `q5_k_chunk`, which need only NEON.
            let (lo, hi) = unsafe { chunk(b, j) };
            let [y0, y1, y2, y3] = load64i(y);
            let p = &mut part[j * PARTS / 4];
            let g_lo = dot.dot32_small(zero, lo, [y0, y1]);
            let g_hi = dot.dot32_small(zero, hi, [y2, y3]);
            *p = vmlaq_n_s32(*p, g_lo, i32::from(scales[2 * j]));
            *p = vmlaq_n_s32(*p, g_hi, i32::from(scales[2 * j + 1]));
        }
        let parts = vcvtq_f32_s32(hsum4(part[0], part[1], part[2], part[3]));
        let dx = a.d();
        acc = vfmaq_n_f32(acc, parts, fp16_le(d) * dx);
        acc_m = (min_sum(a, mins) as f32).mul_add(fp16_le(dmin) * dx, acc_m);
    }
    fold(&lanes(acc)[..PARTS]) - acc_m
}

#[inline]
#[target_feature(enable = "neon")]
fn q4_k<D: Dot>(w: &[BlockQ4K], x: &[BlockQ8K], dot: D) -> f32 {
    k4_row::<_, _, 2>(w, x, dot, |b| (&b.scales, b.d, b.dmin), q4_k_chunk)
}

#[inline]
#[target_feature(enable = "neon")]
fn q5_k<D: Dot>(w: &[BlockQ5K], x: &[BlockQ8K], dot: D) -> f32 {
    k4_row::<_, _, 4>(w, x, dot, |b| (&b.scales, b.d, b.dmin), q5_k_chunk)
}

/// `ggml_vec_dot_q6_K_q8_K`: per block `d * sum_g scale_g * sum_{i in g} (q_i - 32) * y_i` over
/// 16 groups of 16, as eight parts of two groups (at most `2 * 16 * 32 * 128 * 128 = 2^24`, exact
/// in f32): those of the first half in the lanes of one vector, of the second half in another.
#[inline]
#[target_feature(enable = "neon")]
fn q6_k<D: Dot>(w: &[BlockQ6K], x: &[BlockQ8K], dot: D) -> f32 {
    let zero = vdupq_n_s32(0);
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (b, a) in w.iter().zip(x) {
        let d = fp16_le(b.d) * a.d();
        let halves =
            b.ql.as_chunks::<64>()
                .0
                .iter()
                .zip(b.qh.as_chunks::<32>().0)
                .zip(a.qs.as_chunks::<128>().0)
                .zip(b.scales.as_chunks::<8>().0)
                .zip(&mut acc);
        for ((((ql, qh), y), sc), acc) in halves {
            let v = q6_k_values(ql, qh);
            let y = load128i(y);
            // Weights -32..=31; part c: groups 2c and 2c + 1.
            let part = |c: usize| {
                let (g0, g1) = (2 * c, 2 * c + 1);
                let p = vmulq_n_s32(dot.dot16(zero, v[g0], y[g0]), i32::from(sc[g0]));
                vmlaq_n_s32(p, dot.dot16(zero, v[g1], y[g1]), i32::from(sc[g1]))
            };
            let parts = hsum4(part(0), part(1), part(2), part(3));
            *acc = vfmaq_n_f32(*acc, vcvtq_f32_s32(parts), d);
        }
    }
    let [a, b] = acc;
    let [a, b] = [lanes(a), lanes(b)];
    fold(&[a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
}

/// The row kernels of one kernel set: the generic kernels above, monomorphized for one [`Dot`]
/// inside functions compiled with that set's target features (so `sdot` inlines into them).
macro_rules! row_kernels {
    ($module:ident, $features:literal, $dot:expr) => {
        mod $module {
            use super::*;

            #[target_feature(enable = $features)]
            pub(super) fn q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
                super::q4_0(w, x, $dot)
            }
            #[target_feature(enable = $features)]
            pub(super) fn q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
                super::q4_1(w, x, $dot)
            }
            #[target_feature(enable = $features)]
            pub(super) fn q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
                super::q8_0(w, x, $dot)
            }
            #[target_feature(enable = $features)]
            pub(super) fn q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
                super::q4_k(w, x, $dot)
            }
            #[target_feature(enable = $features)]
            pub(super) fn q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
                super::q5_k(w, x, $dot)
            }
            #[target_feature(enable = $features)]
            pub(super) fn q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
                super::q6_k(w, x, $dot)
            }
        }
    };
}

row_kernels!(widen, "neon", Widen);
// SAFETY (of `Sdot::assume` in each function): these functions are compiled with dotprod, so
// running them at all requires a CPU that has it (and `row_kernel` hands them out only then).
row_kernels!(sdot, "neon,dotprod", unsafe { Sdot::assume() });

// ---------------------------------------------------------------------------------------------
// i8mm 2×2 tile kernels: two weight rows (`w[0]`, `w[1]`) × two activation rows (`x[0]`, `x[1]`).
// Each `smmla` multiplies eight positions of both weight rows with the same eight positions of
// both activation rows, so the rows are interleaved eight bytes at a time. Every i32 lane is one
// output's exact partial sum, and the float structure is the row kernels' (lane-wise over the four
// outputs), so each result has the bits of the row kernel's.

/// `acc + [w0·x0, w0·x1, w1·x0, w1·x1]` over 16 positions: `w` holds those positions of the two
/// weight rows, `x` of the two activation rows.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn mm16(acc: int32x4_t, w: [int8x16_t; 2], x: [int8x16_t; 2]) -> int32x4_t {
    let (w0, w1) = (vreinterpretq_s64_s8(w[0]), vreinterpretq_s64_s8(w[1]));
    let (x0, x1) = (vreinterpretq_s64_s8(x[0]), vreinterpretq_s64_s8(x[1]));
    let lo = |a, b| vreinterpretq_s8_s64(vzip1q_s64(a, b));
    let hi = |a, b| vreinterpretq_s8_s64(vzip2q_s64(a, b));
    let acc = smmla(acc, lo(w0, w1), lo(x0, x1));
    smmla(acc, hi(w0, w1), hi(x0, x1))
}

/// [`mm16`] over 32 positions (two registers per row).
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn mm32(acc: int32x4_t, w: [[int8x16_t; 2]; 2], x: [[int8x16_t; 2]; 2]) -> int32x4_t {
    let acc = mm16(acc, [w[0][0], w[1][0]], [x[0][0], x[1][0]]);
    mm16(acc, [w[0][1], w[1][1]], [x[0][1], x[1][1]])
}

/// The Q4_0/Q4_1/Q8_0 tile: [`legacy_row`]'s float structure lane-wise, lanes of 32 exact products.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn legacy_tile<W, A>(
    w: [&[W]; 2],
    x: [&[A]; 2],
    d: impl Fn(&W, &A) -> ([u8; 2], [u8; 2]),
    ms: MinSum<W, A>,
    values_w: impl Fn(&W) -> [int8x16_t; 2],
    values_x: impl Fn(&A) -> [int8x16_t; 2],
) -> [[f32; 2]; 2] {
    let zero = vdupq_n_s32(0);
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut acc_ms = [vdupq_n_f32(0.0); 4];
    // Block quadruple (b0, b1, a0, a1) into chain `acc`/`acc_ms`.
    let step = |acc: &mut float32x4_t, acc_ms: &mut float32x4_t, b0: &W, b1: &W, a0: &A, a1: &A| {
        let sumi = mm32(
            zero,
            [values_w(b0), values_w(b1)],
            [values_x(a0), values_x(a1)],
        );
        let ((w0, x0), (w1, x1)) = (d(b0, a0), d(b1, a1));
        let dd = vmulq_f32(f16x4([w0, w0, w1, w1]), f16x4([x0, x1, x0, x1]));
        *acc = vfmaq_f32(*acc, vcvtq_f32_s32(sumi), dd);
        if let (Some((m0, s0)), Some((m1, s1))) = (ms(b0, a0), ms(b1, a1)) {
            let m = f16x4([m0, m0, m1, m1]);
            *acc_ms = vfmaq_f32(*acc_ms, m, f16x4([s0, s1, s0, s1]));
        }
    };
    let (w04, w0_rest) = w[0].as_chunks::<4>();
    let (w14, w1_rest) = w[1].as_chunks::<4>();
    let (x04, x0_rest) = x[0].as_chunks::<4>();
    let (x14, x1_rest) = x[1].as_chunks::<4>();
    let quads = w04.iter().zip(w14).zip(x04).zip(x14);
    for (((b0, b1), a0), a1) in quads {
        let [c0, c1, c2, c3] = &mut acc;
        let [m0, m1, m2, m3] = &mut acc_ms;
        step(c0, m0, &b0[0], &b1[0], &a0[0], &a1[0]);
        step(c1, m1, &b0[1], &b1[1], &a0[1], &a1[1]);
        step(c2, m2, &b0[2], &b1[2], &a0[2], &a1[2]);
        step(c3, m3, &b0[3], &b1[3], &a0[3], &a1[3]);
    }
    let rest = w0_rest.iter().zip(w1_rest).zip(x0_rest).zip(x1_rest);
    for ((((b0, b1), a0), a1), (c, m)) in rest.zip(acc.iter_mut().zip(&mut acc_ms)) {
        step(c, m, b0, b1, a0, a1);
    }
    tile_out(vaddq_f32(reduce4_v(acc), reduce4_v(acc_ms)))
}

#[target_feature(enable = "neon,i8mm")]
fn q4_0_mm(w: [&[BlockQ4_0]; 2], x: [&[BlockQ8_0]; 2]) -> [[f32; 2]; 2] {
    legacy_tile(
        w,
        x,
        |b, a| (b.d, a.d),
        |_, _| None,
        |b| q4_0_values(&b.qs),
        |a| load32i(&a.qs),
    )
}

#[target_feature(enable = "neon,i8mm")]
fn q4_1_mm(w: [&[BlockQ4_1]; 2], x: [&[BlockQ8_1]; 2]) -> [[f32; 2]; 2] {
    legacy_tile(
        w,
        x,
        |b, a| (b.d, a.d),
        |b, a| Some((b.m, a.s)),
        |b| nibbles(&b.qs),
        |a| load32i(&a.qs),
    )
}

#[target_feature(enable = "neon,i8mm")]
fn q8_0_mm(w: [&[BlockQ8_0]; 2], x: [&[BlockQ8_0]; 2]) -> [[f32; 2]; 2] {
    legacy_tile(
        w,
        x,
        |b, a| (b.d, a.d),
        |_, _| None,
        |b| load32i(&b.qs),
        |a| load32i(&a.qs),
    )
}

/// The Q4_K/Q5_K tile: [`k4_row`]'s float structure lane-wise.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn k4_tile<W, const PARTS: usize>(
    w: [&[W]; 2],
    x: [&[BlockQ8K]; 2],
    fields: KFields<W>,
    chunk: KChunk<W>,
) -> [[f32; 2]; 2] {
    let zero = vdupq_n_s32(0);
    let mut acc = [vdupq_n_f32(0.0); PARTS];
    let mut acc_m = vdupq_n_f32(0.0);
    let blocks = w[0].iter().zip(w[1]).zip(x[0]).zip(x[1]);
    for (((b0, b1), a0), a1) in blocks {
        let (packed0, d0, dmin0) = fields(b0);
        let (packed1, d1, dmin1) = fields(b1);
        let (s0, m0) = scales_mins_k4(packed0);
        let (s1, m1) = scales_mins_k4(packed1);
        let mut part = [zero; PARTS];
        let y = a0
            .qs
            .as_chunks::<64>()
            .0
            .iter()
            .zip(a1.qs.as_chunks::<64>().0);
        for (j, (y0, y1)) in y.enumerate() {
            // SAFETY: `chunk` is `q4_k_chunk` or `q5_k_chunk`, which need only NEON.
            let ((lo0, hi0), (lo1, hi1)) = unsafe { (chunk(b0, j), chunk(b1, j)) };
            let [y00, y01, y02, y03] = load64i(y0);
            let [y10, y11, y12, y13] = load64i(y1);
            let g_lo = mm32(zero, [lo0, lo1], [[y00, y01], [y10, y11]]);
            let g_hi = mm32(zero, [hi0, hi1], [[y02, y03], [y12, y13]]);
            let p = &mut part[j * PARTS / 4];
            let sc = |s: &[u8; 8], g: usize| i32::from(s[g]);
            *p = vmlaq_s32(*p, g_lo, pair_scale(sc(&s0, 2 * j), sc(&s1, 2 * j)));
            *p = vmlaq_s32(*p, g_hi, pair_scale(sc(&s0, 2 * j + 1), sc(&s1, 2 * j + 1)));
        }
        let (dx0, dx1) = (a0.d(), a1.d());
        let d = outer(fp16_le(d0), fp16_le(d1), dx0, dx1);
        for (acc, part) in acc.iter_mut().zip(part) {
            *acc = vfmaq_f32(*acc, vcvtq_f32_s32(part), d);
        }
        let dmin = outer(fp16_le(dmin0), fp16_le(dmin1), dx0, dx1);
        let summ = i32x4([
            min_sum(a0, m0),
            min_sum(a1, m0),
            min_sum(a0, m1),
            min_sum(a1, m1),
        ]);
        acc_m = vfmaq_f32(acc_m, vcvtq_f32_s32(summ), dmin);
    }
    tile_out(vsubq_f32(fold_v(&acc), acc_m))
}

#[target_feature(enable = "neon,i8mm")]
fn q4_k_mm(w: [&[BlockQ4K]; 2], x: [&[BlockQ8K]; 2]) -> [[f32; 2]; 2] {
    k4_tile::<_, 2>(w, x, |b| (&b.scales, b.d, b.dmin), q4_k_chunk)
}

#[target_feature(enable = "neon,i8mm")]
fn q5_k_mm(w: [&[BlockQ5K]; 2], x: [&[BlockQ8K]; 2]) -> [[f32; 2]; 2] {
    k4_tile::<_, 4>(w, x, |b| (&b.scales, b.d, b.dmin), q5_k_chunk)
}

/// The Q6_K tile: [`q6_k`]'s float structure lane-wise, each part with its own chain.
#[target_feature(enable = "neon,i8mm")]
fn q6_k_mm(w: [&[BlockQ6K]; 2], x: [&[BlockQ8K]; 2]) -> [[f32; 2]; 2] {
    let zero = vdupq_n_s32(0);
    let mut acc = [vdupq_n_f32(0.0); 8];
    let blocks = w[0].iter().zip(w[1]).zip(x[0]).zip(x[1]);
    for (((b0, b1), a0), a1) in blocks {
        let d = outer(fp16_le(b0.d), fp16_le(b1.d), a0.d(), a1.d());
        let halves = b0
            .ql
            .as_chunks::<64>()
            .0
            .iter()
            .zip(b0.qh.as_chunks::<32>().0)
            .zip(
                b1.ql
                    .as_chunks::<64>()
                    .0
                    .iter()
                    .zip(b1.qh.as_chunks::<32>().0),
            )
            .zip(
                a0.qs
                    .as_chunks::<128>()
                    .0
                    .iter()
                    .zip(a1.qs.as_chunks::<128>().0),
            )
            .zip(
                b0.scales
                    .as_chunks::<8>()
                    .0
                    .iter()
                    .zip(b1.scales.as_chunks::<8>().0),
            )
            .zip(acc.as_chunks_mut::<4>().0);
        for (((((ql0, qh0), (ql1, qh1)), (y0, y1)), (sc0, sc1)), acc) in halves {
            let v0 = q6_k_values(ql0, qh0);
            let v1 = q6_k_values(ql1, qh1);
            let (y0, y1) = (load128i(y0), load128i(y1));
            // Part c: scale groups 2c and 2c + 1.
            for (c, acc) in acc.iter_mut().enumerate() {
                let mut part = zero;
                for g in [2 * c, 2 * c + 1] {
                    let p = mm16(zero, [v0[g], v1[g]], [y0[g], y1[g]]);
                    let s = pair_scale(i32::from(sc0[g]), i32::from(sc1[g]));
                    part = vmlaq_s32(part, p, s);
                }
                *acc = vfmaq_f32(*acc, vcvtq_f32_s32(part), d);
            }
        }
    }
    tile_out(fold_v(&acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extreme products: -128 × -128 everywhere, and -128 × 127, through every `Dot`
    /// available, and `smmla` where available.
    #[test]
    fn integer_dots_are_exact_at_the_extremes() {
        #[target_feature(enable = "neon")]
        fn lanes(v: int32x4_t) -> i32 {
            vaddvq_s32(v)
        }
        #[target_feature(enable = "neon")]
        fn check<D: Dot>(dot: D) {
            let zero = vdupq_n_s32(0);
            for (a, b) in [(-128i8, -128i8), (-128, 127), (127, 127), (63, -128)] {
                let (va, vb) = (vdupq_n_s8(a), vdupq_n_s8(b));
                let p = i32::from(a) * i32::from(b);
                assert_eq!(lanes(dot.dot32(zero, [va; 2], [vb; 2])), 32 * p, "{a} {b}");
                if a != -128 {
                    assert_eq!(lanes(dot.dot16(zero, va, vb)), 16 * p, "{a} {b}");
                }
                if a.unsigned_abs() <= 63 {
                    assert_eq!(lanes(dot.dot32_small(zero, [va; 2], [vb; 2])), 32 * p);
                }
            }
        }
        // SAFETY: NEON is part of every aarch64 target.
        unsafe { check(Widen) };
        if dotprod() {
            // SAFETY: dotprod detected.
            unsafe { check(Sdot::assume()) };
        }
        #[target_feature(enable = "neon,i8mm")]
        fn check_mm() {
            let zero = vdupq_n_s32(0);
            let m = vdupq_n_s8(-128);
            let r = tile_out(vcvtq_f32_s32(mm16(zero, [m, m], [m, vdupq_n_s8(127)])));
            assert_eq!(r, [[262_144.0, -260_096.0], [262_144.0, -260_096.0]]);
        }
        if i8mm() {
            // SAFETY: i8mm detected.
            unsafe { check_mm() };
        }
    }
}
