//! x86-64 AVX2 + FMA + F16C fused dequantize-and-dot kernels.
//!
//! Same math as the scalar kernels (`dot_legacy.rs`, `dot_k.rs`): per block an exact integer dot of
//! the quantized weights with the quantized activations, then the block's float scales. Only the
//! float summation order differs (eight lanes and FMA instead of one running sum), so results differ
//! from the scalar reference in the last bits only. The ideas follow ggml's
//! `ggml_vec_dot_*_q8_*` AVX2 paths (`ggml-cpu/arch/x86/quants.c`), written anew with one difference:
//! no sign trick (`_mm256_sign_epi8`), whose `-(-128)` wraps, so every integer sum here is exact for
//! any input bytes (weights are unsigned nibbles dotted with `maddubs` and the offset subtracted as
//! `offset * sum(y)`; Q8_0 weights are widened to i16).
//!
//! Every `#[target_feature]` function here is reached only through [`row_kernel`], which returns
//! kernels only when [`available`] (run-time detection) said yes. All loads are unaligned loads of
//! whole fixed-size block fields (`&[u8; N]` / `&[i8; N]` arrays), so they stay in bounds whatever the
//! slices' alignment.

use std::arch::x86_64::{
    __m128, __m128i, __m256, __m256i, _mm_add_ps, _mm_cvtepu8_epi16, _mm_cvtph_ps,
    _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadl_epi64, _mm_loadu_si128, _mm_movehl_ps, _mm_mul_ps,
    _mm_set_epi16, _mm_set_epi32, _mm_set1_epi16, _mm_shuffle_ps, _mm_srli_epi16,
    _mm_unpackhi_epi16, _mm_unpacklo_epi16, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256,
    _mm256_blend_ps, _mm256_broadcastsi128_si256, _mm256_castps128_ps256, _mm256_castps256_ps128,
    _mm256_cmpeq_epi8, _mm256_cvtepi8_epi16, _mm256_cvtepi32_ps, _mm256_cvtph_ps,
    _mm256_dpbusd_epi32, _mm256_dpwssd_epi32, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps,
    _mm256_or_si256, _mm256_permutevar8x32_ps, _mm256_set_epi64x, _mm256_set_m128i,
    _mm256_set1_epi8, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi16,
    _mm256_slli_epi32, _mm256_srli_epi16, _mm256_sub_epi16, _mm256_sub_epi32, _mm256_xor_si256,
};
use std::sync::OnceLock;

use super::{RowKernel, scales_mins_k4};
use crate::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
    BlockQ8_1, BlockQ8K, as_blocks,
};
use crate::types::GgmlType;

/// Whether this CPU runs the kernels here (AVX2, FMA and F16C), detected once.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Whether this CPU also runs the VNNI kernels: [`available`] plus AVX-512 VNNI with its 256-bit
/// (VL) encodings (AMD Zen 4 and later, Intel Ice Lake and later), detected once.
pub(super) fn vnni_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// The row kernel for weights of type `ty`: with `vnni` (and [`vnni_available`]) the VNNI one where
/// there is one, else the AVX2 one; `None` where there is none (the caller falls back to scalar)
/// or the CPU lacks the features.
pub(super) fn row_kernel(ty: GgmlType, vnni: bool) -> Option<RowKernel> {
    use GgmlType::*;
    if vnni {
        if !vnni_available() {
            return None;
        }
        // Each wrapper calls a `#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]`
        // function, handed out only after `vnni_available()`.
        match ty {
            Q4_K => return Some(|w, x| run(w, x, q4_k_vnni)),
            Q6_K => return Some(|w, x| run(w, x, q6_k_vnni)),
            Q8_0 => return Some(|w, x| run(w, x, q8_0_vnni)),
            _ => {}
        }
    }
    if !available() {
        return None;
    }
    // Each wrapper calls a `#[target_feature(enable = "avx2,fma,f16c")]` function; handing them out
    // only after `available()` is what makes those calls sound (see the SAFETY comments below).
    let kernel: RowKernel = match ty {
        // SAFETY: as for the others: `dot_f32` needs AVX2/FMA, checked by `available()` above.
        F32 => |w, x| unsafe { dot_f32(w, x) },
        Q4_0 => |w, x| run(w, x, q4_0),
        Q4_1 => |w, x| run(w, x, q4_1),
        Q5_0 => |w, x| run(w, x, q5_0),
        Q5_1 => |w, x| run(w, x, q5_1),
        Q8_0 => |w, x| run(w, x, q8_0),
        Q4_K => |w, x| run(w, x, q4_k),
        Q5_K => |w, x| run(w, x, q5_k),
        Q6_K => |w, x| run(w, x, q6_k),
        _ => return None,
    };
    Some(kernel)
}

