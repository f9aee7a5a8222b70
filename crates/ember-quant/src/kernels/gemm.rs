//! Quantized GEMM for batches (prefill): the weight rows of a chunk are unpacked, a panel of
//! [`PANEL`] rows at a time, into a small per-thread buffer of unsigned 8-bit values interleaved
//! four values at a time (step `t` of a block holds values `4t..4t+4` of all 16 rows, 64 bytes), with
//! each block's integer scales, min/offset factors and float scales beside them, unpacked once per
//! block. A register-tiled micro-kernel (`gemm_x86.rs`) then dots each step with a broadcast of four
//! activation bytes of several activation rows at once (`vpdpbusd` / `vpmaddubsw`), so no
//! horizontal sums are needed: every lane is one weight row.
//!
//! Numerics: every block's integer sum is ggml's exactly (the offsets of Q4_0/Q5_0/Q8_0/Q6_K and the
//! mins of Q4_K/Q5_K are applied as exact integer terms through the activations' block sums); the
//! float scale products are ggml's; only the float summation order differs.

use std::cell::RefCell;

use super::scales_mins_k4;
use crate::blocks::{
    Block, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
    BlockQ8K, QK_K, as_blocks, f16_le,
};
use crate::types::GgmlType;

/// Weight rows per panel (two 8-lane vectors).
pub const PANEL: usize = 16;
/// Activation rows from which products go through the GEMM (below, the row and tile kernels).
pub const MIN_ROWS: usize = 8;
/// The most activation rows a micro-kernel call handles.
pub(crate) const MAX_MR: usize = 4;

/// How the activation side of a type is laid out and what the kernel adds per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Q4_K / Q5_K: `d·dx·Σ sc·dot − dmin·dx·Σ min·bsum` per 256-value block, 32-value groups.
    KMin,
    /// Q6_K: `d·dx·Σ sc·(dot − 32·bsum)` per 256-value block, 16-value groups.
    KSix,
    /// 32-value blocks against Q8_0 / Q8_1: `d·dx·(dot − offset·Σy)` (`+ m·s` with `min`).
    Legacy { offset: i32, min: bool },
}

/// One panel of unpacked weight rows (every row of it padded with zeros past the chunk's end).
#[derive(Default)]
pub(crate) struct Panel {
    /// Per block: `VALUES / 4` steps of 64 bytes (rows 0..16, four values each).
    pub q: Vec<u8>,
    /// K-quants, per block: the group scales, `[groups][16]`.
    pub sc: Vec<i32>,
    /// K-quants, per block: eight words of two i16 factors per row, `[8][16]`, dotted with the
    /// activations' 16-value sums pairwise (mins of Q4_K/Q5_K, scales of Q6_K).
    pub pairs: Vec<i32>,
    /// Per block: the rows' `d`.
    pub d: Vec<f32>,
    /// Per block: the rows' `dmin` (Q4_K/Q5_K) or `m` (Q4_1/Q5_1).
    pub m: Vec<f32>,
}

/// The activation rows, as the micro-kernels read them.
pub(crate) struct Acts<'a> {
    /// All rows, back to back (`rows * row_bytes`).
    pub data: &'a [u8],
    pub row_bytes: usize,
    pub rows: usize,
    /// Blocks per row.
    pub nb: usize,
    /// Bytes per activation block.
    pub block_bytes: usize,
    /// Per row and block: the activation scale (`d`).
    pub dx: &'a [f32],
    /// Legacy types, per row and block: `offset · Σy` (integer).
    pub off: &'a [i32],
    /// Q4_1/Q5_1, per row and block: the activation's `s`.
    pub s: &'a [f32],
}

/// A micro-kernel: activation rows `i0..i0 + mr` (`mr <= MAX_MR`) against the panel, all blocks,
/// into `out[r][lane]`. Returns `mr`.
pub(crate) type Micro = fn(&Panel, &Acts, usize, &mut [[f32; PANEL]; MAX_MR]) -> usize;

