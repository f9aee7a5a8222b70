//! The JSON shapes of the tool fields (wire version 2): OpenAI's `tools`, `tool_choice`,
//! `response_format`, a message's `tool_calls` / `tool_call_id` and a final reply's `tool_calls`.
//!
//! Schemas and arguments travel as JSON text in the owned forms; here they are JSON values again.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use serde_json::{Value, json};

use super::{Object, get, wrong_type};
use crate::{DecodeError, EncodeError, Message, ResponseFormat, Tool, ToolCall, ToolChoice};

// ---------------------------------------------------------------------------------------------
// Encoding

/// JSON text held in a string field, as a value (a client built the request by hand: the text
/// may be anything).
fn parse_text(field: &str, text: &str) -> Result<Value, EncodeError> {
    serde_json::from_str(text)
        .map_err(|e| EncodeError::Serialize(format!("`{field}` is not JSON: {e}").into()))
}

/// OpenAI's `tool_calls`: `arguments` stays a string of JSON, as OpenAI sends it.
pub(super) fn calls_to_json(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })
        })
        .collect()
}

pub(super) fn message_to_json(m: &Message) -> Value {
    let mut out = json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        out["tool_calls"] = calls_to_json(&m.tool_calls);
    }
    if let Some(id) = &m.tool_call_id {
        out["tool_call_id"] = id.as_str().into();
    }
    out
}

pub(super) fn tools_to_json(tools: &[Tool]) -> Result<Option<Value>, EncodeError> {
    if tools.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(tools.len());
    for t in tools {
        let mut f = json!({"name": t.name});
        if let Some(d) = &t.description {
            f["description"] = d.as_str().into();
        }
        if let Some(p) = &t.parameters {
            f["parameters"] = parse_text("tools[].function.parameters", p)?;
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Some(Value::Array(out)))
}

pub(super) fn tool_choice_to_json(c: &ToolChoice) -> Value {
    match c {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

pub(super) fn response_format_to_json(f: &ResponseFormat) -> Result<Value, EncodeError> {
    Ok(match f {
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema(schema) => json!({
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": parse_text("response_format", schema)?},
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn invalid(msg: String) -> DecodeError {
    DecodeError::invalid(msg)
}

fn object<'v>(v: &'v Value, what: &str) -> Result<&'v Object, DecodeError> {
    v.as_object()
        .ok_or_else(|| invalid(format!("`{what}` must be an object")))
}

fn string(v: Option<&Value>, what: &str) -> Result<String, DecodeError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(format!("`{what}` must be a string"))),
        None => Err(invalid(format!("`{what}` is missing"))),
    }
}

/// A message's or a final reply's `tool_calls` (`at` names the field in errors). `arguments` is a
/// string of JSON (OpenAI) or an object (Ollama); `id` may be absent (Ollama), then empty.
pub(super) fn calls_from_json(v: Option<&Value>, at: &str) -> Result<Vec<ToolCall>, DecodeError> {
    let items = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid(format!("`{at}` must be an array"))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{at}[{i}]");
            let call = object(item, &at)?;
            let f = object(
                get(call, "function").unwrap_or(&Value::Null),
                &format!("{at}.function"),
            )?;
            let arguments = match get(f, "arguments") {
                None => "{}".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(o @ Value::Object(_)) => o.to_string(),
                Some(_) => {
                    return Err(invalid(format!(
                        "`{at}.function.arguments` must be a string of JSON or an object"
                    )));
                }
            };
            Ok(ToolCall {
                id: match get(call, "id") {
                    None => String::new(),
                    v => string(v, &format!("{at}.id"))?,
                },
                name: string(get(f, "name"), &format!("{at}.function.name"))?,
                arguments,
            })
        })
        .collect()
}

/// OpenAI's (and Ollama's) `tools`.
pub(super) fn tools(obj: &Object) -> Result<Vec<Tool>, DecodeError> {
    let items = match get(obj, "tools") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(wrong_type("tools", "an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let t = object(item, &format!("tools[{i}]"))?;
            match get(t, "type") {
                None => {}
                Some(Value::String(s)) if s == "function" => {}
                Some(_) => {
                    return Err(invalid(format!(
                        "`tools[{i}].type` must be \"function\" (the only kind of tool)"
                    )));
                }
            }
            let f = object(
                get(t, "function").unwrap_or(&Value::Null),
                &format!("tools[{i}].function"),
            )?;
            let parameters = match get(f, "parameters") {
                None => None,
                Some(p @ Value::Object(_)) => Some(p.to_string()),
                Some(_) => {
                    return Err(invalid(format!(
                        "`tools[{i}].function.parameters` must be a JSON Schema object"
                    )));
                }
            };
            Ok(Tool {
                name: string(get(f, "name"), &format!("tools[{i}].function.name"))?,
                description: match get(f, "description") {
                    None => None,
                    v => Some(string(v, &format!("tools[{i}].function.description"))?),
                },
                parameters,
            })
        })
        .collect()
}

pub(super) fn tool_choice(obj: &Object) -> Result<Option<ToolChoice>, DecodeError> {
    let expected =
        "\"auto\", \"none\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":…}}";
    match get(obj, "tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(wrong_type("tool_choice", expected)),
        },
        Some(Value::Object(c)) => {
            let f = get(c, "function")
                .and_then(Value::as_object)
                .ok_or_else(|| wrong_type("tool_choice", expected))?;
            Ok(Some(ToolChoice::Function(string(
                get(f, "name"),
                "tool_choice.function.name",
            )?)))
        }
        Some(_) => Err(wrong_type("tool_choice", expected)),
    }
}

/// OpenAI's `response_format`: `text` (free, i.e. none), `json_object` (with llama-server's
/// optional `schema`), `json_schema` with `json_schema.schema`.
pub(super) fn response_format(obj: &Object) -> Result<Option<ResponseFormat>, DecodeError> {
    let Some(v) = get(obj, "response_format") else {
        return Ok(None);
    };
    let rf = object(v, "response_format")?;
    let schema = |v: Option<&Value>, at: &str| match v {
        Some(s @ (Value::Object(_) | Value::Bool(_))) => Ok(s.to_string()),
        Some(_) => Err(invalid(format!("`{at}` must be a JSON Schema object"))),
        None => Err(invalid(format!("`{at}` is missing"))),
    };
    match get(rf, "type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => match get(rf, "schema") {
            None => Ok(Some(ResponseFormat::JsonObject)),
            s => Ok(Some(ResponseFormat::JsonSchema(schema(
                s,
                "response_format.schema",
            )?))),
        },
        Some("json_schema") => {
            let js = object(
                get(rf, "json_schema").unwrap_or(&Value::Null),
                "response_format.json_schema",
            )?;
            Ok(Some(ResponseFormat::JsonSchema(schema(
                get(js, "schema"),
                "response_format.json_schema.schema",
            )?)))
        }
        _ => Err(wrong_type(
            "response_format.type",
            "\"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}
