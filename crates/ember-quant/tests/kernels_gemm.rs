//! The GEMM (panel-unpacking, register-tiled) kernels against the scalar reference: every type with
//! a GEMM kernel, every SIMD set this CPU runs, activation / weight row / block counts that are not
//! multiples of the micro-kernel tile (4 activation rows, 16 weight rows), through
//! `matmul_rows_with` and through pools of 1, 2 and 4 threads.
//!
//! The GEMM computes every block's integer sum exactly and differs from the scalar reference only in
//! float summation order, so results agree to a few ulps of the sum of the terms' magnitudes; a wrong
//! integer sum, scale, row or block is off by whole terms. Zero scales must give exact zeros.
#![allow(clippy::unwrap_used)]

mod common;
use common::Rng;
use ember_quant::kernels::{GEMM_MIN_ROWS, Kernels, has_gemm, matmul_rows_with, set_gemm};
use ember_quant::pool::Pool;
use ember_quant::{GgmlType, QuantizedActivations, dequantize};

use GgmlType::*;

const GEMM_TYPES: [GgmlType; 8] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K];

fn simd_sets() -> Vec<Kernels> {
    // Off by default (see `set_gemm`); every test here starts by listing the sets.
    set_gemm(true);
    Kernels::ALL
        .into_iter()
        .filter(|&k| k != Kernels::Scalar && k.is_available())
        .collect()
}

/// Byte offsets of the f16 scale fields in a block of `ty`, and the block size in bytes.
fn f16_fields(ty: GgmlType) -> (&'static [usize], usize) {
    match ty {
        Q4_0 => (&[0], 18),
        Q4_1 => (&[0, 2], 20),
        Q5_0 => (&[0], 22),
        Q5_1 => (&[0, 2], 24),
        Q8_0 => (&[0], 34),
        Q4_K => (&[0, 2], 144),
        Q5_K => (&[0, 2], 176),
        Q6_K => (&[208], 210),
        _ => unreachable!("{ty}"),
    }
}

/// `rows` random rows of `k` values: random quant bytes, f16 scales around 2^-8 (or zero).
fn weights(ty: GgmlType, rows: usize, k: usize, zero: bool, rng: &mut Rng) -> Vec<u8> {
    let (fields, size) = f16_fields(ty);
    let blocks = rows * k / ty.block_size();
    let mut w: Vec<u8> = (0..blocks * size).map(|_| rng.u32() as u8).collect();
    for b in w.chunks_exact_mut(size) {
        for &f in fields {
            let h = if zero { [0, 0] } else { rng.half(-10, -6) };
            b[f..f + 2].copy_from_slice(&h);
        }
    }
    w
}

fn activations(m: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    (0..m * k).map(|_| rng.normal()).collect()
}

/// `sum_i |w_i x_i|` per (activation row, weight row), the scale of the terms being summed.
fn magnitudes(ty: GgmlType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f64> {
    let wf = dequantize_all(ty, w, n * k);
    let mut s = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (wr, xr) = (&wf[j * k..(j + 1) * k], &x[i * k..(i + 1) * k]);
            s[i * n + j] = wr
                .iter()
                .zip(xr)
                .map(|(a, b)| f64::from((a * b).abs()))
                .sum();
        }
    }
    s
}

fn dequantize_all(ty: GgmlType, w: &[u8], values: usize) -> Vec<f32> {
    let mut out = vec![0f32; values];
    dequantize(ty, w, &mut out).unwrap();
    out
}

/// The scalar reference's `m × n` product.
fn reference(ty: GgmlType, w: &[u8], k: usize, xq: &QuantizedActivations, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; xq.rows() * n];
    matmul_rows_with(Kernels::Scalar, ty, w, k, xq, 0..n, &mut out).unwrap();
    out
}

fn assert_close(got: &[f32], want: &[f32], mags: &[f64], n: usize, at: &str) {
    assert_eq!(got.len(), want.len(), "{at}");
    for (idx, ((&g, &r), &s)) in got.iter().zip(want).zip(mags).enumerate() {
        // Min and offset terms can be a few times the weights' own magnitude (cancellation).
        let tol = 1e-4 * s + 1e-30;
        let err = (f64::from(g) - f64::from(r)).abs();
        assert!(
            err <= tol,
            "{at}: row {} col {}: gemm {g} vs scalar {r} (err {err:e}, tol {tol:e})",
            idx / n,
            idx % n
        );
    }
}

