//! Postcard plumbing shared by the owned and the fixed forms: the version byte, the response
//! envelope, error mapping.

use serde::{Deserialize, Serialize};

use crate::{DecodeError, EncodeError, WIRE_VERSION};

/// What a postcard response is on the wire: the version byte, then the response enum (variant
/// index, then its fields). Serialize-only: decoders check the byte by hand, then decode the body.
#[derive(Serialize)]
pub(crate) struct Envelope<'r, B> {
    pub(crate) v: u8,
    pub(crate) body: &'r B,
}

impl<'r, B> Envelope<'r, B> {
    pub(crate) fn new(body: &'r B) -> Self {
        Envelope {
            v: WIRE_VERSION,
            body,
        }
    }
}

/// Reads the version byte that starts every postcard message (nothing else is looked at first):
/// [`WIRE_VERSION`] or an older one the owned forms still read ([`OLDEST_READ`](crate::OLDEST_READ)).
pub(crate) fn version(bytes: &[u8]) -> Result<u8, DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::malformed("empty message")),
        Some(&v) if (crate::OLDEST_READ..=WIRE_VERSION).contains(&v) => Ok(v),
        Some(&v) => Err(DecodeError::UnsupportedVersion(v)),
    }
}

/// [`version`], and it must be [`WIRE_VERSION`] (the fixed forms read only that one).
pub(crate) fn check_version(bytes: &[u8]) -> Result<(), DecodeError> {
    match version(bytes)? {
        WIRE_VERSION => Ok(()),
        v => Err(DecodeError::UnsupportedVersion(v)),
    }
}

/// Decodes exactly one `T` from `bytes`; trailing bytes are an error.
pub(crate) fn from_postcard<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(de_error)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::malformed("trailing bytes after the message"))
    }
}

/// A response's body: the bytes after the (already checked) version byte.
pub(crate) fn response_body(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    check_version(bytes)?;
    Ok(bytes.get(1..).unwrap_or_default())
}

pub(crate) fn de_error(e: postcard::Error) -> DecodeError {
    use postcard::Error as E;
    DecodeError::malformed(match e {
        E::DeserializeUnexpectedEnd => "postcard: truncated, the input ends inside the message",
        E::DeserializeBadVarint => "postcard: varint too long for its type",
        E::DeserializeBadBool => "postcard: bool byte neither 0 nor 1",
        E::DeserializeBadChar => "postcard: invalid char",
        E::DeserializeBadUtf8 => "postcard: string is not UTF-8",
        E::DeserializeBadOption => "postcard: Option tag neither 0 nor 1",
        E::DeserializeBadEnum => "postcard: enum variant index out of range",
        E::DeserializeBadEncoding => "postcard: bad encoding",
        E::SerdeDeCustom => {
            "postcard: invalid value (unknown enum variant, or more elements than a fixed form holds)"
        }
        _ => "postcard: undecodable message",
    })
}

pub(crate) fn ser_error(e: postcard::Error) -> EncodeError {
    match e {
        postcard::Error::SerializeBufferFull => EncodeError::BufferTooSmall,
        _ => EncodeError::Serialize("postcard serialization failed".into()),
    }
}
