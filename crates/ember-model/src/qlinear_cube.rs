//! `QuantOps` on the CubeCL backend (wgpu, and any other CubeCL runtime Burn is built with): GGUF
//! blocks stay quantized in GPU memory (uploaded once as `u32` words) and are dequantized inside
//! the matmul kernel, 8 values at a time, in registers.
//!
//! One cube (workgroup) computes one weight row against a tile of up to 8 activation rows: its
//! threads stride over the row's groups of 8 values, each group dequantized once (its block's
//! scale and min decoded once) and dotted with every activation row of the tile; a shared-memory
//! tree sums the threads' partial dots. The per-type decoding follows ggml's `dequantize_row_*`
//! (`ggml/src/ggml-quants.c`) value for value; products are in f32.
//!
//! Decode (one activation row, or one per slot) reads each weight byte once, as the CPU kernels do;
//! each dequantized group serves every row of the tile. Longer prefill batches instead dequantize
//! the weight, a bounded slice of rows at a time, into f32 with the same decoding and multiply with
//! Burn's tiled matmul ([`dequant_matmul`]). Types without a case here are refused when the layer
//! is built ([`supported`]), so the kernels never see them.

use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, Slice};
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::calculate_cube_count_elemwise;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use ember_quant::GgmlType;

/// Threads per cube: a power of two (the reduction halves it).
const THREADS: u32 = 1 << LOG_THREADS;
const LOG_THREADS: u32 = 6;
/// Most activation rows one cube multiplies.
const MAX_TILE: u32 = 8;

// ggml type ids (`GgmlType`'s discriminants), as the kernel's comptime switch sees them.
const F32: u32 = GgmlType::F32 as u32;
const F16: u32 = GgmlType::F16 as u32;
const Q4_0: u32 = GgmlType::Q4_0 as u32;
const Q4_1: u32 = GgmlType::Q4_1 as u32;
const Q5_0: u32 = GgmlType::Q5_0 as u32;
const Q5_1: u32 = GgmlType::Q5_1 as u32;
const Q8_0: u32 = GgmlType::Q8_0 as u32;
const Q2_K: u32 = GgmlType::Q2_K as u32;
const Q3_K: u32 = GgmlType::Q3_K as u32;
const Q4_K: u32 = GgmlType::Q4_K as u32;
const Q5_K: u32 = GgmlType::Q5_K as u32;
const BF16: u32 = GgmlType::BF16 as u32;

/// Whether the GPU kernel multiplies weights of type `ty`.
pub(crate) fn supported(ty: GgmlType) -> bool {
    use GgmlType as T;
    matches!(
        ty,
        T::F32
            | T::F16
            | T::BF16
            | T::Q4_0
            | T::Q4_1
            | T::Q5_0
            | T::Q5_1
            | T::Q8_0
            | T::Q2_K
            | T::Q3_K
            | T::Q4_K
            | T::Q5_K
            | T::Q6_K
    )
}

/// The weight's bytes as the `u32` words the kernel reads: little-endian, zero-padded to a whole
/// word plus one more (a group's unaligned 4-byte read may touch the word after the last).
pub(crate) fn words(bytes: &[u8]) -> Vec<u32> {
    let mut out = vec![0u32; bytes.len().div_ceil(4) + 1];
    for (w, c) in out.iter_mut().zip(bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        *w = u32::from_le_bytes(b);
    }
    out
}