/// The AVX2 2×2 tile kernel for weights of type `ty` (see [`super::TileKernel`]), or `None`.
///
/// Each is the row kernel's code run for two activation rows at once: every weight block is loaded
/// and unpacked once for both (the row kernel is the one-row instance of the same function). `vnni`
/// as for [`row_kernel`].
pub(super) fn tile_kernel(ty: GgmlType, vnni: bool) -> Option<super::TileKernel> {
    use GgmlType::*;
    if vnni {
        if !vnni_available() {
            return None;
        }
        match ty {
            Q4_K => return Some(|w, x| run_tile(w, x, q4_k_vnni_x2)),
            Q6_K => return Some(|w, x| run_tile(w, x, q6_k_vnni_x2)),
            Q8_0 => return Some(|w, x| run_tile(w, x, q8_0_vnni_x2)),
            _ => {}
        }
    }
    if !available() {
        return None;
    }
    let kernel: super::TileKernel = match ty {
        Q4_0 => |w, x| run_tile(w, x, q4_0_x2),
        Q4_1 => |w, x| run_tile(w, x, q4_1_x2),
        Q5_0 => |w, x| run_tile(w, x, q5_0_x2),
        Q5_1 => |w, x| run_tile(w, x, q5_1_x2),
        Q8_0 => |w, x| run_tile(w, x, q8_0_x2),
        Q4_K => |w, x| run_tile(w, x, q4_k_x2),
        Q6_K => |w, x| run_tile(w, x, q6_k_x2),
        _ => return None,
    };
    Some(kernel)
}

/// A two-activation-row AVX2 dot: `unsafe` only because of `#[target_feature]`.
type PairKernel<W, A> = unsafe fn(&[W], [&[A]; 2]) -> [f32; 2];

/// Views the rows as blocks and runs `f` for each weight row with both activation rows.
#[inline(always)]
fn run_tile<W: Block, A: Block>(
    w: [&[u8]; 2],
    x: [&[u8]; 2],
    f: PairKernel<W, A>,
) -> [[f32; 2]; 2] {
    let x = x.map(|x| as_blocks::<A>(x).unwrap_or_default());
    // SAFETY: as in `run`: `f` is one of the `#[target_feature]` kernels below, reachable only
    // through `tile_kernel`, which checked `available()` (`vnni_available()` for the VNNI ones).
    w.map(|w| unsafe { f(as_blocks::<W>(w).unwrap_or_default(), x) })
}

/// A block-level AVX2 dot: `unsafe` only because of `#[target_feature]`.
type BlockKernel<W, A> = unsafe fn(&[W], &[A]) -> f32;

/// Views both rows as blocks (misaligned lengths, impossible after validation, view as empty and
/// give 0) and runs `f`.
#[inline(always)]
fn run<W: Block, A: Block>(w: &[u8], x: &[u8], f: BlockKernel<W, A>) -> f32 {
    let w = as_blocks::<W>(w).unwrap_or_default();
    let x = as_blocks::<A>(x).unwrap_or_default();
    // SAFETY: `f` is one of the `#[target_feature]` kernels below (AVX2/FMA/F16C, plus AVX512-VNNI
    // and AVX512-VL for the VNNI ones), and this function is only reachable through the kernels
    // `row_kernel` returns after `available()` (`vnni_available()`) confirmed those features at run
    // time. The kernels themselves read only within `w` and `x`.
    unsafe { f(w, x) }
}

// Everything below runs with AVX2/FMA/F16C enabled; the intrinsics used are safe to call inside such
// functions except the loads, which take raw pointers.

