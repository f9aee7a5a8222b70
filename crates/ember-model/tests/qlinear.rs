//! The quantized linear layer, through Burn's dispatch and ember's kernels, against a plain f32
//! product with the dequantized weight, on the weights of the tiny models (tests/data, and
//! ../shared/models beside the checkout: every weight type ggml quantizes them to). On the CPU
//! (block kernels over quantized activations) and, with the `wgpu` feature, on the GPU (the CubeCL
//! kernel dequantizing in registers, f32 activations).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use burn::tensor::{Device, Tensor, TensorData};
use common::models;
use ember_gguf::GgufFile;
use ember_model::QLinear;

mod common;

/// Checks `x · Wᵀ` for `m` activation rows on every 2-D weight of layer 0 of every model (and each
/// type once per model: the output head's too), within `rel` of the products' absolute sum.
/// Returns the weight types seen.
fn check(dev: &Device, rows: &[usize], rel: f32) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    let mut checked = 0;
    for (path, stem) in models() {
        if stem.starts_with("smollm2") {
            continue;
        }
        let file = GgufFile::open(&path).unwrap();
        for t in file.tensors().iter().filter(|t| {
            t.dims().len() == 2 && (t.name().starts_with("blk.0.") || t.name() == "output.weight")
        }) {
            let lin = QLinear::load(&file, t.name(), dev).unwrap();
            let (k, n) = (lin.in_features(), lin.out_features());
            let w =
                ember_quant::dequantize_to_vec(t.ggml_type(), file.tensor_data(t).unwrap(), n * k)
                    .unwrap();
            for &m in rows {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let got: Vec<f32> = lin
                    .forward(Tensor::<2>::from_data(
                        TensorData::new(x.clone(), [m, k]),
                        dev,
                    ))
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                assert_eq!(got.len(), m * n);
                for i in 0..m {
                    for j in 0..n {
                        let (row, xr) = (&w[j * k..(j + 1) * k], &x[i * k..(i + 1) * k]);
                        let want: f32 = row.iter().zip(xr).map(|(a, b)| a * b).sum();
                        let scale: f32 = row.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
                        let got = got[i * n + j];
                        assert!(
                            (got - want).abs() <= rel * scale + 1e-4,
                            "{stem} {} ({:?}) m={m} [{i},{j}]: {got} vs {want}",
                            t.name(),
                            t.ggml_type()
                        );
                    }
                }
            }
            types.insert(format!("{:?}", t.ggml_type()));
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    types
}

#[test]
fn qlinear_matches_dequantized_product() {
    // Activations are quantized to 8 bits (as llama.cpp does): ~1% of the magnitude.
    let types = check(&Device::flex(), &[3], 0.02);
    eprintln!("CPU: {types:?}");
}

/// The GPU kernels multiply the same values in f32: only summation order differs. Row counts
/// cover the fused kernel (1: decode, 3: a partial tile, 8: a full one) and, past 8, the
/// dequantize-then-matmul path of prefill.
#[cfg(feature = "wgpu")]
#[test]
fn qlinear_matches_dequantized_product_on_wgpu() {
    let dev = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    let types = check(&dev, &[1, 3, 8, 11], 1e-5);
    eprintln!("wgpu: {types:?}");
    for ty in ["F16", "Q8_0", "Q4_0", "Q2_K", "Q4_K", "Q6_K"] {
        assert!(types.contains(ty), "{ty} not covered: {types:?}");
    }
}
