//! The dense decoder all Llama-family architectures share: embedding lookup, `n_layer` blocks of
//! (RMSNorm → attention → residual, RMSNorm → SwiGLU → residual), final norm and output head (tied
//! to the embedding when `output.weight` is absent). The files under `arch/` say which optional
//! parts an architecture has; this file never branches on the architecture name.

use crate::config::{Arch, ModelConfig};
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::layers::{Attention, AttnInput, AttnPart, FeedForward, Rope, rms_norm};
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

#[derive(Debug)]
struct Block {
    attn_norm: Tensor<1>,
    attn: Attention,
    ffn_norm: Tensor<1>,
    ffn: FeedForward,
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
    /// on a GPU each layer is dequantized and uploaded, which takes a while on large models).
    pub fn load_with_progress(
        file: &GgufFile,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(file.metadata())?;
        let spec = match cfg.arch {
            Arch::Llama => crate::arch::llama::SPEC,
            Arch::Qwen2 => crate::arch::qwen2::SPEC,
        };
        Self::load_with(file, cfg, spec, device, progress)
    }

    fn load_with(
        file: &GgufFile,
        cfg: ModelConfig,
        spec: DecoderSpec,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        let total = cfg.n_layer + 1;
        let lin = |name: &str| QLinear::load(file, name, device);
        let vec = |name: &str| load_f32(file, name, device);
        let check = |l: &QLinear, name: &str, k: usize, n: usize| {
            if l.in_features() == k && l.out_features() == n {
                Ok(())
            } else {
                Err(ModelError::Tensor {
                    name: name.to_owned(),
                    reason: format!(
                        "shape [{}, {}], expected [{k}, {n}]",
                        l.in_features(),
                        l.out_features()
                    ),
                })
            }
        };
        let (e, hd) = (cfg.n_embd, cfg.head_dim);
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            let opt_bias = |s: &str| {
                if spec.qkv_bias {
                    vec(&p(s)).map(Some)
                } else {
                    Ok(None)
                }
            };
            let attn = Attention {
                wq: lin(&p("attn_q.weight"))?,
                wk: lin(&p("attn_k.weight"))?,
                wv: lin(&p("attn_v.weight"))?,
                wo: lin(&p("attn_output.weight"))?,
                bq: opt_bias("attn_q.bias")?,
                bk: opt_bias("attn_k.bias")?,
                bv: opt_bias("attn_v.bias")?,
            };
            check(&attn.wq, &p("attn_q.weight"), e, cfg.n_head * hd)?;
            check(&attn.wk, &p("attn_k.weight"), e, cfg.n_head_kv * hd)?;
            check(&attn.wv, &p("attn_v.weight"), e, cfg.n_head_kv * hd)?;
            check(&attn.wo, &p("attn_output.weight"), cfg.n_head * hd, e)?;
            let ffn = FeedForward {
                gate: lin(&p("ffn_gate.weight"))?,
                up: lin(&p("ffn_up.weight"))?,
                down: lin(&p("ffn_down.weight"))?,
            };
            check(&ffn.gate, &p("ffn_gate.weight"), e, cfg.n_ff)?;
            check(&ffn.up, &p("ffn_up.weight"), e, cfg.n_ff)?;
            check(&ffn.down, &p("ffn_down.weight"), cfg.n_ff, e)?;
            blocks.push(Block {
                attn_norm: vec(&p("attn_norm.weight"))?,
                attn,
                ffn_norm: vec(&p("ffn_norm.weight"))?,
                ffn,
            });
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
        let output = match file.tensor("output.weight") {
            Some(_) => lin("output.weight")?,
            None => lin("token_embd.weight")?,
        };
        check(&output, "output.weight", e, cfg.n_vocab)?;
        let freq_factors = match file.tensor("rope_freqs.weight") {
            Some(_) => Some(
                vec("rope_freqs.weight")?
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
            output_norm: vec("output_norm.weight")?,
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
        let mut x = self.embd.rows(&ids, &self.device)?;
        let mut layers: Vec<_> = seqs.iter_mut().map(|s| s.cache.layers.iter_mut()).collect();
        for b in &self.blocks {
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
            let h = b.attn.forward_batch(
                rms_norm(x.clone(), &b.attn_norm, self.cfg.rms_eps),
                &mut parts,
            );
            x = x + h;
            let h = b
                .ffn
                .forward(rms_norm(x.clone(), &b.ffn_norm, self.cfg.rms_eps));
            x = x + h;
        }
        for s in seqs.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        // The rows whose logits are wanted, gathered so the output head runs once.
        let mut keep = Vec::new();
        let mut row = 0;
        for (_, _, t) in &ropes {
            if all_logits {
                keep.push((row, *t));
            } else {
                keep.push((row + t - 1, 1));
            }
            row += t;
        }
        let x = if all_logits {
            x
        } else if keep.len() == 1 {
            x.narrow(0, keep[0].0, 1)
        } else {
            Tensor::cat(
                keep.iter()
                    .map(|&(r, _)| x.clone().narrow(0, r, 1))
                    .collect(),
                0,
            )
        };
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

/// One sequence of a batched forward: its new tokens and its cache.
#[derive(Debug)]
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}