/// Two f16 scales (little-endian bytes) to f32, exactly (F16C conversion is exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x2(a: [u8; 2], b: [u8; 2]) -> (f32, f32) {
    let bits = u32::from(u16::from_le_bytes(a)) | (u32::from(u16::from_le_bytes(b)) << 16);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1)))
}

/// One f16 to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x1(a: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        u16::from_le_bytes(a),
    ))))
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ps(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(bytes: &[u8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `bytes`; unaligned load.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32i(bytes: &[i8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `bytes`; unaligned load.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16(bytes: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `bytes`; unaligned load.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// The 32 nibbles of a 4-bit block as bytes 0..16: low nibbles (values 0..16) in the low 128-bit
/// lane, high nibbles (values 16..32) in the high lane — the order of the activation's 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    let q = load16(qs);
    let v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// `sum_j q_j * y_j` as eight i32 lanes, `q` unsigned bytes (at most 63 here), `y` signed.
/// `maddubs` adds pairs into i16 (at most `2 * 63 * 128`, no saturation), `madd` pairs again into i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(q: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1))
}

/// `sum_j (q_j - OFFSET) * y_j` for the unsigned values `q` of a Q4_0 (nibbles, offset 8) or Q5_0
/// (5 bits, offset 16) block, as eight i32 lanes: `q * y - OFFSET * y` in i16 pairs (within
/// `±2 * (31 + 16) * 128`), exact for every `y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q_offset<const OFFSET: i8>(q: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(q, y);
    let o = _mm256_maddubs_epi16(_mm256_set1_epi8(OFFSET), y);
    _mm256_madd_epi16(_mm256_sub_epi16(p, o), _mm256_set1_epi16(1))
}

/// Four f16s (little-endian bytes) to f32, exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x4(h: [[u8; 2]; 4]) -> __m128 {
    let [a, b, c, d] = h.map(i16::from_le_bytes);
    _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, d, c, b, a))
}

/// Lane `i` (0..4) of `v`, in every lane of a 256-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn broadcast(v: __m128, i: i32) -> __m256 {
    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v), _mm256_set1_epi32(i))
}

/// The shape of the Q4_0 and Q8_0 dots: per block `sumi * (d_w * d_x)` with `sumi` from `int` as
/// eight i32 lanes, for `R` activation rows at once (each weight block is unpacked once, by
/// `unpack`). Blocks go four at a time (their scales converted and multiplied together) into two
/// accumulators per row, the rest one by one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scaled_blocks<'w, W, A, U: Copy, const R: usize>(
    w: &'w [W],
    x: [&[A]; R],
    scales: impl Fn(&W, &A) -> ([u8; 2], [u8; 2]),
    unpack: impl Fn(&'w W) -> U,
    int: impl Fn(U, &A) -> __m256i,
) -> [f32; R] {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (w4, w_rest) = w.as_chunks::<4>();
    let x4 = x.map(|x| x.as_chunks::<4>());
    for (c, bw) in w4.iter().enumerate() {
        let u: [U; 4] = core::array::from_fn(|i| unpack(&bw[i]));
        for (acc, (x4, _)) in acc.iter_mut().zip(&x4) {
            let Some(bx) = x4.get(c) else { continue };
            let ds: [_; 4] = core::array::from_fn(|i| scales(&bw[i], &bx[i]));
            let d = _mm_mul_ps(f16x4(ds.map(|d| d.0)), f16x4(ds.map(|d| d.1)));
            for (i, (u, a)) in u.iter().zip(bx).enumerate() {
                let sumi = _mm256_cvtepi32_ps(int(*u, a));
                let acc = &mut acc[i & 1];
                *acc = _mm256_fmadd_ps(broadcast(d, i as i32), sumi, *acc);
            }
        }
    }
    for (c, b) in w_rest.iter().enumerate() {
        let u = unpack(b);
        for (acc, (_, x_rest)) in acc.iter_mut().zip(&x4) {
            let Some(a) = x_rest.get(c) else { continue };
            let (dw, dx) = scales(b, a);
            let (dw, dx) = f16x2(dw, dx);
            let sumi = _mm256_cvtepi32_ps(int(u, a));
            acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), sumi, acc[0]);
        }
    }
    acc.map(|[a, b]| hsum(_mm256_add_ps(a, b)))
}

