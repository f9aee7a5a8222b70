//! The dense decoder all Llama-family architectures share: embedding lookup, `n_layer` blocks of
//! (RMSNorm → attention → residual, RMSNorm → SwiGLU → residual), final norm and output head (tied
//! to the embedding when `output.weight` is absent). The files under `arch/` say which optional
//! parts an architecture has; this file never branches on the architecture name.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::layers::{Attention, AttnInput, AttnPart, FeedForward, Rope, rms_norm};
use crate::loader::Loader;
use crate::mla::MlaAttention;
use crate::moe::Moe;
use crate::qlinear::{QLinear, load_f32, tensor};
use burn::tensor::{Device, Tensor, TensorData};
use ember_gguf::GgufFile;
use ember_quant::GgmlType;

/// What differs between architectures: the optional parts of the shared decoder.
#[derive(Debug, Clone, Copy)]
pub struct DecoderSpec {
    /// Q/K/V projections have biases (Qwen2).
    pub qkv_bias: bool,
}

/// Where a mixture-of-experts model's routed experts live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExpertPlacement {
    /// On the model's device, like every other weight.
    #[default]
    WithModel,
    /// On the CPU, as slices of the mmap'd file, while attention, dense layers and shared
    /// experts stay on the model's device (llama.cpp's `--cpu-moe`): for GPUs whose memory holds
    /// the always-used weights but not the experts. The CPU reads only the experts a token picks.
    Cpu,
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub experts: ExpertPlacement,
}

/// The attention of a block.
#[derive(Debug)]
pub(crate) enum Mixer {
    /// Grouped-query attention over a per-head K/V cache.
    Gqa(Box<Attention>),
    /// Multi-head latent attention over a compressed latent cache.
    Mla(Box<MlaAttention>),
}

/// The feed-forward of a block.
#[derive(Debug)]
pub(crate) enum Ffn {
    Dense(Box<FeedForward>),
    Moe(Box<Moe>),
}

/// One decoder block: pre-norm attention and pre-norm feed-forward, each added to the residual.
#[derive(Debug)]
pub(crate) struct Block {
    pub attn_norm: Tensor<1>,
    pub attn: Mixer,
    pub ffn_norm: Tensor<1>,
    pub ffn: Ffn,
}

/// The Llama-style block: GQA with optional Q/K/V biases and a SwiGLU feed-forward.
pub(crate) fn gqa_block(
    ld: &Loader<'_>,
    cfg: &ModelConfig,
    spec: DecoderSpec,
    i: usize,
) -> Result<Block, ModelError> {
    let p = |s: &str| format!("blk.{i}.{s}");
    let (e, hd) = (cfg.n_embd, cfg.head_dim);
    let opt_bias = |s: &str, len: usize| {
        if spec.qkv_bias {
            ld.vec(&p(s), len).map(Some)
        } else {
            Ok(None)
        }
    };
    let (q_len, kv_len) = (cfg.n_head * hd, cfg.n_head_kv * hd);
    let attn = Attention {
        wq: ld.lin(&p("attn_q.weight"), e, q_len)?,
        wk: ld.lin(&p("attn_k.weight"), e, kv_len)?,
        wv: ld.lin(&p("attn_v.weight"), e, kv_len)?,
        wo: ld.lin(&p("attn_output.weight"), q_len, e)?,
        bq: opt_bias("attn_q.bias", q_len)?,
        bk: opt_bias("attn_k.bias", kv_len)?,
        bv: opt_bias("attn_v.bias", kv_len)?,
    };
    Ok(Block {
        attn_norm: ld.vec(&p("attn_norm.weight"), e)?,
        attn: Mixer::Gqa(Box::new(attn)),
        ffn_norm: ld.vec(&p("ffn_norm.weight"), e)?,
        ffn: Ffn::Dense(Box::new(dense_ffn(ld, cfg, i)?)),
    })
}

/// The SwiGLU feed-forward of block `i` (`ffn_gate`, `ffn_up`, `ffn_down`).
pub(crate) fn dense_ffn(
    ld: &Loader<'_>,
    cfg: &ModelConfig,
    i: usize,
) -> Result<FeedForward, ModelError> {
    let p = |s: &str| format!("blk.{i}.{s}");
    let (e, f) = (cfg.n_embd, cfg.n_ff);
    Ok(FeedForward {
        gate: ld.lin(&p("ffn_gate.weight"), e, f)?,
        up: ld.lin(&p("ffn_up.weight"), e, f)?,
        down: ld.lin(&p("ffn_down.weight"), f, e)?,
    })
}

/// The token embedding table, kept quantized; rows are dequantized on lookup.
#[derive(Debug)]
struct Embedding {
    bytes: bytes::Bytes,
    ty: GgmlType,
    n_embd: usize,
    n_vocab: usize,
}

