//! `ModelConfig::from_gguf`: every hyperparameter read once from GGUF metadata, with llama.cpp's
//! defaults (`src/llama-model.cpp` `load_hparams`, keys from `src/llama-arch.cpp`).

use crate::error::ModelError;
use ember_gguf::{Metadata, MetadataError};

/// The architectures ember runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (Llama 2/3, SmolLM, Mistral-style dense models).
    Llama,
    /// `qwen2` (Qwen2/2.5, DeepSeek-R1-Distill-Qwen): q/k/v biases, NEOX rope.
    Qwen2,
}

impl Arch {
    fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            other => Err(ModelError::UnsupportedArch(other.to_owned())),
        }
    }
}

/// How RoPE pairs dimensions (llama.cpp `LLAMA_ROPE_TYPE_NORM` / `_NEOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKind {
    /// Adjacent pairs (x[2i], x[2i+1]): Llama.
    Norm,
    /// Halves (x[i], x[i + d/2]): Qwen2.
    Neox,
}

/// Rotary embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub kind: RopeKind,
    /// Rotated dimensions per head (the rest pass through).
    pub dim: usize,
    pub freq_base: f32,
    /// Linear position scaling (`rope.scaling.type = linear`): positions are multiplied by this.
    pub freq_scale: f32,
}

/// Hyperparameters of a dense decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
}

impl ModelConfig {
    /// Reads the configuration of a `llama` or `qwen2` GGUF.
    pub fn from_gguf(meta: &Metadata) -> Result<Self, ModelError> {
        let arch_name = meta.get_str("general.architecture")?;
        let arch = Arch::parse(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key =
            |k: &str| -> Result<usize, MetadataError> { meta.get_int::<usize>(&key(k)) };
        let opt_usize = |k: &str| meta.opt(&key(k), |m, k| m.get_int::<usize>(k));

        let n_embd = usize_key("embedding_length")?;
        let n_head = usize_key("attention.head_count")?;
        let n_head_kv = opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let n_layer = usize_key("block_count")?;
        let n_ff = usize_key("feed_forward_length")?;
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || n_embd % n_head != 0 {
            return Err(ModelError::Config(format!(
                "{n_head} attention heads, {n_head_kv} KV heads and embedding {n_embd} do not fit together"
            )));
        }
        let head_dim = opt_usize("attention.key_length")?.unwrap_or(n_embd / n_head);
        let v_dim = opt_usize("attention.value_length")?.unwrap_or(head_dim);
        if v_dim != head_dim {
            return Err(ModelError::Config(format!(
                "key length {head_dim} != value length {v_dim}"
            )));
        }
        let n_vocab = match opt_usize("vocab_size")? {
            Some(n) => n,
            None => meta.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let rms_eps = meta.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_dim = opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope dimension {rope_dim} with head size {head_dim}"
            )));
        }
        let freq_base = meta
            .opt(&key("rope.freq_base"), Metadata::get_f32)?
            .unwrap_or(10000.0);
        let freq_scale = match meta.opt(&key("rope.scaling.type"), Metadata::get_str)? {
            None | Some("none") => 1.0,
            Some("linear") => {
                let f = meta
                    .opt(&key("rope.scaling.factor"), Metadata::get_f32)?
                    .unwrap_or(1.0);
                if f > 0.0 { 1.0 / f } else { 1.0 }
            }
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "rope scaling '{other}' is not supported for {arch_name}"
                )));
            }
        };
        let kind = match arch {
            Arch::Llama => RopeKind::Norm,
            Arch::Qwen2 => RopeKind::Neox,
        };
        Ok(ModelConfig {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
            n_ctx_train: opt_usize("context_length")?.unwrap_or(4096),
            rms_eps,
            rope: RopeConfig {
                kind,
                dim: rope_dim,
                freq_base,
                freq_scale,
            },
        })
    }

    /// Bytes of KV cache per token (f16 K and V for every layer).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layer * self.n_head_kv * self.head_dim * 2
    }
}
