//! Quantized matrix-vector and matrix-matrix products, computed the way llama.cpp's CPU backend
//! computes them.
//!
//! Follows `ggml_compute_forward_mul_mat` in `ggml/src/ggml-cpu/ggml-cpu.c` (ggml d99724f2): every
//! weight type has a vec-dot type (`type_traits_cpu[type].vec_dot_type`, see [`vec_dot_type`]); each
//! activation row is converted to it once ([`quantize_activation`], [`QuantizedActivations`]) and
//! every output is one `vec_dot` of a weight row with an activation row ([`vec_dot`],
//! [`matmul_rows`]). The kernels here are plain scalar Rust following ggml's `*_generic` C (see
//! `dot_legacy.rs` and `dot_k.rs` for exactly which, and [`activation`] for which quantizer): the
//! reference. SIMD kernel sets for Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and Q6_K weights (on x86-64 also
//! Q5_0, Q5_1 and F32), chosen at run time (detected once, never from the compile-time target CPU,
//! so one binary serves a Pi 4 and a Pi 5): on x86-64, [`Kernels::Avx2`] (AVX2 + FMA + F16C,
//! `x86.rs`) and [`Kernels::Avx512Vnni`] (the same plus AVX-512 VNNI dot instructions for Q4_K,
//! Q6_K and Q8_0); on aarch64 (`aarch64.rs`),
//! [`Kernels::Neon`] (baseline NEON, e.g. Cortex-A72), [`Kernels::NeonDotprod`] (`sdot`, e.g.
//! Cortex-A76, Jetson Orin) and [`Kernels::NeonI8mm`] (`sdot` rows plus `smmla` 2×2 tiles for
//! matrix-matrix products). [`row_kernel`] hands them out instead of the scalar kernels; they
//! compute the same exact integer block sums and differ from the scalar ones only in float
//! summation order (last bits). [`Kernels`] selects explicitly; `EMBER_KERNELS` overrides the
//! detected set (`scalar` forces the scalar reference everywhere; see [`Kernels::active`]).
//!
//! Every entry point validates all lengths before touching data and returns [`QuantError`] on any
//! mismatch; nothing here panics on caller input.

pub mod activation;
mod dot_k;
mod dot_legacy;
// Only x86-64 has GEMM micro-kernels so far: elsewhere the panel code is there but unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_x86;
#[cfg(target_arch = "x86_64")]
mod x86;
// The kernels reinterpret little-endian block fields (Q8_K's i16 sums) as vector lanes.
#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
mod aarch64;

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use crate::blocks::{Block, as_blocks};
use crate::error::QuantError;
use crate::types::GgmlType;

/// The type ggml converts activations to before dotting them with weights of type `ty`
/// (`type_traits_cpu[ty].vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the
/// K-quants, and the weight type itself for F32/F16/BF16.
///
/// Types ember has no dot kernel for give [`QuantError::Unsupported`]; that includes Q8_K and Q8_1,
/// which ggml only ever uses as activation types.
pub fn vec_dot_type(ty: GgmlType) -> Result<GgmlType, QuantError> {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => Ok(ty),
        Q4_0 | Q5_0 | Q8_0 => Ok(Q8_0),
        Q4_1 | Q5_1 => Ok(Q8_1),
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Ok(Q8_K),
        other => Err(QuantError::unsupported(other)),
    }
}

/// Converts one activation row `x` to the vec-dot type `ty` (Q8_0, Q8_1, Q8_K, F16, BF16 or F32),
/// writing exactly `ty.bytes_for(x.len())` bytes to `out`. Bit-identical to what ggml's x86 CPU
/// backend produces (see [`activation`] for the exact functions matched).
pub fn quantize_activation(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let quantize = activation_kernel(ty)?;
    check_len(ty, out.len(), x.len())?;
    quantize(x, out);
    Ok(())
}