impl Embedding {
    fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor<2>, ModelError> {
        let row_bytes = self.ty.bytes_for(self.n_embd as u64).unwrap_or(0) as usize;
        let mut out = vec![0f32; ids.len() * self.n_embd];
        for (i, &id) in ids.iter().enumerate() {
            if id as usize >= self.n_vocab {
                return Err(ModelError::BadToken {
                    id,
                    n_vocab: self.n_vocab,
                });
            }
            let src = &self.bytes[id as usize * row_bytes..(id as usize + 1) * row_bytes];
            ember_quant::dequantize(
                self.ty,
                src,
                &mut out[i * self.n_embd..(i + 1) * self.n_embd],
            )?;
        }
        Ok(Tensor::from_data(
            TensorData::new(out, [ids.len(), self.n_embd]),
            device,
        ))
    }
}

/// A loaded model: read-only weights, shareable between sequences.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    embd: Embedding,
    blocks: Vec<Block>,
    output_norm: Tensor<1>,
    output: QLinear,
    rope: Rope,
    device: Device,
}

impl Model {
    /// Loads the model in `file` (architecture from `general.architecture`).
    pub fn load(file: &GgufFile, device: &Device) -> Result<Self, ModelError> {
        Self::load_with_progress(file, device, &mut |_, _| {})
    }

    /// [`Model::load`], calling `progress(done, total)` as layers are loaded (for a progress bar:
    /// on a GPU each layer is uploaded, which takes a while on large models).
    pub fn load_with_progress(
        file: &GgufFile,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        Self::load_with_options(file, device, LoadOptions::default(), progress)
    }

