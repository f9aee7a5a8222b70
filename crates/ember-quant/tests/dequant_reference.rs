//! Golden tests: ember's scalar dequantizers against gguf-py's and ggml's own.
//!
//! `tests/data/reference/dequant.jsonl` (workspace root) holds, per line, the first rows of one
//! tensor of a real GGUF file as stored (`raw_b64`) and as gguf-py dequantizes them (`values`, one
//! array per row). gguf-py mirrors `dequantize_row_*` in `ggml/src/ggml-quants.c`.
//!
//! Some of those rows are all zero bytes (the Q5_K and Q8_0 lines), so `tests/data/ggml_random.jsonl`
//! (this crate) adds random blocks of every quantized type, dequantized by ggml's C code itself
//! (generator: `tests/data/gen_ggml_random.c`), in the same format.
//!
//! Every value must match bit for bit, sign of zero included.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ember_quant::{ALL_TYPES, GgmlType, dequantize_tensor};
use serde_json::Value;

const GGUF_PY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/reference/dequant.jsonl"
);
const GGML_RANDOM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ggml_random.jsonl");

fn same(a: f32, b: f64) -> bool {
    // The references hold f32 values printed exactly; rounding the parsed number back to f32 undoes
    // any last-digit slack in the JSON float parser, so the comparison is exact, sign of zero
    // included.
    a.to_bits() == (b as f32).to_bits()
}

/// Checks every line of a reference file; returns the types seen.
fn check_file(path: &str) -> BTreeSet<GgmlType> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut seen = BTreeSet::new();
    let mut lines = 0;
    for (lineno, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let at = format!("{path}:{}", lineno + 1);
        let rec: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        let ty_name = rec["type"].as_str().unwrap();
        let tensor = rec["tensor"].as_str().unwrap();
        let model = rec["model"].as_str().unwrap();
        let at = format!("{at} ({ty_name}, {model}, {tensor})");
        let row_len = rec["row_len"].as_u64().unwrap() as usize;
        let raw = STANDARD.decode(rec["raw_b64"].as_str().unwrap()).unwrap();
        let rows = rec["values"].as_array().unwrap();
        if let Some(n) = rec.get("rows").and_then(Value::as_u64) {
            assert_eq!(
                n as usize,
                rows.len(),
                "{at}: `rows` disagrees with `values`"
            );
        }
        let expected: Vec<f64> = rows
            .iter()
            .flat_map(|r| {
                let r = r.as_array().unwrap();
                assert_eq!(r.len(), row_len, "{at}: row length");
                r.iter().map(|v| v.as_f64().unwrap())
            })
            .collect();

        let ty = GgmlType::from_name(ty_name).unwrap_or_else(|| panic!("{at}: unknown type"));
        let mut got = vec![0.0f32; expected.len()];
        dequantize_tensor(tensor, ty, &raw, &mut got).unwrap_or_else(|e| panic!("{at}: {e}"));

        let bad: Vec<_> = got
            .iter()
            .zip(&expected)
            .enumerate()
            .filter(|(_, (a, b))| !same(**a, **b))
            .collect();
        assert!(
            bad.is_empty(),
            "{at}: {} of {} values differ, first (index, (got, expected)): {:?}",
            bad.len(),
            expected.len(),
            &bad[..bad.len().min(5)]
        );

        // Row by row too, at an odd offset, as a row view inside a mapped file would be.
        let row_bytes = ty.bytes_for(row_len as u64).unwrap() as usize;
        assert_eq!(raw.len(), row_bytes * rows.len(), "{at}: raw size");
        for (r, chunk) in raw.chunks(row_bytes).enumerate() {
            let mut shifted = vec![0u8; 1];
            shifted.extend_from_slice(chunk);
            let mut row = vec![0.0f32; row_len];
            dequantize_tensor(tensor, ty, &shifted[1..], &mut row).unwrap();
            let whole = &got[r * row_len..(r + 1) * row_len];
            assert!(
                row.iter()
                    .zip(whole)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{at}: row {r} alone differs"
            );
        }
        seen.insert(ty);
    }
    assert!(lines > 0, "no reference lines in {path}");
    eprintln!("{path}: {lines} lines, types {seen:?}");
    seen
}

#[test]
fn dequant_matches_gguf_py_on_real_tensors() {
    check_file(GGUF_PY);
}

#[test]
fn dequant_matches_ggml_on_random_blocks() {
    let seen = check_file(GGML_RANDOM);
    // Every supported quantized type is covered (F32/F16/BF16 are plain conversions).
    for ty in ALL_TYPES
        .into_iter()
        .filter(|t| t.is_supported() && t.block_size() > 1)
    {
        assert!(seen.contains(&ty), "{ty} missing from {GGML_RANDOM}");
    }
}