/// A GEMM kernel for one weight type.
#[derive(Clone, Copy)]
pub(crate) struct GemmKernel {
    pub ty: GgmlType,
    pub format: Format,
    pub micro: Micro,
}

/// A weight block that unpacks to unsigned bytes plus its factors.
trait Unpack: Block {
    /// Writes the `VALUES` unsigned quants to `q`.
    fn values(&self, q: &mut [u8]);
    /// Writes the group scales (K-quants) and pair factors; returns `(d, m)`.
    fn factors(&self, sc: &mut [i32], pairs: &mut [i32]) -> (f32, f32);
}

/// Q4_0/Q5_0/Q4_1/Q5_1 nibbles: value `j` is the low nibble of byte `j`, value `j + 16` the high
/// one; plus the fifth bit from `qh`.
fn legacy_values(qs: &[u8; 16], qh: u32, q: &mut [u8]) {
    for (j, &b) in qs.iter().enumerate() {
        let hi = |i: usize| (((qh >> i) & 1) as u8) << 4;
        if let Some(v) = q.get_mut(j) {
            *v = (b & 0x0f) | hi(j);
        }
        if let Some(v) = q.get_mut(j + 16) {
            *v = (b >> 4) | hi(j + 16);
        }
    }
}

impl Unpack for BlockQ4_0 {
    fn values(&self, q: &mut [u8]) {
        legacy_values(&self.qs, 0, q);
    }
    fn factors(&self, _: &mut [i32], _: &mut [i32]) -> (f32, f32) {
        (f16_le(self.d), 0.0)
    }
}

impl Unpack for BlockQ4_1 {
    fn values(&self, q: &mut [u8]) {
        legacy_values(&self.qs, 0, q);
    }
    fn factors(&self, _: &mut [i32], _: &mut [i32]) -> (f32, f32) {
        (f16_le(self.d), f16_le(self.m))
    }
}

impl Unpack for BlockQ5_0 {
    fn values(&self, q: &mut [u8]) {
        legacy_values(&self.qs, u32::from_le_bytes(self.qh), q);
    }
    fn factors(&self, _: &mut [i32], _: &mut [i32]) -> (f32, f32) {
        (f16_le(self.d), 0.0)
    }
}

impl Unpack for BlockQ5_1 {
    fn values(&self, q: &mut [u8]) {
        legacy_values(&self.qs, u32::from_le_bytes(self.qh), q);
    }
    fn factors(&self, _: &mut [i32], _: &mut [i32]) -> (f32, f32) {
        (f16_le(self.d), f16_le(self.m))
    }
}

impl Unpack for BlockQ8_0 {
    fn values(&self, q: &mut [u8]) {
        // Offset by 128 to make them unsigned; the kernel subtracts 128·Σy.
        for (v, &x) in q.iter_mut().zip(&self.qs) {
            *v = (x as u8) ^ 0x80;
        }
    }
    fn factors(&self, _: &mut [i32], _: &mut [i32]) -> (f32, f32) {
        (f16_le(self.d), 0.0)
    }
}

/// Q4_K/Q5_K: chunk `j` of 32 `qs` bytes gives values `64j..64j+32` (low nibbles) and
/// `64j+32..64j+64` (high), plus 16 where `qh` has bit `2j` / `2j + 1`.
fn k4_values(qs: &[u8; 128], qh: Option<&[u8; 32]>, q: &mut [u8]) {
    for (j, (out, chunk)) in q.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (lo, hi) = out.split_at_mut(32);
        for (l, ((a, b), &v)) in lo.iter_mut().zip(hi).zip(chunk).enumerate() {
            let h = qh.map_or(0, |qh| qh[l] >> (2 * j));
            *a = (v & 0x0f) | ((h & 1) << 4);
            *b = (v >> 4) | ((h & 2) << 3);
        }
    }
}

