//! The SIMD kernels against the scalar reference kernels, on random blocks.
//!
//! Both compute every block's integer dot exactly; they differ only in the order (and fusion) of the
//! float operations that scale and sum the blocks. For a sum of `n` float terms `t_j` every such
//! order errs by at most about `n * 2^-24 * sum |t_j|`, so the two differ by at most twice that. We
//! allow `|simd - scalar| <= 2 * (nb + 16) * 2^-24 * S + tiny`, with `nb` the number of blocks (the
//! longest chain of additions either side performs, plus the final 8- or 16-lane reduction) and `S`
//! an upper bound on `sum |t_j|`, from the dequantized weights `w_i` and activations `x~_i`:
//! `S = sum_i (|w_i| + 2 |o_i|) * |x~_i| + sum_b |m_b * s_b|`, `o_i` the weight's offset (`m` of
//! Q4_1, `-dmin * min` of Q4_K/Q5_K, 0 elsewhere): the scaled quant `d * q = w - o` is bounded by
//! `|w| + |o|`, the min terms by `|o| * |x~|`, and Q8_1's stored `s` enters as `m * s`. `tiny` covers
//! subnormal results, whose rounding is absolute (and the scale products both sides round alike).
//! The typical observed error is far below the bound (printed); a wrong integer sum, scale or block
//! is off by a whole term and fails.
#![allow(clippy::unwrap_used)]

mod common;
use common::Rng;
use ember_quant::kernels::{Kernels, matmul_rows_with, row_kernel, row_kernel_for, vec_dot_with};
use ember_quant::{
    GgmlType, QuantizedActivations, dequantize, quantize_activation, vec_dot, vec_dot_type,
};
use half::f16;

use GgmlType::*;

/// The types with SIMD kernels, then the rest (which must fall back to the scalar kernel).
const SIMD_TYPES: [GgmlType; 6] = [Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K];
const OTHER_TYPES: [GgmlType; 7] = [F32, F16, BF16, Q5_0, Q5_1, Q2_K, Q3_K];

/// How the f16 scale fields of the weights are drawn.
#[derive(Clone, Copy, Debug)]
enum Scales {
    /// Realistic: around 2^-14..2^-4.
    Normal,
    /// All zero.
    Zero,
    /// f16 subnormals (and zero).
    Subnormal,
    /// Up to 2^15.
    Large,
    /// Any of the above, per field.
    Mixed,
}

fn f16_field(rng: &mut Rng, how: Scales) -> [u8; 2] {
    let sign = if rng.u32() & 1 == 1 { 0x8000u16 } else { 0 };
    let bits = match how {
        Scales::Normal => {
            let e = 1 + rng.u32() % 11; // biased exponent 1..=11: 2^-14 .. 2^-4
            ((e as u16) << 10) | (rng.u32() as u16 & 0x3ff)
        }
        Scales::Zero => 0,
        Scales::Subnormal => rng.u32() as u16 & 0x3ff,
        Scales::Large => {
            let e = 16 + rng.u32() % 15; // 2^1 .. 2^15
            ((e as u16) << 10) | (rng.u32() as u16 & 0x3ff)
        }
        Scales::Mixed => {
            let how = [
                Scales::Normal,
                Scales::Zero,
                Scales::Subnormal,
                Scales::Large,
            ][(rng.u32() % 4) as usize];
            return f16_field(rng, how);
        }
    };
    (bits | sign).to_le_bytes()
}

/// Offsets of the f16 scale fields within one block of `ty`, and the offset of `d` alone (the
/// field that multiplies the quants).
fn scale_fields(ty: GgmlType) -> (&'static [usize], Option<usize>) {
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], Some(0)),
        Q4_1 | Q5_1 => (&[0, 2], Some(0)),
        Q4_K | Q5_K => (&[0, 2], Some(0)),
        Q2_K => (&[80, 82], Some(80)),
        Q3_K => (&[108], Some(108)),
        Q6_K => (&[208], Some(208)),
        _ => (&[], None),
    }
}

