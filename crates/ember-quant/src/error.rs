//! Errors from dequantization: unsupported types and byte/value counts that do not fit together.
//!
//! The set of supported types is [`GgmlType::is_supported`] (matching the `to_float` entries of the
//! `type_traits` table in `ggml/src/ggml.c` that ember implements).

use std::fmt;

use crate::types::{ALL_TYPES, GgmlType};

/// Why a tensor could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no dequantizer in ember.
    #[error("{}", UnsupportedMessage { ty: *ty, tensor: tensor.as_deref() })]
    Unsupported {
        /// The offending type.
        ty: GgmlType,
        /// The tensor, when the caller named it (see [`QuantError::with_tensor`]).
        tensor: Option<String>,
    },
    /// The source is not exactly the size `values` values of `ty` take.
    #[error("{ty} data for {values} values must be {expected_bytes} bytes, got {got_bytes}")]
    SizeMismatch {
        /// The type.
        ty: GgmlType,
        /// Values requested.
        values: usize,
        /// Bytes those values take (`u64::MAX` if that overflows).
        expected_bytes: u64,
        /// Bytes given.
        got_bytes: usize,
    },
    /// The value count is not a whole number of blocks.
    #[error("{values} values is not a whole number of {ty} blocks ({block_size} values per block)")]
    NotBlockMultiple {
        /// The type.
        ty: GgmlType,
        /// Values requested.
        values: usize,
        /// Values per block of `ty`.
        block_size: usize,
    },
}

impl QuantError {
    /// An [`QuantError::Unsupported`] with no tensor name.
    pub fn unsupported(ty: GgmlType) -> Self {
        QuantError::Unsupported { ty, tensor: None }
    }

    /// Attaches a tensor name to an [`QuantError::Unsupported`] error (other kinds are returned
    /// unchanged; their messages already carry every number needed).
    pub fn with_tensor(self, name: &str) -> Self {
        match self {
            QuantError::Unsupported { ty, .. } => QuantError::Unsupported {
                ty,
                tensor: Some(name.to_owned()),
            },
            other => other,
        }
    }
}

struct UnsupportedMessage<'a> {
    ty: GgmlType,
    tensor: Option<&'a str>,
}

impl fmt::Display for UnsupportedMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tensor {
            Some(name) => write!(
                f,
                "tensor '{name}' has type {}, which ember does not support",
                self.ty
            )?,
            None => write!(f, "type {} is not supported by ember", self.ty)?,
        }
        f.write_str(" (supported: ")?;
        for (i, t) in ALL_TYPES.iter().filter(|t| t.is_supported()).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_names_type_and_tensor() {
        let e = QuantError::unsupported(GgmlType::IQ2_XXS).with_tensor("blk.0.ffn_down.weight");
        assert_eq!(
            e.to_string(),
            "tensor 'blk.0.ffn_down.weight' has type IQ2_XXS, which ember does not support \
             (supported: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, BF16)"
        );
        let e = QuantError::unsupported(GgmlType::MXFP4);
        assert!(
            e.to_string()
                .starts_with("type MXFP4 is not supported by ember (supported: F32, F16,")
        );
    }

    #[test]
    fn with_tensor_leaves_size_errors_alone() {
        let e = QuantError::NotBlockMultiple {
            ty: GgmlType::Q4_K,
            values: 100,
            block_size: 256,
        };
        assert_eq!(e.clone().with_tensor("x"), e);
        assert_eq!(
            e.to_string(),
            "100 values is not a whole number of Q4_K blocks (256 values per block)"
        );
        let e = QuantError::SizeMismatch {
            ty: GgmlType::Q4_0,
            values: 64,
            expected_bytes: 36,
            got_bytes: 35,
        };
        assert_eq!(
            e.to_string(),
            "Q4_0 data for 64 values must be 36 bytes, got 35"
        );
    }
}
