//! ember-proto: the MQTT wire format spoken between `emberd` and its clients (hubs, gateways,
//! microcontrollers).
//!
//! # Messages
//!
//! A client publishes a [`Request`] to the daemon's request topic; the daemon answers on the
//! request's response topic with a [`Response`]:
//!
//! - [`Request`]: an OpenAI-shaped chat request (`messages`) or a raw completion (`prompt`),
//!   exactly one of the two, with the usual sampling parameters. MQTT v5 clients use the
//!   Response Topic and Correlation Data properties; MQTT v3.1.1 clients, which have neither, put
//!   the response topic in `reply_to` and a correlation `id` (at most 256 bytes) that the daemon
//!   echoes in every reply.
//! - [`Response::Chunk`] ([`Chunk`]): one piece of a streamed reply (`stream: true`): `seq` counts
//!   from 0, `delta` is the new text, `reasoning` the new thinking text of a reasoning model.
//! - [`Response::Final`] ([`Final`]): the end of a reply, streamed or not: the whole `text` (and
//!   `reasoning`), the `tool_calls` made, why generation stopped, token [`Usage`] and
//!   [`Timings`]. Exactly one per request that did not fail.
//!
//! # Tool calls and structured output (wire version 2)
//!
//! A request may carry OpenAI's `tools` ([`Tool`]), `tool_choice` ([`ToolChoice`]),
//! `parallel_tool_calls` and `response_format` ([`ResponseFormat`]); its messages may carry the
//! tool-call history (an assistant message's `tool_calls`, a `tool` message's `tool_call_id`).
//! The daemon constrains decoding so that every call in [`Final::tool_calls`] names a declared
//! tool with arguments valid against its schema, and an answer with a `response_format` parses
//! (and validates against the schema) — unless `max_tokens` cuts it, which `finish_reason`
//! `length` says. Calls arrive whole in the final reply, never in chunks; their markup is never
//! in `text`. In postcard, a schema or arguments object is its JSON text (a string), so a
//! microcontroller needs no JSON code to send one.
//! - [`Response::Error`] ([`ErrorReply`]): the request failed; an [`ErrorCode`] and a message.
//!
//! # Encodings and Content-Type
//!
//! Two encodings, chosen per message by its Content-Type (the MQTT v5 Content Type property; MQTT
//! v3.1.1 has none, so those clients speak JSON): see [`Encoding::from_content_type`].
//!
//! - **JSON** ([`CONTENT_TYPE_JSON`], the default when the Content-Type is absent or empty): a
//!   request is the body of an OpenAI `/v1/chat/completions` call (`max_completion_tokens` and
//!   llama.cpp's `n_predict` are accepted for `max_tokens`, `stop` may be a string, `content` a
//!   string, `null` or an array of text parts, `seed` -1 means random; unknown fields are ignored).
//!   Replies are small objects:
//!   - chunk: `{"seq":0,"delta":"Hel"}`
//!   - final: `{"text":"Hello","finish_reason":"stop","usage":{…},"timings":{…}}`, the timings
//!     with `prompt_per_second` and `predicted_per_second` added, and OpenAI's `tool_calls`
//!     (`[{"id","type":"function","function":{"name","arguments":"{…}"}}]`) when calls were made
//!     (`finish_reason` `"tool_calls"`);
//!   - error: `{"error":{"code":"busy","message":"queue full"}}`;
//!
//!   each with `"id"` when the request had one and `"reasoning"` when there is some.
//!   JSON needs the `std` feature.
//! - **postcard** ([`CONTENT_TYPE_POSTCARD`]): [postcard](https://postcard.jamesmunns.com)'s
//!   compact binary serde format, for boards too small for JSON. A request is the postcard
//!   encoding of [`Request`], every field in declaration order; a response is the version byte,
//!   the [`Response`] variant index (0 chunk, 1 final, 2 error) and the variant's fields. The
//!   [`fixed`] module has borrowed, fixed-capacity forms of every message that encode to the same
//!   bytes and need no allocator.
//!
//! A reply uses the encoding of its request.
//!
//! # Versioning
//!
//! Every message carries the wire version, [`WIRE_VERSION`] (2). In postcard it is the first byte
//! of every message (a request's `v` field, a response's envelope byte); decoders read it before
//! anything else and refuse versions they do not read with [`DecodeError::UnsupportedVersion`],
//! so a future version may change everything after that byte. The owned forms still read version
//! 1 (no tool fields; [`OLDEST_READ`]) and the daemon answers a version 1 request in version 1.
//! In JSON it is an optional `"v"` field, 1 or 2 (the JSON shapes of version 1 are a subset of
//! version 2's), the current version when absent. Any change to the postcard layout (a field added, removed, reordered or retyped, an
//! enum variant added) or to the meaning of a JSON field is a new wire version; the golden-bytes
//! tests guard this.
//!
//! # Features
//!
//! - no features (`no_std`, no allocator): the [`fixed`] forms, postcard to and from byte slices,
//!   [`Encoding`], [`valid_publish_topic`].
//! - `alloc`: the owned forms at the crate root and [`decode_request`], [`encode_request`],
//!   [`decode_response`], [`encode_response`] for postcard.
//! - `std` (default): `alloc` plus JSON.
//!
//! # Example: a microcontroller client
//!
//! ```
//! use ember_proto::{fixed, Encoding, FinishReason, Timings, Usage};
//!
//! // Build a request without an allocator: up to 2 messages, strings borrowed.
//! let mut req: fixed::Request<'_, 2> = fixed::Request::default();
//! req.messages.push(fixed::Message::new("user", "Is the door open?")).unwrap();
//! req.max_tokens = Some(32);
//! req.temperature = Some(0.2);
//!
//! let mut buf = [0u8; 256];
//! let payload = fixed::encode_request(&req, &mut buf).unwrap();
//! // Publish `payload` with Content-Type `Encoding::Postcard.content_type()`
//! // ("application/x-postcard") and a Response Topic, then wait for the reply.
//! assert_eq!(Encoding::Postcard.content_type(), "application/x-postcard");
//! # let reply = fixed::Response::Final(fixed::Final {
//! #     id: None, text: "No.", reasoning: None, tool_calls: Default::default(),
//! #     finish_reason: FinishReason::Stop, usage: Usage::default(), timings: Timings::default(),
//! # });
//! # let mut out = [0u8; 128];
//! # let received: &[u8] = fixed::encode_response(&reply, &mut out).unwrap();
//!
//! // A reply arrives in `received`; decoding borrows its strings, no copy.
//! match fixed::decode_response(received).unwrap() {
//!     fixed::Response::Chunk(c) => { /* show c.delta */ }
//!     fixed::Response::Final(f) => assert_eq!(f.text, "No."),
//!     fixed::Response::Error(e) => panic!("{}: {}", e.code.as_str(), e.message),
//! }
//! ```
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
pub mod fixed;
#[cfg(feature = "std")]
mod json;
#[cfg(feature = "alloc")]
mod owned;
#[cfg(feature = "alloc")]
mod tools;
mod types;
#[cfg(feature = "alloc")]
mod v1;
mod validate;
mod wire;

