//! One file per architecture: what it takes from the shared decoder.

use crate::config::{Arch, ModelConfig};
use crate::error::ModelError;
use crate::loader::Loader;
use crate::model::Block;

pub mod deepseek2;
pub mod llama;
pub mod qwen2;

/// Loads block `i` the way `cfg.arch` lays it out.
pub(crate) fn block(ld: &Loader<'_>, cfg: &ModelConfig, i: usize) -> Result<Block, ModelError> {
    match cfg.arch {
        Arch::Llama => crate::model::gqa_block(ld, cfg, llama::SPEC, i),
        Arch::Qwen2 => crate::model::gqa_block(ld, cfg, qwen2::SPEC, i),
        Arch::Deepseek2 => deepseek2::block(ld, cfg, i),
    }
}
