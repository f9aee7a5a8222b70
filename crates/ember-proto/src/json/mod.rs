//! The JSON encoding (feature `std`).
//!
//! Kept apart from the derived serde impls, which are the postcard layout: encoding goes through
//! private mirror structs (absent fields omitted, floats written as `f32`), decoding through
//! [`serde_json::Value`] so that every OpenAI variant is accepted and every type error names its
//! field.

use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use serde::Serialize;
use serde_json::{Map, Value};

mod tools;

use crate::validate::request_floats;
use crate::{
    Chunk, DecodeError, EncodeError, ErrorCode, ErrorReply, Final, FinishReason, Message,
    OLDEST_READ, Request, Response, Timings, Usage, WIRE_VERSION,
};

type Object = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// Encoding

fn is_wire_version(v: &u8) -> bool {
    *v == WIRE_VERSION
}

#[derive(Serialize)]
struct JsonRequest<'r> {
    #[serde(skip_serializing_if = "is_wire_version")]
    v: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'r str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    messages: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'r [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    repeat_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_format: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
}

#[derive(Serialize)]
struct JsonChunk<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'r str>,
    seq: u32,
    delta: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'r str>,
}

#[derive(Serialize)]
struct JsonFinal<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'r str>,
    text: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
    finish_reason: &'static str,
    usage: &'r Usage,
    timings: JsonTimings,
}

#[derive(Serialize)]
struct JsonTimings {
    queued_ms: f32,
    prompt_n: u32,
    prompt_ms: f32,
    predicted_n: u32,
    predicted_ms: f32,
    prompt_per_second: f32,
    predicted_per_second: f32,
}

#[derive(Serialize)]
struct JsonError<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'r str>,
    error: JsonErrorBody<'r>,
}

#[derive(Serialize)]
struct JsonErrorBody<'r> {
    code: &'static str,
    message: &'r str,
}

fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|e| EncodeError::Serialize(e.to_string().into()))
}

fn finite(name: &'static str, x: f32) -> Result<(), EncodeError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(EncodeError::NonFiniteFloat(name))
    }
}

pub(crate) fn encode_request(req: &Request) -> Result<Vec<u8>, EncodeError> {
    for (name, _, value) in request_floats!(req) {
        if let Some(x) = value {
            finite(name, x)?;
        }
    }
    to_vec(&JsonRequest {
        v: req.v,
        id: req.id.as_deref(),
        reply_to: req.reply_to.as_deref(),
        model: req.model.as_deref(),
        messages: req.messages.iter().map(tools::message_to_json).collect(),
        prompt: req.prompt.as_deref(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_k: req.top_k,
        top_p: req.top_p,
        min_p: req.min_p,
        seed: req.seed,
        stop: &req.stop,
        repeat_penalty: req.repeat_penalty,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        stream: req.stream,
        reasoning_format: req.reasoning_format.as_deref(),
        response_format: req
            .response_format
            .as_ref()
            .map(tools::response_format_to_json)
            .transpose()?,
        tools: tools::tools_to_json(&req.tools)?,
        tool_choice: req.tool_choice.as_ref().map(tools::tool_choice_to_json),
        parallel_tool_calls: req.parallel_tool_calls,
    })
}

pub(crate) fn encode_response(resp: &Response) -> Result<Vec<u8>, EncodeError> {
    match resp {
        Response::Chunk(c) => to_vec(&JsonChunk {
            id: c.id.as_deref(),
            seq: c.seq,
            delta: &c.delta,
            reasoning: c.reasoning.as_deref(),
        }),
        Response::Final(f) => {
            let t = &f.timings;
            finite("timings.queued_ms", t.queued_ms)?;
            finite("timings.prompt_ms", t.prompt_ms)?;
            finite("timings.predicted_ms", t.predicted_ms)?;
            to_vec(&JsonFinal {
                id: f.id.as_deref(),
                text: &f.text,
                reasoning: f.reasoning.as_deref(),
                tool_calls: (!f.tool_calls.is_empty()).then(|| tools::calls_to_json(&f.tool_calls)),
                finish_reason: f.finish_reason.as_str(),
                usage: &f.usage,
                timings: JsonTimings {
                    queued_ms: t.queued_ms,
                    prompt_n: t.prompt_n,
                    prompt_ms: t.prompt_ms,
                    predicted_n: t.predicted_n,
                    predicted_ms: t.predicted_ms,
                    prompt_per_second: t.prompt_per_second(),
                    predicted_per_second: t.predicted_per_second(),
                },
            })
        }
        Response::Error(e) => to_vec(&JsonError {
            id: e.id.as_deref(),
            error: JsonErrorBody {
                code: e.code.as_str(),
                message: &e.message,
            },
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn parse_object(bytes: &[u8], what: &str) -> Result<Object, DecodeError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(DecodeError::malformed(format!(
            "{what} must be a JSON object"
        ))),
        Err(e) => Err(DecodeError::malformed(format!("JSON: {e}"))),
    }
}

/// The optional `"v"`: absent or null means [`WIRE_VERSION`]; every version from
/// [`OLDEST_READ`] on is read (the JSON of an older version is a subset of the newer).
fn check_version(obj: &Object) -> Result<(), DecodeError> {
    match get(obj, "v") {
        None => Ok(()),
        Some(v) => match v.as_u64() {
            Some(n) if (u64::from(OLDEST_READ)..=u64::from(WIRE_VERSION)).contains(&n) => Ok(()),
            Some(n) if n <= u64::from(u8::MAX) => Err(DecodeError::UnsupportedVersion(n as u8)),
            _ => Err(DecodeError::invalid(format!(
                "`v` must be a wire version number (this build speaks {WIRE_VERSION}), not {v}"
            ))),
        },
    }
}

/// A field's value; `null` counts as absent.
fn get<'o>(obj: &'o Object, key: &str) -> Option<&'o Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn wrong_type(key: &str, expected: &str) -> DecodeError {
    DecodeError::invalid(format!("`{key}` must be {expected}"))
}

fn opt_str(obj: &Object, key: &str) -> Result<Option<String>, DecodeError> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(key, "a string")),
    }
}

