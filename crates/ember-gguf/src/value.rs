//! GGUF metadata values and typed look-ups.
//!
//! Value type ids follow the GGUF spec (`gguf_metadata_value_type` in ggml's `docs/gguf.md`). Arrays
//! are stored typed (a token list is a `Vec<String>`, scores a `Vec<f32>`), so a 150k-entry vocabulary
//! costs what its values cost and nothing per element on top.

use crate::error::MetadataError;
use std::collections::HashMap;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array; all elements share one type. Arrays may nest.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF name of the element type.
    pub fn elem_type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::F32(_) => "f32",
            Array::Bool(_) => "bool",
            Array::String(_) => "string",
            Array::Array(_) => "array",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F64(_) => "f64",
        }
    }

    /// Integer elements widened to i64 (`None` for non-integer arrays or u64 values past i64::MAX).
    pub fn as_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Array::I64(v) => v.clone(),
            Array::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<_>>()?,
            _ => return None,
        })
    }
}

impl Value {
    /// The GGUF name of the value's type (`"u32"`, `"string"`, `"array<string>"`...).
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => "u8".into(),
            Value::I8(_) => "i8".into(),
            Value::U16(_) => "u16".into(),
            Value::I16(_) => "i16".into(),
            Value::U32(_) => "u32".into(),
            Value::I32(_) => "i32".into(),
            Value::F32(_) => "f32".into(),
            Value::Bool(_) => "bool".into(),
            Value::String(_) => "string".into(),
            Value::Array(a) => format!("array<{}>[{}]", a.elem_type_name(), a.len()),
            Value::U64(_) => "u64".into(),
            Value::I64(_) => "i64".into(),
            Value::F64(_) => "f64".into(),
        }
    }

    /// Any integer value as i128 (wide enough for every GGUF integer type).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any float value as f64.
    pub fn as_float(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// The metadata table: keys in file order, with a name index.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Adds an entry; returns `false` (and changes nothing) when the key is already present.
    pub(crate) fn insert(&mut self, key: String, value: Value) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        true
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, MetadataError> {
        self.get(key).ok_or_else(|| MetadataError::Missing {
            key: key.to_owned(),
        })
    }

    fn wrong(key: &str, expected: &'static str, v: &Value) -> MetadataError {
        MetadataError::WrongType {
            key: key.to_owned(),
            expected,
            found: v.type_name(),
        }
    }

    fn wrong_array(key: &str, expected: &'static str, a: &Array) -> MetadataError {
        let found = format!("array<{}>[{}]", a.elem_type_name(), a.len());
        MetadataError::WrongType {
            key: key.to_owned(),
            expected,
            found,
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, MetadataError> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(Self::wrong(key, "string", v)),
        }
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Result<bool, MetadataError> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "bool", v)),
        }
    }

    /// Any integer value that fits in `T`.
    pub fn get_int<T: TryFrom<i128>>(&self, key: &str) -> Result<T, MetadataError> {
        let v = self.require(key)?;
        let i = v.as_int().ok_or_else(|| Self::wrong(key, "integer", v))?;
        T::try_from(i).map_err(|_| MetadataError::OutOfRange {
            key: key.to_owned(),
            value: i.to_string(),
            target: std::any::type_name::<T>(),
        })
    }

    /// `get_int::<u32>`.
    pub fn get_u32(&self, key: &str) -> Result<u32, MetadataError> {
        self.get_int(key)
    }

    /// `get_int::<u64>`.
    pub fn get_u64(&self, key: &str) -> Result<u64, MetadataError> {
        self.get_int(key)
    }

    /// A float value (f32 or f64; integers are accepted too, as some converters write them).
    pub fn get_f32(&self, key: &str) -> Result<f32, MetadataError> {
        let v = self.require(key)?;
        match (v.as_float(), v.as_int()) {
            (Some(f), _) => Ok(f as f32),
            (None, Some(i)) => Ok(i as f32),
            _ => Err(Self::wrong(key, "float", v)),
        }
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Result<&Array, MetadataError> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(Self::wrong(key, "array", v)),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], MetadataError> {
        match self.get_array(key)? {
            Array::String(v) => Ok(v),
            a => Err(Self::wrong_array(key, "array<string>", a)),
        }
    }

    /// An array of f32.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], MetadataError> {
        match self.get_array(key)? {
            Array::F32(v) => Ok(v),
            a => Err(Self::wrong_array(key, "array<f32>", a)),
        }
    }

    /// An array of any integer type, widened to i64.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>, MetadataError> {
        let a = self.get_array(key)?;
        a.as_i64_vec()
            .ok_or_else(|| Self::wrong_array(key, "array of integers", a))
    }

    /// `Some(value)` when present, `None` when missing; a wrong type is still an error.
    pub fn opt<'a, T>(
        &'a self,
        key: &str,
        get: impl FnOnce(&'a Self, &str) -> Result<T, MetadataError>,
    ) -> Result<Option<T>, MetadataError> {
        match get(self, key) {
            Ok(v) => Ok(Some(v)),
            Err(MetadataError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
