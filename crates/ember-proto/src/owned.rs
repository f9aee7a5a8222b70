//! The owned (allocating) messages and the encode/decode entry points.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::tools::{ResponseFormat, Tool, ToolCall, ToolChoice};
use crate::validate::{self, MessageView, RequestView, has_v2_fields, request_floats};
use crate::wire::{self, Envelope};
use crate::{
    DecodeError, EncodeError, Encoding, ErrorCode, FinishReason, Timings, Usage, WIRE_VERSION,
    fixed, v1,
};

/// One chat message (OpenAI shape).
///
/// Postcard: `role`, `content` (each a varint length and UTF-8 bytes), then (wire version 2)
/// `tool_calls` and `tool_call_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// The calls an `assistant` message made (tool-call history); empty otherwise.
    pub tool_calls: Vec<ToolCall>,
    /// Which call a `tool` message answers (the call's `id`); OpenAI clients send it, Ollama's
    /// do not (its tool messages answer the calls in order).
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message from `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A generation request: a chat (`messages`) or a raw completion (`prompt`), exactly one.
///
/// Postcard encodes every field in this order (`Option` as a 0/1 tag then the value, `Vec` as a
/// varint count then the elements, integers as varints, `top_k` zigzagged, floats as 4
/// little-endian bytes, `stream` as one 0/1 byte). The last four fields and the messages' tool
/// fields are new in wire version 2; a version 1 request (which has none of them) is still read. The derived serde impls are that postcard
/// shape; the JSON shape is produced by [`encode_request`] and read by [`decode_request`] only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Wire version; [`WIRE_VERSION`].
    pub v: u8,
    /// Correlation id for MQTT v3.1.1 clients, echoed in every reply; at most 256 bytes.
    pub id: Option<String>,
    /// The topic to reply on, for MQTT v3.1.1 clients (v5 clients use the Response Topic).
    pub reply_to: Option<String>,
    /// Which model to use; the daemon's default when `None`.
    pub model: Option<String>,
    /// The chat so far; empty when `prompt` is given.
    pub messages: Vec<Message>,
    /// A raw completion prompt, sent to the model without a chat template.
    pub prompt: Option<String>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Top-k sampling (≤ 0 disables).
    pub top_k: Option<i32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Min-p sampling.
    pub min_p: Option<f32>,
    /// Sampler seed; random when `None`.
    pub seed: Option<u64>,
    /// Strings that end generation.
    pub stop: Vec<String>,
    /// Repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Send [`Chunk`]s as text is generated, then the [`Final`].
    pub stream: bool,
    /// How to report a reasoning model's thinking: `"none"` keeps `<think>…</think>` inline in the
    /// text; otherwise it goes to `reasoning`.
    pub reasoning_format: Option<String>,
    /// The shape the answer must have; free text when `None`. Decoding is constrained by it, so
    /// the answer always parses (and validates against the schema) unless cut by `max_tokens`
    /// (`finish_reason` `length`).
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call; their calls come back in [`Final::tool_calls`].
    pub tools: Vec<Tool>,
    /// Whether and which tools must be called; `Auto` when `None`.
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)`: at most one call per answer.
    pub parallel_tool_calls: Option<bool>,
}

impl Default for Request {
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

impl Request {
    /// Checks the rules a decoded request must follow: `v` is [`WIRE_VERSION`]; exactly one of
    /// `prompt` and a non-empty `messages`; every role one of [`ROLES`](crate::ROLES); `reply_to`,
    /// if any, a [`valid_publish_topic`](crate::valid_publish_topic); every float finite; `id` at
    /// most [`MAX_ID_LEN`](crate::MAX_ID_LEN) bytes. Sampling ranges are the server's business.
    pub fn validate(&self) -> Result<(), DecodeError> {
        validate::check(RequestView {
            v: self.v,
            id: self.id.as_deref(),
            reply_to: self.reply_to.as_deref(),
            has_prompt: self.prompt.is_some(),
            n_messages: self.messages.len(),
            messages: self.messages.iter().map(|m| MessageView {
                role: &m.role,
                has_calls: !m.tool_calls.is_empty(),
                has_call_id: m.tool_call_id.is_some(),
            }),
            has_v2_fields: has_v2_fields!(self),
            floats: request_floats!(self),
        })
    }
}

/// A piece of a streamed reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// The request's `id`, if it had one.
    pub id: Option<String>,
    /// 0 for the first chunk of a reply, then 1, 2, …
    pub seq: u32,
    /// New answer text (may be empty when only `reasoning` advanced).
    pub delta: String,
    /// New thinking text, for reasoning models.
    pub reasoning: Option<String>,
}

