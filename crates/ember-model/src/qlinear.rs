//! Quantized linear layers: GGUF weight blocks kept as they are in the file (zero-copy from the
//! mmap, as a Burn `U8` tensor) and multiplied through ember-quant's block kernels, exposed to Burn
//! as a backend-extension op (`QuantOps`). The kernels follow llama.cpp's CPU path: each activation
//! row is quantized once to the weight type's vec-dot type (Q8_0 / Q8_1 / Q8_K / F16) and dotted
//! with integer sums, so the numerics track llama.cpp's, not a dequantize-to-f32 model's.
//! Rows are split across `ember_quant::pool`, whose workers spin between the many small products of
//! a decode step instead of sleeping.
//!
//! On GPU devices (the `wgpu` feature) the blocks are uploaded as they are and the CubeCL kernel
//! in `qlinear_cube.rs` dequantizes them inside the matmul: GPU memory holds the file's bytes.

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
#[backend_extension(Flex, Cube: cfg(feature = "wgpu"))]
pub trait QuantOps: Backend {
    fn q_matmul(
        x: FloatTensor<Self>,
        w: IntTensor<Self>,
        ty: GgmlType,
        n: usize,
        k: usize,
    ) -> FloatTensor<Self>;

    /// `count` independent products at once: `x [m, count·k]`, head `h` of it times matrix `h`
    /// of `w` (`count` matrices of `n` rows of `k`, one after another), giving `[m, count·n]`.
    fn q_matmul_heads(
        x: FloatTensor<Self>,
        w: IntTensor<Self>,
        ty: GgmlType,
        n: usize,
        k: usize,
        count: usize,
    ) -> FloatTensor<Self>;
}

impl QuantOps for Flex {
    fn q_matmul(x: FlexTensor, w: FlexTensor, ty: GgmlType, n: usize, k: usize) -> FlexTensor {
        let x = contiguous_f32(x);
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

    fn q_matmul_heads(
        x: FlexTensor,
        w: FlexTensor,
        ty: GgmlType,
        n: usize,
        k: usize,
        count: usize,
    ) -> FlexTensor {
        let x = contiguous_f32(x);
        let xs = x.as_slice::<f32>().unwrap_or(&[]);
        let wb = w.as_slice::<u8>().unwrap_or(&[]);
        let m = xs.len().checked_div(k * count).unwrap_or(0);
        let per = wb.len().checked_div(count).unwrap_or(0);
        let mut out = vec![0f32; m * n * count];
        let mut xh = vec![0f32; m * k];
        for h in 0..count {
            for (r, row) in xh.chunks_exact_mut(k).enumerate() {
                let at = (r * count + h) * k;
                row.copy_from_slice(&xs[at..at + k]);
            }
            let oh = q_matmul_slices(ty, &wb[h * per..(h + 1) * per], n, k, &xh, m);
            for (r, row) in oh.chunks_exact(n).enumerate() {
                let at = (r * count + h) * n;
                out[at..at + n].copy_from_slice(row);
            }
        }
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(Shape::new([m, n * count])),
            DType::F32,
        )
    }
}

#[cfg(feature = "wgpu")]
impl QuantOps for burn_cubecl::CubeBackend {
    fn q_matmul(
        x: burn_cubecl::tensor::CubeTensor,
        w: burn_cubecl::tensor::CubeTensor,
        ty: GgmlType,
        n: usize,
        k: usize,
    ) -> burn_cubecl::tensor::CubeTensor {
        crate::qlinear_cube::q_matmul(x, w, ty, n, k, 1)
    }

    fn q_matmul_heads(
        x: burn_cubecl::tensor::CubeTensor,
        w: burn_cubecl::tensor::CubeTensor,
        ty: GgmlType,
        n: usize,
        k: usize,
        count: usize,
    ) -> burn_cubecl::tensor::CubeTensor {
        crate::qlinear_cube::q_matmul(x, w, ty, n, k, count)
    }
}

