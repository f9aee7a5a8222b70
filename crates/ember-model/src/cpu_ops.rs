//! Fused CPU operations for the decoder's glue between the matrix products: RMSNorm, SwiGLU, and
//! attention (RoPE on Q and K, the KV-cache write, causal softmax attention reading the F16 cache
//! in place), as a Burn backend extension for Flex.
//!
//! Composed from Burn's tensor ops, one decode step of a small model is a few thousand tiny ops
//! (RoPE alone is a dozen per tensor, and attention converted the whole cached prefix to f32 on
//! every step); at decode sizes their dispatch and allocations cost more than the arithmetic. Here
//! each is one pass over plain slices. The math is the composed version's (f32 throughout, the
//! same RoPE tables, f16 cache rounding), so results differ from it only in summation order. Other
//! devices (wgpu) keep the composed ops in `layers.rs`.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Bytes, DType, Shape, Tensor};
use ember_quant::pool::DisjointOut;
use half::f16;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shapes and RoPE settings of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions per head.
    pub rope_dim: usize,
    /// NEOX pairing (halves) instead of adjacent pairs.
    pub neox: bool,
    /// Position of the first new row.
    pub start: usize,
}

/// Shapes of one multi-head latent attention call (absorbed form: MQA over the latent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaParams {
    pub n_head: usize,
    /// The latent part of each query/key row (first), also the value.
    pub kv_lora_rank: usize,
    /// The rotated part of each query/key row (after the latent).
    pub rope_dim: usize,
    /// Softmax scale of the scores.
    pub scale: f32,
    /// Position of the first new row.
    pub start: usize,
}

