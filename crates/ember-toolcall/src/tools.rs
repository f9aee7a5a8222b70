//! Tool definitions, `tool_choice` and tool calls as the OpenAI and Ollama chat APIs carry them,
//! checked once at the request boundary so everything downstream (prompts, grammars, parsers) can
//! rely on sane names and object schemas. Follows llama.cpp's `common_chat_tools_parse_oaicompat`
//! and `common_chat_tool_choice_parse_oaicompat` (common/chat.cpp), stricter where a grammar would
//! otherwise break (names are restricted to characters that are literal in Lark and in every
//! family's call syntax).
//!
//! [`validate_call`] is a small JSON-schema subset (types, enums, required and extra keys, nested
//! objects and arrays) for defence in depth after a grammar-constrained generation.

use serde_json::{Map, Value, json};

use crate::ToolError;

/// Most tools one request may declare (each becomes part of the prompt and of the grammar).
pub const MAX_TOOLS: usize = 128;
/// Longest tool name (OpenAI's limit).
pub const MAX_NAME_LEN: usize = 64;

/// One callable function.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Unique name: 1 to 64 of `A-Z a-z 0-9 _ - .`.
    pub name: String,
    /// What the tool does, for the model.
    pub description: Option<String>,
    /// JSON schema of the arguments; always an object with `"type": "object"`.
    pub parameters: Value,
}

impl Tool {
    /// The OpenAI wire shape `{"type": "function", "function": {...}}`, which is also what chat
    /// templates iterate over as `tools`.
    pub fn to_openai(&self) -> Value {
        let mut f = Map::new();
        f.insert("name".into(), Value::String(self.name.clone()));
        if let Some(d) = &self.description {
            f.insert("description".into(), Value::String(d.clone()));
        }
        f.insert("parameters".into(), self.parameters.clone());
        json!({"type": "function", "function": Value::Object(f)})
    }
}

/// Whether `name` is acceptable as a tool name (see [`Tool::name`]).
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parses the `tools` array of an OpenAI or Ollama chat request (both send
/// `[{"type": "function", "function": {"name", "description", "parameters"}}]`).
///
/// `null` means no tools. A missing `type` is taken as `"function"` (some clients omit it); any
/// other type is refused. Missing `parameters` become an empty object schema, and an object schema
/// without `type` gets `"type": "object"` so grammars always constrain an object.
pub fn parse_tools(v: &Value) -> Result<Vec<Tool>, ToolError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err(ToolError::ToolsNotArray),
    };
    if items.len() > MAX_TOOLS {
        return Err(ToolError::TooManyTools {
            count: items.len(),
            max: MAX_TOOLS,
        });
    }
    let mut tools: Vec<Tool> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let bad = |reason: &str| ToolError::BadTool {
            index,
            reason: reason.to_owned(),
        };
        let obj = item.as_object().ok_or_else(|| bad("must be an object"))?;
        match obj.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "function" => {}
            Some(other) => {
                return Err(bad(&format!(
                    "unsupported tool type {other} (only \"function\" is)"
                )));
            }
        }
        let f = obj
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("missing \"function\" object"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing function name"))?;
        if !valid_tool_name(name) {
            return Err(bad(&format!(
                "function name {name:?} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ - ."
            )));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("function description must be a string")),
        };
        let parameters = normalize_parameters(f.get("parameters")).map_err(|r| bad(&r))?;
        if tools.iter().any(|t| t.name == name) {
            return Err(ToolError::DuplicateTool(name.to_owned()));
        }
        tools.push(Tool {
            name: name.to_owned(),
            description,
            parameters,
        });
    }
    Ok(tools)
}

fn normalize_parameters(p: Option<&Value>) -> Result<Value, String> {
    let mut schema = match p {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("function parameters must be a JSON schema object".into()),
    };
    match schema.get("type") {
        None => {
            schema.insert("type".into(), Value::String("object".into()));
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(t) => {
            return Err(format!(
                "function parameters must describe an object (\"type\": \"object\"), not {t}"
            ));
        }
    }
    if let Some(props) = schema.get("properties")
        && !props.is_object()
    {
        return Err("function parameters' \"properties\" must be an object".into());
    }
    Ok(Value::Object(schema))
}

/// Which calls the model may or must make.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides between answering and calling tools.
    #[default]
    Auto,
    /// No tool calls: plain text only.
    None,
    /// At least one tool call, no text.
    Required,
    /// Exactly one call of this tool.
    Named(String),
}