/// Q4_K/Q5_K factors: the 8 scales, and each min twice (its group's two 16-value sums).
fn k4_factors(scales: &[u8; 12], sc: &mut [i32], pairs: &mut [i32]) {
    let (s, m) = scales_mins_k4(scales);
    for (o, &v) in sc.iter_mut().zip(&s) {
        *o = i32::from(v);
    }
    for (o, &v) in pairs.iter_mut().zip(&m) {
        *o = i32::from(v) | (i32::from(v) << 16);
    }
}

impl Unpack for BlockQ4K {
    fn values(&self, q: &mut [u8]) {
        k4_values(&self.qs, None, q);
    }
    fn factors(&self, sc: &mut [i32], pairs: &mut [i32]) -> (f32, f32) {
        k4_factors(&self.scales, sc, pairs);
        (f16_le(self.d), f16_le(self.dmin))
    }
}

impl Unpack for BlockQ5K {
    fn values(&self, q: &mut [u8]) {
        k4_values(&self.qs, Some(&self.qh), q);
    }
    fn factors(&self, sc: &mut [i32], pairs: &mut [i32]) -> (f32, f32) {
        k4_factors(&self.scales, sc, pairs);
        (f16_le(self.d), f16_le(self.dmin))
    }
}

impl Unpack for BlockQ6K {
    fn values(&self, q: &mut [u8]) {
        let halves = q
            .chunks_exact_mut(128)
            .zip(self.ql.chunks_exact(64))
            .zip(self.qh.chunks_exact(32));
        for ((out, ql), qh) in halves {
            for (l, &h) in qh.iter().enumerate() {
                let (a, b) = (ql[l], ql[l + 32]);
                out[l] = (a & 0x0f) | ((h & 3) << 4);
                out[l + 32] = (b & 0x0f) | (((h >> 2) & 3) << 4);
                out[l + 64] = (a >> 4) | (((h >> 4) & 3) << 4);
                out[l + 96] = (b >> 4) | (((h >> 6) & 3) << 4);
            }
        }
    }
    fn factors(&self, sc: &mut [i32], pairs: &mut [i32]) -> (f32, f32) {
        let s = self.scales.map(i32::from);
        sc.iter_mut().zip(&s).for_each(|(o, &v)| *o = v);
        for (o, p) in pairs.iter_mut().zip(s.chunks_exact(2)) {
            *o = (p[0] & 0xffff) | (p[1] << 16);
        }
        (f16_le(self.d), 0.0)
    }
}

/// Groups per block of a format: its scale vectors.
fn groups(format: Format) -> usize {
    match format {
        Format::KMin => QK_K / 32,
        Format::KSix => QK_K / 16,
        Format::Legacy { .. } => 0,
    }
}

/// Unpacks rows `rows` (at most [`PANEL`]) of `w` (`n` rows of `row_bytes`) into `p`.
fn unpack<B: Unpack>(
    w: &[u8],
    row_bytes: usize,
    rows: std::ops::Range<usize>,
    format: Format,
    p: &mut Panel,
) {
    let nb = row_bytes / size_of::<B>();
    let (vals, ng) = (B::VALUES, groups(format));
    let step_bytes = 4 * PANEL;
    p.q.clear();
    p.q.resize(nb * vals * PANEL, 0);
    p.sc.clear();
    p.sc.resize(nb * ng * PANEL, 0);
    p.pairs.clear();
    p.pairs.resize(nb * 8 * PANEL, 0);
    p.d.clear();
    p.d.resize(nb * PANEL, 0.0);
    p.m.clear();
    p.m.resize(nb * PANEL, 0.0);
    let mut q = [0u8; QK_K];
    let mut sc = [0i32; QK_K / 16];
    let mut pairs = [0i32; 8];
    for (r, row) in rows.enumerate().take(PANEL) {
        let bytes = w
            .get(row * row_bytes..(row + 1) * row_bytes)
            .unwrap_or_default();
        let blocks = as_blocks::<B>(bytes).unwrap_or_default();
        for (b, blk) in blocks.iter().enumerate() {
            blk.values(&mut q[..vals]);
            let (d, m) = blk.factors(&mut sc[..ng], &mut pairs);
            let base = b * vals * PANEL + 4 * r;
            for (t, v) in q[..vals].chunks_exact(4).enumerate() {
                if let Some(o) =
                    p.q.get_mut(base + t * step_bytes..base + t * step_bytes + 4)
                {
                    o.copy_from_slice(v);
                }
            }
            for (g, &s) in sc[..ng].iter().enumerate() {
                if let Some(o) = p.sc.get_mut((b * ng + g) * PANEL + r) {
                    *o = s;
                }
            }
            for (t, &s) in pairs.iter().enumerate() {
                if let Some(o) = p.pairs.get_mut((b * 8 + t) * PANEL + r) {
                    *o = s;
                }
            }
            if let Some(o) = p.d.get_mut(b * PANEL + r) {
                *o = d;
            }
            if let Some(o) = p.m.get_mut(b * PANEL + r) {
                *o = m;
            }
        }
    }
}

