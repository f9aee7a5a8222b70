//! The KV cache: one preallocated `[n_head_kv, n_ctx, head_dim]` K and V tensor per layer, stored
//! in F16 as llama.cpp stores it (F32 on a GPU without F16) (half the memory of f32, and the same rounding), written in place
//! (`slice_assign` on a uniquely owned tensor), never grown by `cat`. Per-sequence state, separate
//! from the read-only weights.

use crate::config::ModelConfig;
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions};

/// K and V of one layer.
#[derive(Debug)]
pub struct LayerCache {
    k: Tensor<3>,
    v: Tensor<3>,
}

impl LayerCache {
    /// Writes `k`, `v` (`[Hkv, T, D]`, f32, stored rounded to f16) at positions `start..start+T` and
    /// returns the filled prefix
    /// `0..start+T` of both as f32.
    pub fn append(&mut self, start: usize, k: Tensor<3>, v: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [hkv, t, d] = k.dims();
        let end = start + t;
        self.k = self
            .k
            .clone()
            .slice_assign([0..hkv, start..end, 0..d], k.cast(self.k.dtype()));
        self.v = self
            .v
            .clone()
            .slice_assign([0..hkv, start..end, 0..d], v.cast(self.v.dtype()));
        (
            self.k
                .clone()
                .slice([0..hkv, 0..end, 0..d])
                .cast(DType::F32),
            self.v
                .clone()
                .slice([0..hkv, 0..end, 0..d])
                .cast(DType::F32),
        )
    }

    pub fn device(&self) -> Device {
        self.k.device()
    }
}

fn f16(device: &Device) -> TensorCreationOptions {
    TensorCreationOptions::new(device.clone()).with_dtype(crate::qlinear::storage_dtype(device))
}

/// The cache of one sequence.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    capacity: usize,
    /// Positions filled.
    pub(crate) len: usize,
}

impl KvCache {
    /// Preallocates room for `n_ctx` positions.
    pub fn new(cfg: &ModelConfig, n_ctx: usize, device: &Device) -> Self {
        let shape = [cfg.n_head_kv, n_ctx, cfg.head_dim];
        let layers = (0..cfg.n_layer)
            .map(|_| LayerCache {
                k: Tensor::zeros(shape, f16(device)),
                v: Tensor::zeros(shape, f16(device)),
            })
            .collect();
        KvCache {
            layers,
            capacity: n_ctx,
            len: 0,
        }
    }

    /// Forgets every position (the memory stays allocated).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
