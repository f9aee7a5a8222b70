//! Golden tests: ember's activation quantization and vec-dot kernels against ggml's own CPU code.
//!
//! `tests/data/ggml_kernels.jsonl` was written by `tests/data/gen_ggml_kernels.c` (ggml d99724f2,
//! built on x86-64 with AVX-512; see the generator for the record format). It holds:
//! - activation rows quantized by what llama.cpp's x86 build runs (`quantize_row_q8_0`/`_q8_1` from
//!   `ggml-cpu/arch/x86/quants.c`, `quantize_row_q8_K`, the f16/bf16 conversions): ours must be
//!   byte-identical. For Q8_0/Q8_1 the `_ref` C output is there too, and must differ somewhere,
//!   proving the data tells the two apart;
//! - random weight rows with activations, and ggml's dots of them: `*_generic` from
//!   `ggml-cpu/quants.c` (and the scalar `ggml_vec_dot_f16/bf16/f32`), which ours follow operation for
//!   operation, and the x86 SIMD `ggml_vec_dot_*`, which sum in another order.
//!
//! The generic comparison uses the scalar kernels explicitly ([`vec_dot_scalar`]), whatever the
//! dispatched default is; the SIMD kernels ([`Kernels::Avx2`], where the CPU has it) are compared
//! with both ggml results at the SIMD tolerance.
//!
//! Dots are compared with a tolerance relative to `S = sum |w_i * x_i|` (x dequantized from the
//! quantized activations), the natural scale of rounding error in a dot product.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ember_quant::kernels::{Kernels, vec_dot_scalar, vec_dot_with};
use ember_quant::{
    BlockQ8_1, GgmlType, QuantizedActivations, as_blocks, dequantize, dequantize_block_q8_1,
    dequantize_to_vec, matmul_rows, quantize_activation, vec_dot, vec_dot_type,
};
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ggml_kernels.jsonl");

/// Generic C vs ours: same operations in the same order, so this is loose by design; the observed
/// error is reported (and has been exactly 0).
const TOL_GENERIC: f64 = 1e-5;
/// x86 SIMD C vs ours: different summation order, f32 rounding differences only.
const TOL_SIMD: f64 = 1e-5;

