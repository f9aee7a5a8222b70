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
    /// `deepseek2` (DeepSeek-V2, V2-Lite, V3, R1): multi-head latent attention and DeepSeekMoE.
    Deepseek2,
}

impl Arch {
    fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "deepseek2" => Ok(Arch::Deepseek2),
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
    /// Position scaling (`1 / rope.scaling.factor` for `linear` and `yarn`): positions are
    /// multiplied by this.
    pub freq_scale: f32,
    /// YaRN (`rope.scaling.type = yarn`); `None` for plain or linear scaling.
    pub yarn: Option<Yarn>,
    /// Magnitude of the rotation (ggml's `attn_factor`): cos and sin are multiplied by it (and,
    /// under YaRN, by `1 + 0.1·ln(1/freq_scale)` as ggml does).
    pub attn_factor: f32,
}

/// YaRN settings (llama.cpp's defaults: `ext_factor` 1, `beta_fast` 32, `beta_slow` 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    /// Training context of the unscaled model (`rope.scaling.original_context_length`).
    pub n_ctx_orig: usize,
    pub ext_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// `rope.scaling.yarn_log_multiplier` as llama.cpp uses it (the stored value / 0.1); 0 when
    /// absent.
    pub log_mul: f32,
}

/// Multi-head latent attention (DeepSeek-V2/V3): queries through an optional low-rank
/// bottleneck, keys and values from one compressed latent per token.
#[derive(Debug, Clone, PartialEq)]
pub struct MlaConfig {
    /// Rank of the query bottleneck (`attn_q_a`/`attn_q_b`); 0 = one plain `attn_q` (V2-Lite).
    pub q_lora_rank: usize,
    /// Width of the compressed KV latent the cache stores.
    pub kv_lora_rank: usize,
    /// Per-head query/key dimensions without and with rotary position.
    pub qk_nope: usize,
    pub qk_rope: usize,
    /// Per-head value dimension after decompression.
    pub v_head: usize,
    /// Softmax scale of the attention scores (YaRN's mscale² / sqrt(qk_nope + qk_rope)).
    pub kq_scale: f32,
}

/// How the router's logits become expert probabilities (`expert_gating_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts (DeepSeek-V2, the default when the key is absent).
    Softmax,
    /// Independent sigmoids (DeepSeek-V3/R1).
    Sigmoid,
}

