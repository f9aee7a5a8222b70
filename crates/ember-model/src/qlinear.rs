//! Quantized linear layers: GGUF weight blocks kept as they are in the file (zero-copy from the
//! mmap, as a Burn `U8` tensor) and multiplied through ember-quant's block kernels, exposed to Burn
//! as a backend-extension op (`QuantOps`). The kernels follow llama.cpp's CPU path: each activation
//! row is quantized once to the weight type's vec-dot type (Q8_0 / Q8_1 / Q8_K / F16) and dotted
//! with integer sums, so the numerics track llama.cpp's, not a dequantize-to-f32 model's.
//! Rows are split across `ember_quant::pool`, whose workers spin between the many small products of
//! a decode step instead of sleeping.
//!
//! On GPU devices (the `wgpu` feature) the extension has no CubeCL kernel yet: weights are
//! dequantized once at load to F16 and multiplied with Burn's matmul (see [`Weight::Dense`]).

use crate::error::ModelError;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::tensor::{
    AllocationProperty, Bytes, DType, Device, Int, Shape, Tensor, TensorCreationOptions, TensorData,
};
use ember_gguf::{GgufFile, TensorInfo};
use ember_quant::kernels::Kernels;
use ember_quant::{GgmlType, QuantizedActivations};

/// Burn backend extension: `x [m, k] · Wᵀ` for a weight of `n` rows of `k` values of type `ty`,
/// stored as raw GGUF bytes.
#[backend_extension(Flex)]
pub trait QuantOps: Backend {
    fn q_matmul(
        x: FloatTensor<Self>,
        w: IntTensor<Self>,
        ty: GgmlType,
        n: usize,
        k: usize,
    ) -> FloatTensor<Self>;
}

impl QuantOps for Flex {
    fn q_matmul(x: FlexTensor, w: FlexTensor, ty: GgmlType, n: usize, k: usize) -> FlexTensor {
        let x = if x.as_slice::<f32>().is_some() {
            x
        } else {
            x.to_contiguous()
        };
        let xs = x.as_slice::<f32>().unwrap_or(&[]);
        let wb = w.as_slice::<u8>().unwrap_or(&[]);
        let m = xs.len().checked_div(k).unwrap_or(0);
        let out = q_matmul_slices(ty, wb, n, k, xs, m);
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(Shape::new([m, n])),
            DType::F32,
        )
    }
}

/// The kernel on plain slices, on ember-quant's thread pool. Shapes were validated when the layer
/// was built, so a size error here is an ember bug; it is logged and yields zeros rather than taking
/// the process down.
fn q_matmul_slices(ty: GgmlType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let result = QuantizedActivations::new(ty, x, m, k).and_then(|xq| {
        ember_quant::pool::global().matmul(Kernels::active(), ty, w, k, &xq, &mut out)
    });
    if let Err(e) = result {
        tracing_error(&e);
        out.fill(0.0);
    }
    out
}

fn tracing_error(e: &ember_quant::QuantError) {
    tracing::error!("internal kernel error (please report): {e}");
}

/// How a weight matrix is held on its device.
#[derive(Debug, Clone)]
enum Weight {
    /// The GGUF blocks as they are in the file (a `U8` tensor, zero-copy from the mmap), multiplied
    /// through ember-quant's kernels by the `QuantOps` extension. The CPU (Flex) path.
    Blocks(Tensor<1, Int>),
    /// Dequantized once at load to `[n, k]` floats (F16 where the device has it, else F32) and
    /// multiplied with Burn's own matmul. The GPU (CubeCL / wgpu) path: ember has no CubeCL block
    /// kernels yet, so a GPU holds 2 bytes per weight instead of the file's 0.5–1.
    Dense(Tensor<2>),
}

/// A weight matrix `[n, k]` (GGUF dims `[k, n]`).
#[derive(Debug, Clone)]
pub struct QLinear {
    w: Weight,
    ty: GgmlType,
    n: usize,
    k: usize,
}

