//! Turns a request's messages (OpenAI or Ollama shape) into what the model's chat template can
//! render, per family — llama.cpp's `common_chat_msgs_parse_oaicompat` plus the message
//! rewriting of its generic handler and minja's polyfills (common/chat.cpp), in one place.
//!
//! * History calls arrive as OpenAI's (`arguments` a JSON string, with ids) or Ollama's
//!   (`arguments` an object, no id); ids missing are derived from the message, so the same
//!   conversation renders the same prompt each turn, and `tool` results without
//!   `tool_call_id` are matched to the calls by position.
//! * Each family's template gets calls in the shape it reads: objects for `| tojson` templates
//!   (Qwen, Llama 3, V3.1), a JSON string and `null` content for DeepSeek-R1's (its stock template
//!   concatenates the arguments and tests `content is none`), one call per message for Llama 3
//!   (its template refuses more).
//! * Generic templates know nothing of tools: calls and results become plain JSON text messages
//!   and the tool list goes into the system message ([`crate::prompts`]), as does V3.1's, whose
//!   official template expects the tool list in the system prompt.

use serde_json::{Map, Value, json};

use crate::prompts;
use crate::{Family, Tool, ToolChoice, ToolError, ids};

/// Messages and `tools` to render the chat template with.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The conversation for the template's `messages`.
    pub messages: Vec<Value>,
    /// The template's `tools` (OpenAI shape); `None` when the template must not be given tools
    /// (no tools, `tool_choice: none`, or the tools were written into the system message).
    pub template_tools: Option<Value>,
}

/// One call in the history.
#[derive(Debug, Clone)]
struct HCall {
    id: String,
    name: String,
    arguments: Value,
}

/// One message, checked.
#[derive(Debug, Clone)]
struct Msg {
    role: String,
    content: Option<String>,
    calls: Vec<HCall>,
    tool_call_id: Option<String>,
    name: Option<String>,
    reasoning: Option<String>,
}

/// Normalises `messages` for `family`'s template (see the module docs). For the generic family
/// and DeepSeek-V3.1 the tool descriptions are injected into the system message when tools are
/// given and `choice` is not `None`.
pub fn prepare_messages(
    family: &Family,
    messages: &[Value],
    tools: &[Tool],
    choice: &ToolChoice,
) -> Result<Prepared, ToolError> {
    let mut msgs = messages
        .iter()
        .enumerate()
        .map(|(i, m)| read_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    link_results(&mut msgs);
    let active = !tools.is_empty() && *choice != ToolChoice::None;
    let mut out = Vec::with_capacity(msgs.len() + 1);
    let template_tools = match family {
        Family::Generic => {
            for m in &msgs {
                generic_message(m, active, &mut out);
            }
            if active {
                add_system(&mut out, &prompts::generic(tools, choice));
            }
            None
        }
        _ => {
            for m in &msgs {
                native_message(family, m, &mut out);
            }
            if active && *family == Family::DeepSeekV3 {
                add_system(&mut out, &prompts::deepseek_v3(tools, choice));
                None
            } else if active {
                Some(Value::Array(tools.iter().map(Tool::to_openai).collect()))
            } else {
                None
            }
        }
    };
    Ok(Prepared {
        messages: out,
        template_tools,
    })
}

fn read_message(index: usize, m: &Value) -> Result<Msg, ToolError> {
    let bad = |reason: String| ToolError::BadMessage { index, reason };
    let obj = m
        .as_object()
        .ok_or_else(|| bad("must be an object".into()))?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("role must be a string".into()))?;
    let role = if role == "developer" { "system" } else { role };
    let content =
        content_text(role, obj.get("content")).map_err(|e| bad(format!("content: {e}")))?;
    let mut calls = Vec::new();
    match obj.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if role == "assistant" => {
            for (j, c) in a.iter().enumerate() {
                calls.push(
                    read_call(index, j, c).map_err(|e| bad(format!("tool_calls[{j}]: {e}")))?,
                );
            }
        }
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(Value::Array(_)) => {
            return Err(bad("only assistant messages carry tool_calls".into()));
        }
        Some(_) => return Err(bad("tool_calls must be an array".into())),
    }
    let string_field = |k: &str| -> Result<Option<String>, ToolError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("{k} must be a string"))),
        }
    };
    let name = match string_field("name")? {
        Some(n) => Some(n),
        // Ollama names the tool of a result `tool_name`.
        None => string_field("tool_name")?,
    };
    Ok(Msg {
        role: role.to_owned(),
        content,
        calls,
        tool_call_id: string_field("tool_call_id")?,
        name,
        reasoning: string_field("reasoning_content")?,
    })
}

