//! The shared layers of Llama-family decoders: RMSNorm, RoPE (NORM and NEOX pairing, per-dimension
//! frequency factors as Llama 3 stores them), grouped-query attention over a preallocated KV cache
//! with a causal mask, and the SwiGLU feed-forward. Follows llama.cpp `src/llama-graph.cpp`
//! (`build_norm`, `build_attn`, `build_ffn`) and `ggml_rope_ext`.

use crate::config::{ModelConfig, RopeKind};
use crate::cpu_ops::{self, AttnParams};
use crate::kv_cache::LayerCache;
use crate::qlinear::{QLinear, on_cpu};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Bool, Device, Tensor, TensorData};

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension of `[T, n]`.
pub fn rms_norm(x: Tensor<2>, w: &Tensor<1>, eps: f32) -> Tensor<2> {
    if on_cpu(&x.device()) {
        return cpu_ops::rms_norm(x, w, eps);
    }
    let ms = x.clone().powi_scalar(2).mean_dim(1);
    x / (ms + eps).sqrt() * w.clone().unsqueeze::<2>()
}

/// Rotary embedding tables for one batch of positions, as ggml's `ggml_rope_cache_init`
/// computes them (YaRN's ramp between interpolated and extrapolated frequencies included).
#[derive(Debug)]
pub struct Rope {
    kind: RopeKind,
    dim: usize,
    /// Per rotated pair: base^(-2i/dim) / freq_factor[i].
    inv_freq: Vec<f32>,
    freq_scale: f32,
    /// Per rotated pair: the share of the extrapolated (unscaled) frequency, YaRN's
    /// `ramp · ext_factor` (all 0 without YaRN).
    ramp_mix: Vec<f32>,
    /// Magnitude of cos and sin.
    mscale: f32,
}

impl Rope {
    /// From the config and optional frequency factors (`rope_freqs.weight`).
    pub fn new(cfg: &ModelConfig, freq_factors: Option<Vec<f32>>) -> Self {
        let r = &cfg.rope;
        let half = r.dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let f = r.freq_base.powf(-2.0 * i as f32 / r.dim as f32);
                let ff = freq_factors
                    .as_ref()
                    .and_then(|v| v.get(i).copied())
                    .unwrap_or(1.0);
                f / ff
            })
            .collect();
        let mut mscale = r.attn_factor;
        let ramp_mix = match &r.yarn {
            Some(y) if y.ext_factor != 0.0 => {
                // ggml_rope_yarn_corr_dims and rope_yarn_ramp.
                let corr = |n_rot: f32| {
                    r.dim as f32 * (y.n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                        / (2.0 * r.freq_base.ln())
                };
                let low = corr(y.beta_fast).floor().max(0.0);
                let high = corr(y.beta_slow).ceil().min(r.dim as f32 - 1.0);
                mscale *= 1.0 + 0.1 * (1.0 / r.freq_scale).ln();
                (0..half)
                    .map(|i| {
                        let t = (i as f32 - low) / (high - low).max(0.001);
                        (1.0 - t.clamp(0.0, 1.0)) * y.ext_factor
                    })
                    .collect()
            }
            _ => vec![0.0; half],
        };
        Rope {
            kind: r.kind,
            dim: r.dim,
            inv_freq,
            freq_scale: r.freq_scale,
            ramp_mix,
            mscale,
        }
    }

    /// cos and sin tables `[T, 1, dim/2]` for positions `start..start+t`.
    pub fn tables(&self, start: usize, t: usize, device: &Device) -> (Tensor<3>, Tensor<3>) {
        let half = self.dim / 2;
        let (mut c, mut s) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in start..start + t {
            for (f, &mix) in self.inv_freq.iter().zip(&self.ramp_mix) {
                let extrap = p as f32 * f;
                let interp = self.freq_scale * extrap;
                let theta = if mix == 0.0 {
                    interp
                } else {
                    interp * (1.0 - mix) + extrap * mix
                };
                c.push(theta.cos() * self.mscale);
                s.push(theta.sin() * self.mscale);
            }
        }
        let mk = |v| Tensor::<3>::from_data(TensorData::new(v, [t, 1, half]), device);
        (mk(c), mk(s))
    }

    /// Rotates `x [T, H, D]` (the first `dim` of each head; the rest passes through).
    pub fn apply(&self, x: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
        let [t, h, d] = x.dims();
        let half = self.dim / 2;
        let rot = x.clone().narrow(2, 0, self.dim);
        let (x0, x1) = match self.kind {
            RopeKind::Norm => {
                let pairs = rot.reshape([t, h, half, 2]);
                (
                    pairs.clone().narrow(3, 0, 1).reshape([t, h, half]),
                    pairs.narrow(3, 1, 1).reshape([t, h, half]),
                )
            }
            RopeKind::Neox => (rot.clone().narrow(2, 0, half), rot.narrow(2, half, half)),
        };
        let y0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let y1 = x0 * sin.clone() + x1 * cos.clone();
        let rotated = match self.kind {
            RopeKind::Norm => Tensor::stack::<4>(vec![y0, y1], 3).reshape([t, h, self.dim]),
            RopeKind::Neox => Tensor::cat(vec![y0, y1], 2),
        };
        if self.dim == d {
            rotated
        } else {
            Tensor::cat(vec![rotated, x.narrow(2, self.dim, d - self.dim)], 2)
        }
    }
}