/// `ggml_vec_dot_q4_0_q8_0`: per block `d_w * d_x * sumi`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_n<const R: usize>(w: &[BlockQ4_0], x: [&[BlockQ8_0]; R]) -> [f32; R] {
    scaled_blocks(
        w,
        x,
        |b, a| (b.d, a.d),
        |b| nibbles(&b.qs),
        |q, a| dot_q_offset::<8>(q, load32i(&a.qs)),
    )
}

/// `ggml_vec_dot_q8_0_q8_0`: per block `sumi * (d_w * d_x)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_n<const R: usize>(w: &[BlockQ8_0], x: [&[BlockQ8_0]; R]) -> [f32; R] {
    scaled_blocks(
        w,
        x,
        |b, a| (b.d, a.d),
        |b| &b.qs,
        |q, a| dot_i8_i8(q, &a.qs),
    )
}

/// [`q8_0_n`] with VNNI: `vpdpbusd` multiplies unsigned by signed bytes, so each weight block is
/// offset once to `w + 128` (a sign-bit flip) and `128 * sum(y)` (one more `vpdpbusd`, by ones)
/// taken off again: lanes within `4 * 255 * 128`, every sum exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn q8_0_vnni_n<const R: usize>(w: &[BlockQ8_0], x: [&[BlockQ8_0]; R]) -> [f32; R] {
    let zero = _mm256_setzero_si256();
    let ones = _mm256_set1_epi8(1);
    scaled_blocks(
        w,
        x,
        |b, a| (b.d, a.d),
        |b| _mm256_xor_si256(load32i(&b.qs), _mm256_set1_epi8(i8::MIN)),
        |wu, a| {
            let y = load32i(&a.qs);
            let p = _mm256_dpbusd_epi32(zero, wu, y);
            let s = _mm256_dpbusd_epi32(zero, ones, y);
            _mm256_sub_epi32(p, _mm256_slli_epi32(s, 7))
        },
    )
}

/// The 32 values of a Q5_0/Q5_1 block as bytes 0..32: the nibbles (in [`nibbles`]' order, which is
/// value order) with bit `j` of `qh` added as 16 to byte `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    // Byte j of the vector takes byte j / 8 of qh, then tests its bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(i32::from_le_bytes(qh)),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_or_si256(nibbles(qs), _mm256_and_si256(set, _mm256_set1_epi8(16)))
}

/// `ggml_vec_dot_q5_0_q8_0`: per block `d_w * d_x * sumi`, `sumi` over `q - 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_n<const R: usize>(w: &[BlockQ5_0], x: [&[BlockQ8_0]; R]) -> [f32; R] {
    scaled_blocks(
        w,
        x,
        |b, a| (b.d, a.d),
        |b| five_bits(&b.qs, b.qh),
        |q, a| dot_q_offset::<16>(q, load32i(&a.qs)),
    )
}

/// `ggml_vec_dot_q4_1_q8_1`: per block `d_w * d_x * sumi + m * s`, for `R` activation rows. Four
/// blocks at a time: their `(d, m)` and `(d, s)` pairs are converted as eight f16s each and
/// multiplied together, giving `d_w * d_x` in the even lanes and `m * s` in the odd ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_n<const R: usize>(w: &[BlockQ4_1], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    with_min(w, x, |b| (b.d, b.m), |b| nibbles(&b.qs))
}

/// `ggml_vec_dot_q5_1_q8_1`: Q4_1's shape with 5-bit values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_n<const R: usize>(w: &[BlockQ5_1], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    with_min(w, x, |b| (b.d, b.m), |b| five_bits(&b.qs, b.qh))
}

