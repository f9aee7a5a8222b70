//! Multi-head latent attention (DeepSeek-V2/V3), decoded in the absorbed form as llama.cpp's
//! `deepseek2` graph does it: the cache holds one compressed latent (`kv_lora_rank`, RMS-normed)
//! plus one rotary key (`qk_rope`) per token and layer — no per-head K or V. Each head's no-rope
//! query is moved into latent space through its `attn_k_b` matrix, attention runs as MQA over
//! the cached rows (the latent part of a row is also its value), and each head's latent output is
//! decompressed through its `attn_v_b` matrix before the output projection.

use crate::config::{MlaConfig, ModelConfig};
use crate::cpu_ops::{self, MlaParams};
use crate::error::ModelError;
use crate::layers::{AttnPart, causal_mask, rms_norm};
use crate::loader::Loader;
use crate::qlinear::{QHeads, QLinear, on_cpu};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// How queries are projected.
#[derive(Debug)]
enum QueryProj {
    /// One matrix (`attn_q`, V2-Lite).
    Plain(Box<QLinear>),
    /// A low-rank bottleneck with a norm between (`attn_q_a`, `attn_q_a_norm`, `attn_q_b`).
    LowRank(Box<LowRankQuery>),
}

/// `attn_q_b(rms_norm(attn_q_a(x)))`.
#[derive(Debug)]
struct LowRankQuery {
    a: QLinear,
    norm: Tensor<1>,
    b: QLinear,
}

/// The attention weights of one MLA layer.
#[derive(Debug)]
pub struct MlaAttention {
    q: QueryProj,
    /// `attn_kv_a_mqa`: hidden → latent + rope key.
    kv_a: QLinear,
    kv_a_norm: Tensor<1>,
    /// Per head: no-rope query → latent (`attn_k_b`).
    k_b: QHeads,
    /// Per head: latent → value (`attn_v_b`).
    v_b: QHeads,
    wo: QLinear,
    m: MlaConfig,
    n_head: usize,
    eps: f32,
}

impl MlaAttention {
    /// Loads layer `i` (`blk.{i}.…`). Files with the older single `attn_kv_b` are split into the
    /// per-head `k_b`/`v_b` form at load.
    pub(crate) fn load(ld: &Loader<'_>, cfg: &ModelConfig, i: usize) -> Result<Self, ModelError> {
        let Some(m) = cfg.mla.clone() else {
            return Err(ModelError::Config("MLA layer without MLA settings".into()));
        };
        let p = |s: &str| format!("blk.{i}.{s}");
        let (e, h) = (cfg.n_embd, cfg.n_head);
        let q_len = h * (m.qk_nope + m.qk_rope);
        let q = if m.q_lora_rank > 0 {
            QueryProj::LowRank(Box::new(LowRankQuery {
                a: ld.lin(&p("attn_q_a.weight"), e, m.q_lora_rank)?,
                norm: ld.vec(&p("attn_q_a_norm.weight"), m.q_lora_rank)?,
                b: ld.lin(&p("attn_q_b.weight"), m.q_lora_rank, q_len)?,
            }))
        } else {
            QueryProj::Plain(Box::new(ld.lin(&p("attn_q.weight"), e, q_len)?))
        };
        let (k_b, v_b) = if ld.has(&p("attn_k_b.weight")) {
            (
                ld.heads(&p("attn_k_b.weight"), m.qk_nope, m.kv_lora_rank, h)?,
                ld.heads(&p("attn_v_b.weight"), m.kv_lora_rank, m.v_head, h)?,
            )
        } else {
            split_kv_b(ld, &p("attn_kv_b.weight"), &m, h)?
        };
        Ok(MlaAttention {
            q,
            kv_a: ld.lin(&p("attn_kv_a_mqa.weight"), e, m.kv_lora_rank + m.qk_rope)?,
            kv_a_norm: ld.vec(&p("attn_kv_a_norm.weight"), m.kv_lora_rank)?,
            k_b,
            v_b,
            wo: ld.lin(&p("attn_output.weight"), h * m.v_head, e)?,
            m,
            n_head: h,
            eps: cfg.rms_eps,
        })
    }