/// Random weight bytes with finite scale fields drawn as `how`.
fn random_weights(ty: GgmlType, values: usize, how: Scales, rng: &mut Rng) -> Vec<u8> {
    let len = ty.bytes_for(values as u64).unwrap() as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.u32() as u8).collect();
    match ty {
        F32 | F16 | BF16 => {
            let x: Vec<f32> = (0..values).map(|_| rng.normal()).collect();
            quantize_activation(ty, &x, &mut bytes).unwrap();
        }
        _ => {
            let (fields, _) = scale_fields(ty);
            for block in bytes.chunks_exact_mut(ty.type_size()) {
                for &f in fields {
                    block[f..f + 2].copy_from_slice(&f16_field(rng, how));
                }
            }
        }
    }
    bytes
}

/// How activation rows are drawn.
#[derive(Clone, Copy, Debug)]
enum Acts {
    /// `quantize_activation` of roughly normal values with outliers, times `scale`.
    Quantized(f32),
    /// `quantize_activation` of an all-zero row.
    Zero,
    /// Raw random quant bytes (including -128, which no quantizer writes) with sane scales: the
    /// integer parts must be exact for any bytes.
    Raw,
}

fn activations(ty: GgmlType, k: usize, how: Acts, rng: &mut Rng) -> Vec<u8> {
    let vdt = vec_dot_type(ty).unwrap();
    let len = vdt.bytes_for(k as u64).unwrap() as usize;
    let mut out = vec![0u8; len];
    match how {
        Acts::Quantized(scale) => {
            let x: Vec<f32> = (0..k).map(|_| rng.normal() * scale).collect();
            quantize_activation(vdt, &x, &mut out).unwrap();
        }
        Acts::Zero => quantize_activation(vdt, &vec![0.0; k], &mut out).unwrap(),
        Acts::Raw => {
            out.iter_mut().for_each(|b| *b = rng.u32() as u8);
            match vdt {
                Q8_0 | Q8_1 => {
                    for b in out.chunks_exact_mut(vdt.type_size()) {
                        b[0..2].copy_from_slice(&f16_field(rng, Scales::Normal));
                        if vdt == Q8_1 {
                            b[2..4].copy_from_slice(&f16_field(rng, Scales::Normal));
                        }
                    }
                }
                Q8_K => {
                    for b in out.chunks_exact_mut(vdt.type_size()) {
                        let d = (rng.uniform() - 0.5) * 0.1;
                        b[0..4].copy_from_slice(&d.to_le_bytes());
                    }
                }
                _ => {
                    let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
                    quantize_activation(vdt, &x, &mut out).unwrap();
                }
            }
        }
    }
    out
}