/// The Q4_1/Q5_1 shape: per block `d_w * d_x * sumi + m * s` with unsigned values from `unpack`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn with_min<W, const R: usize>(
    w: &[W],
    x: [&[BlockQ8_1]; R],
    dm: impl Fn(&W) -> ([u8; 2], [u8; 2]),
    unpack: impl Fn(&W) -> __m256i,
) -> [f32; R] {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let mut acc_ms = [_mm256_setzero_ps(); R];
    let (w4, w_rest) = w.as_chunks::<4>();
    let x4 = x.map(|x| x.as_chunks::<4>());
    let pair = |a: [u8; 2], b: [u8; 2]| i32::from_le_bytes([a[0], a[1], b[0], b[1]]);
    for (c, bw) in w4.iter().enumerate() {
        let [w0, w1, w2, w3] = bw.each_ref().map(|b| {
            let (d, m) = dm(b);
            pair(d, m)
        });
        let wdm = _mm256_cvtph_ps(_mm_set_epi32(w3, w2, w1, w0));
        let q = bw.each_ref().map(&unpack);
        for ((acc, acc_ms), (x4, _)) in acc.iter_mut().zip(&mut acc_ms).zip(&x4) {
            let Some(bx) = x4.get(c) else { continue };
            let [x0, x1, x2, x3] = bx.each_ref().map(|a| pair(a.d, a.s));
            let p = _mm256_mul_ps(wdm, _mm256_cvtph_ps(_mm_set_epi32(x3, x2, x1, x0)));
            *acc_ms = _mm256_add_ps(*acc_ms, p);
            for (i, (q, a)) in q.iter().zip(bx).enumerate() {
                let sumi = _mm256_cvtepi32_ps(dot_u8_i8(*q, load32i(&a.qs)));
                let dd = _mm256_permutevar8x32_ps(p, _mm256_set1_epi32(2 * i as i32));
                let acc = &mut acc[i & 1];
                *acc = _mm256_fmadd_ps(dd, sumi, *acc);
            }
        }
    }
    // The odd lanes of `acc_ms` are the `m * s` sums.
    let mut summs = acc_ms.map(|v| hsum(_mm256_blend_ps::<0b1010_1010>(_mm256_setzero_ps(), v)));
    for (c, b) in w_rest.iter().enumerate() {
        let q = unpack(b);
        let (bd, bm) = dm(b);
        for ((acc, summs), (_, x_rest)) in acc.iter_mut().zip(&mut summs).zip(&x4) {
            let Some(a) = x_rest.get(c) else { continue };
            let sumi = dot_u8_i8(q, load32i(&a.qs));
            let (dw, dx) = f16x2(bd, a.d);
            let (m, s) = f16x2(bm, a.s);
            *summs += m * s;
            acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(sumi), acc[0]);
        }
    }
    core::array::from_fn(|r| hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + summs[r])
}

/// F32 weights with F32 activations (MoE routers are stored in F32): four chains of 8-lane FMAs,
/// as ggml's `ggml_vec_dot_f32`, then the last values one by one. Sums in f32, where the scalar
/// reference sums the products in f64: results differ in the last bits.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f32(w: &[u8], x: &[u8]) -> f32 {
    let n = w.len().min(x.len()) / 4 * 4;
    let (w, x) = (&w[..n], &x[..n]);
    let (wc, w_rest) = w.as_chunks::<32>();
    let (xc, x_rest) = x.as_chunks::<32>();
    let load = |b: &[u8; 32]| {
        // SAFETY: reads exactly the 32 bytes (8 f32) of `b`; unaligned load.
        unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    for (i, (a, b)) in wc.iter().zip(xc).enumerate() {
        acc[i & 3] = _mm256_fmadd_ps(load(a), load(b), acc[i & 3]);
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    let (w_rest, _) = w_rest.as_chunks::<4>();
    let (x_rest, _) = x_rest.as_chunks::<4>();
    for (a, b) in w_rest.iter().zip(x_rest) {
        sum += f32::from_le_bytes(*a) * f32::from_le_bytes(*b);
    }
    sum
}

/// `sum_j w_j * y_j` of two signed 32-byte blocks, widened to i16 first (exact for all bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8_i8(w: &[i8; 32], y: &[i8; 32]) -> __m256i {
    let (w_lo, w_hi) = w.split_at(16);
    let (y_lo, y_hi) = y.split_at(16);
    // SAFETY: each load reads exactly one 16-byte half of a 32-byte array; unaligned loads.
    let [w_lo, w_hi, y_lo, y_hi] = [w_lo, w_hi, y_lo, y_hi]
        .map(|h| unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(h.as_ptr().cast())) });
    _mm256_add_epi32(_mm256_madd_epi16(w_lo, y_lo), _mm256_madd_epi16(w_hi, y_hi))
}