/// `x [m, count·k]` times `count` matrices of `n` rows of `k` values of type `ty` held in `w`
/// (their blocks one after another, as [`words`]): `[m, count·n]`, f32. Up to [`MAX_TILE`] rows
/// (decode, and batched decode) go through the fused kernel; longer prefill batches dequantize the
/// weight a slice of rows at a time into f32 and multiply with Burn's tiled matmul, as llama.cpp's
/// GPU backends do past their mat-vec batch size.
pub(crate) fn q_matmul(
    x: CubeTensor,
    w: CubeTensor,
    ty: GgmlType,
    n: usize,
    k: usize,
    count: usize,
) -> CubeTensor {
    let x = into_contiguous(if x.dtype == DType::F32 {
        x
    } else {
        cast(x, DType::F32)
    });
    let rows = n * count;
    let m = x
        .meta
        .shape()
        .num_elements()
        .checked_div(k * count)
        .unwrap_or(0);
    let empty = rows == 0 || k == 0;
    if m > MAX_TILE as usize && !empty {
        return dequant_matmul(x, w, ty, n, k, count, m);
    }
    let out = empty_device_dtype(
        x.client.clone(),
        x.device.clone(),
        Shape::new([m, rows]),
        DType::F32,
    );
    if m == 0 || empty {
        return out;
    }
    let row_bytes = ty.bytes_for(k as u64).unwrap_or(0) as usize;
    let tile = (m as u32).next_power_of_two().min(MAX_TILE);
    let per_x = rows.min(65_535) as u32;
    let cube_count = CubeCount::Static(
        per_x,
        (rows as u32).div_ceil(per_x),
        (m as u32).div_ceil(tile),
    );
    let client = x.client.clone();
    // Safety: every index the kernel forms is in bounds for the shapes set here — rows < `rows`,
    // activation rows < `m`, values < `k` (float types check each value; block types fill whole
    // groups of 8), and the weight's unaligned reads stay within the padding word of `words`.
    unsafe {
        q_matmul_kernel::launch_unchecked(
            &client,
            cube_count,
            CubeDim::new_1d(THREADS),
            w.into_buffer_arg(),
            x.into_buffer_arg(),
            out.clone().into_buffer_arg(),
            rows as u32,
            n as u32,
            k as u32,
            m as u32,
            row_bytes as u32,
            (count * k) as u32,
            rows as u32,
            ty.id(),
            tile,
        );
    }
    out
}

/// Most f32 values one dequantized slice of a weight holds (64 MiB): the scratch a long prefill
/// batch adds, whatever the matrix size. (A few rows in unit tests, so that they cross slices.)
#[cfg(not(test))]
const SLICE_VALUES: usize = 16 << 20;
#[cfg(test)]
const SLICE_VALUES: usize = 40;

/// [`q_matmul`] for `m` > [`MAX_TILE`]: per head, slices of whole rows dequantized into f32 by
/// [`dequant_kernel`] and multiplied with Burn's matmul; the slices' products concatenated.
fn dequant_matmul(
    x: CubeTensor,
    w: CubeTensor,
    ty: GgmlType,
    n: usize,
    k: usize,
    count: usize,
    m: usize,
) -> CubeTensor {
    type B = burn_cubecl::CubeBackend;
    let row_bytes = ty.bytes_for(k as u64).unwrap_or(0) as usize;
    let step = (SLICE_VALUES / k).clamp(1, n);
    let mut parts = Vec::new();
    for head in 0..count {
        let xh = if count == 1 {
            x.clone()
        } else {
            B::float_slice(
                x.clone(),
                &[Slice::from(0..m), Slice::from(head * k..(head + 1) * k)],
            )
        };
        for first in (0..n).step_by(step) {
            let len = step.min(n - first);
            let wd = dequant_rows(&w, ty, head * n + first, len, k, row_bytes, &x);
            parts.push(B::float_matmul(xh.clone(), B::float_transpose(wd)));
        }
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        B::float_cat(parts, 1)
    }
}