fn contiguous_f32(x: FlexTensor) -> FlexTensor {
    if x.as_slice::<f32>().is_some() {
        x
    } else {
        x.to_contiguous()
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

/// A weight matrix `[n, k]` (GGUF dims `[k, n]`).
#[derive(Debug, Clone)]
pub struct QLinear {
    /// The GGUF blocks, as [`blocks`] puts them on the device.
    w: Tensor<1, Int>,
    ty: GgmlType,
    n: usize,
    k: usize,
}

impl QLinear {
    /// Wraps tensor `name` of `file`: without copying its bytes on the CPU, its blocks uploaded on
    /// a GPU. 2-D only.
    pub fn load(file: &GgufFile, name: &str, device: &Device) -> Result<Self, ModelError> {
        let info = tensor(file, name)?;
        let [k, n] = match info.dims() {
            &[k, n] => [k as usize, n as usize],
            &[k] => [k as usize, 1],
            d => return Err(bad(name, format!("expected a matrix, found dims {d:?}"))),
        };
        let bytes = file
            .tensor_bytes(info)
            .ok_or_else(|| bad(name, "data outside the file".into()))?;
        Self::from_bytes(bytes, info.ggml_type(), n, k, device, name)
    }

    /// Wraps a stack of matrices, GGUF dims `[k, n, count]` (per-head projections, experts), as
    /// `count` matrices `[n, k]`: each a slice of the file's bytes on the CPU (a routed expert's
    /// pages are read only when a token selects it), uploaded on a GPU.
    pub fn load_stack(
        file: &GgufFile,
        name: &str,
        device: &Device,
    ) -> Result<Vec<Self>, ModelError> {
        let info = tensor(file, name)?;
        let [k, n, count] = match info.dims() {
            &[k, n, c] => [k as usize, n as usize, c as usize],
            d => return Err(bad(name, format!("expected a 3-D stack, found dims {d:?}"))),
        };
        let ty = info.ggml_type();
        let bytes = file
            .tensor_bytes(info)
            .ok_or_else(|| bad(name, "data outside the file".into()))?;
        let per = ty.bytes_for((n * k) as u64).ok_or_else(|| {
            bad(
                name,
                format!("{n} × {k} values do not fill whole {ty:?} blocks"),
            )
        })? as usize;
        if per * count != bytes.len() {
            return Err(bad(
                name,
                format!("{} bytes for {count} × [{n}, {k}] {ty:?}", bytes.len()),
            ));
        }
        (0..count)
            .map(|i| Self::from_bytes(bytes.slice(i * per..(i + 1) * per), ty, n, k, device, name))
            .collect()
    }

    /// A matrix `[n, k]` of type `ty` from its blocks (`name` is for errors).
    pub(crate) fn from_bytes(
        bytes: bytes::Bytes,
        ty: GgmlType,
        n: usize,
        k: usize,
        device: &Device,
        name: &str,
    ) -> Result<Self, ModelError> {
        check_matrix(bytes.len(), ty, n, k, device, name)?;
        let w = blocks(bytes, device);
        Ok(QLinear { w, ty, n, k })
    }

    /// The bytes of the weight as stored in the file.
    pub fn n_bytes(&self) -> usize {
        self.ty.bytes_for((self.n * self.k) as u64).unwrap_or(0) as usize
    }

    /// `x [m, k] -> [m, n]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as QuantOps>::q_matmul(
            x.into_dispatch(),
            self.w.clone().into_dispatch(),
            self.ty,
            self.n,
            self.k,
        ))
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
/// fused `CpuOps`) run; on other devices `QuantOps` runs ember's CubeCL kernels and the rest is
/// Burn's composed ops.
pub(crate) fn on_cpu(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Flex(_))
}

/// The float type the KV cache is stored in on `device`: F16 where supported.
pub(crate) fn storage_dtype(device: &Device) -> DType {
    if device.supports_dtype(DType::F16) {
        DType::F16
    } else {
        DType::F32
    }
}

/// A weight's blocks on `device`: on the CPU a `U8` tensor over the file's bytes, without copying
/// them (the mmap's pages back it); on a GPU the bytes uploaded once as `u32` words for the CubeCL
/// kernel (`qlinear_cube::words`).
fn blocks(bytes: bytes::Bytes, device: &Device) -> Tensor<1, Int> {
    #[cfg(feature = "wgpu")]
    if !on_cpu(device) {
        let words = crate::qlinear_cube::words(&bytes);
        let len = words.len();
        return Tensor::<1, Int>::from_data(
            TensorData::new(words, [len]),
            TensorCreationOptions::new(device.clone()).with_dtype(DType::U32),
        );
    }
    let len = bytes.len();
    let data = TensorData::from_bytes(
        Bytes::from_shared(bytes, AllocationProperty::File),
        [len],
        DType::U8,
    );
    Tensor::<1, Int>::from_data(
        data,
        TensorCreationOptions::new(device.clone()).with_dtype(DType::U8),
    )
}