/// `bsums[j] * mins[j / 2]` summed pairwise into eight i32 lanes (the Q4_K/Q5_K min term).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn min_terms(a: &BlockQ8K, mins: [u8; 8]) -> __m256i {
    // SAFETY: reads exactly the 8 bytes of `mins`.
    let m = _mm_cvtepu8_epi16(unsafe { _mm_loadl_epi64(mins.as_ptr().cast()) });
    let m = _mm256_set_m128i(_mm_unpackhi_epi16(m, m), _mm_unpacklo_epi16(m, m));
    // SAFETY: `bsums` is 16 two-byte values, 32 bytes; unaligned load.
    let bsums = unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) };
    _mm256_madd_epi16(bsums, m)
}

/// One group of 32 weights `q` (unsigned, at most 31) dotted with 32 activations, times `scale`
/// (at most 63): eight i32 lanes of at most `4 * 31 * 128 * 63`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scaled_group(q: __m256i, y: &[i8; 32], scale: u8) -> __m256i {
    let p = _mm256_maddubs_epi16(q, load32i(y));
    _mm256_madd_epi16(p, _mm256_set1_epi16(i16::from(scale)))
}

/// `sumi + madd(p, s)`: the i16 pairs of `p` times the i16 scales `s`, summed into the i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn madd_acc(sumi: __m256i, p: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s))
}

/// [`madd_acc`] in one VNNI instruction (`vpdpwssd`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn dpwssd_acc(sumi: __m256i, p: __m256i, s: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(sumi, p, s)
}

/// The 8 Q4_K group scales as i16 vectors, scale `g` in every lane of vector `g`: one byte shuffle
/// each of the scales widened to i16 in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_vectors(scales: [u8; 8]) -> [__m256i; 8] {
    // SAFETY: reads exactly the 8 bytes of `scales`.
    let sc = _mm_cvtepu8_epi16(unsafe { _mm_loadl_epi64(scales.as_ptr().cast()) });
    let sc = _mm256_broadcastsi128_si256(sc);
    core::array::from_fn(|g| {
        let (lo, hi) = (2 * g as i8, 2 * g as i8 + 1);
        _mm256_shuffle_epi8(
            sc,
            _mm256_set1_epi16(i16::from_le_bytes([lo as u8, hi as u8])),
        )
    })
}