/// Parses OpenAI's `tool_choice`: `"auto"`, `"none"`, `"required"` or
/// `{"type": "function", "function": {"name": ...}}`. Absent or `null` is `Auto`. `required` or a
/// name with no tools given, or a name that is not among `tools`, is an error.
pub fn parse_tool_choice(v: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ToolError> {
    let bad = |s: String| ToolError::BadToolChoice(s);
    let choice = match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "unknown value {other:?} (expected \"auto\", \"none\", \"required\" or an object)"
                )));
            }
        },
        Some(Value::Object(o)) => {
            match o.get("type").and_then(Value::as_str) {
                Some("function") | None => {}
                Some(t) => return Err(bad(format!("unsupported type {t:?}"))),
            }
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad("expected {\"type\": \"function\", \"function\": {\"name\": ...}}".into())
                })?;
            ToolChoice::Named(name.to_owned())
        }
        Some(other) => return Err(bad(format!("must be a string or an object, not {other}"))),
    };
    match &choice {
        ToolChoice::Required if tools.is_empty() => {
            Err(bad("\"required\" needs at least one tool".into()))
        }
        ToolChoice::Named(n) if !tools.iter().any(|t| &t.name == n) => {
            Err(bad(format!("{n:?} is not among the declared tools")))
        }
        _ => Ok(choice),
    }
}

/// A tool call parsed from the model's output.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// `call_` + 24 alphanumerics.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

impl ToolCall {
    /// The arguments as compact JSON text (OpenAI sends `arguments` as a string).
    pub fn arguments_json(&self) -> String {
        self.arguments.to_string()
    }

    /// OpenAI's `tool_calls` entry: `{"id", "type": "function", "function": {"name", "arguments": "<json>"}}`.
    pub fn to_openai(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json()},
        })
    }

    /// Ollama's `tool_calls` entry: `{"function": {"name", "arguments": {...}}}`.
    pub fn to_ollama(&self) -> Value {
        json!({"function": {"name": self.name, "arguments": self.arguments}})
    }
}

/// Checks a call against the declared tools: the name is declared, the arguments are an object,
/// required keys are present, no undeclared keys where `additionalProperties` is `false`, and
/// values have the declared `type` / `enum` / `const` (recursively through `properties`, `items`,
/// `anyOf`, `oneOf`, `allOf`). Other schema keywords are not checked.
pub fn validate_call(call: &ToolCall, tools: &[Tool]) -> Result<(), ToolError> {
    let tool = tools
        .iter()
        .find(|t| t.name == call.name)
        .ok_or_else(|| ToolError::UnknownTool(call.name.clone()))?;
    let invalid = |reason: String| ToolError::InvalidArguments {
        name: call.name.clone(),
        reason,
    };
    if !call.arguments.is_object() {
        return Err(invalid("the arguments are not a JSON object".into()));
    }
    check(&tool.parameters, &call.arguments, "$", 0).map_err(invalid)
}

/// Schema nesting this validator follows before it stops checking (schemas are client input).
const MAX_CHECK_DEPTH: usize = 64;

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        // Unknown type names are not ours to judge.
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_CHECK_DEPTH {
        return Ok(());
    }
    let s = match schema {
        Value::Bool(false) => return Err(format!("{path}: no value is allowed here")),
        Value::Object(s) => s,
        _ => return Ok(()),
    };
    match s.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => {
            return Err(format!("{path}: expected {t}, got {}", kind(v)));
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, v)) =>
        {
            return Err(format!("{path}: {} is none of the allowed types", kind(v)));
        }
        _ => {}
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        return Err(format!("{path}: {v} is not one of the allowed values"));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return Err(format!("{path}: expected {c}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = s.get(key)
            && !branches.is_empty()
            && !branches
                .iter()
                .any(|b| check(b, v, path, depth + 1).is_ok())
        {
            return Err(format!("{path}: matches none of the {key} alternatives"));
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for b in all {
            check(b, v, path, depth + 1)?;
        }
    }
    if let Value::Object(obj) = v {
        check_object(s, obj, path, depth)?;
    }
    if let (Value::Array(items), Some(item_schema)) = (v, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
        }
    }
    Ok(())
}

