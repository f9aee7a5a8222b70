//! x86-64 GEMM micro-kernels (see `gemm.rs` for the panel layout): per step, two 8-row weight
//! vectors times a broadcast of four activation bytes of each of `MR` activation rows, accumulated
//! in i32 lanes (one lane per weight row) by `vpdpbusd` (AVX-512 VNNI, 256-bit encodings) or
//! `vpmaddubsw` + `vpmaddwd` (AVX2; exact here because no pair of products reaches the i16 limit:
//! weights below 64 times activations of at most 128 in magnitude, so Q8_0, whose offset weights
//! reach 255, is VNNI only). Group sums are scaled in i32 (`vpmulld`), blocks scaled in f32.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_cvtepi32_ps, _mm256_dpbusd_epi32, _mm256_dpwssd_epi32,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16,
    _mm256_mul_ps, _mm256_mullo_epi32, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_setzero_si256, _mm256_slli_epi32, _mm256_storeu_ps, _mm256_sub_epi32,
    _mm256_sub_ps,
};

use super::gemm::{Acts, Format, MAX_MR, Micro, PANEL, Panel};
use super::x86::{available, vnni_available};
use crate::blocks::{QK, QK_K};
use crate::types::GgmlType;

/// `acc + Σ4 w·y` per i32 lane, one VNNI instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn dot4_vnni(acc: __m256i, w: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, w, y)
}

/// `acc + Σ2 p·y` of i16 pairs, one VNNI instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn dot2_vnni(acc: __m256i, p: __m256i, y: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, p, y)
}

/// [`dot4_vnni`] on AVX2 (exact for the weights this is used with, see the module comment).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot4_avx2(acc: __m256i, w: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(w, y);
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// [`dot2_vnni`] on AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot2_avx2(acc: __m256i, p: __m256i, y: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, y))
}

/// The activation rows `i0..i0 + MR` as slices, if each holds its `nb` blocks.
#[inline(always)]
fn act_rows<'a, const MR: usize>(a: &Acts<'a>, i0: usize) -> Option<[&'a [u8]; MR]> {
    let rows: [&[u8]; MR] = core::array::from_fn(|r| {
        a.data
            .get((i0 + r) * a.row_bytes..(i0 + r + 1) * a.row_bytes)
            .unwrap_or_default()
    });
    let ok = rows.iter().all(|r| r.len() >= a.nb * a.block_bytes) && a.dx.len() >= (i0 + MR) * a.nb;
    ok.then_some(rows)
}

/// Reads an i32 (four activation bytes) and broadcasts it.
///
/// # Safety
/// `p..p + 4` is readable.
#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m256i {
    // SAFETY: caller's contract; unaligned read.
    unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
}