fn h(b: &[u8]) -> f64 {
    f64::from(f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
}

/// Dequantized activation row (Q8_1 by hand: ember has no row dequantizer for it).
fn dequant_activation(vdt: GgmlType, xq: &[u8], k: usize) -> Vec<f64> {
    if vdt == Q8_1 {
        return xq
            .chunks_exact(36)
            .flat_map(|b| {
                let d = h(&b[0..2]);
                b[4..36].iter().map(move |&q| d * f64::from(q as i8))
            })
            .collect();
    }
    let mut out = vec![0.0f32; k];
    dequantize(vdt, xq, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// `S` of the module comment.
fn term_bound(ty: GgmlType, w: &[u8], xq: &[u8], k: usize) -> f64 {
    let vdt = vec_dot_type(ty).unwrap();
    let x = dequant_activation(vdt, xq, k);
    let mut wd = vec![0.0f32; k];
    dequantize(ty, w, &mut wd).unwrap();
    // The offsets: the same row with `d` zeroed (Q4_1: m; Q4_K/Q5_K: -dmin * min).
    let mut off = vec![0.0f32; k];
    if matches!(ty, Q4_1 | Q5_1 | Q4_K | Q5_K | Q2_K) {
        let mut w0 = w.to_vec();
        let d = scale_fields(ty).1.unwrap();
        for b in w0.chunks_exact_mut(ty.type_size()) {
            b[d..d + 2].copy_from_slice(&[0, 0]);
        }
        dequantize(ty, &w0, &mut off).unwrap();
    }
    let mut s: f64 = wd
        .iter()
        .zip(&off)
        .zip(&x)
        .map(|((&w, &o), &x)| (f64::from(w.abs()) + 2.0 * f64::from(o.abs())) * x.abs())
        .sum();
    if vdt == Q8_1 {
        for (wb, xb) in w.chunks_exact(ty.type_size()).zip(xq.chunks_exact(36)) {
            s += (h(&wb[2..4]) * h(&xb[2..4])).abs();
        }
    }
    s
}

fn tolerance(ty: GgmlType, k: usize, s: f64) -> f64 {
    let nb = (k / ty.block_size().max(1)) as f64;
    2.0 * (nb + 16.0) * 2f64.powi(-24) * s + (nb + 1.0) * 1e-36
}

/// Compares SIMD with scalar for one weight row and activation row; returns error / tolerance.
fn compare(ty: GgmlType, w: &[u8], xq: &[u8], k: usize, at: &str) -> f64 {
    let scalar = vec_dot_with(Kernels::Scalar, ty, w, xq, k).unwrap();
    let simd = vec_dot_with(Kernels::Avx2, ty, w, xq, k).unwrap();
    // The dispatched default is one of the two, exactly.
    let active = vec_dot(ty, w, xq, k).unwrap();
    let expect = if Kernels::active() == Kernels::Scalar {
        scalar
    } else {
        simd
    };
    assert_eq!(active.to_bits(), expect.to_bits(), "{at}: vec_dot");
    assert!(
        scalar.is_finite(),
        "{at}: scalar {scalar} (test data too large)"
    );
    assert!(simd.is_finite(), "{at}: simd {simd} vs scalar {scalar}");
    let s = term_bound(ty, w, xq, k);
    let tol = tolerance(ty, k, s);
    let err = (f64::from(simd) - f64::from(scalar)).abs();
    assert!(
        err <= tol,
        "{at}: simd {simd} vs scalar {scalar}: |err| {err:e} > {tol:e} (S = {s:e})"
    );
    err / tol
}

fn ks(ty: GgmlType) -> Vec<usize> {
    let bs = ty.block_size();
    if bs == 256 {
        // 1, 2, 3, 16 (4096), 17 super-blocks.
        vec![256, 512, 768, 4096, 4352]
    } else {
        // 1, 2, 3, 7, 128 (4096), 129 blocks.
        vec![32, 64, 96, 224, 4096, 4128]
    }
}

#[test]
fn simd_matches_scalar_on_random_blocks() {
    if !Kernels::Avx2.is_available() {
        eprintln!("no AVX2/FMA/F16C on this CPU: SIMD kernels not tested");
        return;
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let scales = [
        Scales::Normal,
        Scales::Zero,
        Scales::Subnormal,
        Scales::Large,
        Scales::Mixed,
    ];
    let acts = [
        Acts::Quantized(1.0),
        Acts::Quantized(1e-30),
        Acts::Quantized(1e-3),
        // Large, with the activation scale and Q8_1 sum (f16s, max 65504) still finite.
        Acts::Quantized(300.0),
        Acts::Zero,
        Acts::Raw,
    ];
    let mut checked = 0;
    for ty in SIMD_TYPES.into_iter().chain(OTHER_TYPES) {
        let mut worst = 0.0f64;
        for k in ks(ty) {
            for how in scales {
                let w = random_weights(ty, k, how, &mut rng);
                for act in acts {
                    let xq = activations(ty, k, act, &mut rng);
                    let at = format!("{ty} k={k} weights {how:?} activations {act:?}");
                    worst = worst.max(compare(ty, &w, &xq, k, &at));
                    checked += 1;
                }
            }
        }
        eprintln!("{ty}: worst |simd - scalar| / tolerance = {worst:.2e}");
    }
    assert!(checked > 0);
}

/// Types without a SIMD kernel get exactly the scalar one; all types get a kernel from both sets.
#[test]
fn dispatch_falls_back_to_scalar() {
    let mut rng = Rng(99);
    for ty in SIMD_TYPES.into_iter().chain(OTHER_TYPES) {
        let (vdt, _) = row_kernel(ty).unwrap();
        assert_eq!(vdt, vec_dot_type(ty).unwrap());
        for kernels in [Kernels::Scalar, Kernels::Avx2] {
            assert_eq!(row_kernel_for(kernels, ty).unwrap().0, vdt);
        }
        if OTHER_TYPES.contains(&ty) {
            let k = ty.block_size().max(32) * 3;
            let w = random_weights(ty, k, Scales::Normal, &mut rng);
            let xq = activations(ty, k, Acts::Quantized(1.0), &mut rng);
            let a = vec_dot_with(Kernels::Scalar, ty, &w, &xq, k).unwrap();
            let b = vec_dot_with(Kernels::Avx2, ty, &w, &xq, k).unwrap();
            assert_eq!(a.to_bits(), b.to_bits(), "{ty}");
        }
    }
    assert!(Kernels::Scalar.is_available());
    assert_eq!(
        Kernels::detected() == Kernels::Avx2,
        Kernels::Avx2.is_available()
    );
}

/// `matmul_rows_with` gives exactly the `vec_dot_with` numbers of the same kernel set, for several
/// activation rows and split row ranges.
#[test]
fn matmul_rows_matches_vec_dot_per_kernel_set() {
    let mut rng = Rng(12345);
    for ty in SIMD_TYPES {
        let k = ty.block_size() * 5;
        let (n, m) = (7, 5);
        let w = random_weights(ty, n * k, Scales::Normal, &mut rng);
        let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
        let row_bytes = ty.bytes_for(k as u64).unwrap() as usize;
        for kernels in [Kernels::Scalar, Kernels::Avx2] {
            for rows in [0..n, 2..5, 6..7] {
                let mut out = vec![f32::NAN; m * rows.len()];
                matmul_rows_with(kernels, ty, &w, k, &xq, rows.clone(), &mut out).unwrap();
                for i in 0..m {
                    for (jj, j) in rows.clone().enumerate() {
                        let one = vec_dot_with(
                            kernels,
                            ty,
                            &w[j * row_bytes..(j + 1) * row_bytes],
                            xq.row(i).unwrap(),
                            k,
                        )
                        .unwrap();
                        assert_eq!(
                            out[i * rows.len() + jj].to_bits(),
                            one.to_bits(),
                            "{ty} {kernels:?} rows {rows:?} [{i}][{j}]"
                        );
                    }
                }
            }
        }
    }
}

/// Blocks at odd byte offsets (as in an mmap'd file): the kernels use unaligned loads.
#[test]
fn unaligned_rows() {
    let mut rng = Rng(777);
    for ty in SIMD_TYPES {
        let k = ty.block_size() * 3;
        let w = random_weights(ty, k, Scales::Normal, &mut rng);
        let xq = activations(ty, k, Acts::Quantized(1.0), &mut rng);
        let base = vec_dot_with(Kernels::Avx2, ty, &w, &xq, k).unwrap();
        for shift in 1..4 {
            let mut wb = vec![0u8; shift];
            wb.extend_from_slice(&w);
            let mut xb = vec![0u8; shift + 1];
            xb.extend_from_slice(&xq);
            let got = vec_dot_with(Kernels::Avx2, ty, &wb[shift..], &xb[shift + 1..], k).unwrap();
            assert_eq!(got.to_bits(), base.to_bits(), "{ty} shift {shift}");
        }
    }
}

/// Mat-vec throughput, scalar vs SIMD, single-threaded, in GB/s of weight bytes:
/// `cargo test --release -p ember-quant --test kernels_simd -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_matvec() {
    use std::time::Instant;
    let mut rng = Rng(4242);
    // (type, n rows, k): SmolLM2-135M's ffn_down (Q4_1) and output (Q8_0), Qwen2-0.5B's ffn_down
    // (Q4_K, Q6_K).
    let shapes = [
        (Q4_1, 576, 1536),
        (Q4_0, 576, 1536),
        (Q8_0, 576, 1536),
        (Q8_0, 49152, 576),
        (Q4_K, 896, 4864),
        (Q5_K, 896, 4864),
        (Q6_K, 896, 4864),
    ];
    for (ty, n, k) in shapes {
        let w = random_weights(ty, n * k, Scales::Normal, &mut rng);
        let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
        let xq = QuantizedActivations::new(ty, &x, 1, k).unwrap();
        let mut out = vec![0.0f32; n];
        let mut line = format!("{ty} {n}x{k} ({:.1} MB):", w.len() as f64 / 1e6);
        for kernels in [Kernels::Scalar, Kernels::Avx2] {
            // Warm up, then run for ~0.3 s.
            matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut out).unwrap();
            let start = Instant::now();
            let mut iters = 0u32;
            while start.elapsed().as_secs_f64() < 0.3 {
                matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut out).unwrap();
                iters += 1;
            }
            let secs = start.elapsed().as_secs_f64() / f64::from(iters);
            let gbs = w.len() as f64 / secs / 1e9;
            line += &format!(" {kernels:?} {gbs:.2} GB/s ({:.1} us)", secs * 1e6);
        }
        eprintln!("{line}");
    }
}