/// Burn backend extension: fused decoder glue on the CPU.
#[backend_extension(Flex)]
pub trait CpuOps: Backend {
    /// `x / sqrt(mean(x²) + eps) * w` over the rows of `x [t, n]`.
    fn fused_rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// `silu(gate) * up`, elementwise.
    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Attention for `t` new rows: `q [t, H*D]`, `k`, `v [t, Hkv*D]` (projected, biased, not yet
    /// rotated), the cache `k_cache`, `v_cache [Hkv, C, D]` (F16 or F32) and the RoPE tables
    /// `cos`, `sin [t, rope_dim/2]`. Returns the attention output `[t, H*D]` and the caches with the
    /// new rows written at `start..start+t`.
    #[allow(clippy::too_many_arguments)]
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        p: AttnParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Multi-head latent attention in the absorbed form for `t` new rows: `q [t, H*(L+R)]` (per
    /// head the latent-space query, then the not yet rotated rope part), `kv [t, L+R]` (the
    /// normalised latent, then the not yet rotated rope key), the cache `[1, C, L+R]` and the
    /// RoPE tables `[t, R/2]`. The latent part of each cached row is also its value. Returns the
    /// output `[t, H*L]` (before the per-head value decompression) and the cache with the new
    /// rows written at `start..start+t`.
    fn fused_mla_attention(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        cache: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        p: MlaParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// f32 contents of a tensor (copied only when it is not a contiguous f32 tensor already).
fn f32s(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => {
            let c = t.to_contiguous();
            let data = c.into_data();
            data.convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default()
                .into()
        }
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::new(shape)),
        DType::F32,
    )
}

impl CpuOps for Flex {
    fn fused_rms_norm(x: FlexTensor, w: FlexTensor, eps: f32) -> FlexTensor {
        let dims = x.layout().shape().dims::<2>();
        let (xs, ws) = (f32s(&x), f32s(&w));
        let n = dims[1];
        let mut out = vec![0f32; xs.len()];
        if n > 0 && ws.len() == n {
            for (o, row) in out.chunks_exact_mut(n).zip(xs.chunks_exact(n)) {
                // Sum of squares in f64, as ggml's rms_norm does.
                let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let scale = 1.0 / ((ss / n as f64) as f32 + eps).sqrt();
                for ((o, &v), &w) in o.iter_mut().zip(row).zip(ws.iter()) {
                    *o = v * scale * w;
                }
            }
        }
        tensor(out, dims)
    }

    fn fused_swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let dims = gate.layout().shape().dims::<2>();
        let (g, u) = (f32s(&gate), f32s(&up));
        let out = g
            .iter()
            .zip(u.iter())
            .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        tensor(out, dims)
    }

    fn fused_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mut k_cache: FlexTensor,
        mut v_cache: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        p: AttnParams,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (h, hkv, d) = (p.n_head, p.n_head_kv, p.head_dim);
        let mut q = f32s(&q).into_owned();
        let mut k = f32s(&k).into_owned();
        let v = f32s(&v);
        let (cos, sin) = (f32s(&cos), f32s(&sin));
        let t = q.len().checked_div(h * d).unwrap_or(0);
        let cache_dims = k_cache.layout().shape().dims::<3>();
        let cap = cache_dims[1];
        let mut out = vec![0f32; t * h * d];
        let fits = h > 0
            && cache_dims == [hkv, cap, d]
            && v_cache.layout().shape().dims::<3>() == cache_dims
            && k_cache.is_contiguous()
            && v_cache.is_contiguous()
            && hkv > 0
            && h.is_multiple_of(hkv)
            && k.len() == t * hkv * d
            && v.len() == t * hkv * d
            && p.start + t <= cap
            && p.rope_dim <= d
            && cos.len() == t * (p.rope_dim / 2)
            && sin.len() == cos.len();
        if !fits {
            tracing::error!("internal error (please report): fused attention shapes {p:?}, t {t}");
            return (tensor(out, [t, h * d]), k_cache, v_cache);
        }
        let half = p.rope_dim / 2;
        for i in 0..t {
            let (c, s) = (
                &cos[i * half..(i + 1) * half],
                &sin[i * half..(i + 1) * half],
            );
            for head in q[i * h * d..(i + 1) * h * d].chunks_exact_mut(d) {
                rope(head, c, s, p.neox);
            }
            for head in k[i * hkv * d..(i + 1) * hkv * d].chunks_exact_mut(d) {
                rope(head, c, s, p.neox);
            }
        }
        if k_cache.dtype() == DType::F16 {
            round_to_f16(&mut q);
        }
        let ok = write_cache(&mut k_cache, &k, p.start, t, hkv, d, cap)
            && write_cache(&mut v_cache, &v, p.start, t, hkv, d, cap);
        if !ok {
            tracing::error!("internal error (please report): KV cache of an unexpected type");
            return (tensor(out, [t, h * d]), k_cache, v_cache);
        }
        AttnJob {
            q: &q,
            k: Cache::of(&k_cache),
            v: Cache::of(&v_cache),
            t,
            h,
            hkv,
            dk: d,
            dv: d,
            v_stride: d,
            v_off: 0,
            cap,
            start: p.start,
            scale: 1.0 / (d as f32).sqrt(),
            round_f16: k_cache.dtype() == DType::F16,
            next: AtomicUsize::new(0),
            out: DisjointOut::new(&mut out),
        }
        .execute();
        (tensor(out, [t, h * d]), k_cache, v_cache)
    }

    fn fused_mla_attention(
        q: FlexTensor,
        kv: FlexTensor,
        mut cache: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        p: MlaParams,
    ) -> (FlexTensor, FlexTensor) {
        let (h, latent, rope_dim) = (p.n_head, p.kv_lora_rank, p.rope_dim);
        let dk = latent + rope_dim;
        let mut q = f32s(&q).into_owned();
        let mut kv = f32s(&kv).into_owned();
        let (cos, sin) = (f32s(&cos), f32s(&sin));
        let t = q.len().checked_div(h * dk).unwrap_or(0);
        let cache_dims = cache.layout().shape().dims::<3>();
        let cap = cache_dims[1];
        let mut out = vec![0f32; t * h * latent];
        let fits = h > 0
            && cache_dims == [1, cap, dk]
            && cache.is_contiguous()
            && kv.len() == t * dk
            && p.start + t <= cap
            && cos.len() == t * (rope_dim / 2)
            && sin.len() == cos.len();
        if !fits {
            tracing::error!("internal error (please report): MLA attention shapes {p:?}, t {t}");
            return (tensor(out, [t, h * latent]), cache);
        }
        let half = rope_dim / 2;
        for i in 0..t {
            let (c, s) = (
                &cos[i * half..(i + 1) * half],
                &sin[i * half..(i + 1) * half],
            );
            for head in q[i * h * dk..(i + 1) * h * dk].chunks_exact_mut(dk) {
                rope(&mut head[latent..], c, s, false);
            }
            rope(&mut kv[i * dk + latent..(i + 1) * dk], c, s, false);
        }
        if cache.dtype() == DType::F16 {
            round_to_f16(&mut q);
        }
        if !write_cache(&mut cache, &kv, p.start, t, 1, dk, cap) {
            tracing::error!("internal error (please report): MLA cache of an unexpected type");
            return (tensor(out, [t, h * latent]), cache);
        }
        AttnJob {
            q: &q,
            k: Cache::of(&cache),
            v: Cache::of(&cache),
            t,
            h,
            hkv: 1,
            dk,
            dv: latent,
            v_stride: dk,
            v_off: 0,
            cap,
            start: p.start,
            scale: p.scale,
            round_f16: cache.dtype() == DType::F16,
            next: AtomicUsize::new(0),
            out: DisjointOut::new(&mut out),
        }
        .execute();
        (tensor(out, [t, h * latent]), cache)
    }
}