impl QLinear {
    /// Wraps tensor `name` of `file`: without copying its bytes on the CPU, dequantized on other
    /// devices. 2-D only.
    pub fn load(file: &GgufFile, name: &str, device: &Device) -> Result<Self, ModelError> {
        let info = tensor(file, name)?;
        let bad = |reason: String| ModelError::Tensor {
            name: name.to_owned(),
            reason,
        };
        let [k, n] = match info.dims() {
            &[k, n] => [k as usize, n as usize],
            &[k] => [k as usize, 1],
            d => return Err(bad(format!("expected a matrix, found dims {d:?}"))),
        };
        let ty = info.ggml_type();
        if !ty.is_supported() || ember_quant::vec_dot_type(ty).is_err() {
            return Err(ember_quant::QuantError::Unsupported {
                ty,
                tensor: Some(name.to_owned()),
            }
            .into());
        }
        let bytes = file
            .tensor_bytes(info)
            .ok_or_else(|| bad("data outside the file".into()))?;
        let w = if on_cpu(device) {
            let len = bytes.len();
            let data = TensorData::from_bytes(
                Bytes::from_shared(bytes, AllocationProperty::File),
                [len],
                DType::U8,
            );
            Weight::Blocks(Tensor::<1, Int>::from_data(
                data,
                TensorCreationOptions::new(device.clone()).with_dtype(DType::U8),
            ))
        } else {
            let values = ember_quant::dequantize_to_vec(ty, &bytes, n * k)
                .map_err(|e| e.with_tensor(name))?;
            Weight::Dense(dense(values, [n, k], device))
        };
        Ok(QLinear { w, ty, n, k })
    }

    /// `x [m, k] -> [m, n]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.w {
            Weight::Blocks(w) => Tensor::from_dispatch(<Dispatch as QuantOps>::q_matmul(
                x.into_dispatch(),
                w.clone().into_dispatch(),
                self.ty,
                self.n,
                self.k,
            )),
            Weight::Dense(w) => {
                let w = if w.dtype() == DType::F32 {
                    w.clone()
                } else {
                    w.clone().cast(DType::F32)
                };
                x.matmul(w.transpose())
            }
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Weight type in the file.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }
}

/// Whether `device` is the CPU (Flex), where ember's extensions (`QuantOps` block kernels, the
/// fused `CpuOps`) run; other devices get dequantized weights and Burn's composed ops.
pub(crate) fn on_cpu(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Flex(_))
}

/// The float type dense weights and the KV cache are stored in on `device`: F16 where supported.
pub(crate) fn storage_dtype(device: &Device) -> DType {
    if device.supports_dtype(DType::F16) {
        DType::F16
    } else {
        DType::F32
    }
}

/// A dense `[n, k]` weight in the device's storage type.
fn dense(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    let opts = |dt| TensorCreationOptions::new(device.clone()).with_dtype(dt);
    match storage_dtype(device) {
        DType::F16 => {
            let h: Vec<half::f16> = values.into_iter().map(half::f16::from_f32).collect();
            Tensor::from_data(TensorData::new(h, shape), opts(DType::F16))
        }
        _ => Tensor::from_data(TensorData::new(values, shape), opts(DType::F32)),
    }
}

/// A tensor by name, or an error naming it.
pub fn tensor<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo, ModelError> {
    file.tensor(name).ok_or_else(|| ModelError::Tensor {
        name: name.to_owned(),
        reason: "missing from the file".into(),
    })
}

/// A small tensor (norm weights, biases, rope factors) dequantized to f32.
pub fn load_f32(file: &GgufFile, name: &str, device: &Device) -> Result<Tensor<1>, ModelError> {
    let info = tensor(file, name)?;
    let n = info.n_elements() as usize;
    let bytes = file.tensor_data(info).unwrap_or(&[]);
    let values = ember_quant::dequantize_to_vec(info.ggml_type(), bytes, n)
        .map_err(|e| e.with_tensor(name))?;
    Ok(Tensor::<1>::from_data(TensorData::new(values, [n]), device))
}
