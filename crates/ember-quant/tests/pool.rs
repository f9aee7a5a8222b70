//! The pool's parallel product against the single-threaded one: same values, every row, for thread
//! counts, activation row counts and weight row counts around the chunk and tile sizes.

#![allow(clippy::unwrap_used)]

mod common;

use common::Rng;
use ember_quant::kernels::{Kernels, matmul_rows_with};
use ember_quant::pool::Pool;
use ember_quant::{GgmlType, QuantizedActivations, quantize_activation};

/// `n` random Q4_0 rows of `k` values (random nibbles, sane scales).
fn q4_0(rng: &mut Rng, n: usize, k: usize) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..n * k / 32 {
        w.extend(rng.half(-8, -4));
        w.extend((0..16).map(|_| rng.u32() as u8));
    }
    w
}

/// `n` Q8_0 rows quantized from random values.
fn q8_0(rng: &mut Rng, n: usize, k: usize) -> Vec<u8> {
    let mut w = vec![0u8; n * k / 32 * 34];
    for row in w.chunks_exact_mut(k / 32 * 34) {
        let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
        quantize_activation(GgmlType::Q8_0, &x, row).unwrap();
    }
    w
}

#[test]
fn pool_matmul_equals_the_serial_product() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let k = 64;
    for threads in [1, 2, 3] {
        let pool = Pool::new(threads);
        for (ty, make) in [
            (
                GgmlType::Q4_0,
                q4_0 as fn(&mut Rng, usize, usize) -> Vec<u8>,
            ),
            (GgmlType::Q8_0, q8_0),
        ] {
            for n in [1, 2, 15, 16, 17, 33, 257, 1000] {
                let w = make(&mut rng, n, k);
                for m in [1, 2, 3, 8] {
                    let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                    let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
                    let kernels = Kernels::active();
                    let mut serial = vec![0f32; m * n];
                    matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut serial).unwrap();
                    let mut par = vec![f32::NAN; m * n];
                    pool.matmul(kernels, ty, &w, k, &xq, &mut par).unwrap();
                    assert_eq!(
                        par.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        serial.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{ty:?} threads {threads} n {n} m {m}"
                    );
                }
            }
        }
    }
}

#[test]
fn pool_matmul_rejects_bad_sizes_without_writing() {
    let mut rng = Rng(7);
    let pool = Pool::new(2);
    let (k, n, m) = (64, 4, 2);
    let w = q8_0(&mut rng, n, k);
    let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
    let xq = QuantizedActivations::new(GgmlType::Q8_0, &x, m, k).unwrap();
    let kernels = Kernels::active();
    // Output of the wrong size.
    let mut out = vec![1.5f32; m * n + 1];
    assert!(
        pool.matmul(kernels, GgmlType::Q8_0, &w, k, &xq, &mut out)
            .is_err()
    );
    assert!(out.iter().all(|&v| v == 1.5));
    // Weight bytes that are not whole rows.
    let mut out = vec![1.5f32; m * n];
    assert!(
        pool.matmul(kernels, GgmlType::Q8_0, &w[..w.len() - 1], k, &xq, &mut out)
            .is_err()
    );
    assert!(out.iter().all(|&v| v == 1.5));
    // Activations quantized for another weight type.
    let xq4 = QuantizedActivations::new(GgmlType::Q4_1, &x, m, k).unwrap();
    assert!(
        pool.matmul(kernels, GgmlType::Q8_0, &w, k, &xq4, &mut out)
            .is_err()
    );
    assert!(out.iter().all(|&v| v == 1.5));
}