/// A mixture-of-experts feed-forward (DeepSeekMoE): shared experts every token runs, plus
/// `n_expert_used` of `n_expert` routed ones.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Leading layers with a dense feed-forward instead (`leading_dense_block_count`).
    pub n_dense_lead: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_expert_shared: usize,
    /// Hidden width of one expert.
    pub n_ff_exp: usize,
    /// Group-limited routing: experts in `n_group` groups, only the best `n_group_used` groups
    /// are eligible (1 / 1 = no groups).
    pub n_group: usize,
    pub n_group_used: usize,
    pub gating: Gating,
    /// Selected weights divided by their sum (`expert_weights_norm`).
    pub norm_weights: bool,
    /// Routed-output scale (`expert_weights_scale`).
    pub weights_scale: f32,
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
    /// Multi-head latent attention (`deepseek2`); `None` for grouped-query attention.
    pub mla: Option<MlaConfig>,
    /// Mixture-of-experts feed-forward (`deepseek2`); `None` for dense models.
    pub moe: Option<MoeConfig>,
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
        if n_head == 0
            || n_head_kv == 0
            || n_head % n_head_kv != 0
            || (n_embd % n_head != 0 && arch != Arch::Deepseek2)
        {
            return Err(ModelError::Config(format!(
                "{n_head} attention heads, {n_head_kv} KV heads and embedding {n_embd} do not fit together"
            )));
        }
        let mla = match arch {
            Arch::Deepseek2 => Some(read_mla(meta, arch_name)?),
            _ => None,
        };
        // With MLA, `key_length`/`value_length` describe the absorbed form (latent + rope): the
        // per-head sizes are the `_mla` keys.
        let head_dim = match &mla {
            Some(m) => m.qk_nope + m.qk_rope,
            None => opt_usize("attention.key_length")?.unwrap_or(n_embd / n_head),
        };
        if mla.is_none() {
            let v_dim = opt_usize("attention.value_length")?.unwrap_or(head_dim);
            if v_dim != head_dim {
                return Err(ModelError::Config(format!(
                    "key length {head_dim} != value length {v_dim}"
                )));
            }
        }
        let n_vocab = match opt_usize("vocab_size")? {
            Some(n) => n,
            None => meta.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let rms_eps = meta.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_dim = match &mla {
            Some(m) => m.qk_rope,
            None => opt_usize("rope.dimension_count")?.unwrap_or(head_dim),
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope dimension {rope_dim} with head size {head_dim}"
            )));
        }
        let freq_base = meta
            .opt(&key("rope.freq_base"), Metadata::get_f32)?
            .unwrap_or(10000.0);
        let n_ctx_train = opt_usize("context_length")?.unwrap_or(4096);
        let factor = || -> Result<f32, ModelError> {
            let f = meta
                .opt(&key("rope.scaling.factor"), Metadata::get_f32)?
                .unwrap_or(1.0);
            Ok(if f.is_finite() && f > 0.0 { f } else { 1.0 })
        };
        let (freq_scale, yarn) = match meta.opt(&key("rope.scaling.type"), Metadata::get_str)? {
            None | Some("none") => (1.0, None),
            Some("linear") => (1.0 / factor()?, None),
            Some("yarn") => {
                let log_mul = meta
                    .opt(&key("rope.scaling.yarn_log_multiplier"), Metadata::get_f32)?
                    // llama.cpp cancels the 0.1 its converter multiplied in.
                    .map_or(0.0, |m| m / 0.1);
                let n_ctx_orig = opt_usize("rope.scaling.original_context_length")?
                    .filter(|&n| n > 0)
                    .unwrap_or(n_ctx_train);
                let yarn = Yarn {
                    n_ctx_orig,
                    ext_factor: 1.0,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    log_mul,
                };
                (1.0 / factor()?, Some(yarn))
            }
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "rope scaling '{other}' is not supported for {arch_name}"
                )));
            }
        };
        let attn_factor = yarn_attn_factor(freq_scale, yarn.as_ref(), arch)
            * meta
                .opt(&key("rope.scaling.attn_factor"), Metadata::get_f32)?
                .unwrap_or(1.0);
        let mla = mla.map(|mut m| {
            m.kq_scale = mla_kq_scale(
                m.qk_nope + m.qk_rope,
                freq_scale,
                attn_factor,
                yarn.as_ref(),
            );
            m
        });
        let kind = match arch {
            Arch::Llama | Arch::Deepseek2 => RopeKind::Norm,
            Arch::Qwen2 => RopeKind::Neox,
        };
        let moe = match arch {
            Arch::Deepseek2 => Some(read_moe(meta, arch_name, n_layer)?),
            _ => None,
        };
        Ok(ModelConfig {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv: if mla.is_some() { 1 } else { n_head_kv },
            head_dim,
            n_ff,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope: RopeConfig {
                kind,
                dim: rope_dim,
                freq_base,
                freq_scale,
                yarn,
                attn_factor,
            },
            mla,
            moe,
        })
    }

    /// Elements of one cached position per layer: K and V of every KV head, or for MLA the
    /// compressed latent plus the rope key (the latent doubles as V).
    pub fn kv_elements_per_layer(&self) -> usize {
        match &self.mla {
            Some(m) => m.kv_lora_rank + m.qk_rope,
            None => 2 * self.n_head_kv * self.head_dim,
        }
    }

    /// Bytes of KV cache per token (f16, every layer): `2·n_head_kv·head_dim·2·n_layer`, or with
    /// MLA `(kv_lora_rank + qk_rope)·2·n_layer`.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.n_layer * self.kv_elements_per_layer() * 2
    }
}

/// The MLA shapes of a `deepseek2` file (llama.cpp `llama_model_deepseek2::load_arch_hparams`).
fn read_mla(meta: &Metadata, arch_name: &str) -> Result<MlaConfig, ModelError> {
    let key = |k: &str| format!("{arch_name}.{k}");
    let get = |k: &str| meta.get_int::<usize>(&key(k));
    let opt = |k: &str| meta.opt(&key(k), |m, k| m.get_int::<usize>(k));
    let n_head = get("attention.head_count")?;
    let kv_lora_rank = get("attention.kv_lora_rank")?;
    let q_lora_rank = opt("attention.q_lora_rank")?.unwrap_or(0);
    let qk_rope = get("rope.dimension_count")?;
    // Files converted before the `_mla` keys carry the per-head sizes in key/value_length.
    let k_mla = match opt("attention.key_length_mla")? {
        Some(k) => k,
        None => get("attention.key_length")?,
    };
    let v_head = match opt("attention.value_length_mla")? {
        Some(v) => v,
        None => get("attention.value_length")?,
    };
    if n_head == 0
        || kv_lora_rank == 0
        || qk_rope == 0
        || qk_rope % 2 != 0
        || k_mla <= qk_rope
        || v_head == 0
    {
        return Err(ModelError::Config(format!(
            "MLA shapes do not fit together: {n_head} heads, kv rank {kv_lora_rank}, key length \
             {k_mla} with rope {qk_rope}, value length {v_head}"
        )));
    }
    Ok(MlaConfig {
        q_lora_rank,
        kv_lora_rank,
        qk_nope: k_mla - qk_rope,
        qk_rope,
        v_head,
        kq_scale: 1.0 / (k_mla as f32).sqrt(),
    })
}

