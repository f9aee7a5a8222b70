//! Property tests of the kernels against ember's own dequantizers, over many shapes.
//!
//! For random weights `W` (every supported type, realistic scales) and activations `x`:
//! - `matmul_rows` over any row range equals the matching `vec_dot` calls, bit for bit, and the
//!   activation rows it uses equal `quantize_activation` of each row;
//! - tight: each dot equals `sum_i w_i * x~_i` (`w` from `dequantize`, `x~` the dequantized activation)
//!   to within f32 rounding, `1e-5 * S` with `S = sum |w_i * x~_i|`. For the Q8_1 types ggml uses the
//!   activation's stored `s = d * sum(q)` (rounded to f16 on its own) instead of `d * sum(q)`; that
//!   difference, computed exactly per block, is allowed on top;
//! - loose: each dot equals the exact f32 dot `sum_i w_i * x_i` to within the activation
//!   quantization error, `sum_i |w_i| * e_i` (`e_i` bounded per vec-dot type below) plus rounding.
//!
//! The worst observed error / bound ratios are printed.
#![allow(clippy::unwrap_used)]

mod common;
use common::Rng;
use std::ops::Range;

use ember_quant::{
    Block, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K,
    BlockQ6K, BlockQ8_0, BlockQ8_1, GgmlType, QuantizedActivations, as_blocks, dequantize,
    dequantize_block_q8_1, dequantize_to_vec, matmul_rows, quantize_activation, vec_dot,
    vec_dot_type,
};
use half::f16;

use GgmlType::*;

const WEIGHT_TYPES: [GgmlType; 13] = [
    F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
];

/// Random bytes with every scale field set to a finite value of realistic size (weights around
/// 2^-4; K-quant super-block scales near 2^-9 so that `d * scale * q` is too).
fn random_weights(ty: GgmlType, values: usize, rng: &mut Rng) -> Vec<u8> {
    let len = ty.bytes_for(values as u64).unwrap() as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.u32() as u8).collect();
    fn each<B: Block>(bytes: &mut [u8], mut f: impl FnMut(&mut B)) {
        bytemuck::cast_slice_mut::<u8, B>(bytes)
            .iter_mut()
            .for_each(&mut f);
    }
    match ty {
        F32 | F16 | BF16 => {
            let vals: Vec<f32> = (0..values).map(|_| rng.normal() * 0.05).collect();
            // Stored by the same conversion activations get, which is exactly ggml's.
            quantize_activation(ty, &vals, &mut bytes).unwrap();
        }
        Q4_0 => each(&mut bytes, |b: &mut BlockQ4_0| b.d = rng.half(-8, -5)),
        Q4_1 => each(&mut bytes, |b: &mut BlockQ4_1| {
            (b.d, b.m) = (rng.half(-8, -5), rng.half(-5, -3))
        }),
        Q5_0 => each(&mut bytes, |b: &mut BlockQ5_0| b.d = rng.half(-9, -6)),
        Q5_1 => each(&mut bytes, |b: &mut BlockQ5_1| {
            (b.d, b.m) = (rng.half(-9, -6), rng.half(-5, -3))
        }),
        Q8_0 => each(&mut bytes, |b: &mut BlockQ8_0| b.d = rng.half(-12, -9)),
        Q2_K => each(&mut bytes, |b: &mut BlockQ2K| {
            (b.d, b.dmin) = (rng.half(-6, -4), rng.half(-8, -6))
        }),
        Q3_K => each(&mut bytes, |b: &mut BlockQ3K| b.d = rng.half(-10, -8)),
        Q4_K => each(&mut bytes, |b: &mut BlockQ4K| {
            (b.d, b.dmin) = (rng.half(-11, -9), rng.half(-10, -8))
        }),
        Q5_K => each(&mut bytes, |b: &mut BlockQ5K| {
            (b.d, b.dmin) = (rng.half(-12, -10), rng.half(-10, -8))
        }),
        Q6_K => each(&mut bytes, |b: &mut BlockQ6K| b.d = rng.half(-14, -12)),
        other => panic!("no generator for {other}"),
    }
    bytes
}

fn random_x(values: usize, rng: &mut Rng) -> Vec<f32> {
    let scale = 2f32.powi(-6 + (rng.u32() % 9) as i32);
    (0..values).map(|_| rng.normal() * scale).collect()
}