/// One attention call, split into tasks of (KV head, row): each task converts every cached K and
/// V row of its KV head once and uses it for all the query heads of the group.
struct AttnJob<'a> {
    /// `[t, h, dk]`.
    q: &'a [f32],
    /// Rows of `dk`.
    k: Cache<'a>,
    /// Rows of `v_stride`, of which `dv` from `v_off` are the value (V may be a view of K).
    v: Cache<'a>,
    t: usize,
    h: usize,
    hkv: usize,
    dk: usize,
    dv: usize,
    v_stride: usize,
    v_off: usize,
    cap: usize,
    start: usize,
    scale: f32,
    /// Round the probabilities to f16 before they weight V (as ggml's F16 products do).
    round_f16: bool,
    next: AtomicUsize,
    /// `[t, h, dv]`.
    out: DisjointOut<'a>,
}

impl AttnJob<'_> {
    /// Takes tasks until none are left (any number of threads may call this at once).
    fn run(&self) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { self.run_avx2() };
        }
        self.run_generic();
    }

    /// [`AttnJob::run_generic`] compiled for AVX2 + FMA (the loops vectorise 8 wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self) {
        self.run_generic();
    }

    #[inline(always)]
    fn run_generic(&self) {
        let (h, dk, dv, t) = (self.h, self.dk, self.dv, self.t);
        let g = h / self.hkv;
        let len = self.start + t;
        let mut scores = vec![0f32; g * len];
        let mut krow = vec![0f32; dk];
        let mut vrow = vec![0f32; self.v_stride];
        let mut acc = vec![0f32; g * dv];
        loop {
            let task = self.next.fetch_add(1, Ordering::Relaxed);
            if task >= self.hkv * t {
                break;
            }
            let (kvh, i) = (task / t, task % t);
            // Row i sees keys 0..=start+i.
            let seen = self.start + i + 1;
            let qs = &self.q[(i * h + kvh * g) * dk..(i * h + (kvh + 1) * g) * dk];
            for j in 0..seen {
                self.k.row(kvh, j, self.cap, dk, &mut krow);
                for (qh, sc) in qs.chunks_exact(dk).zip(scores.chunks_exact_mut(len)) {
                    sc[j] = dot(qh, &krow) * self.scale;
                }
            }
            for sc in scores.chunks_exact_mut(len) {
                let sc = &mut sc[..seen];
                let max = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for x in sc.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                for x in sc.iter_mut() {
                    *x *= inv;
                    if self.round_f16 {
                        *x = f16::from_f32(*x).to_f32();
                    }
                }
            }
            acc.fill(0.0);
            for j in 0..seen {
                self.v.row(kvh, j, self.cap, self.v_stride, &mut vrow);
                let row = &vrow[self.v_off..self.v_off + dv];
                for (a, sc) in acc.chunks_exact_mut(dv).zip(scores.chunks_exact(len)) {
                    let w = sc[j];
                    for (a, &x) in a.iter_mut().zip(row) {
                        *a += w * x;
                    }
                }
            }
            // SAFETY: each task owns the disjoint output range of its row and KV head's group.
            unsafe { self.out.write((i * h + kvh * g) * dv, &acc) };
        }
    }

    /// Runs the tasks, on the pool when there is enough work.
    fn execute(&self) {
        let work = |_: usize| self.run();
        if self.t * self.h * (self.start + self.t) * self.dk >= 1 << 16 {
            ember_quant::pool::global().run(&work);
        } else {
            work(0);
        }
    }
}