fn records() -> Vec<Value> {
    let text = std::fs::read_to_string(DATA).unwrap_or_else(|e| panic!("reading {DATA}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn b64(rec: &Value, key: &str) -> Vec<u8> {
    STANDARD.decode(rec[key].as_str().unwrap()).unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn floats(rec: &Value, key: &str) -> Option<Vec<f32>> {
    let arr = rec.get(key)?.as_array().unwrap();
    // Printed with %.9g: parsing to f64 and rounding to f32 recovers the exact f32.
    Some(arr.iter().map(|v| v.as_f64().unwrap() as f32).collect())
}

/// Dequantizes one stored activation row (Q8_1 has no row-level dequantizer in ggml or ember).
fn dequant_activation(ty: GgmlType, bytes: &[u8], k: usize) -> Vec<f32> {
    if ty == GgmlType::Q8_1 {
        let mut out = vec![0.0; k];
        for (b, o) in as_blocks::<BlockQ8_1>(bytes)
            .unwrap()
            .iter()
            .zip(out.chunks_exact_mut(32))
        {
            dequantize_block_q8_1(b, o.try_into().unwrap());
        }
        return out;
    }
    dequantize_to_vec(ty, bytes, k).unwrap()
}

#[test]
fn activation_quantization_matches_ggml_x86() {
    let mut seen = BTreeSet::new();
    for rec in records().iter().filter(|r| r["kind"] == "quant") {
        let ty = GgmlType::from_name(rec["type"].as_str().unwrap()).unwrap();
        let n = rec["n"].as_u64().unwrap() as usize;
        let x = f32s(&b64(rec, "x"));
        assert_eq!(x.len(), n);
        let want = b64(rec, "q");
        let mut got = vec![0u8; want.len()];
        quantize_activation(ty, &x, &mut got).unwrap();
        let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
        assert!(
            bad.is_empty(),
            "{ty}: {} of {} bytes differ from ggml, first at {:?}",
            bad.len(),
            want.len(),
            &bad[..bad.len().min(8)]
        );
        if rec.get("q_ref").is_some() {
            let reference = b64(rec, "q_ref");
            let differ = reference.iter().zip(&want).filter(|(a, b)| a != b).count();
            eprintln!("{ty}: x86 output matched; the _ref quantizer differs in {differ} bytes");
            assert!(differ > 0, "{ty}: data does not distinguish x86 from _ref");
        }
        seen.insert(ty);
    }
    use GgmlType::*;
    assert_eq!(seen, BTreeSet::from([F16, Q8_0, Q8_1, Q8_K, BF16]));
}

#[derive(Default)]
struct Stats {
    worst_generic: f64,
    worst_simd: f64,
    worst_fast: f64,
    exact_generic: usize,
    total: usize,
}

fn check_dot_record(rec: &Value, stats: &mut Stats) -> GgmlType {
    let ty = GgmlType::from_name(rec["type"].as_str().unwrap()).unwrap();
    let [k, n, m] = ["k", "n", "m"].map(|f| rec[f].as_u64().unwrap() as usize);
    let at = format!("{ty} k={k} n={n} m={m}");
    let w = b64(rec, "w");
    let x = f32s(&b64(rec, "x"));
    let xq_want = b64(rec, "xq");
    let generic = floats(rec, "generic").unwrap();
    let simd = floats(rec, "simd");
    let vdt = vec_dot_type(ty).unwrap();
    let row_bytes = ty.bytes_for(k as u64).unwrap() as usize;
    assert_eq!(w.len(), n * row_bytes, "{at}");

    // Activations: ours must be exactly the bytes ggml dotted with.
    let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
    assert_eq!(xq.vec_dot_type(), vdt);
    assert!(
        xq.as_bytes() == xq_want.as_slice(),
        "{at}: activation bytes differ"
    );

    let mut wd = vec![0.0; k];
    for i in 0..m {
        let xd = dequant_activation(vdt, xq.row(i).unwrap(), k);
        for j in 0..n {
            let w_row = &w[j * row_bytes..(j + 1) * row_bytes];
            dequantize(ty, w_row, &mut wd).unwrap();
            let scale: f64 = wd
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            let got = vec_dot_scalar(ty, w_row, xq.row(i).unwrap(), k).unwrap();
            let want = generic[i * n + j];
            if Kernels::Avx2.is_available() {
                let fast = vec_dot_with(Kernels::Avx2, ty, w_row, xq.row(i).unwrap(), k).unwrap();
                for (what, want) in [
                    ("generic", Some(want)),
                    ("x86 SIMD", simd.as_ref().map(|s| s[i * n + j])),
                ] {
                    let Some(want) = want else { continue };
                    let err = (f64::from(fast) - f64::from(want)).abs() / scale;
                    assert!(
                        err <= TOL_SIMD,
                        "{at} out[{i}][{j}]: our AVX2 {fast} vs ggml {what} {want} (|err|/S = {err:e})"
                    );
                    stats.worst_fast = stats.worst_fast.max(err);
                }
            }
            let err = (f64::from(got) - f64::from(want)).abs() / scale;
            assert!(
                err <= TOL_GENERIC,
                "{at} out[{i}][{j}]: ours {got} vs ggml generic {want} (|err|/S = {err:e})"
            );
            stats.worst_generic = stats.worst_generic.max(err);
            stats.exact_generic += usize::from(got.to_bits() == want.to_bits());
            stats.total += 1;
            if let Some(simd) = &simd {
                let want = simd[i * n + j];
                let err = (f64::from(got) - f64::from(want)).abs() / scale;
                assert!(
                    err <= TOL_SIMD,
                    "{at} out[{i}][{j}]: ours {got} vs ggml x86 SIMD {want} (|err|/S = {err:e})"
                );
                stats.worst_simd = stats.worst_simd.max(err);
            }
        }
    }

    // The matrix entry point gives the same numbers, whole and split into row ranges.
    let mut out = vec![0.0f32; m * n];
    matmul_rows(ty, &w, k, &xq, 0..n, &mut out).unwrap();
    for split in 0..=n {
        let mut a = vec![0.0f32; m * split];
        let mut b = vec![0.0f32; m * (n - split)];
        matmul_rows(ty, &w, k, &xq, 0..split, &mut a).unwrap();
        matmul_rows(ty, &w, k, &xq, split..n, &mut b).unwrap();
        for i in 0..m {
            let joined: Vec<f32> = a[i * split..(i + 1) * split]
                .iter()
                .chain(&b[i * (n - split)..(i + 1) * (n - split)])
                .copied()
                .collect();
            assert_eq!(joined, &out[i * n..(i + 1) * n], "{at}: split at {split}");
        }
    }
    for i in 0..m {
        for j in 0..n {
            let one = vec_dot(
                ty,
                &w[j * row_bytes..(j + 1) * row_bytes],
                xq.row(i).unwrap(),
                k,
            );
            assert_eq!(out[i * n + j].to_bits(), one.unwrap().to_bits(), "{at}");
        }
    }
    ty
}

#[test]
fn vec_dot_matches_ggml() {
    let mut seen = BTreeSet::new();
    let mut stats = Stats::default();
    for rec in records().iter().filter(|r| r["kind"] == "dot") {
        seen.insert(check_dot_record(rec, &mut stats));
    }
    eprintln!(
        "{} dots: scalar max |err|/S vs ggml generic {:e} ({} bit-exact), vs x86 SIMD {:e}; \
         our AVX2 vs either {:e}",
        stats.total, stats.worst_generic, stats.exact_generic, stats.worst_simd, stats.worst_fast
    );
    use GgmlType::*;
    let all = [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ];
    assert_eq!(seen, BTreeSet::from(all));
}