/// Attention weights of one layer.
#[derive(Debug)]
pub struct Attention {
    pub wq: QLinear,
    pub wk: QLinear,
    pub wv: QLinear,
    pub wo: QLinear,
    pub bq: Option<Tensor<1>>,
    pub bk: Option<Tensor<1>>,
    pub bv: Option<Tensor<1>>,
}

fn bias(x: Tensor<2>, b: &Option<Tensor<1>>) -> Tensor<2> {
    match b {
        Some(b) => x + b.clone().unsqueeze::<2>(),
        None => x,
    }
}

/// Inputs to one attention call.
#[derive(Debug)]
pub struct AttnInput<'a> {
    pub cfg: &'a ModelConfig,
    pub rope: &'a Rope,
    pub cos: &'a Tensor<3>,
    pub sin: &'a Tensor<3>,
    /// Position of the first row of `x`.
    pub start: usize,
}

/// One sequence's share of a batched attention call: its rows of `x` (consecutive, in order),
/// its layer cache and its positions.
#[derive(Debug)]
pub struct AttnPart<'a, 'c> {
    pub rows: usize,
    pub cache: &'c mut LayerCache,
    pub input: &'a AttnInput<'a>,
}

impl Attention {
    /// `x [T, n_embd]`: the rows of every part, one after another. The projections run once over
    /// all rows (several sequences' decode steps share each weight read); attention runs per part
    /// against its own cache.
    pub fn forward_batch(&self, x: Tensor<2>, parts: &mut [AttnPart<'_, '_>]) -> Tensor<2> {
        let q = bias(self.wq.forward(x.clone()), &self.bq);
        let k = bias(self.wk.forward(x.clone()), &self.bk);
        let v = bias(self.wv.forward(x), &self.bv);
        if let [part] = parts {
            return self.wo.forward(attend(q, k, v, part.cache, part.input));
        }
        let mut outs = Vec::with_capacity(parts.len());
        let mut row = 0;
        for part in parts.iter_mut() {
            let rows = |t: &Tensor<2>| t.clone().narrow(0, row, part.rows);
            outs.push(attend(rows(&q), rows(&k), rows(&v), part.cache, part.input));
            row += part.rows;
        }
        self.wo.forward(Tensor::cat(outs, 0))
    }
}

/// Attention of projected `q [T, H*D]`, `k`, `v [T, Hkv*D]` (before RoPE) at positions
/// `start..start+T`, appending K/V to `cache`; returns `[T, H*D]` (before the output projection).
fn attend(
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    cache: &mut LayerCache,
    a: &AttnInput<'_>,
) -> Tensor<2> {
    let cfg = a.cfg;
    let [t, _] = q.dims();
    let (h, hkv, d) = (cfg.n_head, cfg.n_head_kv, cfg.head_dim);
    if on_cpu(&q.device()) {
        let half = a.rope.dim / 2;
        let (kc, vc) = cache.take();
        let (out, kc, vc) = cpu_ops::attention(
            q,
            k,
            v,
            kc,
            vc,
            a.cos.clone().reshape([t, half]),
            a.sin.clone().reshape([t, half]),
            AttnParams {
                n_head: h,
                n_head_kv: hkv,
                head_dim: d,
                rope_dim: a.rope.dim,
                neox: a.rope.kind == RopeKind::Neox,
                start: a.start,
            },
        );
        cache.put(kc, vc);
        return out;
    }
    let (q, k, v) = (
        q.reshape([t, h, d]),
        k.reshape([t, hkv, d]),
        v.reshape([t, hkv, d]),
    );
    let q = a.rope.apply(q, a.cos, a.sin);
    let k = a.rope.apply(k, a.cos, a.sin);
    let len = a.start + t;
    let (keys, values) = cache.append(a.start, k.swap_dims(0, 1), v.swap_dims(0, 1));
    // Group the query heads that share a KV head: [Hkv, G*T, D].
    let g = h / hkv;
    let q = q.swap_dims(0, 1).reshape([hkv, g * t, d]);
    let scale = 1.0 / (d as f32).sqrt();
    let scores = q.matmul(keys.swap_dims(1, 2)) * scale;
    let scores = scores.mask_fill(
        causal_mask(g, t, a.start, len, &cache.device()),
        f32::NEG_INFINITY,
    );
    let probs = softmax(scores, 2);
    probs
        .matmul(values)
        .reshape([h, t, d])
        .swap_dims(0, 1)
        .reshape([t, h * d])
}

/// `[1, G*T, L]`, true where row (g, i) at position start+i must not see key j > start+i.
pub(crate) fn causal_mask(
    g: usize,
    t: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> Tensor<3, Bool> {
    let mut m = Vec::with_capacity(g * t * len);
    for _ in 0..g {
        for i in 0..t {
            m.extend((0..len).map(|j| j > start + i));
        }
    }
    Tensor::<3, Bool>::from_data(TensorData::new(m, [1, g * t, len]), device)
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct FeedForward {
    pub gate: QLinear,
    pub up: QLinear,
    pub down: QLinear,
}

impl FeedForward {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (gate, up) = (self.gate.forward(x.clone()), self.up.forward(x));
        if on_cpu(&gate.device()) {
            return self.down.forward(cpu_ops::swiglu(gate, up));
        }
        self.down.forward(silu(gate) * up)
    }
}