    /// `x [T, n_embd]`: the rows of every part, one after another (as
    /// [`crate::layers::Attention::forward_batch`]).
    pub fn forward_batch(&self, x: Tensor<2>, parts: &mut [AttnPart<'_, '_>]) -> Tensor<2> {
        let (h, m) = (self.n_head, &self.m);
        let (nope, rope, lat) = (m.qk_nope, m.qk_rope, m.kv_lora_rank);
        let [t, _] = x.dims();
        let q = match &self.q {
            QueryProj::Plain(w) => w.forward(x.clone()),
            QueryProj::LowRank(l) => {
                l.b.forward(rms_norm(l.a.forward(x.clone()), &l.norm, self.eps))
            }
        };
        // Per head [nope | rope] → [latent | rope]: the no-rope part through k_b.
        let q = q.reshape([t, h, nope + rope]);
        let q_nope = q.clone().narrow(2, 0, nope).reshape([t, h * nope]);
        let q_lat = self.k_b.forward(q_nope).reshape([t, h, lat]);
        let q = Tensor::cat(vec![q_lat, q.narrow(2, nope, rope)], 2).reshape([t, h * (lat + rope)]);
        let kv = self.kv_a.forward(x);
        let latent = rms_norm(kv.clone().narrow(1, 0, lat), &self.kv_a_norm, self.eps);
        let kv = Tensor::cat(vec![latent, kv.narrow(1, lat, rope)], 1);

        let out = if let [part] = parts {
            self.attend(q, kv, part)
        } else {
            let mut outs = Vec::with_capacity(parts.len());
            let mut row = 0;
            for part in parts.iter_mut() {
                let rows = |x: &Tensor<2>| x.clone().narrow(0, row, part.rows);
                outs.push(self.attend(rows(&q), rows(&kv), part));
                row += part.rows;
            }
            Tensor::cat(outs, 0)
        };
        self.wo.forward(self.v_b.forward(out))
    }

    /// Attention of one sequence's rows: `q [T, H*(L+R)]`, `kv [T, L+R]` (not yet rotated);
    /// returns `[T, H*L]`.
    fn attend(&self, q: Tensor<2>, kv: Tensor<2>, part: &mut AttnPart<'_, '_>) -> Tensor<2> {
        let (h, lat, rope) = (self.n_head, self.m.kv_lora_rank, self.m.qk_rope);
        let [t, _] = q.dims();
        let a = part.input;
        if on_cpu(&q.device()) {
            let half = rope / 2;
            let cache = part.cache.take_k();
            let (out, cache) = cpu_ops::mla_attention(
                q,
                kv,
                cache,
                a.cos.clone().reshape([t, half]),
                a.sin.clone().reshape([t, half]),
                MlaParams {
                    n_head: h,
                    kv_lora_rank: lat,
                    rope_dim: rope,
                    scale: self.m.kq_scale,
                    start: a.start,
                },
            );
            part.cache.put_k(cache);
            return out;
        }
        // Composed from Burn ops (GPU).
        let q = q.reshape([t, h, lat + rope]);
        let q = Tensor::cat(
            vec![
                q.clone().narrow(2, 0, lat),
                a.rope.apply(q.narrow(2, lat, rope), a.cos, a.sin),
            ],
            2,
        );
        let kv = kv.reshape([t, 1, lat + rope]);
        let kv = Tensor::cat(
            vec![
                kv.clone().narrow(2, 0, lat),
                a.rope.apply(kv.narrow(2, lat, rope), a.cos, a.sin),
            ],
            2,
        );
        let len = a.start + t;
        let keys = part.cache.append_k(a.start, kv.swap_dims(0, 1)); // [1, len, L+R]
        let q = q.swap_dims(0, 1).reshape([1, h * t, lat + rope]);
        let scores = q.matmul(keys.clone().swap_dims(1, 2)) * self.m.kq_scale;
        let scores = scores.mask_fill(
            causal_mask(h, t, a.start, len, &keys.device()),
            f32::NEG_INFINITY,
        );
        softmax(scores, 2)
            .matmul(keys.narrow(2, 0, lat))
            .reshape([h, t, lat])
            .swap_dims(0, 1)
            .reshape([t, h * lat])
    }
}