/// The GEMM's format for weight type `ty`, if it has one.
pub(crate) fn format(ty: GgmlType) -> Option<Format> {
    use GgmlType::*;
    Some(match ty {
        Q4_K | Q5_K => Format::KMin,
        Q6_K => Format::KSix,
        Q4_0 => Format::Legacy {
            offset: 8,
            min: false,
        },
        Q5_0 => Format::Legacy {
            offset: 16,
            min: false,
        },
        Q8_0 => Format::Legacy {
            offset: 128,
            min: false,
        },
        Q4_1 | Q5_1 => Format::Legacy {
            offset: 0,
            min: true,
        },
        _ => return None,
    })
}

#[derive(Default)]
struct Scratch {
    panel: Panel,
    dx: Vec<f32>,
    off: Vec<i32>,
    s: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `out[i * nr + j] = W[j] · x[i]` for the `nr` rows of `w` (each `row_bytes`) and every row of the
/// activations `xq` (`m` rows of `x_row_bytes`, of the kernel's vec-dot type). Lengths were validated
/// by the caller.
pub(crate) fn run(
    kernel: GemmKernel,
    w: &[u8],
    row_bytes: usize,
    xq: &[u8],
    x_row_bytes: usize,
    nr: usize,
    out: &mut [f32],
) {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => run_in(kernel, w, row_bytes, xq, x_row_bytes, nr, out, &mut s),
        Err(_) => run_in(
            kernel,
            w,
            row_bytes,
            xq,
            x_row_bytes,
            nr,
            out,
            &mut Scratch::default(),
        ),
    });
}

#[allow(clippy::too_many_arguments)]
fn run_in(
    kernel: GemmKernel,
    w: &[u8],
    row_bytes: usize,
    xq: &[u8],
    x_row_bytes: usize,
    nr: usize,
    out: &mut [f32],
    s: &mut Scratch,
) {
    let Scratch {
        panel,
        dx,
        off,
        s: sy,
    } = s;
    let block_bytes = match kernel.format {
        Format::KMin | Format::KSix => size_of::<BlockQ8K>(),
        Format::Legacy { min: false, .. } => size_of::<BlockQ8_0>(),
        Format::Legacy { min: true, .. } => size_of::<crate::blocks::BlockQ8_1>(),
    };
    let nb = x_row_bytes / block_bytes;
    let m = xq.len().checked_div(x_row_bytes).unwrap_or(0);
    prepare(kernel.format, xq, block_bytes, m * nb, dx, off, sy);
    let acts = Acts {
        data: xq,
        row_bytes: x_row_bytes,
        rows: m,
        nb,
        block_bytes,
        dx,
        off,
        s: sy,
    };
    let mut tile = [[0f32; PANEL]; MAX_MR];
    for j0 in (0..nr).step_by(PANEL) {
        let rows = j0..(j0 + PANEL).min(nr);
        use GgmlType::*;
        match kernel.ty {
            Q4_0 => unpack::<BlockQ4_0>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q4_1 => unpack::<BlockQ4_1>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q5_0 => unpack::<BlockQ5_0>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q5_1 => unpack::<BlockQ5_1>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q8_0 => unpack::<BlockQ8_0>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q4_K => unpack::<BlockQ4K>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q5_K => unpack::<BlockQ5K>(w, row_bytes, rows.clone(), kernel.format, panel),
            Q6_K => unpack::<BlockQ6K>(w, row_bytes, rows.clone(), kernel.format, panel),
            _ => return,
        }
        let mut i0 = 0;
        while i0 < m {
            let mr = (kernel.micro)(panel, &acts, i0, &mut tile);
            if mr == 0 {
                return;
            }
            for (di, lanes) in tile.iter().enumerate().take(mr) {
                let at = (i0 + di) * nr + j0;
                if let Some(o) = out.get_mut(at..at + rows.len()) {
                    o.copy_from_slice(&lanes[..rows.len()]);
                }
            }
            i0 += mr;
        }
    }
}

