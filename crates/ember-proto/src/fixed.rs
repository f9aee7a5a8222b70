//! Fixed-capacity, borrowed forms of every message, for clients without an allocator.
//!
//! Strings are `&str` borrowed from the caller (encoding) or from the received bytes (decoding:
//! zero-copy), lists are [`heapless::Vec`]s: up to `M` chat messages (a const parameter) and up to
//! [`MAX_STOP`] stop strings. Their postcard bytes are identical to those of the owned forms with
//! the same content, so either side may use either form. Only postcard is available here.
//!
//! Decoding a message with more elements than a list holds fails with
//! [`DecodeError::Malformed`].

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::validate::{self, RequestView, request_floats};
use crate::wire::{self, Envelope};
use crate::{DecodeError, EncodeError, ErrorCode, FinishReason, Timings, Usage, WIRE_VERSION};

/// Most stop strings a fixed [`Request`] holds.
pub const MAX_STOP: usize = 4;

/// One chat message; see [`crate::Message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
}

/// A generation request with at most `M` messages; see [`crate::Request`] for the fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request<'a, const M: usize> {
    /// Wire version; [`WIRE_VERSION`].
    pub v: u8,
    /// Correlation id echoed in every reply (MQTT v3.1.1 clients); at most 256 bytes.
    #[serde(borrow)]
    pub id: Option<&'a str>,
    /// The topic to reply on (MQTT v3.1.1 clients).
    #[serde(borrow)]
    pub reply_to: Option<&'a str>,
    /// Which model to use.
    #[serde(borrow)]
    pub model: Option<&'a str>,
    /// The chat so far; empty when `prompt` is given.
    #[serde(borrow)]
    pub messages: Vec<Message<'a>, M>,
    /// A raw completion prompt.
    #[serde(borrow)]
    pub prompt: Option<&'a str>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Top-k sampling.
    pub top_k: Option<i32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Min-p sampling.
    pub min_p: Option<f32>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// Strings that end generation.
    #[serde(borrow)]
    pub stop: Vec<&'a str, MAX_STOP>,
    /// Repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Stream [`Chunk`]s before the [`Final`].
    pub stream: bool,
    /// `"none"` keeps `<think>` inline in the text.
    #[serde(borrow)]
    pub reasoning_format: Option<&'a str>,
}

impl<const M: usize> Default for Request<'_, M> {
    fn default() -> Self {
        Request {
            v: WIRE_VERSION,
            id: None,
            reply_to: None,
            model: None,
            messages: Vec::new(),
            prompt: None,
            max_tokens: None,
            temperature: None,
            top_k: None,
            top_p: None,
            min_p: None,
            seed: None,
            stop: Vec::new(),
            repeat_penalty: None,
            presence_penalty: None,
            frequency_penalty: None,
            stream: false,
            reasoning_format: None,
        }
    }
}

impl<const M: usize> Request<'_, M> {
    /// The same rules as [`crate::Request::validate`].
    pub fn validate(&self) -> Result<(), DecodeError> {
        validate::check(RequestView {
            v: self.v,
            id: self.id,
            reply_to: self.reply_to,
            has_prompt: self.prompt.is_some(),
            n_messages: self.messages.len(),
            roles: self.messages.iter().map(|m| m.role),
            floats: request_floats!(self),
        })
    }
}

/// A piece of a streamed reply; see [`crate::Chunk`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk<'a> {
    /// The request's `id`.
    #[serde(borrow)]
    pub id: Option<&'a str>,
    /// 0, 1, 2, … within a reply.
    pub seq: u32,
    /// New answer text.
    pub delta: &'a str,
    /// New thinking text.
    #[serde(borrow)]
    pub reasoning: Option<&'a str>,
}

/// The end of a reply; see [`crate::Final`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Final<'a> {
    /// The request's `id`.
    #[serde(borrow)]
    pub id: Option<&'a str>,
    /// The whole answer.
    pub text: &'a str,
    /// The whole thinking text.
    #[serde(borrow)]
    pub reasoning: Option<&'a str>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Where the time went.
    pub timings: Timings,
}

/// A failed request; see [`crate::ErrorReply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    /// The request's `id`.
    #[serde(borrow)]
    pub id: Option<&'a str>,
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: &'a str,
}

/// Anything the daemon publishes in reply; see [`crate::Response`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// A piece of a streamed reply.
    #[serde(borrow)]
    Chunk(Chunk<'a>),
    /// The end of a reply.
    #[serde(borrow)]
    Final(Final<'a>),
    /// A failure.
    #[serde(borrow)]
    Error(ErrorReply<'a>),
}

impl<'a> Response<'a> {
    /// The request `id` this reply carries.
    pub fn id(&self) -> Option<&'a str> {
        match self {
            Response::Chunk(c) => c.id,
            Response::Final(f) => f.id,
            Response::Error(e) => e.id,
        }
    }
}

/// Encodes a request into `buf` (postcard) and returns the used part of it.
///
/// [`EncodeError::BufferTooSmall`] when it does not fit. Not validated, like
/// [`crate::encode_request`].
pub fn encode_request<'b, const M: usize>(
    req: &Request<'_, M>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    postcard::to_slice(req, buf).map_err(wire::ser_error)
}

/// Decodes a postcard request, borrowing its strings from `bytes`, and validates it.
pub fn decode_request<'a, const M: usize>(bytes: &'a [u8]) -> Result<Request<'a, M>, DecodeError> {
    wire::check_version(bytes)?;
    let req: Request<'a, M> = wire::from_postcard(bytes)?;
    req.validate()?;
    Ok(req)
}

/// Encodes a response into `buf` (postcard: the version byte, then the response) and returns the
/// used part of it.
pub fn encode_response<'b>(
    resp: &Response<'_>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    postcard::to_slice(&Envelope::new(resp), buf).map_err(wire::ser_error)
}

/// Decodes a postcard response, borrowing its strings from `bytes` (no copy).
pub fn decode_response<'a>(bytes: &'a [u8]) -> Result<Response<'a>, DecodeError> {
    wire::from_postcard(wire::response_body(bytes)?)
}