/// `ggml_vec_dot_q4_K_q8_K`: per block `d * sum_g scale_g * dot_g - dmin * sum_j bsums_j * min_j`,
/// for `R` activation rows, as `$name` with the features `$features`, each group's i16 pair
/// products scaled and summed into i32 lanes by `$acc` ([`madd_acc`] or [`dpwssd_acc`]). Each i32
/// lane gathers 4 values of each of the 8 groups: at most `32 * 15 * 128 * 63 < 2^24`, so the
/// conversion to f32 is exact, as the scalar kernel's eight `aux32` lanes are.
macro_rules! q4_k_kernel {
    ($name:ident, $features:literal, $acc:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        fn $name<const R: usize>(w: &[BlockQ4K], x: [&[BlockQ8K]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut acc_m = [_mm256_setzero_ps(); R];
            let low = _mm256_set1_epi8(0x0f);
            for (n, b) in w.iter().enumerate() {
                let (scales, mins) = scales_mins_k4(&b.scales);
                let sc = scale_vectors(scales);
                // The 8 groups of 32 weights, unpacked once for every activation row.
                let mut groups = [_mm256_setzero_si256(); 8];
                for (j, qs) in b.qs.as_chunks::<32>().0.iter().enumerate().take(4) {
                    let q = load32(qs);
                    groups[2 * j] = _mm256_and_si256(q, low);
                    groups[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                }
                let (d, dmin) = f16x2(b.d, b.dmin);
                for ((acc, acc_m), x) in acc.iter_mut().zip(&mut acc_m).zip(&x) {
                    let Some(a) = x.get(n) else { continue };
                    // Two chains (even and odd groups): `vpdpwssd` has a latency of several
                    // cycles, and a single chain of eight would be the critical path at m = 1.
                    let mut sumi = [_mm256_setzero_si256(); 2];
                    let ys = a.qs.as_chunks::<32>().0;
                    for (i, ((g, y), s)) in groups.iter().zip(ys).zip(&sc).enumerate() {
                        let p = _mm256_maddubs_epi16(*g, load32i(y));
                        sumi[i & 1] = $acc(sumi[i & 1], p, *s);
                    }
                    let sumi = _mm256_add_epi32(sumi[0], sumi[1]);
                    let dx = a.d();
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(sumi), *acc);
                    let summ = min_terms(a, mins);
                    *acc_m = _mm256_fmadd_ps(
                        _mm256_set1_ps(dmin * dx),
                        _mm256_cvtepi32_ps(summ),
                        *acc_m,
                    );
                }
            }
            core::array::from_fn(|r| hsum(acc[r]) - hsum(acc_m[r]))
        }
    };
}

q4_k_kernel!(q4_k_n, "avx2,fma,f16c", madd_acc);
q4_k_kernel!(q4_k_vnni_n, "avx2,fma,f16c,avx512vnni,avx512vl", dpwssd_acc);

/// `ggml_vec_dot_q5_K_q8_K`: as Q4_K with a fifth bit (16) from `qh`: bit `2j` for the low nibbles
/// of chunk `j`, bit `2j + 1` for its high nibbles. Lanes at most `32 * 31 * 128 * 63 < 2^24`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    let low = _mm256_set1_epi8(0x0f);
    let sixteen = _mm256_set1_epi8(16);
    for (b, a) in w.iter().zip(x) {
        let (scales, mins) = scales_mins_k4(&b.scales);
        let qh = load32(&b.qh);
        let mut sumi = _mm256_setzero_si256();
        let ys = a.qs.as_chunks::<32>().0.chunks_exact(2);
        for (j, (qs, y)) in b.qs.as_chunks::<32>().0.iter().zip(ys).enumerate() {
            let [y_lo, y_hi] = y else { continue };
            let q = load32(qs);
            let m1 = _mm256_set1_epi8((1u8 << (2 * j)) as i8);
            let m2 = _mm256_set1_epi8((2u8 << (2 * j)) as i8);
            let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m1), m1), sixteen);
            let h2 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m2), m2), sixteen);
            let lo = _mm256_or_si256(_mm256_and_si256(q, low), h1);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), low), h2);
            sumi = _mm256_add_epi32(sumi, scaled_group(lo, y_lo, scales[2 * j]));
            sumi = _mm256_add_epi32(sumi, scaled_group(hi, y_hi, scales[2 * j + 1]));
        }
        let (d, dmin) = f16x2(b.d, b.dmin);
        let dx = a.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(sumi), acc);
        let summ = min_terms(a, mins);
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin * dx), _mm256_cvtepi32_ps(summ), acc_m);
    }
    hsum(acc) - hsum(acc_m)
}