fn check_object(
    s: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
    depth: usize,
) -> Result<(), String> {
    if let Some(Value::Array(req)) = s.get("required")
        && let Some(missing) = req
            .iter()
            .filter_map(Value::as_str)
            .find(|k| !obj.contains_key(*k))
    {
        return Err(format!("{path}: missing required key {missing:?}"));
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (k, val) in obj {
        let sub = format!("{path}.{k}");
        match props.and_then(|p| p.get(k)) {
            Some(ps) => check(ps, val, &sub, depth + 1)?,
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    return Err(format!("{path}: unexpected key {k:?}"));
                }
                Some(extra @ Value::Object(_)) => check(extra, val, &sub, depth + 1)?,
                _ => {}
            },
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                               "unit": {"enum": ["c", "f"]}},
                "required": ["city"], "additionalProperties": false}}}])
    }

    #[test]
    fn parses_openai_and_ollama_tools() {
        let t = parse_tools(&weather()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].name, "get_weather");
        assert_eq!(t[0].description.as_deref(), Some("Weather of a city"));
        // Ollama: no type, no parameters.
        let t = parse_tools(&json!([{"function": {"name": "now"}}])).unwrap();
        assert_eq!(t[0].parameters, json!({"type": "object"}));
        assert_eq!(parse_tools(&Value::Null).unwrap(), vec![]);
        assert_eq!(
            t[0].to_openai(),
            json!({"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}})
        );
    }

    #[test]
    fn refuses_bad_tools() {
        let err = |v: Value| parse_tools(&v).unwrap_err();
        assert_eq!(err(json!({"a": 1})), ToolError::ToolsNotArray);
        assert!(matches!(
            err(json!([1])),
            ToolError::BadTool { index: 0, .. }
        ));
        assert!(matches!(
            err(json!([{"type": "code_interpreter"}])),
            ToolError::BadTool { .. }
        ));
        assert!(matches!(
            err(json!([{"type": "function"}])),
            ToolError::BadTool { .. }
        ));
        assert!(matches!(
            err(json!([{"function": {"name": "a b"}}])),
            ToolError::BadTool { .. }
        ));
        assert!(matches!(
            err(json!([{"function": {"name": "a", "parameters": {"type": "string"}}}])),
            ToolError::BadTool { .. }
        ));
        assert!(matches!(
            err(json!([{"function": {"name": "a", "parameters": [1]}}])),
            ToolError::BadTool { .. }
        ));
        assert_eq!(
            err(json!([{"function": {"name": "a"}}, {"function": {"name": "a"}}])),
            ToolError::DuplicateTool("a".into())
        );
        let many: Vec<Value> = (0..=MAX_TOOLS)
            .map(|i| json!({"function": {"name": format!("t{i}")}}))
            .collect();
        assert!(matches!(
            err(Value::Array(many)),
            ToolError::TooManyTools { .. }
        ));
    }

    #[test]
    fn tool_choice() {
        let tools = parse_tools(&weather()).unwrap();
        let p = |v: Value| parse_tool_choice(Some(&v), &tools);
        assert_eq!(parse_tool_choice(None, &tools).unwrap(), ToolChoice::Auto);
        assert_eq!(p(Value::Null).unwrap(), ToolChoice::Auto);
        assert_eq!(p(json!("none")).unwrap(), ToolChoice::None);
        assert_eq!(p(json!("required")).unwrap(), ToolChoice::Required);
        assert_eq!(
            p(json!({"type": "function", "function": {"name": "get_weather"}})).unwrap(),
            ToolChoice::Named("get_weather".into())
        );
        assert!(p(json!({"type": "function", "function": {"name": "nope"}})).is_err());
        assert!(p(json!("sometimes")).is_err());
        assert!(p(json!(3)).is_err());
        assert!(parse_tool_choice(Some(&json!("required")), &[]).is_err());
    }

    #[test]
    fn validates_calls() {
        let tools = parse_tools(&weather()).unwrap();
        let call = |name: &str, args: Value| ToolCall {
            id: "call_x".into(),
            name: name.into(),
            arguments: args,
        };
        assert!(validate_call(&call("get_weather", json!({"city": "Oslo"})), &tools).is_ok());
        assert!(
            validate_call(
                &call(
                    "get_weather",
                    json!({"city": "Oslo", "days": 3, "unit": "c"})
                ),
                &tools
            )
            .is_ok()
        );
        assert_eq!(
            validate_call(&call("nope", json!({})), &tools).unwrap_err(),
            ToolError::UnknownTool("nope".into())
        );
        for bad in [
            json!([]),
            json!({}),
            json!({"city": 3}),
            json!({"city": "Oslo", "days": 1.5}),
            json!({"city": "Oslo", "unit": "k"}),
            json!({"city": "Oslo", "extra": true}),
        ] {
            assert!(
                matches!(
                    validate_call(&call("get_weather", bad.clone()), &tools),
                    Err(ToolError::InvalidArguments { .. })
                ),
                "{bad}"
            );
        }
        let c = call("get_weather", json!({"city": "Oslo"}));
        assert_eq!(
            c.to_openai()["function"]["arguments"],
            json!("{\"city\":\"Oslo\"}")
        );
        assert_eq!(
            c.to_ollama()["function"]["arguments"]["city"],
            json!("Oslo")
        );
    }
}