/// Edge sizes: activation rows from the GEMM threshold up past several 4-row tiles, weight rows
/// below, at and past one 16-row panel, and 1..3 blocks (or more for 32-value blocks).
fn shapes(ty: GgmlType) -> Vec<(usize, usize, usize)> {
    let bs = ty.block_size();
    let mut v = Vec::new();
    for m in [GEMM_MIN_ROWS, GEMM_MIN_ROWS + 1, 13, 18] {
        for n in [1, 15, 16, 17, 40] {
            for blocks in [1, 3] {
                v.push((m, n, blocks * bs));
            }
        }
    }
    v.push((33, 64, if bs == 32 { 29 * bs } else { 7 * bs }));
    v
}

#[test]
fn gemm_types_per_set() {
    for kernels in simd_sets() {
        for ty in GEMM_TYPES {
            // AVX2's `vpmaddubsw` would saturate on Q8_0's offset weights: VNNI only.
            let want = !(kernels == Kernels::Avx2 && ty == Q8_0);
            if cfg!(target_arch = "x86_64") {
                assert_eq!(has_gemm(kernels, ty), want, "{kernels:?} {ty}");
            }
        }
        for ty in [F32, F16, BF16, Q2_K, Q3_K] {
            assert!(!has_gemm(kernels, ty), "{kernels:?} {ty}");
        }
    }
    for ty in GEMM_TYPES {
        assert!(!has_gemm(Kernels::Scalar, ty));
    }
}

#[test]
fn gemm_matches_scalar_on_random_blocks() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for kernels in simd_sets() {
        for ty in GEMM_TYPES.into_iter().filter(|&t| has_gemm(kernels, t)) {
            for (m, n, k) in shapes(ty) {
                let w = weights(ty, n, k, false, &mut rng);
                let x = activations(m, k, &mut rng);
                let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
                let want = reference(ty, &w, k, &xq, n);
                let mags = magnitudes(ty, &w, n, k, &x, m);
                let mut got = vec![f32::NAN; m * n];
                matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut got).unwrap();
                let at = format!("{kernels:?} {ty} m={m} n={n} k={k}");
                assert_close(&got, &want, &mags, n, &at);
                // A row range that starts inside a panel.
                if n > 3 {
                    let mut part = vec![f32::NAN; m * (n - 3)];
                    matmul_rows_with(kernels, ty, &w, k, &xq, 3..n, &mut part).unwrap();
                    for i in 0..m {
                        let (p, r) = (
                            &part[i * (n - 3)..(i + 1) * (n - 3)],
                            &got[i * n + 3..(i + 1) * n],
                        );
                        assert_eq!(p, r, "{at}: rows 3..");
                    }
                }
                checked += 1;
            }
        }
    }
    eprintln!("{checked} GEMM shapes checked");
}

#[test]
fn zero_scales_give_exact_zeros() {
    let mut rng = Rng(7);
    for kernels in simd_sets() {
        for ty in GEMM_TYPES.into_iter().filter(|&t| has_gemm(kernels, t)) {
            let (m, n, k) = (9, 17, 2 * ty.block_size());
            let w = weights(ty, n, k, true, &mut rng);
            let xq = QuantizedActivations::new(ty, &activations(m, k, &mut rng), m, k).unwrap();
            let mut got = vec![f32::NAN; m * n];
            matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut got).unwrap();
            assert!(got.iter().all(|&v| v == 0.0), "{kernels:?} {ty}: {got:?}");
        }
    }
}

#[test]
fn pools_of_1_2_and_4_threads_match_scalar() {
    let mut rng = Rng(42);
    let pools: Vec<Pool> = [1, 2, 4].into_iter().map(Pool::new).collect();
    for kernels in simd_sets() {
        for ty in GEMM_TYPES.into_iter().filter(|&t| has_gemm(kernels, t)) {
            let (m, n, k) = (21, 300, 2 * 256);
            let w = weights(ty, n, k, false, &mut rng);
            let x = activations(m, k, &mut rng);
            let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
            let want = reference(ty, &w, k, &xq, n);
            let mags = magnitudes(ty, &w, n, k, &x, m);
            let mut single = Vec::new();
            for pool in &pools {
                let mut got = vec![f32::NAN; m * n];
                pool.matmul(kernels, ty, &w, k, &xq, &mut got).unwrap();
                let at = format!("{kernels:?} {ty} threads={}", pool.threads());
                assert_close(&got, &want, &mags, n, &at);
                // The thread count never changes a result.
                if single.is_empty() {
                    single = got;
                } else {
                    assert_eq!(got, single, "{at}");
                }
            }
        }
    }
}
