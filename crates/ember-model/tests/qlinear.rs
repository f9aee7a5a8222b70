//! The quantized linear layer, through Burn's dispatch and ember's kernels, against a plain f32
//! product with the dequantized weight, on every weight of the tiny models shipped in tests/data.
#![allow(clippy::unwrap_used)]

use burn::tensor::{Device, Tensor, TensorData};
use ember_gguf::GgufFile;
use ember_model::QLinear;

#[test]
fn qlinear_matches_dequantized_product() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/models");
    let dev = Device::flex();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = GgufFile::open(entry.unwrap().path()).unwrap();
        for t in file
            .tensors()
            .iter()
            .filter(|t| t.dims().len() == 2 && t.name().starts_with("blk.0."))
        {
            let lin = QLinear::load(&file, t.name(), &dev).unwrap();
            let (k, n, m) = (lin.in_features(), lin.out_features(), 3);
            let x: Vec<f32> = (0..m * k)
                .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let got: Vec<f32> = lin
                .forward(Tensor::<2>::from_data(
                    TensorData::new(x.clone(), [m, k]),
                    &dev,
                ))
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let w =
                ember_quant::dequantize_to_vec(t.ggml_type(), file.tensor_data(t).unwrap(), n * k)
                    .unwrap();
            for i in 0..m {
                for j in 0..n {
                    let (row, xr) = (&w[j * k..(j + 1) * k], &x[i * k..(i + 1) * k]);
                    let want: f32 = row.iter().zip(xr).map(|(a, b)| a * b).sum();
                    let scale: f32 = row.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
                    let got = got[i * n + j];
                    // Activations are quantized to 8 bits (as llama.cpp does): ~1% of the magnitude.
                    assert!(
                        (got - want).abs() <= 0.02 * scale + 1e-4,
                        "{} [{i},{j}]: {got} vs {want}",
                        t.name()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}