pub use error::{DecodeError, Detail, EncodeError};
/// The `heapless` crate the [`fixed`] forms are built on, for naming its `Vec`.
pub use heapless;
#[cfg(feature = "alloc")]
pub use owned::{
    Chunk, ErrorReply, Final, Message, Request, Response, decode_request, decode_response,
    encode_request, encode_response, encode_response_as,
};
#[cfg(feature = "alloc")]
pub use tools::{ResponseFormat, Tool, ToolCall, ToolChoice};
pub use types::{ErrorCode, FinishReason, Timings, Usage};
pub use validate::{MAX_ID_LEN, ROLES};

/// The wire version this build speaks: the first byte of every postcard message, the optional
/// `"v"` of a JSON one.
pub const WIRE_VERSION: u8 = 2;

/// The oldest wire version the owned forms still read (a postcard request or response of version
/// 1, from a client built before tool calls; see [`encode_response_as`] to answer one in kind).
/// The [`fixed`] forms read [`WIRE_VERSION`] only.
pub const OLDEST_READ: u8 = 1;

/// Content-Type of the JSON encoding.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Content-Type of the postcard encoding.
pub const CONTENT_TYPE_POSTCARD: &str = "application/x-postcard";

/// How a message is encoded, from its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON ([`CONTENT_TYPE_JSON`]); needs the `std` feature to encode or decode.
    Json,
    /// postcard ([`CONTENT_TYPE_POSTCARD`]).
    Postcard,
}

impl Encoding {
    /// The encoding a Content-Type names.
    ///
    /// No Content-Type, or an empty one, means JSON. The media type is compared case-insensitively,
    /// with surrounding spaces and any parameters (`; charset=utf-8`) ignored: `application/json`
    /// and `text/json` are JSON, `application/x-postcard` is postcard, anything else is
    /// [`DecodeError::UnsupportedContentType`].
    pub fn from_content_type(ct: Option<&str>) -> Result<Encoding, DecodeError> {
        let Some(ct) = ct.map(str::trim).filter(|ct| !ct.is_empty()) else {
            return Ok(Encoding::Json);
        };
        let media = ct.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case(CONTENT_TYPE_JSON) || media.eq_ignore_ascii_case("text/json")
        {
            Ok(Encoding::Json)
        } else if media.eq_ignore_ascii_case(CONTENT_TYPE_POSTCARD) {
            Ok(Encoding::Postcard)
        } else {
            Err(DecodeError::UnsupportedContentType)
        }
    }

    /// The Content-Type to send with a message in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => CONTENT_TYPE_JSON,
            Encoding::Postcard => CONTENT_TYPE_POSTCARD,
        }
    }
}

/// Whether an MQTT client may publish to `t`: a non-empty topic name of at most 65535 bytes,
/// without the wildcards `+` and `#` or NUL, and not starting with `$` (so a request cannot make
/// the daemon publish into `$SYS/…` or `$share/…`).
pub fn valid_publish_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 65535
        && !t.starts_with('$')
        && !t.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}
