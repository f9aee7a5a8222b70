//! Errors of the GGUF reader. Every variant that comes from file content says where (byte offset) and
//! what was found, so a user can tell a truncated download from a foreign file or a hostile one.

use std::path::PathBuf;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic bytes are {found:02x?} (expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },
    #[error("big-endian GGUF files are not supported (version field reads {raw:#010x} at byte 4)")]
    BigEndian { raw: u32 },
    #[error("unsupported GGUF version {version} at byte 4 (ember reads versions 2 and 3)")]
    UnsupportedVersion { version: u32 },
    #[error(
        "file truncated: {what} at byte {offset} needs {need} bytes, but the file has {file_len}"
    )]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        file_len: u64,
    },
    #[error("{what} at byte {offset} is {value}, over the limit of {limit}")]
    TooLarge {
        what: String,
        offset: u64,
        value: u64,
        limit: u64,
    },
    #[error("metadata key '{key}' at byte {offset}: unknown value type {type_id}")]
    UnknownValueType {
        key: String,
        offset: u64,
        type_id: u32,
    },
    #[error("metadata key '{key}' at byte {offset}: arrays nested deeper than {limit} levels")]
    NestingTooDeep {
        key: String,
        offset: u64,
        limit: u32,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key '{key}' appears twice (second at byte {offset})")]
    DuplicateKey { key: String, offset: u64 },
    #[error("tensor '{name}' appears twice (second at byte {offset})")]
    DuplicateTensor { name: String, offset: u64 },
    #[error("general.alignment is {value}; it must be a non-zero power of two")]
    BadAlignment { value: u64 },
    #[error("tensor '{tensor}' (info at byte {offset}): unknown ggml type id {type_id}")]
    UnknownTensorType {
        tensor: String,
        offset: u64,
        type_id: u32,
    },
    #[error("tensor '{tensor}' (info at byte {offset}): {reason}")]
    BadTensorShape {
        tensor: String,
        offset: u64,
        reason: String,
    },
    #[error(
        "tensor '{tensor}': data offset {data_offset} is not a multiple of the alignment {alignment}"
    )]
    TensorMisaligned {
        tensor: String,
        data_offset: u64,
        alignment: u64,
    },
    #[error("tensor '{tensor}': data bytes {start}..{end} lie outside the file ({file_len} bytes)")]
    TensorOutOfFile {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap: bytes {overlap_start}..{overlap_end}")]
    TensorOverlap {
        first: String,
        second: String,
        overlap_start: u64,
        overlap_end: u64,
    },
}

/// A metadata lookup that did not find what the caller needed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetadataError {
    #[error("GGUF metadata key '{key}' is missing")]
    Missing { key: String },
    #[error("GGUF metadata key '{key}' holds {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("GGUF metadata key '{key}' holds {value}, which does not fit in {target}")]
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },
}
