//! Decode and encode errors.

use core::fmt;

use crate::ErrorCode;

#[cfg(feature = "alloc")]
use alloc::string::String;

/// A human-readable explanation attached to [`DecodeError::Malformed`], [`DecodeError::Invalid`]
/// and [`EncodeError::Serialize`].
///
/// A fixed message in `no_std` builds; with `alloc` it may also carry a formatted one (a
/// `serde_json` message with line and column, a field name). Compare it, print it or read it with
/// [`Detail::as_str`]; its representation is private so that enabling `alloc` changes no type.
#[derive(Clone)]
pub struct Detail(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    #[cfg(feature = "alloc")]
    Owned(String),
}

impl Detail {
    /// The explanation as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            #[cfg(feature = "alloc")]
            Repr::Owned(s) => s,
        }
    }
}

impl From<&'static str> for Detail {
    fn from(s: &'static str) -> Self {
        Detail(Repr::Static(s))
    }
}

#[cfg(feature = "alloc")]
impl From<String> for Detail {
    fn from(s: String) -> Self {
        Detail(Repr::Owned(s))
    }
}

impl AsRef<str> for Detail {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Detail {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Detail {}

impl PartialEq<str> for Detail {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Detail {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message could not be decoded.
///
/// [`DecodeError::code`] gives the [`ErrorCode`] a server replies with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The Content-Type is neither JSON nor postcard, or JSON was asked of a build without `std`.
    UnsupportedContentType,
    /// The message declares a wire version this build does not speak (it speaks
    /// [`WIRE_VERSION`](crate::WIRE_VERSION)).
    UnsupportedVersion(u8),
    /// The bytes are not a message at all: truncated or garbage postcard, JSON syntax errors, a JSON
    /// document that is not an object, trailing bytes.
    Malformed(Detail),
    /// The message parses but breaks a rule: a field of the wrong type or out of range, both or
    /// neither of `prompt` and `messages`, an unknown role, a bad reply topic, a non-finite float.
    Invalid(Detail),
}

impl DecodeError {
    /// The error code a server puts in its [`ErrorReply`](crate::ErrorReply) for this failure:
    /// `unsupported_content_type`, `unsupported_version`, otherwise `bad_request`.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnsupportedContentType => ErrorCode::UnsupportedContentType,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::Malformed(_) | DecodeError::Invalid(_) => ErrorCode::BadRequest,
        }
    }

    pub(crate) fn invalid(detail: impl Into<Detail>) -> Self {
        DecodeError::Invalid(detail.into())
    }

    pub(crate) fn malformed(detail: impl Into<Detail>) -> Self {
        DecodeError::Malformed(detail.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnsupportedContentType => write!(
                f,
                "unsupported content type (expected {} or {})",
                crate::CONTENT_TYPE_JSON,
                crate::CONTENT_TYPE_POSTCARD
            ),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "unsupported wire version {v} (this build speaks version {})",
                crate::WIRE_VERSION
            ),
            DecodeError::Malformed(d) => write!(f, "malformed message: {d}"),
            DecodeError::Invalid(d) => write!(f, "invalid message: {d}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer (fixed forms) is too small for the message.
    BufferTooSmall,
    /// JSON was asked of a build without the `std` feature.
    UnsupportedEncoding,
    /// JSON cannot carry NaN or infinity; the named field holds one.
    NonFiniteFloat(&'static str),
    /// The serializer failed for another reason.
    Serialize(Detail),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("output buffer too small for the message"),
            EncodeError::UnsupportedEncoding => {
                f.write_str("JSON encoding needs ember-proto's `std` feature")
            }
            EncodeError::NonFiniteFloat(field) => {
                write!(f, "`{field}` is NaN or infinite, which JSON cannot carry")
            }
            EncodeError::Serialize(d) => write!(f, "cannot encode message: {d}"),
        }
    }
}

impl core::error::Error for EncodeError {}
