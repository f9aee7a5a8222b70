//! ember-gguf: GGUF v2/v3 over a read-only memory map.
//!
//! GGUF is untrusted input. Every offset and size is bounds-checked, strings, arrays and dimension
//! products are capped, and tensors must be aligned, inside the file and disjoint; each failure is a
//! [`GgufError`] naming what is wrong and the byte offset where it was found. Nothing here panics on
//! any input (a fuzz target in `fuzz/` checks it).

mod error;
mod file;
mod parse;
mod value;
mod write;

pub use ember_quant::GgmlType;
pub use error::{GgufError, MetadataError};
pub use file::GgufFile;
pub use parse::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufHeader, Limits, MAX_DIMS, MAX_TENSOR_NAME, TensorInfo,
    parse, parse_with_limits,
};
pub use value::{Array, Metadata, Value};
pub use write::GgufWriter;