    /// [`Model::load_with_progress`] with placement options.
    pub fn load_with_options(
        file: &GgufFile,
        device: &Device,
        opts: LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(file.metadata())?;
        let total = cfg.n_layer + 1;
        let e = cfg.n_embd;
        let cpu = Device::flex();
        let expert_device = match opts.experts {
            ExpertPlacement::WithModel => device,
            ExpertPlacement::Cpu => &cpu,
        };
        let ld = Loader {
            file,
            device,
            expert_device,
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            blocks.push(crate::arch::block(&ld, &cfg, i)?);
            progress(i + 1, total);
        }
        let embd_info = tensor(file, "token_embd.weight")?;
        if embd_info.dims() != [e as u64, cfg.n_vocab as u64] {
            return Err(ModelError::Tensor {
                name: "token_embd.weight".into(),
                reason: format!(
                    "dims {:?}, expected [{e}, {}]",
                    embd_info.dims(),
                    cfg.n_vocab
                ),
            });
        }
        let embd = Embedding {
            bytes: file.tensor_bytes(embd_info).unwrap_or_default(),
            ty: embd_info.ggml_type(),
            n_embd: e,
            n_vocab: cfg.n_vocab,
        };
        if !embd.ty.is_supported() {
            return Err(ember_quant::QuantError::Unsupported {
                ty: embd.ty,
                tensor: Some("token_embd.weight".into()),
            }
            .into());
        }
        // No output.weight: the head is tied to the embedding (Qwen2.5, SmolLM2).
        let head = if ld.has("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output = ld.lin(head, e, cfg.n_vocab)?;
        let freq_factors = match file.tensor("rope_freqs.weight") {
            Some(_) => Some(
                load_f32(file, "rope_freqs.weight", device)?
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| ModelError::Tensor {
                        name: "rope_freqs.weight".into(),
                        reason: format!("{e:?}"),
                    })?,
            ),
            None => None,
        };
        let rope = Rope::new(&cfg, freq_factors);
        progress(total, total);
        Ok(Model {
            output_norm: ld.vec("output_norm.weight", e)?,
            embd,
            blocks,
            output,
            rope,
            cfg,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// A fresh KV cache for `n_ctx` positions.
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        KvCache::new(&self.cfg, n_ctx, &self.device)
    }

    /// Runs `tokens` at the next positions of `cache` (one batch) and returns the logits
    /// `[rows, n_vocab]` of the last row, or of every row when `all_logits`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor<2>, ModelError> {
        let mut out = self.forward_batch(&mut [SeqInput { tokens, cache }], all_logits)?;
        out.pop().ok_or(ModelError::EmptyBatch)
    }

    /// Runs several sequences in one batch: each `tokens` at the next positions of its own cache.
    /// The weight products run once over all rows (a decode step of N sequences reads each weight
    /// once), attention runs per sequence. Returns per sequence the logits of its last row, or of
    /// every row when `all_logits`. Every row's result is the same as in a batch of its own.
    pub fn forward_batch(
        &self,
        seqs: &mut [SeqInput<'_>],
        all_logits: bool,
    ) -> Result<Vec<Tensor<2>>, ModelError> {
        if seqs.is_empty() || seqs.iter().any(|s| s.tokens.is_empty()) {
            return Err(ModelError::EmptyBatch);
        }
        let mut ids = Vec::new();
        let mut ropes = Vec::with_capacity(seqs.len());
        for s in seqs.iter() {
            let (t, start) = (s.tokens.len(), s.cache.len);
            if start + t > s.cache.capacity() {
                return Err(ModelError::ContextFull {
                    needed: start + t,
                    capacity: s.cache.capacity(),
                });
            }
            if s.cache.layers.len() != self.blocks.len() {
                return Err(ModelError::CacheMismatch {
                    layers: s.cache.layers.len(),
                    expected: self.blocks.len(),
                });
            }
            ids.extend_from_slice(s.tokens);
            ropes.push((self.rope.tables(start, t, &self.device), start, t));
        }
        let inputs: Vec<AttnInput<'_>> = ropes
            .iter()
            .map(|((cos, sin), start, _)| AttnInput {
                cfg: &self.cfg,
                rope: &self.rope,
                cos,
                sin,
                start: *start,
            })
            .collect();
        // The rows whose logits are wanted: (first row, count) per sequence.
        let mut keep = Vec::with_capacity(ropes.len());
        let mut row = 0;
        for (_, _, t) in &ropes {
            keep.push(if all_logits {
                (row, *t)
            } else {
                (row + t - 1, 1)
            });
            row += t;
        }
        let mut x = self.embd.rows(&ids, &self.device)?;
        let mut layers: Vec<_> = seqs.iter_mut().map(|s| s.cache.layers.iter_mut()).collect();
        let last = self.blocks.len().saturating_sub(1);
        for (l, b) in self.blocks.iter().enumerate() {
            let mut parts: Vec<AttnPart<'_, '_>> = layers
                .iter_mut()
                .zip(&inputs)
                .zip(&ropes)
                .filter_map(|((it, input), (_, _, t))| {
                    it.next().map(|cache| AttnPart {
                        rows: *t,
                        cache,
                        input,
                    })
                })
                .collect();
            let xn = rms_norm(x.clone(), &b.attn_norm, self.cfg.rms_eps);
            let h = match &b.attn {
                Mixer::Gqa(a) => a.forward_batch(xn, &mut parts),
                Mixer::Mla(a) => a.forward_batch(xn, &mut parts),
            };
            x = x + h;
            if l == last && !all_logits {
                // Every row's keys and values are in the cache now; past the last attention only
                // the rows whose logits are wanted matter (llama.cpp's `inp_out_ids`), so the last
                // feed-forward and the output head run on those alone.
                x = gather_rows(x, &keep);
            }
            let xn = rms_norm(x.clone(), &b.ffn_norm, self.cfg.rms_eps);
            let h = match &b.ffn {
                Ffn::Dense(f) => f.forward(xn),
                Ffn::Moe(m) => m.forward(xn),
            };
            x = x + h;
        }
        for s in seqs.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        if self.blocks.is_empty() && !all_logits {
            x = gather_rows(x, &keep);
        }
        let logits = self
            .output
            .forward(rms_norm(x, &self.output_norm, self.cfg.rms_eps));
        if keep.len() == 1 {
            return Ok(vec![logits]);
        }
        let mut out = Vec::with_capacity(keep.len());
        let mut row = 0;
        for &(_, n) in &keep {
            out.push(logits.clone().narrow(0, row, n));
            row += n;
        }
        Ok(out)
    }
}

/// The rows `(first, count)` of `x`, in order, as one tensor (ranges in order and disjoint: when
/// they cover every row, `x` itself).
fn gather_rows(x: Tensor<2>, rows: &[(usize, usize)]) -> Tensor<2> {
    if rows.iter().map(|&(_, n)| n).sum::<usize>() == x.dims()[0] {
        return x;
    }
    match rows {
        [(r, n)] => x.narrow(0, *r, *n),
        _ => Tensor::cat(
            rows.iter()
                .map(|&(r, n)| x.clone().narrow(0, r, n))
                .collect(),
            0,
        ),
    }
}

/// One sequence of a batched forward: its new tokens and its cache.
#[derive(Debug)]
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// Bytes of weights one decoded token reads: every matrix once, except the token embedding, of
/// which it reads one row (unless the output head is tied to it, then all of it), and the routed
/// expert stacks (`*_exps`), of which it reads `n_expert_used` of `n_expert` experts.
pub fn weight_bytes_per_token(file: &GgufFile, cfg: &ModelConfig) -> u64 {
    let tied = file.tensor("output.weight").is_none();
    let experts = cfg
        .moe
        .as_ref()
        .map(|m| (m.n_expert_used as u64, m.n_expert.max(1) as u64));
    file.tensors()
        .iter()
        .map(|t| {
            if t.name() == "token_embd.weight" && !tied {
                let rows = t.dims().get(1).copied().unwrap_or(1).max(1);
                t.n_bytes() / rows
            } else if let (Some((used, all)), true) = (experts, t.name().contains("_exps.")) {
                t.n_bytes() / all * used
            } else {
                t.n_bytes()
            }
        })
        .sum()
}
