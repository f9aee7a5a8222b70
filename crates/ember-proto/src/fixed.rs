//! Fixed-capacity, borrowed forms of every message, for clients without an allocator.
//!
//! Strings are `&str` borrowed from the caller (encoding) or from the received bytes (decoding:
//! zero-copy), lists are [`heapless::Vec`]s: up to `M` chat messages (a const parameter), up to
//! [`MAX_STOP`] stop strings, [`MAX_TOOLS`] tools and [`MAX_TOOL_CALLS`] calls per message or
//! reply. A JSON schema or a call's arguments is its JSON text. Their postcard bytes are identical to those of the owned forms with
//! the same content, so either side may use either form. Only postcard is available here.
//!
//! Decoding a message with more elements than a list holds fails with
//! [`DecodeError::Malformed`].

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::validate::{self, MessageView, RequestView, has_v2_fields, request_floats};
use crate::wire::{self, Envelope};
use crate::{DecodeError, EncodeError, ErrorCode, FinishReason, Timings, Usage, WIRE_VERSION};

/// Most stop strings a fixed [`Request`] holds.
pub const MAX_STOP: usize = 4;

/// Most tools a fixed [`Request`] holds.
pub const MAX_TOOLS: usize = 8;

/// Most tool calls a fixed [`Message`] or [`Final`] holds (ask for `parallel_tool_calls: false`
/// to get at most one).
pub const MAX_TOOL_CALLS: usize = 4;

/// A tool call; see [`crate::ToolCall`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall<'a> {
    /// The call's id.
    pub id: &'a str,
    /// The function called.
    pub name: &'a str,
    /// The arguments: a JSON object, as text.
    pub arguments: &'a str,
}

/// A function the model may call; see [`crate::Tool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tool<'a> {
    /// The function's name.
    pub name: &'a str,
    /// What it does, for the model.
    #[serde(borrow)]
    pub description: Option<&'a str>,
    /// The JSON Schema of its arguments, as text.
    #[serde(borrow)]
    pub parameters: Option<&'a str>,
}

/// Whether and which tools must be called; see [`crate::ToolChoice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToolChoice<'a> {
    /// As the model likes.
    Auto,
    /// No calls.
    None,
    /// At least one call.
    Required,
    /// A call of this function.
    Function(&'a str),
}

/// The shape the answer must have; see [`crate::ResponseFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseFormat<'a> {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this JSON Schema (as text).
    JsonSchema(&'a str),
}

/// One chat message; see [`crate::Message`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
    /// The calls an `assistant` message made.
    #[serde(borrow)]
    pub tool_calls: Vec<ToolCall<'a>, MAX_TOOL_CALLS>,
    /// Which call a `tool` message answers.
    #[serde(borrow)]
    pub tool_call_id: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// A message from `role` saying `content`, without tool fields.
    pub const fn new(role: &'a str, content: &'a str) -> Self {
        Message {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
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
    /// The shape the answer must have.
    #[serde(borrow)]
    pub response_format: Option<ResponseFormat<'a>>,
    /// Functions the model may call.
    #[serde(borrow)]
    pub tools: Vec<Tool<'a>, MAX_TOOLS>,
    /// Whether and which tools must be called.
    #[serde(borrow)]
    pub tool_choice: Option<ToolChoice<'a>>,
    /// `Some(false)`: at most one call.
    pub parallel_tool_calls: Option<bool>,
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
            response_format: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
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
            messages: self.messages.iter().map(|m| MessageView {
                role: m.role,
                has_calls: !m.tool_calls.is_empty(),
                has_call_id: m.tool_call_id.is_some(),
            }),
            has_v2_fields: has_v2_fields!(self),
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Final<'a> {
    /// The request's `id`.
    #[serde(borrow)]
    pub id: Option<&'a str>,
    /// The whole answer.
    pub text: &'a str,
    /// The whole thinking text.
    #[serde(borrow)]
    pub reasoning: Option<&'a str>,
    /// The tool calls made.
    #[serde(borrow)]
    pub tool_calls: Vec<ToolCall<'a>, MAX_TOOL_CALLS>,
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
///
/// A [`Final`] holds its calls inline (no allocator to box them): a few hundred bytes, fixed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