/// The dot product of one weight row `w_row` (`k` values of type `ty`, as stored in GGUF) with one
/// activation row `x_q` already converted to `vec_dot_type(ty)` (see [`quantize_activation`]).
pub fn vec_dot(ty: GgmlType, w_row: &[u8], x_q: &[u8], k: usize) -> Result<f32, QuantError> {
    vec_dot_with(Kernels::active(), ty, w_row, x_q, k)
}

/// [`vec_dot`] with the scalar reference kernels (ggml's `*_generic` C, bit for bit), whatever
/// [`Kernels::active`] says.
pub fn vec_dot_scalar(ty: GgmlType, w_row: &[u8], x_q: &[u8], k: usize) -> Result<f32, QuantError> {
    vec_dot_with(Kernels::Scalar, ty, w_row, x_q, k)
}

/// [`vec_dot`] with the given kernel set (see [`row_kernel_for`] for what is used when `kernels` is
/// not available).
pub fn vec_dot_with(
    kernels: Kernels,
    ty: GgmlType,
    w_row: &[u8],
    x_q: &[u8],
    k: usize,
) -> Result<f32, QuantError> {
    let (vdt, kernel) = row_kernel_for(kernels, ty)?;
    check_len(ty, w_row.len(), k)?;
    check_len(vdt, x_q.len(), k)?;
    Ok(kernel(w_row, x_q))
}

/// `m` activation rows of `k` values, converted once to the vec-dot type of a weight type, ready to
/// be dotted with any number of weight rows (of any weight type sharing that vec-dot type).
#[derive(Clone, PartialEq)]
pub struct QuantizedActivations {
    ty: GgmlType,
    m: usize,
    k: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

impl QuantizedActivations {
    /// Converts `x`, `m` rows of `k` values (row-major, `x.len() == m * k`), for weights of type
    /// `weight_ty`. `k` must be a whole number of `weight_ty` blocks.
    pub fn new(weight_ty: GgmlType, x: &[f32], m: usize, k: usize) -> Result<Self, QuantError> {
        let mut xq = QuantizedActivations {
            ty: vec_dot_type(weight_ty)?,
            m: 0,
            k,
            row_bytes: 0,
            data: Vec::new(),
        };
        xq.requantize(weight_ty, x, m)?;
        Ok(xq)
    }

    /// Replaces the contents with `x` (`m` rows of the same `k`) for `weight_ty`, reusing the
    /// allocation (for decode loops, where one buffer serves every token). On error the contents
    /// are unchanged.
    pub fn requantize(
        &mut self,
        weight_ty: GgmlType,
        x: &[f32],
        m: usize,
    ) -> Result<(), QuantError> {
        let ty = vec_dot_type(weight_ty)?;
        let quantize = activation_kernel(ty)?;
        let k = self.k;
        check_block_multiple(weight_ty, k)?;
        let values = m.checked_mul(k);
        if values != Some(x.len()) {
            return Err(f32_len_error(values.unwrap_or(usize::MAX), x.len()));
        }
        // `x` exists, so `m * k` f32s fit in memory and the (smaller) quantized rows do too.
        let row_bytes = bytes_for(ty, k)?;
        let total = row_bytes.checked_mul(m).ok_or(QuantError::SizeMismatch {
            ty,
            values: x.len(),
            expected_bytes: u64::MAX,
            got_bytes: 0,
        })?;
        self.data.clear();
        self.data.resize(total, 0);
        if row_bytes > 0 {
            for (out, row) in self.data.chunks_exact_mut(row_bytes).zip(x.chunks_exact(k)) {
                quantize(row, out);
            }
        }
        (self.ty, self.m, self.row_bytes) = (ty, m, row_bytes);
        Ok(())
    }