/// That `len` bytes hold exactly `n` whole rows of `k` values of type `ty`, a type the kernels of
/// `device` multiply.
fn check_matrix(
    len: usize,
    ty: GgmlType,
    n: usize,
    k: usize,
    device: &Device,
    name: &str,
) -> Result<(), ModelError> {
    #[cfg(feature = "wgpu")]
    let on_device = on_cpu(device) || crate::qlinear_cube::supported(ty);
    #[cfg(not(feature = "wgpu"))]
    let on_device = on_cpu(device);
    if !on_device || !ty.is_supported() || ember_quant::vec_dot_type(ty).is_err() {
        return Err(ember_quant::QuantError::Unsupported {
            ty,
            tensor: Some(name.to_owned()),
        }
        .into());
    }
    if !k.is_multiple_of(ty.block_size()) || ty.bytes_for((n * k) as u64) != Some(len as u64) {
        return Err(bad(
            name,
            format!("{len} bytes do not hold {n} rows of {k} {ty:?} values"),
        ));
    }
    // The GPU kernels address a matrix's bytes with 32-bit offsets.
    if !on_cpu(device) && len >= (u32::MAX / 2) as usize {
        return Err(bad(
            name,
            format!("{len} bytes: over the GPU kernels' 2 GiB per matrix"),
        ));
    }
    Ok(())
}

fn bad(name: &str, reason: String) -> ModelError {
    ModelError::Tensor {
        name: name.to_owned(),
        reason,
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

/// `count` matrices `[n, k]` applied head by head: `[m, count·k] -> [m, count·n]` (MLA's per-head
/// key absorption and value decompression).
#[derive(Debug, Clone)]
pub struct QHeads {
    /// Every matrix's blocks, one after another, as [`blocks`] puts them on the device.
    w: Tensor<1, Int>,
    ty: GgmlType,
    n: usize,
    k: usize,
    count: usize,
}

impl QHeads {
    /// Stack `name` of `file`, GGUF dims `[k, n, count]`.
    pub fn load(file: &GgufFile, name: &str, device: &Device) -> Result<Self, ModelError> {
        let info = tensor(file, name)?;
        let [k, n, count] = match info.dims() {
            &[k, n, c] => [k as usize, n as usize, c as usize],
            d => return Err(bad(name, format!("expected a 3-D stack, found dims {d:?}"))),
        };
        let bytes = file
            .tensor_bytes(info)
            .ok_or_else(|| bad(name, "data outside the file".into()))?;
        Self::from_bytes(bytes, info.ggml_type(), n, k, count, device, name)
    }

    /// From `count` matrices of `n` rows of `k` values of type `ty`, one after another.
    pub fn from_bytes(
        bytes: bytes::Bytes,
        ty: GgmlType,
        n: usize,
        k: usize,
        count: usize,
        device: &Device,
        name: &str,
    ) -> Result<Self, ModelError> {
        // Each matrix checked as a QLinear would be.
        if count == 0 || !bytes.len().is_multiple_of(count) {
            return Err(bad(
                name,
                format!("{} bytes for {count} × [{n}, {k}] {ty:?}", bytes.len()),
            ));
        }
        check_matrix(bytes.len() / count, ty, n, k, device, name)?;
        let w = blocks(bytes, device);
        Ok(QHeads { w, ty, n, k, count })
    }

    /// From f32 values (`count` matrices `[n, k]`, row-major), stored as F16.
    pub fn from_f32(
        values: &[f32],
        n: usize,
        k: usize,
        count: usize,
        device: &Device,
        name: &str,
    ) -> Result<Self, ModelError> {
        let mut bytes = Vec::with_capacity(values.len() * 2);
        for v in values {
            bytes.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
        }
        Self::from_bytes(bytes.into(), GgmlType::F16, n, k, count, device, name)
    }

    /// `x [m, count·k] -> [m, count·n]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as QuantOps>::q_matmul_heads(
            x.into_dispatch(),
            self.w.clone().into_dispatch(),
            self.ty,
            self.n,
            self.k,
            self.count,
        ))
    }

    /// Rows of each matrix.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Columns of each matrix.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Matrices in the stack.
    pub fn count(&self) -> usize {
        self.count
    }
}