/// Rows `first..first + len` of the weight in `w` dequantized to a new f32 `[len, k]` tensor on
/// `like`'s device.
fn dequant_rows(
    w: &CubeTensor,
    ty: GgmlType,
    first: usize,
    len: usize,
    k: usize,
    row_bytes: usize,
    like: &CubeTensor,
) -> CubeTensor {
    let out = empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new([len, k]),
        DType::F32,
    );
    let units = len * k.div_ceil(8);
    let cube_dim = CubeDim::new_1d(THREADS);
    let cube_count = calculate_cube_count_elemwise(&like.client, units, cube_dim);
    // Safety: units past `len` rows stop at once; every other index is within the `len` rows of
    // `out` and, for the weight, within the padded words (as in `q_matmul`).
    unsafe {
        dequant_kernel::launch_unchecked(
            &like.client,
            cube_count,
            cube_dim,
            w.clone().into_buffer_arg(),
            out.clone().into_buffer_arg(),
            len as u32,
            k as u32,
            row_bytes as u32,
            (first * row_bytes) as u32,
            ty.id(),
        );
    }
    out
}

/// One unit per group of 8 values: rows of the weight starting at byte `offset` into `out`
/// (`rows × k` f32).
#[cube(launch_unchecked)]
fn dequant_kernel(
    w: &[u32],
    out: &mut [f32],
    rows: u32,
    k: u32,
    row_bytes: u32,
    offset: u32,
    #[comptime] ty: u32,
) {
    let groups = k.div_ceil(8);
    let unit = ABSOLUTE_POS as u32;
    let row = unit / groups;
    if row >= rows {
        terminate!();
    }
    let e0 = (unit % groups) * 8;
    let mut wv = Array::<f32>::new(8usize);
    dequant8(w, offset + row * row_bytes, e0, k, &mut wv, ty);
    #[unroll]
    for t in 0..8u32 {
        if e0 + t < k {
            out[(row * k + e0 + t) as usize] = wv[t as usize];
        }
    }
}

/// See the module docs. `x_stride`/`out_stride`: elements between activation/output rows; weight
/// row `row` belongs to head `row / n`, which reads columns `head·k..` of its activation row.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn q_matmul_kernel(
    w: &[u32],
    x: &[f32],
    out: &mut [f32],
    rows: u32,
    n: u32,
    k: u32,
    m: u32,
    row_bytes: u32,
    x_stride: u32,
    out_stride: u32,
    #[comptime] ty: u32,
    #[comptime] tile: u32,
) {
    let row = CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X;
    // Whole cubes leave together: the reduction's barriers below see every thread or none.
    if row >= rows {
        terminate!();
    }
    let m0 = CUBE_POS_Z * tile;
    let row_off = row * row_bytes;
    let xcol = (row / n) * k;
    let mut acc = Array::<f32>::new(comptime!(tile as usize));
    #[unroll]
    for i in 0..tile {
        acc[i as usize] = 0.0;
    }
    let mut wv = Array::<f32>::new(8usize);
    let groups = k.div_ceil(8);
    let mut g = UNIT_POS_X;
    while g < groups {
        let e0 = g * 8;
        dequant8(w, row_off, e0, k, &mut wv, ty);
        #[unroll]
        for i in 0..tile {
            let r = m0 + i;
            if r < m {
                let xo = (r * x_stride + xcol + e0) as usize;
                let mut s = 0.0f32;
                if comptime!(is_float(ty)) {
                    #[unroll]
                    for t in 0..8u32 {
                        if e0 + t < k {
                            s += wv[t as usize] * x[xo + t as usize];
                        }
                    }
                } else {
                    #[unroll]
                    for t in 0..8u32 {
                        s += wv[t as usize] * x[xo + t as usize];
                    }
                }
                acc[i as usize] += s;
            }
        }
        g += CUBE_DIM_X;
    }

    let mut sh = Shared::<[f32]>::new_slice(comptime!((THREADS * tile) as usize));
    let tid = UNIT_POS_X;
    #[unroll]
    for i in 0..tile {
        sh[(i * THREADS + tid) as usize] = acc[i as usize];
    }
    sync_cube();
    // Tree sum, halving the active threads each step (THREADS = 2^LOG_THREADS).
    #[unroll]
    for step in 0..LOG_THREADS {
        let half = comptime!(THREADS >> (step + 1));
        if tid < half {
            #[unroll]
            for i in 0..tile {
                let at = (i * THREADS + tid) as usize;
                let other = sh[at + half as usize];
                sh[at] += other;
            }
        }
        sync_cube();
    }
    if tid == 0 {
        #[unroll]
        for i in 0..tile {
            let r = m0 + i;
            if r < m {
                out[(r * out_stride + row) as usize] = sh[(i * THREADS) as usize];
            }
        }
    }
}