    /// The vec-dot type the rows are stored as.
    pub fn vec_dot_type(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (`m`).
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Values per row (`k`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `i` as stored (`vec_dot_type().bytes_for(k)` bytes), or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[u8]> {
        if i >= self.m {
            return None;
        }
        let start = i.checked_mul(self.row_bytes)?;
        self.data.get(start..start.checked_add(self.row_bytes)?)
    }

    /// All rows, back to back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

impl fmt::Debug for QuantizedActivations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes themselves are noise in a debug print.
        f.debug_struct("QuantizedActivations")
            .field("ty", &self.ty)
            .field("m", &self.m)
            .field("k", &self.k)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// `out[i * rows.len() + (r - rows.start)] = vec_dot(W[r], x[i])` for every activation row `i < m`
/// and weight row `r` in `rows`: the slice of `out = x * W^T` that one thread computes.
///
/// `weight` is the whole matrix: `n` rows of `k` values of `weight_ty` in GGUF layout
/// (`weight.len() == n * row_bytes`). `xq` must hold rows of `k` values of `vec_dot_type(weight_ty)`.
/// `rows` must lie within `0..n`; a range with `start > end` is empty (as [`Range::is_empty`] says).
/// `out` must hold exactly `m * rows.len()` values.
///
/// Size errors are [`QuantError::SizeMismatch`]: for `weight` (including a `rows.end` past its
/// last row) in bytes of `weight_ty`, for `out` as F32 values.
pub fn matmul_rows(
    weight_ty: GgmlType,
    weight: &[u8],
    k: usize,
    xq: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    matmul_rows_with(Kernels::active(), weight_ty, weight, k, xq, rows, out)
}

/// [`matmul_rows`] with the given kernel set (see [`row_kernel_for`]).
pub fn matmul_rows_with(
    kernels: Kernels,
    weight_ty: GgmlType,
    weight: &[u8],
    k: usize,
    xq: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let (vdt, kernel) = row_kernel_for(kernels, weight_ty)?;
    check_block_multiple(weight_ty, k)?;
    if xq.ty != vdt || xq.k != k {
        // Activations quantized for another type or length: report them against what this weight
        // needs.
        return Err(QuantError::SizeMismatch {
            ty: vdt,
            values: xq.m.saturating_mul(k),
            expected_bytes: bytes_for(vdt, k)
                .map_or(u64::MAX, |b| (b as u64).saturating_mul(xq.m as u64)),
            got_bytes: xq.data.len(),
        });
    }
    let row_bytes = bytes_for(weight_ty, k)?;
    let n = weight.len().checked_div(row_bytes).unwrap_or(0);
    // (`is_multiple_of(0)` is true only for 0: with k == 0 the weight must be empty.)
    if !weight.len().is_multiple_of(row_bytes) {
        return Err(weight_len_error(weight_ty, k, n, row_bytes, weight.len()));
    }
    // With k == 0 there is no row count to check against: every row is empty and every dot is 0.
    if row_bytes != 0 && (rows.start > n || rows.end > n) {
        let need = rows.start.max(rows.end);
        return Err(weight_len_error(
            weight_ty,
            k,
            need,
            row_bytes,
            weight.len(),
        ));
    }
    let nr = rows.len();
    let expected_out = xq.m.checked_mul(nr);
    if expected_out != Some(out.len()) {
        return Err(f32_len_error(expected_out.unwrap_or(usize::MAX), out.len()));
    }
    if nr == 0 || xq.m == 0 {
        return Ok(());
    }
    if row_bytes == 0 || xq.row_bytes == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let w = weight
        .get(rows.start * row_bytes..rows.end * row_bytes)
        .unwrap_or_default();
    if xq.m >= gemm::MIN_ROWS
        && let Some(g) = gemm::kernel_for(kernels, weight_ty)
    {
        gemm::run(g, w, row_bytes, &xq.data, xq.row_bytes, nr, out);
        return Ok(());
    }
    let tile = if xq.m >= 2 && nr >= 2 {
        tile_kernel_for(kernels, weight_ty)
    } else {
        None
    };
    match tile {
        Some(tile) => tiled(w, row_bytes, xq, nr, out, kernel, tile),
        None => {
            // Weight rows outermost: each row is read from memory once and dotted with every
            // activation row while it is in cache.
            for (j, w_row) in w.chunks_exact(row_bytes).enumerate() {
                for (i, x_row) in xq.data.chunks_exact(xq.row_bytes).enumerate() {
                    if let Some(o) = out.get_mut(i * nr + j) {
                        *o = kernel(w_row, x_row);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The matrix-matrix product by 2×2 tiles (two weight rows × two activation rows per call, so each
/// weight block is unpacked once for two activations and each activation block loaded once for two
/// weights); an odd last weight row or activation row goes through the row kernel. Lengths were
/// validated by [`matmul_rows_with`]: `w` holds `nr` rows of `row_bytes`, `out` `xq.m * nr` values.
fn tiled(
    w: &[u8],
    row_bytes: usize,
    xq: &QuantizedActivations,
    nr: usize,
    out: &mut [f32],
    kernel: RowKernel,
    tile: TileKernel,
) {
    let x_rows: Vec<&[u8]> = xq.data.chunks_exact(xq.row_bytes).collect();
    let w_rows: Vec<&[u8]> = w.chunks_exact(row_bytes).collect();
    let mut set = |i: usize, j: usize, v: f32| {
        if let Some(o) = out.get_mut(i * nr + j) {
            *o = v;
        }
    };
    for (jp, wp) in w_rows.chunks(2).enumerate() {
        let j = 2 * jp;
        for (ip, xp) in x_rows.chunks(2).enumerate() {
            let i = 2 * ip;
            match (wp, xp) {
                (&[w0, w1], &[x0, x1]) => {
                    let [[a, b], [c, d]] = tile([w0, w1], [x0, x1]);
                    set(i, j, a);
                    set(i + 1, j, b);
                    set(i, j + 1, c);
                    set(i + 1, j + 1, d);
                }
                _ => {
                    for (dj, w_row) in wp.iter().enumerate() {
                        for (di, x_row) in xp.iter().enumerate() {
                            set(i + di, j + dj, kernel(w_row, x_row));
                        }
                    }
                }
            }
        }
    }
}

/// IEEE half (little-endian bytes) to f32, exactly; the same values as [`crate::blocks::f16_le`].
///
/// `ggml_compute_fp16_to_fp32` (from the FP16 library, `ggml/src/ggml-impl.h`): branch-free integer
/// and float operations. The `half` crate converts in software unless built with F16C enabled, and
/// this workspace builds for baseline x86-64 (SIMD chosen at run time), where that software path
/// made up most of the time of the 32-value-block dots.
#[inline]
pub(crate) fn fp16_le(bytes: [u8; 2]) -> f32 {
    let w = u32::from(u16::from_le_bytes(bytes)) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    // Normal (and inf/NaN): move the exponent and mantissa into place, rebias by 2^-112.
    const EXP_OFFSET: u32 = 0xe0 << 23;
    const EXP_SCALE: f32 = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + EXP_OFFSET) * EXP_SCALE;
    // Subnormal: the mantissa as the low bits of 0.5 * 2^k, minus the 0.5.
    const MAGIC_MASK: u32 = 126 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | MAGIC_MASK) - 0.5;
    const DENORM_CUTOFF: u32 = 1 << 27;
    let bits = if two_w < DENORM_CUTOFF {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | bits)
}

/// A row dot kernel: `(weight row bytes, activation row bytes) -> dot`. Both lengths have been
/// validated to hold the same number of values; kernels still bound their loops by the shorter
/// side, so a mismatch could only give a wrong number, never a panic.
pub type RowKernel = fn(&[u8], &[u8]) -> f32;

/// A 2×2 tile kernel for matrix-matrix products: the dots of two weight rows with two activation
/// rows, `[[w0·x0, w0·x1], [w1·x0, w1·x1]]`, each equal (up to float summation order) to the row
/// kernel's. Lengths validated as for [`RowKernel`].
pub type TileKernel = fn([&[u8]; 2], [&[u8]; 2]) -> [[f32; 2]; 2];

/// Activation converter: `(row, out bytes)`, lengths validated as for [`RowKernel`].
type ActivationKernel = fn(&[f32], &mut [u8]);

/// A set of row kernels (and, for some, 2×2 tile kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernels {
    /// Plain Rust following ggml's `*_generic` C operation for operation: the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and F32
    /// weights, scalar for the other types.
    Avx2,
    /// [`Kernels::Avx2`] with AVX-512 VNNI's 256-bit dot instructions (needs AVX512-VNNI and
    /// AVX512-VL: AMD Zen 4 and later, Intel Ice Lake and later) where they save work: the Q4_K and
    /// Q6_K kernels sum each group's scaled products in one `vpdpwssd` instead of two instructions,
    /// the Q8_0 kernel dots bytes with `vpdpbusd` instead of widening them to i16.
    Avx512Vnni,
    /// aarch64 baseline NEON (every 64-bit Arm CPU, e.g. the Raspberry Pi 4's Cortex-A72): byte
    /// products widened to i16 and accumulated in i32, for Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and Q6_K
    /// weights, scalar for the other types.
    Neon,
    /// aarch64 NEON with the dot-product extension (FEAT_DotProd, `sdot`: the Pi 5's Cortex-A76,
    /// Jetson Orin's Cortex-A78AE) for the same types as [`Kernels::Neon`].
    NeonDotprod,
    /// [`Kernels::NeonDotprod`]'s row kernels plus 2×2 tile kernels ([`tile_kernel_for`]) on the
    /// int8 matrix-multiply extension (FEAT_I8MM, `smmla`: Cortex-A710/X2 and later, Neoverse
    /// V1/N2) for the same types.
    NeonI8mm,
}

impl Kernels {
    /// Every set, each architecture's from slowest to fastest.
    pub const ALL: [Kernels; 6] = [
        Kernels::Scalar,
        Kernels::Avx2,
        Kernels::Avx512Vnni,
        Kernels::Neon,
        Kernels::NeonDotprod,
        Kernels::NeonI8mm,
    ];

    /// The fastest set this CPU runs (CPU features are detected once).
    pub fn detected() -> Kernels {
        Kernels::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Kernels::Scalar)
    }

    /// The set [`vec_dot`], [`matmul_rows`] and [`row_kernel`] use: [`Kernels::detected`], unless the
    /// environment variable `EMBER_KERNELS` names another set this CPU runs (see
    /// [`Kernels::from_name`]): `scalar` forces the scalar reference, `neon` the baseline NEON
    /// kernels on a CPU with dotprod, and so on. An unknown name, or a set this CPU cannot run,
    /// gives the detected set. Read once, at the first call.
    pub fn active() -> Kernels {
        static ACTIVE: OnceLock<Kernels> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            std::env::var("EMBER_KERNELS")
                .ok()
                .and_then(|v| Kernels::from_name(&v))
                .filter(|k| k.is_available())
                .unwrap_or_else(Kernels::detected)
        })
    }

    /// The set called `name`, as its variant is spelled, case-insensitive, `-` and `_` ignored:
    /// `scalar`, `avx2`, `avx512-vnni`, `neon`, `neon-dotprod`, `neon-i8mm`.
    pub fn from_name(name: &str) -> Option<Kernels> {
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect();
        Kernels::ALL
            .into_iter()
            .find(|k| format!("{k:?}").eq_ignore_ascii_case(&name))
    }

    /// Whether this CPU can run this set.
    pub fn is_available(self) -> bool {
        match self {
            Kernels::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => x86::available(),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512Vnni => x86::vnni_available(),
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            Kernels::Neon => true,
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            Kernels::NeonDotprod => aarch64::dotprod(),
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            Kernels::NeonI8mm => aarch64::i8mm(),
            // Sets of other architectures.
            _ => false,
        }
    }
}

/// The vec-dot type and row kernel for weights of type `ty`, from [`Kernels::active`]. This is the
/// single dispatch point every product goes through.
pub fn row_kernel(ty: GgmlType) -> Result<(GgmlType, RowKernel), QuantError> {
    row_kernel_for(Kernels::active(), ty)
}

/// The vec-dot type and row kernel for weights of type `ty` from the set `kernels`. Types the set
/// has no kernel for, and sets this CPU cannot run ([`Kernels::is_available`]), get the scalar
/// kernel: asking for SIMD never yields code the CPU lacks.
pub fn row_kernel_for(kernels: Kernels, ty: GgmlType) -> Result<(GgmlType, RowKernel), QuantError> {
    let vdt = vec_dot_type(ty)?;
    match kernels {
        Kernels::Scalar => {}
        Kernels::Avx2 | Kernels::Avx512Vnni => {
            #[cfg(target_arch = "x86_64")]
            if let Some(kernel) = x86::row_kernel(ty, kernels == Kernels::Avx512Vnni) {
                return Ok((vdt, kernel));
            }
        }
        Kernels::Neon | Kernels::NeonDotprod | Kernels::NeonI8mm => {
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            if let Some(kernel) = aarch64::row_kernel(kernels, ty) {
                return Ok((vdt, kernel));
            }
        }
    }
    Ok((vdt, scalar_kernel(ty)?))
}

pub use gemm::{MIN_ROWS as GEMM_MIN_ROWS, PANEL as GEMM_PANEL, has_gemm, set_gemm};

/// The 2×2 tile kernel for weights of type `ty` from the set `kernels`, where the set has one and
/// this CPU runs it; `None` means "use the row kernel". The scalar reference has none: its products
/// are exactly the row kernel's.
pub fn tile_kernel_for(kernels: Kernels, ty: GgmlType) -> Option<TileKernel> {
    match kernels {
        Kernels::Scalar => None,
        Kernels::Avx2 | Kernels::Avx512Vnni => {
            #[cfg(target_arch = "x86_64")]
            return x86::tile_kernel(ty, kernels == Kernels::Avx512Vnni);
            #[cfg(not(target_arch = "x86_64"))]
            return {
                let _ = ty;
                None
            };
        }
        Kernels::Neon | Kernels::NeonDotprod | Kernels::NeonI8mm => {
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            return aarch64::tile_kernel(kernels, ty);
            #[cfg(not(all(target_arch = "aarch64", target_endian = "little")))]
            return None;
        }
    }
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block (the layout
/// [`crate::dequant_k::get_scale_min_k4`] reads one at a time), unpacked with u32 word operations;
/// shared by the SIMD kernels.
#[inline(always)]
pub(crate) fn scales_mins_k4(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    // j < 4: scale = byte j & 63, min = byte j + 4 & 63.
    // j >= 4: scale = low nibble of byte j + 4 | top bits of byte j - 4 << 4,
    //         min = high nibble of byte j + 4 | top bits of byte j << 4.
    let s_lo = a & LOW6;
    let s_hi = (c & LOW4) | (((a >> 6) & TOP2) << 4);
    let m_lo = b & LOW6;
    let m_hi = ((c >> 4) & LOW4) | (((b >> 6) & TOP2) << 4);
    let join = |lo: u32, hi: u32| (u64::from(lo) | (u64::from(hi) << 32)).to_le_bytes();
    (join(s_lo, s_hi), join(m_lo, m_hi))
}

/// The scalar reference kernel for `ty`.
fn scalar_kernel(ty: GgmlType) -> Result<RowKernel, QuantError> {
    use GgmlType::*;
    let kernel: RowKernel = match ty {
        F32 => dot_legacy::dot_f32,
        F16 => dot_legacy::dot_f16,
        BF16 => dot_legacy::dot_bf16,
        Q4_0 => |w, x| blocks(w, x, dot_legacy::dot_q4_0),
        Q4_1 => |w, x| blocks(w, x, dot_legacy::dot_q4_1),
        Q5_0 => |w, x| blocks(w, x, dot_legacy::dot_q5_0),
        Q5_1 => |w, x| blocks(w, x, dot_legacy::dot_q5_1),
        Q8_0 => |w, x| blocks(w, x, dot_legacy::dot_q8_0),
        Q2_K => |w, x| blocks(w, x, dot_k::dot_q2_k),
        Q3_K => |w, x| blocks(w, x, dot_k::dot_q3_k),
        Q4_K => |w, x| blocks(w, x, dot_k::dot_q4_k),
        Q5_K => |w, x| blocks(w, x, dot_k::dot_q5_k),
        Q6_K => |w, x| blocks(w, x, dot_k::dot_q6_k),
        other => return Err(QuantError::unsupported(other)),
    };
    Ok(kernel)
}

/// Views both rows as blocks and runs a block-level dot. Misaligned lengths (impossible after
/// validation) view as empty and give 0.
#[inline]
fn blocks<W: Block, A: Block>(w: &[u8], x: &[u8], f: fn(&[W], &[A]) -> f32) -> f32 {
    f(
        as_blocks::<W>(w).unwrap_or_default(),
        as_blocks::<A>(x).unwrap_or_default(),
    )
}

fn activation_kernel(ty: GgmlType) -> Result<ActivationKernel, QuantError> {
    use GgmlType::*;
    Ok(match ty {
        Q8_0 => activation::quantize_q8_0,
        Q8_1 => activation::quantize_q8_1,
        Q8_K => activation::quantize_q8_k,
        F16 => activation::convert_f16,
        BF16 => activation::convert_bf16,
        F32 => activation::convert_f32,
        other => return Err(QuantError::unsupported(other)),
    })
}

fn check_block_multiple(ty: GgmlType, values: usize) -> Result<(), QuantError> {
    let block_size = ty.block_size();
    if values.is_multiple_of(block_size) {
        Ok(())
    } else {
        Err(QuantError::NotBlockMultiple {
            ty,
            values,
            block_size,
        })
    }
}

/// Bytes `values` values of `ty` take; `values` must be a whole number of blocks.
fn bytes_for(ty: GgmlType, values: usize) -> Result<usize, QuantError> {
    check_block_multiple(ty, values)?;
    ty.bytes_for(values as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(QuantError::SizeMismatch {
            ty,
            values,
            expected_bytes: u64::MAX,
            got_bytes: 0,
        })
}

/// Like [`crate::check_sizes`] but for any type with a block layout (Q8_1 included).
fn check_len(ty: GgmlType, len: usize, values: usize) -> Result<(), QuantError> {
    let expected = bytes_for(ty, values)?;
    if expected == len {
        Ok(())
    } else {
        Err(QuantError::SizeMismatch {
            ty,
            values,
            expected_bytes: expected as u64,
            got_bytes: len,
        })
    }
}

/// An f32 buffer of `got` values where `values` were needed, reported in bytes.
fn f32_len_error(values: usize, got: usize) -> QuantError {
    QuantError::SizeMismatch {
        ty: GgmlType::F32,
        values,
        expected_bytes: (values as u64).saturating_mul(4),
        got_bytes: got.saturating_mul(4),
    }
}

/// `weight` of `got` bytes where `rows` rows of `k` values were needed.
fn weight_len_error(
    ty: GgmlType,
    k: usize,
    rows: usize,
    row_bytes: usize,
    got: usize,
) -> QuantError {
    QuantError::SizeMismatch {
        ty,
        values: rows.saturating_mul(k),
        expected_bytes: (rows as u64).saturating_mul(row_bytes as u64),
        got_bytes: got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::f16_le;
    use crate::dequant_k::get_scale_min_k4;

    #[test]
    fn scales_mins_match_reference_unpacking() {
        let mut state = 0x1234_5678u32;
        for _ in 0..1000 {
            let packed: [u8; 12] = core::array::from_fn(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            });
            let (s, m) = scales_mins_k4(&packed);
            for j in 0..8 {
                assert_eq!((s[j], m[j]), get_scale_min_k4(j, &packed), "{packed:?} {j}");
            }
        }
    }

    #[test]
    fn fp16_conversion_is_exact_for_every_half() {
        for h in 0..=u16::MAX {
            let b = h.to_le_bytes();
            let (ours, half) = (fp16_le(b), f16_le(b));
            if half.is_nan() {
                assert!(ours.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(ours.to_bits(), half.to_bits(), "{h:#06x}");
            }
        }
    }
}