/// The DeepSeekMoE settings of a `deepseek2` file, with llama.cpp's defaults.
fn read_moe(meta: &Metadata, arch_name: &str, n_layer: usize) -> Result<MoeConfig, ModelError> {
    let key = |k: &str| format!("{arch_name}.{k}");
    let opt = |k: &str| meta.opt(&key(k), |m, k| m.get_int::<usize>(k));
    let n_expert = opt("expert_count")?.unwrap_or(0);
    let n_expert_used = opt("expert_used_count")?.unwrap_or(0);
    let n_dense_lead = opt("leading_dense_block_count")?.unwrap_or(0);
    // llama.cpp allows a per-layer array; ember needs one width for all layers.
    let n_ff_exp = match meta.opt(&key("expert_feed_forward_length"), |m, k| {
        m.get_int::<usize>(k)
    }) {
        Ok(v) => v,
        Err(_) => {
            let arr = meta.get_int_array(&key("expert_feed_forward_length"))?;
            let first = arr.iter().copied().find(|&v| v > 0).unwrap_or(0);
            if arr.iter().any(|&v| v != 0 && v != first) {
                return Err(ModelError::Config(
                    "per-layer expert widths that differ are not supported".into(),
                ));
            }
            Some(usize::try_from(first).unwrap_or(0))
        }
    }
    .unwrap_or(0);
    let n_group = opt("expert_group_count")?.unwrap_or(1).max(1);
    let n_group_used = opt("expert_group_used_count")?.unwrap_or(n_group).max(1);
    let gating = match opt("expert_gating_func")?.unwrap_or(0) {
        0 | 1 => Gating::Softmax,
        2 => Gating::Sigmoid,
        other => {
            return Err(ModelError::Config(format!(
                "expert gating function {other} is not supported (1 softmax, 2 sigmoid)"
            )));
        }
    };
    let has_moe_layers = n_dense_lead < n_layer;
    if has_moe_layers
        && (n_expert == 0
            || n_expert_used == 0
            || n_expert_used > n_expert
            || n_ff_exp == 0
            || n_expert % n_group != 0
            || n_group_used > n_group
            || (n_group > 1 && n_expert / n_group < 2)
            || n_expert_used > n_group_used * (n_expert / n_group))
    {
        return Err(ModelError::Config(format!(
            "mixture of experts does not fit together: {n_expert} experts, {n_expert_used} used, \
             width {n_ff_exp}, {n_group} groups with {n_group_used} used"
        )));
    }
    Ok(MoeConfig {
        n_dense_lead,
        n_expert,
        n_expert_used,
        n_expert_shared: opt("expert_shared_count")?.unwrap_or(0),
        n_ff_exp,
        n_group,
        n_group_used,
        gating,
        norm_weights: meta
            .opt(&key("expert_weights_norm"), Metadata::get_bool)?
            .unwrap_or(false),
        weights_scale: meta
            .opt(&key("expert_weights_scale"), Metadata::get_f32)?
            .unwrap_or(1.0),
    })
}

/// ggml's `attn_factor` as llama.cpp's context sets it (`llama_context` constructor): under YaRN
/// the magnitude correction `get_mscale` is divided back out because ggml's rope multiplies it in.
fn yarn_attn_factor(freq_scale: f32, yarn: Option<&Yarn>, arch: Arch) -> f32 {
    let Some(y) = yarn else { return 1.0 };
    if y.ext_factor == 0.0 {
        return 1.0;
    }
    let get_mscale = |scale: f32, m: f32| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let factor = 1.0 / freq_scale;
    let f = if y.log_mul != 0.0 {
        let all = y.log_mul;
        let m = if arch == Arch::Deepseek2 && all != 1.0 {
            all
        } else {
            1.0
        };
        get_mscale(factor, m) / get_mscale(factor, all)
    } else {
        get_mscale(factor, 1.0)
    };
    f * (1.0 / (1.0 + 0.1 * factor.ln()))
}

/// The attention-score scale of MLA (llama.cpp `deepseek2.cpp`): YaRN's mscale squared over the
/// square root of the per-head key size.
fn mla_kq_scale(k_len: usize, freq_scale: f32, attn_factor: f32, yarn: Option<&Yarn>) -> f32 {
    let log_mul = yarn.map_or(0.0, |y| y.log_mul);
    let ln_inv = (1.0 / freq_scale).ln();
    let org = attn_factor * (1.0 + 0.1 * ln_inv);
    let mscale = org * (1.0 + 0.1 * log_mul * ln_inv);
    mscale * mscale / (k_len as f32).sqrt()
}