macro_rules! micro_kernels {
    ($k:ident, $legacy:ident, $features:literal, $dot4:ident, $dot2:ident) => {
        /// K-quant micro-kernel: `SIX` for Q6_K (16-value groups, `−32·bsum`), else Q4_K/Q5_K
        /// (32-value groups, min term).
        #[inline]
        #[target_feature(enable = $features)]
        fn $k<const MR: usize, const SIX: bool>(
            p: &Panel,
            a: &Acts,
            i0: usize,
            out: &mut [[f32; PANEL]; MAX_MR],
        ) {
            let glen = if SIX { 16 } else { 32 };
            let (ng, spg, nb) = (QK_K / glen, glen / 4, a.nb);
            let Some(rows) = act_rows::<MR>(a, i0) else {
                return;
            };
            if p.q.len() < nb * QK_K * PANEL
                || p.sc.len() < nb * ng * PANEL
                || p.pairs.len() < nb * 8 * PANEL
                || p.d.len() < nb * PANEL
                || p.m.len() < nb * PANEL
            {
                return;
            }
            let zero = _mm256_setzero_si256();
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            // The min terms summed apart and subtracted at the end, as ggml's kernels do: the
            // two sums can nearly cancel, so their order matters beyond the last bits.
            let mut acc_m = [[_mm256_setzero_ps(); 2]; MR];
            for b in 0..nb {
                // SAFETY (every pointer read below): the panel and the rows hold `nb` blocks
                // (checked above); each read stays inside block `b` of its buffer.
                let q = unsafe { p.q.as_ptr().add(b * QK_K * PANEL) };
                let sc = unsafe { p.sc.as_ptr().add(b * ng * PANEL) };
                let ys: [*const u8; MR] = core::array::from_fn(|r| unsafe {
                    rows[r].as_ptr().add(b * a.block_bytes + 4)
                });
                let mut sumi = [[zero; 2]; MR];
                for g in 0..ng {
                    let mut dot = [[zero; 2]; MR];
                    for t in g * spg..(g + 1) * spg {
                        let w0 = unsafe { _mm256_loadu_si256(q.add(t * 64).cast()) };
                        let w1 = unsafe { _mm256_loadu_si256(q.add(t * 64 + 32).cast()) };
                        for r in 0..MR {
                            let y = unsafe { bcast(ys[r].add(4 * t)) };
                            dot[r][0] = $dot4(dot[r][0], w0, y);
                            dot[r][1] = $dot4(dot[r][1], w1, y);
                        }
                    }
                    let s0 = unsafe { _mm256_loadu_si256(sc.add(g * PANEL).cast()) };
                    let s1 = unsafe { _mm256_loadu_si256(sc.add(g * PANEL + 8).cast()) };
                    for r in 0..MR {
                        sumi[r][0] =
                            _mm256_add_epi32(sumi[r][0], _mm256_mullo_epi32(dot[r][0], s0));
                        sumi[r][1] =
                            _mm256_add_epi32(sumi[r][1], _mm256_mullo_epi32(dot[r][1], s1));
                    }
                }
                let pr = unsafe { p.pairs.as_ptr().add(b * 8 * PANEL) };
                let mut summ = [[zero; 2]; MR];
                for t in 0..8 {
                    let p0 = unsafe { _mm256_loadu_si256(pr.add(t * PANEL).cast()) };
                    let p1 = unsafe { _mm256_loadu_si256(pr.add(t * PANEL + 8).cast()) };
                    for r in 0..MR {
                        // The 16 i16 sums follow the 256 quants.
                        let y = unsafe { bcast(ys[r].add(QK_K + 4 * t)) };
                        summ[r][0] = $dot2(summ[r][0], p0, y);
                        summ[r][1] = $dot2(summ[r][1], p1, y);
                    }
                }
                let d = unsafe { p.d.as_ptr().add(b * PANEL) };
                let m = unsafe { p.m.as_ptr().add(b * PANEL) };
                for r in 0..MR {
                    let dx = _mm256_set1_ps(a.dx.get((i0 + r) * nb + b).copied().unwrap_or(0.0));
                    for h in 0..2 {
                        let dh = unsafe { _mm256_loadu_ps(d.add(8 * h)) };
                        let scale = _mm256_mul_ps(dh, dx);
                        if SIX {
                            let v = _mm256_sub_epi32(sumi[r][h], _mm256_slli_epi32(summ[r][h], 5));
                            acc[r][h] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(v), acc[r][h]);
                        } else {
                            let mh = unsafe { _mm256_loadu_ps(m.add(8 * h)) };
                            let v = _mm256_cvtepi32_ps(sumi[r][h]);
                            acc[r][h] = _mm256_fmadd_ps(scale, v, acc[r][h]);
                            let mins = _mm256_cvtepi32_ps(summ[r][h]);
                            acc_m[r][h] = _mm256_fmadd_ps(_mm256_mul_ps(mh, dx), mins, acc_m[r][h]);
                        }
                    }
                }
            }
            for ((o, acc), acc_m) in out.iter_mut().zip(&acc).zip(&acc_m) {
                for (h, (v, vm)) in acc.iter().zip(acc_m).enumerate() {
                    let v = _mm256_sub_ps(*v, *vm);
                    // SAFETY: lanes 8h..8h + 8 of a 16-lane row.
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * h), v) };
                }
            }
        }

        /// 32-value block micro-kernel against Q8_0 (`MIN` false) or Q8_1 (`MIN`):
        /// `d·dx·(dot − offset·Σy)`, plus `m·s` with `MIN`.
        #[inline]
        #[target_feature(enable = $features)]
        fn $legacy<const MR: usize, const OFF: bool, const MIN: bool>(
            p: &Panel,
            a: &Acts,
            i0: usize,
            out: &mut [[f32; PANEL]; MAX_MR],
        ) {
            let (nb, qoff) = (a.nb, if MIN { 4 } else { 2 });
            let Some(rows) = act_rows::<MR>(a, i0) else {
                return;
            };
            if p.q.len() < nb * QK * PANEL
                || p.d.len() < nb * PANEL
                || p.m.len() < nb * PANEL
                || (OFF && a.off.len() < (i0 + MR) * nb)
                || (MIN && a.s.len() < (i0 + MR) * nb)
            {
                return;
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for b in 0..nb {
                // SAFETY (every pointer read below): as in the K-quant kernel.
                let q = unsafe { p.q.as_ptr().add(b * QK * PANEL) };
                let ys: [*const u8; MR] = core::array::from_fn(|r| unsafe {
                    rows[r].as_ptr().add(b * a.block_bytes + qoff)
                });
                let mut dot = [[_mm256_setzero_si256(); 2]; MR];
                for t in 0..QK / 4 {
                    let w0 = unsafe { _mm256_loadu_si256(q.add(t * 64).cast()) };
                    let w1 = unsafe { _mm256_loadu_si256(q.add(t * 64 + 32).cast()) };
                    for r in 0..MR {
                        let y = unsafe { bcast(ys[r].add(4 * t)) };
                        dot[r][0] = $dot4(dot[r][0], w0, y);
                        dot[r][1] = $dot4(dot[r][1], w1, y);
                    }
                }
                for r in 0..MR {
                    let idx = (i0 + r) * nb + b;
                    let dx = _mm256_set1_ps(a.dx.get(idx).copied().unwrap_or(0.0));
                    let off = _mm256_set1_epi32(a.off.get(idx).copied().unwrap_or(0));
                    let s = _mm256_set1_ps(a.s.get(idx).copied().unwrap_or(0.0));
                    for h in 0..2 {
                        let dh = unsafe { _mm256_loadu_ps(p.d.as_ptr().add(b * PANEL + 8 * h)) };
                        let v = if OFF {
                            _mm256_sub_epi32(dot[r][h], off)
                        } else {
                            dot[r][h]
                        };
                        let scale = _mm256_mul_ps(dh, dx);
                        acc[r][h] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(v), acc[r][h]);
                        if MIN {
                            let mh =
                                unsafe { _mm256_loadu_ps(p.m.as_ptr().add(b * PANEL + 8 * h)) };
                            acc[r][h] = _mm256_fmadd_ps(mh, s, acc[r][h]);
                        }
                    }
                }
            }
            for (o, acc) in out.iter_mut().zip(&acc) {
                for (h, v) in acc.iter().enumerate() {
                    // SAFETY: lanes 8h..8h + 8 of a 16-lane row.
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * h), *v) };
                }
            }
        }
    };
}