/// Rounds to f16 and back: what ggml does to the activations of a product with an F16 matrix
/// (here the queries against the F16 K cache; the probabilities against V get the same in
/// [`AttnJob`]).
fn round_to_f16(x: &mut [f32]) {
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// Dot product with eight independent partial sums, so the compiler can vectorise it.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Rotates one head in place: adjacent pairs (NORM) or halves (NEOX) of its first `2 * c.len()`
/// values.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], neox: bool) {
    let half = cos.len();
    for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
        let (a, b) = if neox {
            (i, i + half)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/// Writes `t` rows of `[t, Hkv*D]` into the cache `[Hkv, C, D]` at `start`. False if the cache is
/// neither F16 nor F32 or cannot be written in place.
fn write_cache(
    cache: &mut FlexTensor,
    rows: &[f32],
    start: usize,
    t: usize,
    hkv: usize,
    d: usize,
    cap: usize,
) -> bool {
    let at = |i: usize, kvh: usize| (kvh * cap + start + i) * d;
    let src = |i: usize, kvh: usize| &rows[(i * hkv + kvh) * d..(i * hkv + kvh + 1) * d];
    match cache.dtype() {
        DType::F16 => {
            let dst = cache.storage_mut::<f16>();
            for i in 0..t {
                for kvh in 0..hkv {
                    for (o, &x) in dst[at(i, kvh)..at(i, kvh) + d].iter_mut().zip(src(i, kvh)) {
                        *o = f16::from_f32(x);
                    }
                }
            }
            true
        }
        DType::F32 => {
            let dst = cache.storage_mut::<f32>();
            for i in 0..t {
                for kvh in 0..hkv {
                    dst[at(i, kvh)..at(i, kvh) + d].copy_from_slice(src(i, kvh));
                }
            }
            true
        }
        _ => false,
    }
}

/// A read view of a cache.
enum Cache<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

impl<'a> Cache<'a> {
    fn of(t: &'a FlexTensor) -> Cache<'a> {
        match t.dtype() {
            DType::F16 => Cache::F16(t.storage::<f16>()),
            _ => Cache::F32(t.storage::<f32>()),
        }
    }

    /// Row `j` of KV head `kvh` as f32 into `out` (`d` values).
    fn row(&self, kvh: usize, j: usize, cap: usize, d: usize, out: &mut [f32]) {
        let o = (kvh * cap + j) * d;
        match self {
            Cache::F16(s) => {
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&s[o..o + d], out);
            }
            Cache::F32(s) => out.copy_from_slice(&s[o..o + d]),
        }
    }
}

/// Tensor-level wrappers (callers check the device is Flex).
pub(crate) fn rms_norm(x: Tensor<2>, w: &Tensor<1>, eps: f32) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuOps>::fused_rms_norm(
        x.into_dispatch(),
        w.clone().into_dispatch(),
        eps,
    ))
}

pub(crate) fn swiglu(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuOps>::fused_swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    k_cache: Tensor<3>,
    v_cache: Tensor<3>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    p: AttnParams,
) -> (Tensor<2>, Tensor<3>, Tensor<3>) {
    let (o, kc, vc) = <Dispatch as CpuOps>::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        p,
    );
    (
        Tensor::from_dispatch(o),
        Tensor::from_dispatch(kc),
        Tensor::from_dispatch(vc),
    )
}

pub(crate) fn mla_attention(
    q: Tensor<2>,
    kv: Tensor<2>,
    cache: Tensor<3>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    p: MlaParams,
) -> (Tensor<2>, Tensor<3>) {
    let (o, c) = <Dispatch as CpuOps>::fused_mla_attention(
        q.into_dispatch(),
        kv.into_dispatch(),
        cache.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        p,
    );
    (Tensor::from_dispatch(o), Tensor::from_dispatch(c))
}
