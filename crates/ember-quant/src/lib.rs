//! ember-quant: GGML quantization block types and their scalar reference dequantization.
//!
//! The block layouts follow `ggml/src/ggml-common.h`; the dequantizers follow
//! `ggml/src/ggml-quants.c` (`dequantize_row_*`). The scalar code here is the reference every fast
//! kernel is tested against.

pub mod blocks;
mod dequant;
pub mod dequant_k;
mod error;
pub mod kernels;
pub mod pool;
mod types;

pub use blocks::{
    Block, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K,
    BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K, QK, QK_K, as_blocks,
};
pub use dequant::{
    check_sizes, dequantize, dequantize_block_q4_0, dequantize_block_q4_1, dequantize_block_q5_0,
    dequantize_block_q5_1, dequantize_block_q8_0, dequantize_block_q8_1, dequantize_tensor,
    dequantize_to_vec,
};
pub use dequant_k::{
    dequantize_block_q2_k, dequantize_block_q3_k, dequantize_block_q4_k, dequantize_block_q5_k,
    dequantize_block_q6_k, dequantize_block_q8_k,
};
pub use error::QuantError;
pub use kernels::{QuantizedActivations, matmul_rows, quantize_activation, vec_dot, vec_dot_type};
pub use types::{ALL_TYPES, GgmlType};