fn req_str(obj: &Object, key: &str) -> Result<String, DecodeError> {
    opt_str(obj, key)?.ok_or_else(|| missing(key))
}

fn missing(key: &str) -> DecodeError {
    DecodeError::invalid(format!("`{key}` is missing"))
}

fn opt_u32(obj: &Object, key: &str) -> Result<Option<u32>, DecodeError> {
    get(obj, key)
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| wrong_type(key, "an integer from 0 to 4294967295"))
        })
        .transpose()
}

fn req_u32(obj: &Object, key: &str) -> Result<u32, DecodeError> {
    opt_u32(obj, key)?.ok_or_else(|| missing(key))
}

fn opt_f32(obj: &Object, key: &str) -> Result<Option<f32>, DecodeError> {
    get(obj, key)
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .ok_or_else(|| wrong_type(key, "a number within the range of a 32-bit float"))
        })
        .transpose()
}

fn req_f32(obj: &Object, key: &str) -> Result<f32, DecodeError> {
    opt_f32(obj, key)?.ok_or_else(|| missing(key))
}

fn req_object<'o>(obj: &'o Object, key: &str) -> Result<&'o Object, DecodeError> {
    match get(obj, key) {
        None => Err(missing(key)),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(wrong_type(key, "an object")),
    }
}

/// `max_tokens`, or its aliases `max_completion_tokens` (OpenAI) and `n_predict` (llama.cpp, where
/// -1 means no limit), the first one present.
fn max_tokens(obj: &Object) -> Result<Option<u32>, DecodeError> {
    for key in ["max_tokens", "max_completion_tokens"] {
        if get(obj, key).is_some() {
            return opt_u32(obj, key);
        }
    }
    if get(obj, "n_predict").and_then(Value::as_i64) == Some(-1) {
        return Ok(None);
    }
    opt_u32(obj, "n_predict")
}

fn top_k(obj: &Object) -> Result<Option<i32>, DecodeError> {
    get(obj, "top_k")
        .map(|v| {
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| wrong_type("top_k", "a 32-bit integer"))
        })
        .transpose()
}

/// A non-negative integer, or -1 for "random" (`None`).
fn seed(obj: &Object) -> Result<Option<u64>, DecodeError> {
    match get(obj, "seed") {
        None => Ok(None),
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(-1)) => Ok(None),
            _ => Err(wrong_type(
                "seed",
                "a non-negative integer, or -1 for random",
            )),
        },
    }
}

/// A string or an array of strings.
fn stop(obj: &Object) -> Result<Vec<String>, DecodeError> {
    match get(obj, "stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(wrong_type("stop", "a string or an array of strings")),
            })
            .collect(),
        Some(_) => Err(wrong_type("stop", "a string or an array of strings")),
    }
}

fn messages(obj: &Object) -> Result<Vec<Message>, DecodeError> {
    match get(obj, "messages") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| message(i, item))
            .collect(),
        Some(_) => Err(wrong_type("messages", "an array")),
    }
}

fn message(i: usize, item: &Value) -> Result<Message, DecodeError> {
    let Value::Object(m) = item else {
        return Err(DecodeError::invalid(format!(
            "`messages[{i}]` must be an object"
        )));
    };
    let role = match get(m, "role") {
        Some(Value::String(r)) => r.clone(),
        Some(_) => {
            return Err(DecodeError::invalid(format!(
                "`messages[{i}].role` must be a string"
            )));
        }
        None => {
            return Err(DecodeError::invalid(format!(
                "`messages[{i}].role` is missing"
            )));
        }
    };
    let content = match get(m, "content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match text_part(part) {
                    Some(t) => text.push_str(t),
                    None => {
                        return Err(DecodeError::invalid(format!(
                            "`messages[{i}].content` parts must be {{\"type\":\"text\",\"text\":\"…\"}}"
                        )));
                    }
                }
            }
            text
        }
        Some(_) => {
            return Err(DecodeError::invalid(format!(
                "`messages[{i}].content` must be a string, an array of text parts or null"
            )));
        }
    };
    Ok(Message {
        role,
        content,
        tool_calls: tools::calls_from_json(
            get(m, "tool_calls"),
            &format!("messages[{i}].tool_calls"),
        )?,
        tool_call_id: match get(m, "tool_call_id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(DecodeError::invalid(format!(
                    "`messages[{i}].tool_call_id` must be a string"
                )));
            }
        },
    })
}

