//! Tool calls and structured output on the MQTT front: a request's `tools`, `tool_choice`,
//! `parallel_tool_calls`, `response_format` and tool-call history, turned into the OpenAI shapes
//! the HTTP routes read, so that both fronts share one path (`ember-toolcall`'s formats, the
//! engine's constrained sampler) and give the same guarantees: every call names a declared tool
//! with arguments valid against its schema; an answer with a `response_format` parses.

use crate::serve::http::Loaded;
use crate::serve::http::error::ApiError;
use crate::serve::http::structured::Wanted;
use crate::serve::http::tools::Tools;
use ember_proto::{Message, Request, ResponseFormat, ToolCall, ToolChoice};
use serde_json::{Value, json};

/// JSON text from a request field (postcard carries schemas and arguments as text).
fn parse_text(field: &str, text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("`{field}` is not valid JSON: {e}")))
}

fn calls_json(calls: &[ToolCall], at: &str) -> Result<Value, ApiError> {
    calls
        .iter()
        .map(|c| {
            // Checked here: the template renders the arguments as an object.
            let args = parse_text(&format!("{at}.arguments"), &c.arguments)?;
            let mut call =
                json!({"type": "function", "function": {"name": c.name, "arguments": args}});
            if !c.id.is_empty() {
                call["id"] = c.id.as_str().into();
            }
            Ok(call)
        })
        .collect()
}

/// The chat as the HTTP routes receive it (OpenAI message objects).
pub(super) fn messages(messages: &[Message]) -> Result<Vec<Value>, ApiError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut out = json!({"role": m.role, "content": m.content});
            if !m.tool_calls.is_empty() {
                out["tool_calls"] =
                    calls_json(&m.tool_calls, &format!("messages[{i}].tool_calls"))?;
            }
            if let Some(id) = &m.tool_call_id {
                out["tool_call_id"] = id.as_str().into();
            }
            Ok(out)
        })
        .collect()
}

/// The request's tool side (inactive when it has no tools or `tool_choice` is `none`).
pub(super) fn tools(loaded: &Loaded, req: &Request) -> Result<Tools, ApiError> {
    let tools: Option<Value> = if req.tools.is_empty() {
        None
    } else {
        let mut list = Vec::with_capacity(req.tools.len());
        for (i, t) in req.tools.iter().enumerate() {
            let mut f = json!({"name": t.name});
            if let Some(d) = &t.description {
                f["description"] = d.as_str().into();
            }
            if let Some(p) = &t.parameters {
                f["parameters"] = parse_text(&format!("tools[{i}].parameters"), p)?;
            }
            list.push(json!({"type": "function", "function": f}));
        }
        Some(Value::Array(list))
    };
    let choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    });
    Tools::from_request(
        loaded,
        tools.as_ref(),
        choice.as_ref(),
        req.parallel_tool_calls,
    )
}

/// The answer's shape the request asks for.
pub(super) fn wanted(req: &Request) -> Result<Wanted, ApiError> {
    let rf = match &req.response_format {
        None => return Ok(Wanted::Free),
        Some(ResponseFormat::JsonObject) => json!({"type": "json_object"}),
        Some(ResponseFormat::JsonSchema(schema)) => json!({
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": parse_text("response_format", schema)?},
        }),
    };
    Wanted::from_openai(Some(&rf), None, None)
}

/// The calls of a finished answer in the wire's form (`arguments` as JSON text).
pub(super) fn wire_calls(calls: &[ember_toolcall::ToolCall]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|c| ToolCall {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments_json(),
        })
        .collect()
}