/// The per-block activation factors: `d`, `offset · Σy` (legacy), `s` (Q8_1).
fn prepare(
    format: Format,
    xq: &[u8],
    block_bytes: usize,
    blocks: usize,
    dx: &mut Vec<f32>,
    off: &mut Vec<i32>,
    s: &mut Vec<f32>,
) {
    dx.clear();
    off.clear();
    s.clear();
    let chunks = xq.chunks_exact(block_bytes).take(blocks);
    match format {
        Format::KMin | Format::KSix => {
            dx.extend(chunks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        Format::Legacy { offset, min } => {
            // Q8_0: d, then 32 quants; Q8_1: d, s, then 32 quants.
            let qoff = if min { 4 } else { 2 };
            for b in chunks {
                dx.push(f16_le([b[0], b[1]]));
                s.push(if min { f16_le([b[2], b[3]]) } else { 0.0 });
                let sum: i32 = b[qoff..].iter().map(|&v| i32::from(v as i8)).sum();
                off.push(offset * sum);
            }
        }
    }
}

/// The GEMM kernel for weights of type `ty` from the set `kernels`, where the set has one and this
/// CPU runs it.
pub(crate) fn kernel_for(kernels: super::Kernels, ty: GgmlType) -> Option<GemmKernel> {
    if !enabled() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let format = format(ty)?;
        let micro = match kernels {
            super::Kernels::Avx2 => super::gemm_x86::gemm_micro(ty, format, false)?,
            super::Kernels::Avx512Vnni => super::gemm_x86::gemm_micro(ty, format, true)?,
            _ => return None,
        };
        Some(GemmKernel { ty, format, micro })
    }
    // No micro-kernels for this architecture yet (aarch64 `sdot`/`smmla` are to come).
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernels, ty);
        None
    }
}

/// Whether [`super::matmul_rows_with`] multiplies weights of type `ty` with the set `kernels` by
/// the GEMM (register-tiled panels) once there are [`MIN_ROWS`] activation rows or more (only while
/// it is on, see [`set_gemm`]).
pub fn has_gemm(kernels: super::Kernels, ty: GgmlType) -> bool {
    kernel_for(kernels, ty).is_some()
}

/// 0: not decided yet (read `EMBER_GEMM` on first use), 1: off, 2: on.
static ENABLED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Turns the GEMM on or off for the whole process (overrides `EMBER_GEMM`).
///
/// Off by default for now: its float summation order differs from the row kernels', so a row's
/// result depends (in the last bits) on whether it was computed in a batch of 8 or more, and an
/// activation quantizer's rounding can then flip between a batched and a single run (the
/// last-row parity test catches it on some tiny models). `EMBER_GEMM=1` turns it on.
pub fn set_gemm(on: bool) {
    ENABLED.store(if on { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
}

fn enabled() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match ENABLED.load(Relaxed) {
        0 => {
            let on = std::env::var("EMBER_GEMM").is_ok_and(|v| matches!(v.trim(), "1" | "on"));
            // A concurrent `set_gemm` wins.
            let _ = ENABLED.compare_exchange(0, if on { 2 } else { 1 }, Relaxed, Relaxed);
            ENABLED.load(Relaxed) == 2
        }
        v => v == 2,
    }
}
