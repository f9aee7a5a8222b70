//! The GGUF parser: header, metadata, tensor table, layout validation.
//!
//! Follows the GGUF spec (ggml `docs/gguf.md`) and the checks of ggml's `gguf_init_from_file_impl`
//! (`ggml/src/gguf.cpp`), made stricter where a hostile file could otherwise make us allocate or read
//! past the end: every count is checked against the bytes that remain before anything is allocated,
//! strings and arrays are capped, dimension products are overflow-checked, and tensors must be
//! aligned, inside the file and disjoint.

use crate::error::GgufError;
use crate::value::{Array, Metadata, Value};
use ember_quant::GgmlType;

/// The magic at byte 0.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// ggml's `GGML_MAX_NAME` (names must be shorter).
pub const MAX_TENSOR_NAME: u64 = 64;

/// Caps applied while parsing. The defaults are far above any real model and far below what
/// would let a small file make the reader allocate gigabytes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest metadata string or key, in bytes (a chat template is a few KiB).
    pub max_string_len: u64,
    /// Most elements in one metadata array (the largest vocabularies have ~260k tokens).
    pub max_array_len: u64,
    /// Deepest array nesting.
    pub max_array_depth: u32,
    /// Most metadata entries.
    pub max_kv_count: u64,
    /// Most tensors.
    pub max_tensor_count: u64,
    /// Most elements in one tensor.
    pub max_tensor_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string_len: 16 << 20,
            max_array_len: 16 << 20,
            max_array_depth: 4,
            max_kv_count: 1 << 16,
            max_tensor_count: 1 << 20,
            max_tensor_elements: 1 << 40,
        }
    }
}

/// One entry of the tensor table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    n_bytes: u64,
    info_offset: u64,
}

impl TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Dimensions in ggml order: `dims()[0]` is the row length (contiguous).
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }
    /// Element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }
    /// Offset of the data from the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Size of the data in bytes.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Where in the file this entry of the tensor table starts.
    pub fn info_offset(&self) -> u64 {
        self.info_offset
    }
    /// Values per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
    /// Number of rows (product of the other dims).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// Everything in a GGUF file but the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Key-value metadata.
    pub metadata: Metadata,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
}

/// Parses a GGUF header (metadata and tensor table) with the default [`Limits`], and checks that
/// every tensor's data lies inside `bytes`.
pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    parse_with_limits(bytes, &Limits::default())
}

