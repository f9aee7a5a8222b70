//! Golden test: ember's scalar dequantizers against gguf-py's, on rows taken from real GGUF files.
//!
//! `tests/data/reference/dequant.jsonl` holds, per line, the first rows of one tensor as stored
//! (`raw_b64`) and as gguf-py dequantizes them (`values`, one array per row). gguf-py mirrors
//! `dequantize_row_*` in `ggml/src/ggml-quants.c`, so every value must match bit for bit.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ember_quant::{GgmlType, dequantize_tensor};
use serde_json::Value;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/reference/dequant.jsonl"
);

fn same(a: f32, b: f64) -> bool {
    // The reference holds f32 values printed exactly; rounding the parsed number back to f32 undoes
    // any last-digit slack in the JSON float parser, so the comparison is exact, sign of zero
    // included. NaN matches NaN.
    (a.is_nan() && b.is_nan()) || a.to_bits() == (b as f32).to_bits()
}

#[test]
fn dequant_matches_gguf_py() {
    let text = std::fs::read_to_string(DATA).unwrap_or_else(|e| panic!("reading {DATA}: {e}"));
    let mut checked = Vec::new();
    for (lineno, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let rec: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", lineno + 1));
        let ty_name = rec["type"].as_str().unwrap();
        let tensor = rec["tensor"].as_str().unwrap();
        let model = rec["model"].as_str().unwrap();
        let row_len = rec["row_len"].as_u64().unwrap() as usize;
        let raw = STANDARD.decode(rec["raw_b64"].as_str().unwrap()).unwrap();
        let rows = rec["values"].as_array().unwrap();
        if let Some(n) = rec.get("rows").and_then(Value::as_u64) {
            assert_eq!(
                n as usize,
                rows.len(),
                "{model} {tensor}: `rows` disagrees with `values`"
            );
        }
        let expected: Vec<f64> = rows
            .iter()
            .flat_map(|r| {
                let r = r.as_array().unwrap();
                assert_eq!(r.len(), row_len, "{model} {tensor}: row length");
                r.iter().map(|v| v.as_f64().unwrap())
            })
            .collect();

        let ty = GgmlType::from_name(ty_name).unwrap_or_else(|| panic!("unknown type {ty_name}"));
        let mut got = vec![0.0f32; expected.len()];
        dequantize_tensor(tensor, ty, &raw, &mut got).unwrap_or_else(|e| panic!("{model}: {e}"));

        // Row by row too, at an odd offset, as a row view inside a mapped file would be.
        let row_bytes = ty.bytes_for(row_len as u64).unwrap() as usize;
        for (r, chunk) in raw.chunks(row_bytes).enumerate() {
            let mut shifted = vec![0u8; 1];
            shifted.extend_from_slice(chunk);
            let mut row = vec![0.0f32; row_len];
            dequantize_tensor(tensor, ty, &shifted[1..], &mut row).unwrap();
            assert_eq!(
                row.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                got[r * row_len..(r + 1) * row_len]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                "{ty_name} {tensor}: row {r} alone differs"
            );
        }

        let bad: Vec<_> = got
            .iter()
            .zip(&expected)
            .enumerate()
            .filter(|(_, (a, b))| !same(**a, **b))
            .collect();
        assert!(
            bad.is_empty(),
            "{ty_name} {model} {tensor}: {} of {} values differ, first: {:?}",
            bad.len(),
            expected.len(),
            &bad[..bad.len().min(5)]
        );
        checked.push(ty_name.to_owned());
    }
    assert!(!checked.is_empty(), "no reference lines in {DATA}");
    eprintln!("checked {} tensors: {}", checked.len(), checked.join(", "));
}