/// The end of a reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Final {
    /// The request's `id`, if it had one.
    pub id: Option<String>,
    /// The whole answer.
    pub text: String,
    /// The whole thinking text, for reasoning models.
    pub reasoning: Option<String>,
    /// The tool calls the answer made (wire version 2), with `finish_reason`
    /// [`FinishReason::ToolCalls`]; every one names a tool of the request and its arguments
    /// validate against that tool's schema. Their markup is not in `text`.
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Where the time went.
    pub timings: Timings,
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The request's `id`, if it had one (and could be read).
    pub id: Option<String>,
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// Anything the daemon publishes in reply to a request.
///
/// Postcard: the version byte, the variant index (0, 1, 2), then the variant's fields in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A piece of a streamed reply.
    Chunk(Chunk),
    /// The end of a reply.
    Final(Final),
    /// A failure.
    Error(ErrorReply),
}

impl Response {
    /// The request `id` this reply carries.
    pub fn id(&self) -> Option<&str> {
        match self {
            Response::Chunk(c) => c.id.as_deref(),
            Response::Final(f) => f.id.as_deref(),
            Response::Error(e) => e.id.as_deref(),
        }
    }
}

impl From<Chunk> for Response {
    fn from(c: Chunk) -> Self {
        Response::Chunk(c)
    }
}

impl From<Final> for Response {
    fn from(f: Final) -> Self {
        Response::Final(f)
    }
}

impl From<ErrorReply> for Response {
    fn from(e: ErrorReply) -> Self {
        Response::Error(e)
    }
}

/// Decodes a request and checks it with [`Request::validate`].
///
/// Postcard: the first byte must be a version this build reads, [`WIRE_VERSION`] or 1 (else
/// [`DecodeError::UnsupportedVersion`] before anything else is read); the message must fill
/// `bytes` exactly. A version 1 request decodes with `v` 1 and none of the version 2 fields;
/// answer it with [`encode_response_as`] in version 1. JSON: see the crate
/// docs; without the `std` feature it is [`DecodeError::UnsupportedContentType`].
pub fn decode_request(enc: Encoding, bytes: &[u8]) -> Result<Request, DecodeError> {
    let req: Request = match enc {
        Encoding::Postcard => match wire::version(bytes)? {
            1 => v1::decode_request(bytes)?,
            _ => wire::from_postcard(bytes)?,
        },
        Encoding::Json => return decode_request_json(bytes),
    };
    req.validate()?;
    Ok(req)
}

#[cfg(feature = "std")]
fn decode_request_json(bytes: &[u8]) -> Result<Request, DecodeError> {
    crate::json::decode_request(bytes)
}

#[cfg(not(feature = "std"))]
fn decode_request_json(_: &[u8]) -> Result<Request, DecodeError> {
    Err(DecodeError::UnsupportedContentType)
}

/// Encodes a request as is (it is not validated, so that tests can send bad ones). Postcard uses
/// the layout of the request's `v`: version 1 for `v` 1 (then without tool fields, else
/// [`EncodeError::Serialize`]), the current one otherwise.
///
/// JSON refuses NaN and infinite floats ([`EncodeError::NonFiniteFloat`]) and needs `std`
/// ([`EncodeError::UnsupportedEncoding`] without it).
pub fn encode_request(enc: Encoding, req: &Request) -> Result<Vec<u8>, EncodeError> {
    match enc {
        Encoding::Postcard if req.v == 1 => v1::encode_request(req),
        Encoding::Postcard => postcard::to_allocvec(req).map_err(wire::ser_error),
        #[cfg(feature = "std")]
        Encoding::Json => crate::json::encode_request(req),
        #[cfg(not(feature = "std"))]
        Encoding::Json => Err(EncodeError::UnsupportedEncoding),
    }
}

/// Encodes a response: postcard is the version byte then the [`Response`]; JSON is one of the
/// three object shapes in the crate docs.
///
/// JSON refuses NaN and infinite timings ([`EncodeError::NonFiniteFloat`]) and needs `std`.
pub fn encode_response(enc: Encoding, resp: &Response) -> Result<Vec<u8>, EncodeError> {
    encode_response_as(enc, WIRE_VERSION, resp)
}

/// [`encode_response`] in wire version `version`: the version of the request answered, so that a
/// client built for version 1 can read it. Version 1 has no tool calls
/// ([`EncodeError::Serialize`] if the response has some); JSON is the same in both versions.
pub fn encode_response_as(
    enc: Encoding,
    version: u8,
    resp: &Response,
) -> Result<Vec<u8>, EncodeError> {
    match (enc, version) {
        (Encoding::Postcard, 1) => v1::encode_response(resp),
        (Encoding::Postcard, WIRE_VERSION) => {
            postcard::to_allocvec(&Envelope::new(resp)).map_err(wire::ser_error)
        }
        (Encoding::Postcard, _) => Err(EncodeError::Serialize(
            "no such wire version to encode in".into(),
        )),
        #[cfg(feature = "std")]
        (Encoding::Json, _) => crate::json::encode_response(resp),
        #[cfg(not(feature = "std"))]
        (Encoding::Json, _) => Err(EncodeError::UnsupportedEncoding),
    }
}

