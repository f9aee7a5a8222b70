//! A GGUF file opened over a read-only memory map, with zero-copy views of tensor data.
//!
//! Weights are never copied: a tensor's bytes are a slice of the map, so a model costs its pages
//! only as they are touched (and an MoE token touches only its experts).

use crate::error::GgufError;
use crate::parse::{GgufHeader, Limits, TensorInfo, parse_with_limits};
use crate::value::Metadata;
use std::path::{Path, PathBuf};

/// The file's bytes: a read-only map (or an owned buffer) behind a reference-counted handle, so
/// tensor views can be handed to other owners (Burn tensors) without copying or lifetimes.
struct Source(bytes::Bytes);

impl Source {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An open, validated GGUF file.
pub struct GgufFile {
    path: Option<PathBuf>,
    source: Source,
    header: GgufHeader,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.source.bytes().len())
            .field("version", &self.header.version)
            .field("metadata_entries", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` read-only and parses it with the default limits.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        Self::open_with_limits(path, &Limits::default())
    }

    /// [`GgufFile::open`] with explicit limits.
    pub fn open_with_limits(path: impl AsRef<Path>, limits: &Limits) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let source = if meta.len() == 0 {
            Source(bytes::Bytes::new())
        } else {
            // SAFETY: the map is read-only and private to this process. Like every mmap-based model
            // loader (llama.cpp included), we rely on the file not being truncated or rewritten while
            // it is open; replacing it (new inode, as downloads and `cp` to a temp name do) is safe.
            Source(bytes::Bytes::from_owner(
                unsafe { memmap2::Mmap::map(&file) }.map_err(io)?,
            ))
        };
        let header = parse_with_limits(source.bytes(), limits)?;
        Ok(GgufFile {
            path: Some(path.to_owned()),
            source,
            header,
        })
    }

    /// Parses an in-memory file (tests, fuzzing, embedded models).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let header = parse_with_limits(&bytes, &Limits::default())?;
        Ok(GgufFile {
            path: None,
            source: Source(bytes.into()),
            header,
        })
    }

    /// The path it was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.source.bytes().len() as u64
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// The metadata table.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.iter().find(|t| t.name() == name)
    }

    /// The bytes of a tensor of this file (zero-copy). `None` if `info` belongs to another file
    /// whose layout does not fit this one.
    pub fn tensor_data(&self, info: &TensorInfo) -> Option<&[u8]> {
        let start = self.header.data_offset.checked_add(info.offset())?;
        let end = start.checked_add(info.n_bytes())?;
        self.source
            .bytes()
            .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    /// The bytes of a tensor as a reference-counted handle on the same memory (zero-copy; keeps
    /// the map alive as long as the handle lives).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Option<bytes::Bytes> {
        let start = usize::try_from(self.header.data_offset.checked_add(info.offset())?).ok()?;
        let end = start.checked_add(usize::try_from(info.n_bytes()).ok()?)?;
        (end <= self.source.0.len()).then(|| self.source.0.slice(start..end))
    }

    /// `general.architecture`, e.g. `llama`, `qwen2`, `deepseek2`.
    pub fn architecture(&self) -> Result<&str, crate::MetadataError> {
        self.metadata().get_str("general.architecture")
    }
}
