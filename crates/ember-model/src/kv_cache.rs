//! The KV cache: one preallocated `[n_head_kv, n_ctx, head_dim]` K and V tensor per layer (with
//! MLA a single `[1, n_ctx, kv_lora_rank + qk_rope]` tensor whose latent part doubles as V), stored
//! in F16 as llama.cpp stores it (F32 on a GPU without F16) (half the memory of f32, and the same rounding), written in place
//! (`slice_assign` on a uniquely owned tensor), never grown by `cat`. Per-sequence state, separate
//! from the read-only weights.

use crate::config::ModelConfig;
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions};

/// K and V of one layer. The tensors are held in `Option`s so that the fused CPU attention can take
/// them, write the new rows in place (a uniquely owned tensor is not copied) and put them back.
#[derive(Debug)]
pub struct LayerCache {
    k: Option<Tensor<3>>,
    v: Option<Tensor<3>>,
    shape: [usize; 3],
    /// Whether V is stored (not with MLA).
    has_v: bool,
    device: Device,
}

impl LayerCache {
    fn new(shape: [usize; 3], has_v: bool, device: &Device) -> Self {
        LayerCache {
            k: Some(Tensor::zeros(shape, f16(device))),
            v: has_v.then(|| Tensor::zeros(shape, f16(device))),
            shape,
            has_v,
            device: device.clone(),
        }
    }

    fn fresh(&self) -> Tensor<3> {
        Tensor::zeros(self.shape, f16(&self.device))
    }

    /// Takes K and V out (give them back with [`LayerCache::put`]). If a previous taker never gave
    /// them back (it panicked), the cache starts over empty rather than failing.
    pub(crate) fn take(&mut self) -> (Tensor<3>, Tensor<3>) {
        let k = self.k.take().unwrap_or_else(|| self.fresh());
        let v = self.v.take().unwrap_or_else(|| self.fresh());
        (k, v)
    }

    pub(crate) fn put(&mut self, k: Tensor<3>, v: Tensor<3>) {
        (self.k, self.v) = (Some(k), Some(v));
    }

    /// Takes the single MLA tensor out (give it back with [`LayerCache::put_k`]).
    pub(crate) fn take_k(&mut self) -> Tensor<3> {
        self.k.take().unwrap_or_else(|| self.fresh())
    }

    pub(crate) fn put_k(&mut self, k: Tensor<3>) {
        self.k = Some(k);
    }

    /// MLA: writes `k` (`[1, T, D]`, f32, stored rounded to f16) at positions `start..start+T` and
    /// returns the filled prefix `0..start+T` as f32.
    pub fn append_k(&mut self, start: usize, k: Tensor<3>) -> Tensor<3> {
        let [hkv, t, d] = k.dims();
        let end = start + t;
        let kc = self.take_k();
        let k = k.cast(kc.dtype());
        let kc = kc.slice_assign([0..hkv, start..end, 0..d], k);
        let out = kc.clone().slice([0..hkv, 0..end, 0..d]).cast(DType::F32);
        self.put_k(kc);
        out
    }

    /// Bytes this layer holds.
    pub fn bytes(&self) -> usize {
        let [a, b, c] = self.shape;
        let per = if storage_is_f16(&self.device) { 2 } else { 4 };
        a * b * c * per * if self.has_v { 2 } else { 1 }
    }

    /// Writes `k`, `v` (`[Hkv, T, D]`, f32, stored rounded to f16) at positions `start..start+T` and
    /// returns the filled prefix `0..start+T` of both as f32.
    pub fn append(&mut self, start: usize, k: Tensor<3>, v: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [hkv, t, d] = k.dims();
        let end = start + t;
        let (kc, vc) = self.take();
        let (k, v) = (k.cast(kc.dtype()), v.cast(vc.dtype()));
        let kc = kc.slice_assign([0..hkv, start..end, 0..d], k);
        let vc = vc.slice_assign([0..hkv, start..end, 0..d], v);
        let prefix = |c: &Tensor<3>| c.clone().slice([0..hkv, 0..end, 0..d]).cast(DType::F32);
        let out = (prefix(&kc), prefix(&vc));
        self.put(kc, vc);
        out
    }

    pub fn device(&self) -> Device {
        self.device.clone()
    }
}

fn storage_is_f16(device: &Device) -> bool {
    crate::qlinear::storage_dtype(device) == DType::F16
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
        let (shape, has_v) = match &cfg.mla {
            Some(m) => ([1, n_ctx, m.kv_lora_rank + m.qk_rope], false),
            None => ([cfg.n_head_kv, n_ctx, cfg.head_dim], true),
        };
        let layers = (0..cfg.n_layer)
            .map(|_| LayerCache::new(shape, has_v, device))
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

    /// Keeps the first `len` positions and forgets the rest (for reusing a cached prompt
    /// prefix: the next forward writes from position `len`). A larger `len` changes nothing.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated for every layer (K and V, or the MLA latent).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