/// A message's content as text: strings as they are, text parts joined by newlines; a tool
/// result may also be any JSON value (its text is used).
fn content_text(role: &str, v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(parts)) if parts.iter().all(|p| p.get("type").is_some()) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => return Err("a text part needs a string \"text\"".into()),
                    (Some(t), _) => {
                        return Err(format!("content parts of type {t:?} are not supported"));
                    }
                    (None, _) => return Err("each content part needs a string \"type\"".into()),
                }
            }
            Ok(Some(texts.join("\n")))
        }
        Some(other) if role == "tool" => Ok(Some(other.to_string())),
        Some(_) => Err("must be a string, null or an array of text parts".into()),
    }
}

fn read_call(msg: usize, j: usize, c: &Value) -> Result<HCall, String> {
    let obj = c.as_object().ok_or("must be an object")?;
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "function" => {}
        Some(t) => return Err(format!("unsupported type {t}")),
    }
    let f = obj
        .get("function")
        .and_then(Value::as_object)
        .ok_or("missing \"function\" object")?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("missing function name")?;
    let arguments = match f.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Err("arguments must encode a JSON object".into()),
            Err(e) => return Err(format!("arguments are not valid JSON: {e}")),
        },
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err("arguments must be an object or a JSON string".into()),
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => ids::stable_call_id(&format!("{msg}:{j}:{name}:{arguments}")),
    };
    Ok(HCall {
        id,
        name: name.to_owned(),
        arguments,
    })
}

/// Gives each tool result the id and name of its call: by `tool_call_id` when it has one,
/// otherwise the next unanswered call of the last assistant message.
fn link_results(msgs: &mut [Msg]) {
    let mut all: Vec<(String, String)> = Vec::new();
    let mut pending: std::collections::VecDeque<(String, String)> = Default::default();
    for m in msgs.iter_mut() {
        if m.role == "assistant" && !m.calls.is_empty() {
            pending = m
                .calls
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect();
            all.extend(pending.iter().cloned());
        } else if m.role == "tool" {
            let found = match &m.tool_call_id {
                Some(id) => {
                    pending.retain(|(i, _)| i != id);
                    all.iter().find(|(i, _)| i == id).cloned()
                }
                None => pending.pop_front(),
            };
            if let Some((id, name)) = found {
                m.tool_call_id.get_or_insert(id);
                m.name.get_or_insert(name);
            }
        }
    }
}

fn call_json(c: &HCall, arguments_as_string: bool) -> Value {
    let args = if arguments_as_string {
        Value::String(c.arguments.to_string())
    } else {
        c.arguments.clone()
    };
    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
}