/// `ggml_vec_dot_q6_K_q8_K`: per block `d * sum_g scale_g * sum_{i in g} (q_i - 32) * y_i`, for
/// `R` activation rows. The 6-bit `q` (0..64) are dotted unsigned and `32 * y` subtracted in i16
/// (true pair sums within `±2 * 32 * 128`); lanes at most `32 * 32 * 128 * 128 = 2^24`, still
/// exact in f32. `$name`, `$features` and `$acc` as in the Q4_K kernels.
macro_rules! q6_k_kernel {
    ($name:ident, $features:literal, $acc:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        fn $name<const R: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let low = _mm256_set1_epi8(0x0f);
            let thirty_two = _mm256_set1_epi8(32);
            for (n, b) in w.iter().enumerate() {
                // The 8 chunks of 32 six-bit values (values 0..32, 32..64, 64..96, 96..128 of
                // each half), unpacked once for every activation row.
                let mut v = [_mm256_setzero_si256(); 8];
                let halves =
                    b.ql.as_chunks::<64>()
                        .0
                        .iter()
                        .zip(b.qh.as_chunks::<32>().0);
                for (half, (ql, qh)) in halves.enumerate().take(2) {
                    let [ql_a, ql_b] = ql.as_chunks::<32>().0 else {
                        continue;
                    };
                    let (ql_a, ql_b) = (load32(ql_a), load32(ql_b));
                    let h = load32(qh);
                    v[4 * half] = _mm256_or_si256(
                        _mm256_and_si256(ql_a, low),
                        _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x03)), 4),
                    );
                    v[4 * half + 1] = _mm256_or_si256(
                        _mm256_and_si256(ql_b, low),
                        _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x0c)), 2),
                    );
                    v[4 * half + 2] = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql_a, 4), low),
                        _mm256_and_si256(h, _mm256_set1_epi8(0x30)),
                    );
                    v[4 * half + 3] = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql_b, 4), low),
                        _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0xc0u8 as i8)), 2),
                    );
                }
                let d = f16x1(b.d);
                for (acc, x) in acc.iter_mut().zip(&x) {
                    let Some(a) = x.get(n) else { continue };
                    // Two chains, as in the Q4_K kernels.
                    let mut sumi = [_mm256_setzero_si256(); 2];
                    for (c, (v, y)) in v.iter().zip(a.qs.as_chunks::<32>().0).enumerate() {
                        let y = load32i(y);
                        let p = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(*v, y),
                            _mm256_maddubs_epi16(thirty_two, y),
                        );
                        // Values 0..16 of this chunk take scale 2c, values 16..32 scale 2c + 1.
                        let s = _mm256_set_m128i(
                            _mm_set1_epi16(i16::from(b.scales[2 * c + 1])),
                            _mm_set1_epi16(i16::from(b.scales[2 * c])),
                        );
                        sumi[c & 1] = $acc(sumi[c & 1], p, s);
                    }
                    let sumi = _mm256_add_epi32(sumi[0], sumi[1]);
                    *acc =
                        _mm256_fmadd_ps(_mm256_set1_ps(d * a.d()), _mm256_cvtepi32_ps(sumi), *acc);
                }
            }
            acc.map(|v| hsum(v))
        }
    };
}

q6_k_kernel!(q6_k_n, "avx2,fma,f16c", madd_acc);
q6_k_kernel!(q6_k_vnni_n, "avx2,fma,f16c,avx512vnni,avx512vl", dpwssd_acc);

/// The row kernels (one activation row) and pair kernels (two) handed out above: instances of the
/// `_n` functions.
macro_rules! instances {
    ($($row:ident, $pair:ident, $n:ident, $w:ty, $a:ty $(, $features:literal)?;)*) => {$(
        instances!(@one $row, $pair, $n, $w, $a, $($features)? "avx2,fma,f16c");
    )*};
    (@one $row:ident, $pair:ident, $n:ident, $w:ty, $a:ty,
     $features:literal $($default:literal)?) => {
        #[target_feature(enable = $features)]
        fn $row(w: &[$w], x: &[$a]) -> f32 {
            let [r] = $n::<1>(w, [x]);
            r
        }
        #[target_feature(enable = $features)]
        fn $pair(w: &[$w], x: [&[$a]; 2]) -> [f32; 2] {
            $n::<2>(w, x)
        }
    };
}

instances! {
    q4_0, q4_0_x2, q4_0_n, BlockQ4_0, BlockQ8_0;
    q4_1, q4_1_x2, q4_1_n, BlockQ4_1, BlockQ8_1;
    q5_0, q5_0_x2, q5_0_n, BlockQ5_0, BlockQ8_0;
    q5_1, q5_1_x2, q5_1_n, BlockQ5_1, BlockQ8_1;
    q8_0, q8_0_x2, q8_0_n, BlockQ8_0, BlockQ8_0;
    q4_k, q4_k_x2, q4_k_n, BlockQ4K, BlockQ8K;
    q4_k_vnni, q4_k_vnni_x2, q4_k_vnni_n, BlockQ4K, BlockQ8K, "avx2,fma,f16c,avx512vnni,avx512vl";
    q6_k, q6_k_x2, q6_k_n, BlockQ6K, BlockQ8K;
    q6_k_vnni, q6_k_vnni_x2, q6_k_vnni_n, BlockQ6K, BlockQ8K, "avx2,fma,f16c,avx512vnni,avx512vl";
    q8_0_vnni, q8_0_vnni_x2, q8_0_vnni_n, BlockQ8_0, BlockQ8_0, "avx2,fma,f16c,avx512vnni,avx512vl";
}