fn text_part(part: &Value) -> Option<&str> {
    let part = part.as_object()?;
    if part.get("type")?.as_str()? != "text" {
        return None;
    }
    part.get("text")?.as_str()
}

/// Fields of the HTTP routes that say the same as `response_format` in other dialects
/// (llama-server's `json_schema` and `grammar`, Ollama's `format`): refused by name, so that a
/// request asking for structured output is never answered as free text.
const NOT_ON_THE_WIRE: [&str; 3] = ["json_schema", "grammar", "format"];

pub(crate) fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    let obj = parse_object(bytes, "a request")?;
    check_version(&obj)?;
    if let Some(k) = NOT_ON_THE_WIRE.iter().find(|k| get(&obj, k).is_some()) {
        return Err(DecodeError::invalid(format!(
            "`{k}` is not part of the MQTT request: use `response_format` \
             ({{\"type\":\"json_object\"}} or {{\"type\":\"json_schema\",\"json_schema\":{{\"schema\":…}}}})"
        )));
    }
    let req = Request {
        v: get(&obj, "v")
            .and_then(Value::as_u64)
            .map_or(WIRE_VERSION, |v| v as u8),
        id: opt_str(&obj, "id")?,
        reply_to: opt_str(&obj, "reply_to")?,
        model: opt_str(&obj, "model")?,
        messages: messages(&obj)?,
        prompt: opt_str(&obj, "prompt")?,
        max_tokens: max_tokens(&obj)?,
        temperature: opt_f32(&obj, "temperature")?,
        top_k: top_k(&obj)?,
        top_p: opt_f32(&obj, "top_p")?,
        min_p: opt_f32(&obj, "min_p")?,
        seed: seed(&obj)?,
        stop: stop(&obj)?,
        repeat_penalty: opt_f32(&obj, "repeat_penalty")?,
        presence_penalty: opt_f32(&obj, "presence_penalty")?,
        frequency_penalty: opt_f32(&obj, "frequency_penalty")?,
        stream: match get(&obj, "stream") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(wrong_type("stream", "true or false")),
        },
        reasoning_format: opt_str(&obj, "reasoning_format")?,
        response_format: tools::response_format(&obj)?,
        tools: tools::tools(&obj)?,
        tool_choice: tools::tool_choice(&obj)?,
        parallel_tool_calls: match get(&obj, "parallel_tool_calls") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(wrong_type("parallel_tool_calls", "true or false")),
        },
    };
    req.validate()?;
    Ok(req)
}

pub(crate) fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    let obj = parse_object(bytes, "a response")?;
    check_version(&obj)?;
    let id = opt_str(&obj, "id")?;
    if get(&obj, "error").is_some() {
        let err = req_object(&obj, "error")?;
        let code = req_str(err, "code")?;
        let code = ErrorCode::parse(&code)
            .ok_or_else(|| DecodeError::invalid(format!("unknown error code {code:?}")))?;
        Ok(Response::Error(ErrorReply {
            id,
            code,
            message: req_str(err, "message")?,
        }))
    } else if get(&obj, "delta").is_some() {
        Ok(Response::Chunk(Chunk {
            id,
            seq: req_u32(&obj, "seq")?,
            delta: req_str(&obj, "delta")?,
            reasoning: opt_str(&obj, "reasoning")?,
        }))
    } else if get(&obj, "text").is_some() {
        let reason = req_str(&obj, "finish_reason")?;
        let finish_reason = FinishReason::parse(&reason)
            .ok_or_else(|| DecodeError::invalid(format!("unknown finish_reason {reason:?}")))?;
        let usage = req_object(&obj, "usage")?;
        let timings = req_object(&obj, "timings")?;
        Ok(Response::Final(Final {
            id,
            text: req_str(&obj, "text")?,
            reasoning: opt_str(&obj, "reasoning")?,
            tool_calls: tools::calls_from_json(get(&obj, "tool_calls"), "tool_calls")?,
            finish_reason,
            usage: Usage {
                prompt_tokens: req_u32(usage, "prompt_tokens")?,
                completion_tokens: req_u32(usage, "completion_tokens")?,
                total_tokens: req_u32(usage, "total_tokens")?,
                cached_tokens: req_u32(usage, "cached_tokens")?,
            },
            timings: Timings {
                queued_ms: req_f32(timings, "queued_ms")?,
                prompt_n: req_u32(timings, "prompt_n")?,
                prompt_ms: req_f32(timings, "prompt_ms")?,
                predicted_n: req_u32(timings, "predicted_n")?,
                predicted_ms: req_f32(timings, "predicted_ms")?,
            },
        }))
    } else {
        Err(DecodeError::invalid(
            "not a response: expected an `error`, a chunk's `delta` or a final's `text`",
        ))
    }
}