fn native_message(family: &Family, m: &Msg, out: &mut Vec<Value>) {
    let mut o = Map::new();
    o.insert("role".into(), Value::String(m.role.clone()));
    if m.calls.is_empty() {
        o.insert(
            "content".into(),
            Value::String(m.content.clone().unwrap_or_default()),
        );
        if let Some(id) = m.tool_call_id.as_ref().filter(|_| m.role == "tool") {
            o.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        if let Some(n) = &m.name {
            o.insert("name".into(), Value::String(n.clone()));
        }
        if let Some(r) = &m.reasoning {
            o.insert("reasoning_content".into(), Value::String(r.clone()));
        }
        out.push(Value::Object(o));
        return;
    }
    let r1 = *family == Family::DeepSeekR1;
    let content = match &m.content {
        Some(c) if !c.is_empty() => Value::String(c.clone()),
        _ if r1 => Value::Null,
        _ => Value::String(String::new()),
    };
    // Llama 3's template refuses more than one call per message.
    let groups: Vec<&[HCall]> = if matches!(family, Family::Llama3 { .. }) {
        m.calls.chunks(1).collect()
    } else {
        vec![&m.calls[..]]
    };
    for (k, group) in groups.into_iter().enumerate() {
        let mut o = o.clone();
        let content = if k == 0 {
            content.clone()
        } else if r1 {
            Value::Null
        } else {
            Value::String(String::new())
        };
        o.insert("content".into(), content);
        o.insert(
            "tool_calls".into(),
            Value::Array(group.iter().map(|c| call_json(c, r1)).collect()),
        );
        out.push(Value::Object(o));
    }
}

/// A tool result's content as a JSON value (JSON text embedded as JSON, anything else a string).
fn result_value(content: &str) -> Value {
    match serde_json::from_str::<Value>(content) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
        _ => Value::String(content.to_owned()),
    }
}

fn generic_message(m: &Msg, active: bool, out: &mut Vec<Value>) {
    let text = |role: &str, content: String| json!({"role": role, "content": content});
    match m.role.as_str() {
        "assistant" if !m.calls.is_empty() => {
            let call = |c: &HCall| json!({"name": c.name, "arguments": c.arguments});
            let wrapper = if m.calls.len() == 1 {
                json!({"tool_call": call(&m.calls[0])})
            } else {
                json!({"tool_calls": m.calls.iter().map(call).collect::<Vec<_>>()})
            };
            let mut content = m.content.clone().unwrap_or_default();
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&wrapper.to_string());
            out.push(text("assistant", content));
        }
        "assistant" if active => {
            let c = m.content.clone().unwrap_or_default();
            out.push(text("assistant", json!({"response": c}).to_string()));
        }
        "tool" => {
            let mut r = Map::new();
            if let Some(n) = &m.name {
                r.insert("name".into(), Value::String(n.clone()));
            }
            r.insert(
                "content".into(),
                result_value(m.content.as_deref().unwrap_or_default()),
            );
            let line = json!({"tool_response": Value::Object(r)}).to_string();
            // Consecutive results share one user message (templates may insist on alternation).
            if let Some(last) = out.last_mut()
                && last.get("role").and_then(Value::as_str) == Some("user")
                && last
                    .get("content")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.starts_with("{\"tool_response\""))
            {
                if let Some(Value::String(c)) = last.get_mut("content") {
                    c.push('\n');
                    c.push_str(&line);
                }
                return;
            }
            out.push(text("user", line));
        }
        role => {
            let mut o = Map::new();
            o.insert("role".into(), Value::String(role.to_owned()));
            o.insert(
                "content".into(),
                Value::String(m.content.clone().unwrap_or_default()),
            );
            if let Some(n) = &m.name {
                o.insert("name".into(), Value::String(n.clone()));
            }
            out.push(Value::Object(o));
        }
    }
}

/// Adds `text` to the system message, creating one first if there is none.
fn add_system(out: &mut Vec<Value>, text: &str) {
    if let Some(first) = out.first_mut()
        && first.get("role").and_then(Value::as_str) == Some("system")
    {
        let old = first
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let merged = if old.is_empty() {
            text.to_owned()
        } else {
            format!("{old}\n\n{text}")
        };
        first["content"] = Value::String(merged);
    } else {
        out.insert(0, json!({"role": "system", "content": text}));
    }
}

#[cfg(test)]
mod tests;
