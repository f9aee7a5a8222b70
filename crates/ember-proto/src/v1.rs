//! Wire version 1 in postcard, still read (requests, responses) and written (responses) by the
//! owned forms, so that a client built before version 2 keeps working with a newer daemon.
//!
//! Version 1 is version 2 without the tool fields: a message is only `role` and `content`, a
//! request ends at `reasoning_format`, a final reply has no `tool_calls` (and no `tool_calls`
//! finish reason). Chunks and errors are the same in both.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::validate::has_v2_fields;
use crate::wire;
use crate::{
    Chunk, DecodeError, EncodeError, ErrorReply, Final, FinishReason, Message, Request, Response,
    Timings, Usage,
};

#[derive(Serialize, Deserialize)]
struct MessageV1 {
    role: String,
    content: String,
}

#[derive(Serialize, Deserialize)]
struct RequestV1 {
    v: u8,
    id: Option<String>,
    reply_to: Option<String>,
    model: Option<String>,
    messages: Vec<MessageV1>,
    prompt: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_k: Option<i32>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<u64>,
    stop: Vec<String>,
    repeat_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    stream: bool,
    reasoning_format: Option<String>,
}

/// A version 1 postcard request (its version byte already checked) as a [`Request`] with `v` 1.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    let r: RequestV1 = wire::from_postcard(bytes)?;
    Ok(Request {
        v: r.v,
        id: r.id,
        reply_to: r.reply_to,
        model: r.model,
        messages: r
            .messages
            .into_iter()
            .map(|m| Message::new(m.role, m.content))
            .collect(),
        prompt: r.prompt,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_k: r.top_k,
        top_p: r.top_p,
        min_p: r.min_p,
        seed: r.seed,
        stop: r.stop,
        repeat_penalty: r.repeat_penalty,
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        stream: r.stream,
        reasoning_format: r.reasoning_format,
        ..Request::default()
    })
}

/// A request with `v` 1 in the version 1 layout; one with version 2 fields cannot be written so.
pub(crate) fn encode_request(req: &Request) -> Result<Vec<u8>, EncodeError> {
    if has_v2_fields!(req) {
        return Err(EncodeError::Serialize(
            "wire version 1 has no tool fields".into(),
        ));
    }
    let r = req.clone();
    let v1 = RequestV1 {
        v: r.v,
        id: r.id,
        reply_to: r.reply_to,
        model: r.model,
        messages: r
            .messages
            .into_iter()
            .map(|m| MessageV1 {
                role: m.role,
                content: m.content,
            })
            .collect(),
        prompt: r.prompt,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_k: r.top_k,
        top_p: r.top_p,
        min_p: r.min_p,
        seed: r.seed,
        stop: r.stop,
        repeat_penalty: r.repeat_penalty,
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        stream: r.stream,
        reasoning_format: r.reasoning_format,
    };
    postcard::to_allocvec(&v1).map_err(wire::ser_error)
}

/// Version 1's finish reasons: `Stop` 0, `Length` 1.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum FinishV1 {
    Stop,
    Length,
}

#[derive(Serialize)]
struct FinalV1Ref<'r> {
    id: &'r Option<String>,
    text: &'r String,
    reasoning: &'r Option<String>,
    finish_reason: FinishV1,
    usage: &'r Usage,
    timings: &'r Timings,
}

#[derive(Serialize)]
enum ResponseV1Ref<'r> {
    Chunk(&'r Chunk),
    Final(FinalV1Ref<'r>),
    Error(&'r ErrorReply),
}

#[derive(Deserialize)]
struct FinalV1 {
    id: Option<String>,
    text: String,
    reasoning: Option<String>,
    finish_reason: FinishV1,
    usage: Usage,
    timings: Timings,
}

#[derive(Deserialize)]
enum ResponseV1 {
    Chunk(Chunk),
    Final(FinalV1),
    Error(ErrorReply),
}

/// A response in version 1: the version byte 1, then the version 1 layout. A final reply with tool
/// calls cannot be written in version 1 (a version 1 request cannot ask for them).
pub(crate) fn encode_response(resp: &Response) -> Result<Vec<u8>, EncodeError> {
    let body = match resp {
        Response::Chunk(c) => ResponseV1Ref::Chunk(c),
        Response::Error(e) => ResponseV1Ref::Error(e),
        Response::Final(f) => {
            let finish_reason = match f.finish_reason {
                FinishReason::Stop => FinishV1::Stop,
                FinishReason::Length => FinishV1::Length,
                FinishReason::ToolCalls => return Err(no_calls_in_v1()),
            };
            if !f.tool_calls.is_empty() {
                return Err(no_calls_in_v1());
            }
            ResponseV1Ref::Final(FinalV1Ref {
                id: &f.id,
                text: &f.text,
                reasoning: &f.reasoning,
                finish_reason,
                usage: &f.usage,
                timings: &f.timings,
            })
        }
    };
    let mut out = alloc::vec![1u8];
    out.extend(postcard::to_allocvec(&body).map_err(wire::ser_error)?);
    Ok(out)
}

fn no_calls_in_v1() -> EncodeError {
    EncodeError::Serialize("wire version 1 has no tool calls".into())
}

/// A version 1 postcard response (its version byte already checked).
pub(crate) fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    let body: ResponseV1 = wire::from_postcard(bytes.get(1..).unwrap_or_default())?;
    Ok(match body {
        ResponseV1::Chunk(c) => Response::Chunk(c),
        ResponseV1::Error(e) => Response::Error(e),
        ResponseV1::Final(f) => Response::Final(Final {
            id: f.id,
            text: f.text,
            reasoning: f.reasoning,
            tool_calls: Vec::new(),
            finish_reason: match f.finish_reason {
                FinishV1::Stop => FinishReason::Stop,
                FinishV1::Length => FinishReason::Length,
            },
            usage: f.usage,
            timings: f.timings,
        }),
    })
}