fn dequant_activation(ty: GgmlType, bytes: &[u8], k: usize) -> Vec<f32> {
    if ty == Q8_1 {
        let mut out = vec![0.0; k];
        let blocks = as_blocks::<BlockQ8_1>(bytes).unwrap();
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            dequantize_block_q8_1(b, o.try_into().unwrap());
        }
        return out;
    }
    dequantize_to_vec(ty, bytes, k).unwrap()
}

/// Bound on `|x~_i - x_i|` from converting `x` to `vdt`, per value.
fn activation_error(vdt: GgmlType, x: &[f32]) -> Vec<f64> {
    let block = |bs: usize| -> Vec<f64> {
        x.chunks(bs)
            .flat_map(|b| {
                let amax = b.iter().fold(0.0f64, |m, &v| m.max(f64::from(v.abs())));
                // Half a step of d = amax / 127, plus d's rounding to f16 (2^-11 relative, times
                // |q| <= 127), plus f16 subnormal spacing for tiny blocks.
                let e = amax * (0.5 / 127.0 + 2f64.powi(-10)) + 127.0 * 2f64.powi(-25);
                std::iter::repeat_n(e, b.len())
            })
            .collect()
    };
    match vdt {
        Q8_0 | Q8_1 => block(32),
        Q8_K => block(256),
        F16 => x
            .iter()
            .map(|&v| f64::from(v.abs()) * 2f64.powi(-11) + 2f64.powi(-25))
            .collect(),
        BF16 => x
            .iter()
            .map(|&v| f64::from(v.abs()) * 2f64.powi(-8))
            .collect(),
        _ => vec![0.0; x.len()],
    }
}

/// For Q4_1/Q5_1: `sum_b |m_b| * |s_b - d_b * sum(q_b)|` (tight check) and
/// `sum_b |m_b| * 2^-9 * sum_{i in b} |x_i|` (loose check), the extra error from ggml using the
/// stored `s` for the min term.
fn s_term(ty: GgmlType, w_row: &[u8], xq_row: &[u8], x: &[f32]) -> (f64, f64) {
    let mins: Vec<f64> = match ty {
        Q4_1 => as_blocks::<BlockQ4_1>(w_row)
            .unwrap()
            .iter()
            .map(|b| b.m)
            .map(h)
            .collect(),
        Q5_1 => as_blocks::<BlockQ5_1>(w_row)
            .unwrap()
            .iter()
            .map(|b| b.m)
            .map(h)
            .collect(),
        _ => return (0.0, 0.0),
    };
    let a = as_blocks::<BlockQ8_1>(xq_row).unwrap();
    let mut tight = 0.0;
    let mut loose = 0.0;
    for ((m, b), xb) in mins.iter().zip(a).zip(x.chunks(32)) {
        let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
        tight += m.abs() * (h(b.s) - h(b.d) * f64::from(sum)).abs();
        loose += m.abs() * 2f64.powi(-9) * xb.iter().map(|&v| f64::from(v.abs())).sum::<f64>();
    }
    (tight, loose)
}

fn h(b: [u8; 2]) -> f64 {
    f64::from(f16::from_bits(u16::from_le_bytes(b)).to_f32())
}

#[derive(Default)]
struct Worst {
    tight: f64,
    loose: f64,
}