fn is_float(ty: u32) -> bool {
    ty == F32 || ty == F16 || ty == BF16
}

/// The 4 bytes at byte offset `off` (any alignment) as a little-endian `u32`.
#[cube]
fn bytes4(w: &[u32], off: u32) -> u32 {
    let at = (off / 4) as usize;
    let sh = (off % 4) * 8;
    let mut v = w[at];
    if sh != 0 {
        v = (v >> sh) | (w[at + 1] << (32 - sh));
    }
    v
}

/// The byte at offset `off`.
#[cube]
fn byte(w: &[u32], off: u32) -> u32 {
    (w[(off / 4) as usize] >> ((off % 4) * 8)) & 0xff
}

/// The 16 bits at the even offset `off`.
#[cube]
fn bits16(w: &[u32], off: u32) -> u32 {
    (w[(off / 4) as usize] >> ((off % 4) * 8)) & 0xffff
}

/// The f16 at the even offset `off`, widened.
#[cube]
fn half_at(w: &[u32], off: u32) -> f32 {
    f16_bits(bits16(w, off))
}

/// IEEE half bits to f32 (normal and subnormal; the weights' scales are finite).
#[cube]
fn f16_bits(h: u32) -> f32 {
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    // Subnormal or zero: em · 2⁻²⁴.
    let mag = f32::cast_from(em) * 5.960_464_5e-8;
    let small = select(sign != 0, -mag, mag);
    let normal = f32::reinterpret(sign | ((em + 0x1c000) << 13));
    select(em >= 0x400, normal, small)
}

/// Byte `t` (0..8) of the 8 bytes `lo`, `hi`.
#[cube]
fn byte_of(lo: u32, hi: u32, #[comptime] t: u32) -> u32 {
    if comptime!(t < 4) {
        (lo >> comptime!(8 * t)) & 0xff
    } else {
        (hi >> comptime!(8 * (t - 4))) & 0xff
    }
}

/// A byte as the signed value it stores.
#[cube]
fn signed(b: u32) -> f32 {
    f32::cast_from(b) - 256.0 * f32::cast_from(b >> 7)
}