/// [`parse`] with explicit limits.
pub fn parse_with_limits(bytes: &[u8], limits: &Limits) -> Result<GgufHeader, GgufError> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        limits,
    };
    let magic = r.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = r.u32("version")?;
    if version & 0xffff == 0 && version != 0 {
        return Err(GgufError::BigEndian { raw: version });
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count = r.count("tensor count", limits.max_tensor_count, 8 + 4 + 4 + 8)?;
    let kv_count = r.count("metadata entry count", limits.max_kv_count, 8 + 4 + 1)?;

    let mut metadata = Metadata::default();
    for _ in 0..kv_count {
        let at = r.pos as u64;
        let key = r.string("metadata key")?;
        let type_id = r.u32("metadata value type")?;
        let value = r.value(&key, type_id, 0)?;
        if !metadata.insert(key.clone(), value) {
            return Err(GgufError::DuplicateKey { key, offset: at });
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_int() {
            Some(a) if a > 0 && (a as u128).is_power_of_two() && a <= 1 << 30 => a as u64,
            Some(a) => {
                return Err(GgufError::BadAlignment {
                    value: a.clamp(0, u64::MAX.into()) as u64,
                });
            }
            None => return Err(GgufError::BadAlignment { value: 0 }),
        },
    };

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut names = std::collections::HashSet::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        let t = r.tensor_info(alignment)?;
        if !names.insert(t.name.clone()) {
            return Err(GgufError::DuplicateTensor {
                name: t.name,
                offset: t.info_offset,
            });
        }
        tensors.push(t);
    }

    let file_len = bytes.len() as u64;
    let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
    check_layout(&tensors, data_offset, file_len)?;
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Every tensor inside the file, and no two sharing a byte.
fn check_layout(tensors: &[TensorInfo], data_offset: u64, file_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorOutOfFile {
                    tensor: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: data_offset
                        .saturating_add(t.offset)
                        .saturating_add(t.n_bytes),
                    file_len,
                });
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let a_end = a.offset + a.n_bytes; // in file, so no overflow
        if a_end > b.offset {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                second: b.name.clone(),
                overlap_start: data_offset + b.offset,
                overlap_end: data_offset + a_end.min(b.offset + b.n_bytes),
            });
        }
    }
    Ok(())
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos as u64,
                need: n,
                file_len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count, capped by `limit` and by what could fit in the rest of the file at `min_size` bytes
    /// per item: a huge count is rejected before anything is allocated for it.
    fn count(&mut self, what: &str, limit: u64, min_size: u64) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let n = self.u64(what)?;
        if n > limit {
            return Err(GgufError::TooLarge {
                what: what.to_owned(),
                offset,
                value: n,
                limit,
            });
        }
        let need = n.saturating_mul(min_size);
        if need > self.remaining() {
            return Err(GgufError::Truncated {
                what: format!("{what} {n}"),
                offset,
                need,
                file_len: self.buf.len() as u64,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64(what)?;
        if len > self.limits.max_string_len {
            return Err(GgufError::TooLarge {
                what: format!("{what} length"),
                offset,
                value: len,
                limit: self.limits.max_string_len,
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_owned(),
            offset: offset + 8,
        })
    }

    fn value(&mut self, key: &str, type_id: u32, depth: u32) -> Result<Value, GgufError> {
        let what = || format!("value of '{key}'");
        Ok(match type_id {
            0 => Value::U8(u8::from_le_bytes(self.array(&what())?)),
            1 => Value::I8(i8::from_le_bytes(self.array(&what())?)),
            2 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => Value::Bool(self.bool(&what())?),
            8 => Value::String(self.string(&what())?),
            9 => Value::Array(self.array_value(key, depth)?),
            10 => Value::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            _ => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_owned(),
                    offset: self.pos as u64 - 4,
                    type_id,
                });
            }
        })
    }

    /// A bool byte; like ggml, any non-zero byte reads as true.
    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        Ok(self.array::<1>(what)?[0] != 0)
    }

    fn array_value(&mut self, key: &str, depth: u32) -> Result<Array, GgufError> {
        let offset = self.pos as u64;
        if depth >= self.limits.max_array_depth {
            return Err(GgufError::NestingTooDeep {
                key: key.to_owned(),
                offset,
                limit: self.limits.max_array_depth,
            });
        }
        let elem = self.u32("array element type")?;
        let min_size = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            _ => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_owned(),
                    offset,
                    type_id: elem,
                });
            }
        };
        let what = format!("array length of '{key}'");
        let n = self.count(&what, self.limits.max_array_len, min_size)? as usize;
        macro_rules! prim {
            ($variant:ident, $t:ty) => {{
                let raw = self.take((n * size_of::<$t>()) as u64, &what)?;
                Array::$variant(
                    raw.chunks_exact(size_of::<$t>())
                        .map(|c| {
                            let mut a = [0u8; size_of::<$t>()];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            0 => prim!(U8, u8),
            1 => prim!(I8, i8),
            2 => prim!(U16, u16),
            3 => prim!(I16, i16),
            4 => prim!(U32, u32),
            5 => prim!(I32, i32),
            6 => prim!(F32, f32),
            10 => prim!(U64, u64),
            11 => prim!(I64, i64),
            12 => prim!(F64, f64),
            7 => Array::Bool((0..n).map(|_| self.bool(&what)).collect::<Result<_, _>>()?),
            8 => {
                let item = format!("string in '{key}'");
                Array::String(
                    (0..n)
                        .map(|_| self.string(&item))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => {
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let inner = self.array_value(key, depth + 1)?;
                    items.push(inner);
                }
                Array::Array(items)
            }
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, GgufError> {
        let info_offset = self.pos as u64;
        let name_len_at = self.pos as u64;
        let name = self.string("tensor name")?;
        if name.len() as u64 >= MAX_TENSOR_NAME {
            return Err(GgufError::TooLarge {
                what: format!("name length of tensor '{name}'"),
                offset: name_len_at,
                value: name.len() as u64,
                limit: MAX_TENSOR_NAME - 1,
            });
        }
        let shape_err = |reason: String| GgufError::BadTensorShape {
            tensor: name.clone(),
            offset: info_offset,
            reason,
        };
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(shape_err(format!(
                "{n_dims} dimensions (must be 1 to {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for i in 0..n_dims {
            let d = self.u64("tensor dimension")?;
            if d == 0 {
                return Err(shape_err(format!("dimension {i} is zero")));
            }
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= self.limits.max_tensor_elements)
                .ok_or_else(|| {
                    shape_err(format!(
                        "{} values overflow the limit of {}",
                        dims.iter()
                            .chain([&d])
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join("x"),
                        self.limits.max_tensor_elements
                    ))
                })?;
            dims.push(d);
        }
        let type_id = self.u32("tensor type")?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.clone(),
            offset: info_offset,
            type_id,
        })?;
        if dims[0] % ty.block_size() as u64 != 0 {
            return Err(shape_err(format!(
                "row length {} is not a multiple of the {} block size {}",
                dims[0],
                ty,
                ty.block_size()
            )));
        }
        let n_bytes = ty
            .bytes_for(n_elements)
            .ok_or_else(|| shape_err(format!("{n_elements} values of {ty} overflow")))?;
        let offset = self.u64("tensor data offset")?;
        if offset % alignment != 0 {
            return Err(GgufError::TensorMisaligned {
                tensor: name,
                data_offset: offset,
                alignment,
            });
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
            info_offset,
        })
    }
}