/// One matrix: checks every property above; returns nothing, updates the worst ratios.
fn check(ty: GgmlType, k: usize, n: usize, m: usize, rng: &mut Rng, worst: &mut Worst) {
    let at = format!("{ty} k={k} n={n} m={m}");
    let vdt = vec_dot_type(ty).unwrap();
    let row_bytes = ty.bytes_for(k as u64).unwrap() as usize;
    let w = random_weights(ty, n * k, rng);
    let x = random_x(m * k, rng);
    let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
    assert_eq!((xq.rows(), xq.k(), xq.vec_dot_type()), (m, k, vdt));
    assert!(xq.row(m).is_none());

    let mut out = vec![f32::NAN; m * n];
    matmul_rows(ty, &w, k, &xq, 0..n, &mut out).unwrap();
    let mut wd = vec![0.0f32; k];
    for i in 0..m {
        let xi = &x[i * k..(i + 1) * k];
        let mut q = vec![0u8; vdt.bytes_for(k as u64).unwrap() as usize];
        quantize_activation(vdt, xi, &mut q).unwrap();
        assert_eq!(
            xq.row(i).unwrap(),
            q.as_slice(),
            "{at}: row {i} quantized differently"
        );
        let xd = dequant_activation(vdt, &q, k);
        let e = activation_error(vdt, xi);
        for j in 0..n {
            let w_row = &w[j * row_bytes..(j + 1) * row_bytes];
            let got = vec_dot(ty, w_row, &q, k).unwrap();
            assert_eq!(
                got.to_bits(),
                out[i * n + j].to_bits(),
                "{at}: matmul vs vec_dot"
            );
            dequantize(ty, w_row, &mut wd).unwrap();
            let (s_tight, s_loose) = s_term(ty, w_row, &q, xi);
            let got = f64::from(got);

            let ideal: f64 = wd
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let scale: f64 = wd
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            let bound = 1e-5 * scale + 1.01 * s_tight + 1e-30;
            let err = (got - ideal).abs();
            assert!(
                err <= bound,
                "{at} [{i}][{j}]: {got} vs dequantized {ideal}, err {err:e} > {bound:e}"
            );
            worst.tight = worst.tight.max(err / bound);

            let exact: f64 = wd
                .iter()
                .zip(xi)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let quant: f64 = wd
                .iter()
                .zip(&e)
                .map(|(&a, &e)| f64::from(a.abs()) * e)
                .sum();
            let bound = quant + 1e-5 * scale + s_loose + 1e-30;
            let err = (got - exact).abs();
            assert!(
                err <= bound,
                "{at} [{i}][{j}]: {got} vs f32 dot {exact}, err {err:e} > {bound:e}"
            );
            worst.loose = worst.loose.max(err / bound);
        }
    }

    // Row ranges: the ends, one row, the middle, empty ranges anywhere (including start > end).
    let ranges = [
        0..1,
        n - 1..n,
        1..n - 1,
        0..n,
        2..2,
        n..n,
        Range { start: 3, end: 1 },
    ];
    for r in ranges {
        let len = r.len();
        let mut part = vec![f32::NAN; m * len];
        matmul_rows(ty, &w, k, &xq, r.clone(), &mut part).unwrap();
        for i in 0..m {
            for (jj, j) in r.clone().enumerate() {
                assert_eq!(
                    part[i * len + jj].to_bits(),
                    out[i * n + j].to_bits(),
                    "{at} rows {r:?}"
                );
            }
        }
    }
}

#[test]
fn kernels_agree_with_dequantized_math() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for ty in WEIGHT_TYPES {
        let mut worst = Worst::default();
        let bs = ty.block_size().max(32);
        // One block, a few, many (K-quants: 1, 3, 12 super-blocks; legacy: 1, 7, 96 blocks).
        let ks = if bs == 256 {
            [256, 768, 3072]
        } else {
            [32, 224, 3072]
        };
        for k in ks {
            for m in [1, 3] {
                check(ty, k, 5, m, &mut rng, &mut worst);
            }
        }
        eprintln!(
            "{ty}: worst err/bound {:.3} (tight, vs dequantized activations), {:.3} (loose, vs f32)",
            worst.tight, worst.loose
        );
    }
}

#[test]
fn requantize_reuses_and_replaces() {
    let mut rng = Rng(7);
    let k = 512;
    let x1 = random_x(2 * k, &mut rng);
    let x2 = random_x(3 * k, &mut rng);
    let mut xq = QuantizedActivations::new(Q4_K, &x1, 2, k).unwrap();
    xq.requantize(Q6_K, &x2, 3).unwrap();
    assert_eq!(xq, QuantizedActivations::new(Q4_K, &x2, 3, k).unwrap());
    // A different vec-dot type replaces the type too.
    xq.requantize(Q4_0, &x2, 3).unwrap();
    assert_eq!(xq.vec_dot_type(), Q8_0);
    assert_eq!(xq, QuantizedActivations::new(Q8_0, &x2, 3, k).unwrap());
    // Errors leave the contents alone.
    let before = xq.clone();
    assert!(xq.requantize(Q4_0, &x2[1..], 3).is_err());
    assert_eq!(xq, before);
    assert!(format!("{xq:?}").contains("m: 3"));
}