micro_kernels!(
    k_vnni,
    legacy_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    dot4_vnni,
    dot2_vnni
);
micro_kernels!(k_avx2, legacy_avx2, "avx2,fma,f16c", dot4_avx2, dot2_avx2);

/// A safe [`Micro`] wrapper: activation rows `i0..` in calls of at most `$mr` rows, by `$f` with
/// the given const parameters. Handed out only after the features were detected.
macro_rules! wrapper {
    ($name:ident, $f:ident, $mr:literal, $($c:expr),*) => {
        fn $name(p: &Panel, a: &Acts, i0: usize, out: &mut [[f32; PANEL]; MAX_MR]) -> usize {
            let mr = a.rows.saturating_sub(i0).min($mr).min(MAX_MR);
            // SAFETY: `gemm_micro` hands this out only where `available()` (and for the VNNI
            // wrappers `vnni_available()`) confirmed the features at run time.
            unsafe {
                match mr {
                    4 => $f::<4, $($c),*>(p, a, i0, out),
                    3 => $f::<3, $($c),*>(p, a, i0, out),
                    2 => $f::<2, $($c),*>(p, a, i0, out),
                    1 => $f::<1, $($c),*>(p, a, i0, out),
                    _ => return 0,
                }
            }
            mr
        }
    };
}

wrapper!(vnni_kmin, k_vnni, 4, false);
wrapper!(vnni_ksix, k_vnni, 4, true);
wrapper!(vnni_off, legacy_vnni, 4, true, false);
wrapper!(vnni_min, legacy_vnni, 4, false, true);
wrapper!(avx2_kmin, k_avx2, 2, false);
wrapper!(avx2_ksix, k_avx2, 2, true);
wrapper!(avx2_off, legacy_avx2, 2, true, false);
wrapper!(avx2_min, legacy_avx2, 2, false, true);

/// The micro-kernel for `format` (of weight type `ty`), with VNNI where `vnni`; `None` where the
/// CPU lacks the features or the set has none (Q8_0 on AVX2).
pub(super) fn gemm_micro(ty: GgmlType, format: Format, vnni: bool) -> Option<Micro> {
    if vnni {
        if !vnni_available() {
            return None;
        }
        return Some(match format {
            Format::KMin => vnni_kmin,
            Format::KSix => vnni_ksix,
            Format::Legacy { min: false, .. } => vnni_off,
            Format::Legacy { min: true, .. } => vnni_min,
        });
    }
    if !available() || ty == GgmlType::Q8_0 {
        return None;
    }
    Some(match format {
        Format::KMin => avx2_kmin,
        Format::KSix => avx2_ksix,
        Format::Legacy { min: false, .. } => avx2_off,
        Format::Legacy { min: true, .. } => avx2_min,
    })
}