/// The legacy single `attn_kv_b` (`[kv_lora, H·(nope + v)]`: per head `nope` key rows then `v`
/// value rows) as per-head `k_b` (transposed: `[nope → latent]`, kept as F16) and `v_b`.
fn split_kv_b(
    ld: &Loader<'_>,
    name: &str,
    m: &MlaConfig,
    h: usize,
) -> Result<(QHeads, QHeads), ModelError> {
    let (nope, v, lat) = (m.qk_nope, m.v_head, m.kv_lora_rank);
    // Only the values are needed: no QLinear (which on a GPU would upload the whole matrix).
    let info = crate::qlinear::tensor(ld.file, name)?;
    let rows = h * (nope + v);
    if info.dims() != [lat as u64, rows as u64] {
        return Err(ModelError::Tensor {
            name: name.to_owned(),
            reason: format!("dims {:?}, expected [{lat}, {rows}]", info.dims()),
        });
    }
    let bytes = ld
        .file
        .tensor_data(info)
        .ok_or_else(|| ModelError::Tensor {
            name: name.to_owned(),
            reason: "data outside the file".into(),
        })?;
    let values = ember_quant::dequantize_to_vec(info.ggml_type(), bytes, rows * lat)
        .map_err(|e| e.with_tensor(name))?;
    let (k_b, v_b) = split_kv_b_values(&values, nope, v, lat);
    Ok((
        QHeads::from_f32(&k_b, lat, nope, h, ld.device, name)?,
        QHeads::from_f32(&v_b, v, lat, h, ld.device, name)?,
    ))
}

/// The values of `attn_kv_b` (per head `nope` key rows then `v` value rows, each of `lat`) as the
/// per-head `k_b` (`lat` rows of `nope`: the key rows transposed) and `v_b` (the value rows).
fn split_kv_b_values(values: &[f32], nope: usize, v: usize, lat: usize) -> (Vec<f32>, Vec<f32>) {
    let heads = values.len() / ((nope + v) * lat).max(1);
    let (mut k_b, mut v_b) = (
        Vec::with_capacity(heads * lat * nope),
        Vec::with_capacity(heads * v * lat),
    );
    for head in values.chunks_exact((nope + v) * lat) {
        let (k_rows, v_rows) = head.split_at(nope * lat);
        for c in 0..lat {
            k_b.extend((0..nope).map(|r| k_rows[r * lat + c]));
        }
        v_b.extend_from_slice(v_rows);
    }
    (k_b, v_b)
}

#[cfg(test)]
mod tests {
    use super::split_kv_b_values;

    #[test]
    fn kv_b_splits_into_transposed_keys_and_values() {
        // 2 heads, nope 2, v 1, lat 3. Head h: key rows k[h][r][c] = 100h + 10r + c, value row
        // v[h][0][c] = 100h + 50 + c.
        let mut kv_b = Vec::new();
        for h in 0..2 {
            for r in 0..2 {
                kv_b.extend((0..3).map(|c| (100 * h + 10 * r + c) as f32));
            }
            kv_b.extend((0..3).map(|c| (100 * h + 50 + c) as f32));
        }
        let (k_b, v_b) = split_kv_b_values(&kv_b, 2, 1, 3);
        // k_b[h] is [lat 3 rows of nope 2]: row c = (k[h][0][c], k[h][1][c]).
        assert_eq!(
            k_b,
            [
                0., 10., 1., 11., 2., 12., 100., 110., 101., 111., 102., 112.
            ]
        );
        assert_eq!(v_b, [50., 51., 52., 150., 151., 152.]);
    }
}