/// Values `e0..e0 + 8` of the row at byte `row_off` into `wv` (`e0` a multiple of 8; float types
/// leave values at or past `k` zero).
#[cube]
fn dequant8(w: &[u32], row_off: u32, e0: u32, k: u32, wv: &mut Array<f32>, #[comptime] ty: u32) {
    if comptime!(ty == F32) {
        #[unroll]
        for t in 0..8u32 {
            let mut v = 0.0f32;
            if e0 + t < k {
                v = f32::reinterpret(w[((row_off + 4 * (e0 + t)) / 4) as usize]);
            }
            wv[t as usize] = v;
        }
    } else if comptime!(ty == F16 || ty == BF16) {
        #[unroll]
        for t in 0..8u32 {
            let mut v = 0.0f32;
            if e0 + t < k {
                let h = bits16(w, row_off + 2 * (e0 + t));
                if comptime!(ty == F16) {
                    v = f16_bits(h);
                } else {
                    v = f32::reinterpret(h << 16);
                }
            }
            wv[t as usize] = v;
        }
    } else if comptime!(ty == Q4_0 || ty == Q4_1 || ty == Q5_0 || ty == Q5_1) {
        // 32 values per block: d (f16), [m (f16)], [qh (u32)], qs[16]; value j's low nibble in
        // qs[j % 16] (high half of the byte for j >= 16), its fifth bit qh bit j.
        let bb = comptime!(block_bytes(ty));
        let base = row_off + (e0 / 32) * bb;
        let j0 = e0 % 32;
        let d = half_at(w, base);
        let mut mn = 0.0f32;
        if comptime!(ty == Q4_1 || ty == Q5_1) {
            mn = half_at(w, base + 2);
        }
        let qs = base + bb - 16 + (j0 % 16);
        let lo = bytes4(w, qs);
        let hi = bytes4(w, qs + 4);
        let shift = (j0 / 16) * 4;
        let mut qh = 0u32;
        if comptime!(ty == Q5_0) {
            qh = bytes4(w, base + 2);
        } else if comptime!(ty == Q5_1) {
            qh = bytes4(w, base + 4);
        }
        #[unroll]
        for t in 0..8u32 {
            let mut q = (byte_of(lo, hi, t) >> shift) & 0xf;
            if comptime!(ty == Q5_0 || ty == Q5_1) {
                q |= ((qh >> (j0 + t)) & 1) << 4;
            }
            let qf = f32::cast_from(q);
            wv[t as usize] = if comptime!(ty == Q4_0) {
                (qf - 8.0) * d
            } else if comptime!(ty == Q5_0) {
                (qf - 16.0) * d
            } else {
                qf * d + mn
            };
        }
    } else if comptime!(ty == Q8_0) {
        let base = row_off + (e0 / 32) * comptime!(block_bytes(ty));
        let d = half_at(w, base);
        let qs = base + 2 + e0 % 32;
        let lo = bytes4(w, qs);
        let hi = bytes4(w, qs + 4);
        #[unroll]
        for t in 0..8u32 {
            wv[t as usize] = signed(byte_of(lo, hi, t)) * d;
        }
    } else if comptime!(ty == Q2_K || ty == Q3_K) {
        // 2-bit fields: value j of the 256 in qs byte 32·(j / 128) + j % 32, at bit 2·((j % 128) / 32).
        let bb = comptime!(block_bytes(ty));
        let base = row_off + (e0 / 256) * bb;
        let j0 = e0 % 256;
        let qs_at = comptime!(if ty == Q3_K { 32u32 } else { 16u32 });
        let qs = base + qs_at + 32 * (j0 / 128) + j0 % 32;
        let lo = bytes4(w, qs);
        let hi = bytes4(w, qs + 4);
        let shift = 2 * ((j0 % 128) / 32);
        let g = j0 / 16;
        if comptime!(ty == Q2_K) {
            let sc = byte(w, base + g);
            let dl = half_at(w, base + 80) * f32::cast_from(sc & 0xf);
            let ml = half_at(w, base + 82) * f32::cast_from(sc >> 4);
            #[unroll]
            for t in 0..8u32 {
                let q = (byte_of(lo, hi, t) >> shift) & 3;
                wv[t as usize] = dl * f32::cast_from(q) - ml;
            }
        } else {
            // Sixteen 6-bit scales: low 4 bits in byte g % 8 of scales (high nibble for g >= 8),
            // top 2 bits in byte 8 + g % 4 at bit 2·(g / 4). The high-bit mask: byte j % 32,
            // bit j / 32.
            let nib = (byte(w, base + 96 + g % 8) >> (4 * (g / 8))) & 0xf;
            let top = (byte(w, base + 104 + g % 4) >> (2 * (g / 4))) & 3;
            let sc = f32::cast_from(nib | (top << 4)) - 32.0;
            let dl = half_at(w, base + 108) * sc;
            let hm = base + j0 % 32;
            let hlo = bytes4(w, hm);
            let hhi = bytes4(w, hm + 4);
            let hbit = j0 / 32;
            #[unroll]
            for t in 0..8u32 {
                let low = f32::cast_from((byte_of(lo, hi, t) >> shift) & 3);
                let h = (byte_of(hlo, hhi, t) >> hbit) & 1;
                wv[t as usize] = dl * (low - 4.0 + 4.0 * f32::cast_from(h));
            }
        }
    } else if comptime!(ty == Q4_K || ty == Q5_K) {
        // d, dmin (f16), 12 bytes of 6-bit scales and mins, [qh[32]], qs[128]: value j's nibble in
        // qs byte 32·(j / 64) + j % 32 (high nibble for the second 32 of each 64), its sub-block
        // j / 32, its fifth bit qh byte j % 32 bit j / 32.
        let bb = comptime!(block_bytes(ty));
        let base = row_off + (e0 / 256) * bb;
        let j0 = e0 % 256;
        let sub = j0 / 32;
        let sc_at = base + 4;
        // get_scale_min_k4: sub-blocks 0..4 in the low 6 bits of bytes sub and sub + 4; 4..8 in
        // byte sub + 4's nibbles plus the top 2 bits of bytes sub - 4 and sub.
        let b_lo = byte(w, sc_at + sub % 4);
        let b_hi = byte(w, sc_at + sub % 4 + 4);
        let b8 = byte(w, sc_at + 8 + sub % 4);
        let sc = select(sub < 4, b_lo & 63, (b8 & 0xf) | ((b_lo >> 6) << 4));
        let mn = select(sub < 4, b_hi & 63, (b8 >> 4) | ((b_hi >> 6) << 4));
        let d = half_at(w, base) * f32::cast_from(sc);
        let dm = half_at(w, base + 2) * f32::cast_from(mn);
        let qs_at = comptime!(if ty == Q5_K { 48u32 } else { 16u32 });
        let qs = base + qs_at + 32 * (j0 / 64) + j0 % 32;
        let lo = bytes4(w, qs);
        let hi = bytes4(w, qs + 4);
        let shift = 4 * (sub % 2);
        let mut hlo = 0u32;
        let mut hhi = 0u32;
        if comptime!(ty == Q5_K) {
            hlo = bytes4(w, base + 16 + j0 % 32);
            hhi = bytes4(w, base + 20 + j0 % 32);
        }
        #[unroll]
        for t in 0..8u32 {
            let mut q = (byte_of(lo, hi, t) >> shift) & 0xf;
            if comptime!(ty == Q5_K) {
                q += ((byte_of(hlo, hhi, t) >> sub) & 1) * 16;
            }
            wv[t as usize] = d * f32::cast_from(q) - dm;
        }
    } else {
        // Q6_K: ql[128], qh[64], scales[16] (i8), d. Value j = 128·h + 32·p + l: low nibble in ql
        // byte 64·h + 32·(p % 2) + l (high nibble for p >= 2), top 2 bits in qh byte 32·h + l at
        // bit 2·p, scale j / 16.
        let base = row_off + (e0 / 256) * comptime!(block_bytes(ty));
        let j0 = e0 % 256;
        let h = j0 / 128;
        let p = (j0 % 128) / 32;
        let l = j0 % 32;
        let ql = base + 64 * h + 32 * (p % 2) + l;
        let lo = bytes4(w, ql);
        let hi = bytes4(w, ql + 4);
        let qh = base + 128 + 32 * h + l;
        let hlo = bytes4(w, qh);
        let hhi = bytes4(w, qh + 4);
        let nshift = 4 * (p / 2);
        let hshift = 2 * p;
        let d = half_at(w, base + 208) * signed(byte(w, base + 192 + j0 / 16));
        #[unroll]
        for t in 0..8u32 {
            let q = ((byte_of(lo, hi, t) >> nshift) & 0xf)
                | (((byte_of(hlo, hhi, t) >> hshift) & 3) << 4);
            wv[t as usize] = d * (f32::cast_from(q) - 32.0);
        }
    }
}