/// Decodes a response.
///
/// Postcard: the version byte ([`WIRE_VERSION`] or 1), then the [`Response`], filling `bytes`
/// exactly. JSON: told apart by keys, `error` an error, `delta` a chunk, `text` a final; an
/// optional `"v"` must be 1 or 2.
pub fn decode_response(enc: Encoding, bytes: &[u8]) -> Result<Response, DecodeError> {
    match enc {
        Encoding::Postcard => match wire::version(bytes)? {
            1 => v1::decode_response(bytes),
            _ => wire::from_postcard(wire::response_body(bytes)?),
        },
        #[cfg(feature = "std")]
        Encoding::Json => crate::json::decode_response(bytes),
        #[cfg(not(feature = "std"))]
        Encoding::Json => Err(DecodeError::UnsupportedContentType),
    }
}

// Fixed → owned conversions.

fn owned(s: &str) -> String {
    String::from(s)
}

impl From<&fixed::ToolCall<'_>> for ToolCall {
    fn from(c: &fixed::ToolCall<'_>) -> Self {
        ToolCall {
            id: owned(c.id),
            name: owned(c.name),
            arguments: owned(c.arguments),
        }
    }
}

impl From<&fixed::Tool<'_>> for Tool {
    fn from(t: &fixed::Tool<'_>) -> Self {
        Tool {
            name: owned(t.name),
            description: t.description.map(owned),
            parameters: t.parameters.map(owned),
        }
    }
}

impl From<&fixed::ToolChoice<'_>> for ToolChoice {
    fn from(c: &fixed::ToolChoice<'_>) -> Self {
        match c {
            fixed::ToolChoice::Auto => ToolChoice::Auto,
            fixed::ToolChoice::None => ToolChoice::None,
            fixed::ToolChoice::Required => ToolChoice::Required,
            fixed::ToolChoice::Function(name) => ToolChoice::Function(owned(name)),
        }
    }
}

impl From<&fixed::ResponseFormat<'_>> for ResponseFormat {
    fn from(f: &fixed::ResponseFormat<'_>) -> Self {
        match f {
            fixed::ResponseFormat::JsonObject => ResponseFormat::JsonObject,
            fixed::ResponseFormat::JsonSchema(s) => ResponseFormat::JsonSchema(owned(s)),
        }
    }
}

impl From<&fixed::Message<'_>> for Message {
    fn from(m: &fixed::Message<'_>) -> Self {
        Message {
            role: owned(m.role),
            content: owned(m.content),
            tool_calls: m.tool_calls.iter().map(ToolCall::from).collect(),
            tool_call_id: m.tool_call_id.map(owned),
        }
    }
}

impl<const M: usize> From<&fixed::Request<'_, M>> for Request {
    fn from(r: &fixed::Request<'_, M>) -> Self {
        Request {
            v: r.v,
            id: r.id.map(owned),
            reply_to: r.reply_to.map(owned),
            model: r.model.map(owned),
            messages: r.messages.iter().map(Message::from).collect(),
            prompt: r.prompt.map(owned),
            max_tokens: r.max_tokens,
            temperature: r.temperature,
            top_k: r.top_k,
            top_p: r.top_p,
            min_p: r.min_p,
            seed: r.seed,
            stop: r.stop.iter().copied().map(owned).collect(),
            repeat_penalty: r.repeat_penalty,
            presence_penalty: r.presence_penalty,
            frequency_penalty: r.frequency_penalty,
            stream: r.stream,
            reasoning_format: r.reasoning_format.map(owned),
            response_format: r.response_format.as_ref().map(ResponseFormat::from),
            tools: r.tools.iter().map(Tool::from).collect(),
            tool_choice: r.tool_choice.as_ref().map(ToolChoice::from),
            parallel_tool_calls: r.parallel_tool_calls,
        }
    }
}

impl From<&fixed::Chunk<'_>> for Chunk {
    fn from(c: &fixed::Chunk<'_>) -> Self {
        Chunk {
            id: c.id.map(owned),
            seq: c.seq,
            delta: owned(c.delta),
            reasoning: c.reasoning.map(owned),
        }
    }
}

impl From<&fixed::Final<'_>> for Final {
    fn from(f: &fixed::Final<'_>) -> Self {
        Final {
            id: f.id.map(owned),
            text: owned(f.text),
            reasoning: f.reasoning.map(owned),
            tool_calls: f.tool_calls.iter().map(ToolCall::from).collect(),
            finish_reason: f.finish_reason,
            usage: f.usage,
            timings: f.timings,
        }
    }
}

impl From<&fixed::ErrorReply<'_>> for ErrorReply {
    fn from(e: &fixed::ErrorReply<'_>) -> Self {
        ErrorReply {
            id: e.id.map(owned),
            code: e.code,
            message: owned(e.message),
        }
    }
}

impl From<&fixed::Response<'_>> for Response {
    fn from(r: &fixed::Response<'_>) -> Self {
        match r {
            fixed::Response::Chunk(c) => Response::Chunk(c.into()),
            fixed::Response::Final(f) => Response::Final(f.into()),
            fixed::Response::Error(e) => Response::Error(e.into()),
        }
    }
}
