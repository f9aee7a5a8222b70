//! `deepseek2` (DeepSeek-V2, V2-Lite, V3, R1): multi-head latent attention in every block
//! (`mla.rs`), a dense SwiGLU feed-forward in the first `leading_dense_block_count` blocks and
//! DeepSeekMoE (`moe.rs`) after; NORM rope with YaRN (set in `config.rs`). As llama.cpp
//! `src/models/deepseek2.cpp`.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::loader::Loader;
use crate::mla::MlaAttention;
use crate::model::{Block, Ffn, Mixer, dense_ffn};
use crate::moe::Moe;

/// Block `i`.
pub(crate) fn block(ld: &Loader<'_>, cfg: &ModelConfig, i: usize) -> Result<Block, ModelError> {
    let p = |s: &str| format!("blk.{i}.{s}");
    let dense = cfg.moe.as_ref().is_none_or(|m| i < m.n_dense_lead);
    Ok(Block {
        attn_norm: ld.vec(&p("attn_norm.weight"), cfg.n_embd)?,
        attn: Mixer::Mla(Box::new(MlaAttention::load(ld, cfg, i)?)),
        ffn_norm: ld.vec(&p("ffn_norm.weight"), cfg.n_embd)?,
        ffn: if dense {
            Ffn::Dense(Box::new(dense_ffn(ld, cfg, i)?))
        } else {
            Ffn::Moe(Box::new(Moe::load(ld, cfg, i)?))
        },
    })
}