/// Bytes per block of type id `ty` (`GgmlType::type_size`), for the kernel's comptime offsets.
fn block_bytes(ty: u32) -> u32 {
    GgmlType::from_id(ty).map_or(0, |t| t.type_size() as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::qlinear::{QHeads, QLinear};
    use burn::tensor::{Device, Tensor, TensorData};

    fn gpu() -> Device {
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
    }

    fn to_vec(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// `x [m, count·k] · W_hᵀ` head by head, in f64.
    fn reference(w: &[f32], x: &[f32], n: usize, k: usize, count: usize) -> Vec<f32> {
        let m = x.len() / (k * count);
        let mut out = vec![0f32; m * n * count];
        for i in 0..m {
            for h in 0..count {
                for j in 0..n {
                    let row = &w[(h * n + j) * k..][..k];
                    let xr = &x[i * count * k + h * k..][..k];
                    let s: f64 = row.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                    out[i * count * n + h * n + j] = s as f32;
                }
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "[{i}] {g} vs {w}");
        }
    }

    /// Float weights of every width, with rows that are not whole groups of 8, and activation
    /// counts for the fused kernel (up to 8) and for the dequantized slices (above, here several
    /// slices of rows); the weight values are exact in each type.
    #[test]
    fn float_weights_any_width() {
        for (ty, bytes_of) in [
            (
                GgmlType::F32,
                (|v: f32| v.to_le_bytes().to_vec()) as fn(f32) -> Vec<u8>,
            ),
            (GgmlType::F16, |v| {
                half::f16::from_f32(v).to_le_bytes().to_vec()
            }),
            (GgmlType::BF16, |v| {
                half::bf16::from_f32(v).to_le_bytes().to_vec()
            }),
        ] {
            for (n, k, m) in [(3, 5, 1), (7, 13, 9), (2, 64, 3), (1, 8, 17), (9, 8, 8)] {
                // Multiples of 1/8 in [-2, 2]: exact in f16 and bf16.
                let w: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 37) % 33) as f32 / 8.0 - 2.0)
                    .collect();
                let bytes: Vec<u8> = w.iter().flat_map(|&v| bytes_of(v)).collect();
                let x = values(m * k, n);
                let lin = QLinear::from_bytes(bytes.into(), ty, n, k, &gpu(), "t").unwrap();
                let got = to_vec(lin.forward(Tensor::from_data(
                    TensorData::new(x.clone(), [m, k]),
                    &gpu(),
                )));
                close(&got, &reference(&w, &x, n, k, 1));
            }
        }
    }

    /// `q_matmul_heads`: head h of each activation row against matrix h.
    #[test]
    fn heads_take_their_own_columns() {
        let (n, k, count) = (5, 16, 3);
        let w: Vec<f32> = (0..n * k * count)
            .map(|i| ((i * 13) % 17) as f32 / 4.0 - 2.0)
            .collect();
        let heads = QHeads::from_f32(&w, n, k, count, &gpu(), "t").unwrap();
        // 4 rows: the fused kernel; 12: dequantized slices of 2 rows (SLICE_VALUES) per head.
        for m in [4, 12] {
            let x = values(m * k * count, m);
            let got = to_vec(heads.forward(Tensor::from_data(
                TensorData::new(x.clone(), [m, count * k]),
                &gpu(),
            )));
            close(&got, &reference(&w, &x, n, k, count));
        }
    }

    /// Half bits to f32: normals, subnormals, signed zero.
    #[test]
    fn half_decoding_covers_subnormals() {
        let hs = [
            0x0001u16, 0x03ff, 0x8001, 0x0400, 0x3c00, 0xc000, 0x7bff, 0x8000,
        ];
        let w: Vec<f32> = hs
            .iter()
            .map(|&h| half::f16::from_bits(h).to_f32())
            .collect();
        let bytes: Vec<u8> = hs.iter().flat_map(|h| h.to_le_bytes()).collect();
        let lin = QLinear::from_bytes(bytes.into(), GgmlType::F16, 8, 1, &gpu(), "t").unwrap();
        let got = to_vec(lin.forward(Tensor::from_data(
            TensorData::new(vec![1.0f32], [1, 1]),
            &gpu(),
        )));
        assert_eq!(got, w);
    }
}
