//! Structured output without tools: OpenAI's `response_format` (`json_object`, `json_schema`),
//! llama-server's `json_schema` field and Ollama's `format` (`"json"` or a schema), read into one
//! [`ResponseFormat`] and turned into a strict llguidance grammar (what llama.cpp does with
//! `json_schema_to_grammar` in `common_chat_params_init_without_tools`, common/chat.cpp).

use serde_json::Value;

use crate::grammar::{Lark, json_schema};
use crate::{Grammar, GrammarOptions, ToolError};

/// What shape the answer must have.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    /// Free text (no grammar).
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against a schema.
    JsonSchema {
        /// OpenAI's `json_schema.name`, if given.
        name: Option<String>,
        /// The schema (an object, or `true`).
        schema: Value,
        /// OpenAI's `strict` flag (the grammar is always strict; kept for the record).
        strict: bool,
    },
}

fn bad(s: impl Into<String>) -> ToolError {
    ToolError::BadResponseFormat(s.into())
}

fn schema_value(v: &Value) -> Result<Value, ToolError> {
    match v {
        Value::Object(_) | Value::Bool(true) => Ok(v.clone()),
        _ => Err(bad("the schema must be a JSON object")),
    }
}

impl ResponseFormat {
    /// OpenAI `response_format`: `{"type": "text" | "json_object" | "json_schema", ...}` with
    /// `json_schema: {"name", "schema", "strict"}`; llama-server's `{"type": "json_object",
    /// "schema": {...}}` is accepted too. Absent or `null` is text.
    pub fn from_openai(v: Option<&Value>) -> Result<Self, ToolError> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(ResponseFormat::Text);
        };
        let obj = v
            .as_object()
            .ok_or_else(|| bad("response_format must be an object"))?;
        match obj.get("type").and_then(Value::as_str) {
            Some("text") => Ok(ResponseFormat::Text),
            Some("json_object") => match obj.get("schema") {
                Some(s) if !s.is_null() => Ok(ResponseFormat::JsonSchema {
                    name: None,
                    schema: schema_value(s)?,
                    strict: true,
                }),
                _ => Ok(ResponseFormat::JsonObject),
            },
            Some("json_schema") => {
                let js = obj
                    .get("json_schema")
                    .and_then(Value::as_object)
                    .ok_or_else(|| bad("json_schema type needs a \"json_schema\" object"))?;
                let schema = js
                    .get("schema")
                    .ok_or_else(|| bad("json_schema needs a \"schema\""))?;
                Ok(ResponseFormat::JsonSchema {
                    name: js.get("name").and_then(Value::as_str).map(str::to_owned),
                    schema: schema_value(schema)?,
                    strict: js.get("strict").and_then(Value::as_bool).unwrap_or(false),
                })
            }
            Some(t) => Err(bad(format!("unknown type {t:?}"))),
            None => Err(bad("response_format needs a \"type\"")),
        }
    }

    /// Ollama `format`: `"json"`, a schema object, or empty / `null` for text.
    pub fn from_ollama(v: Option<&Value>) -> Result<Self, ToolError> {
        match v {
            None | Some(Value::Null) => Ok(ResponseFormat::Text),
            Some(Value::String(s)) if s.is_empty() => Ok(ResponseFormat::Text),
            Some(Value::String(s)) if s == "json" => Ok(ResponseFormat::JsonObject),
            Some(Value::String(s)) => Err(bad(format!(
                "unknown format {s:?} (expected \"json\" or a schema)"
            ))),
            Some(s @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema {
                name: None,
                schema: s.clone(),
                strict: true,
            }),
            Some(_) => Err(bad("format must be \"json\" or a JSON schema object")),
        }
    }

    /// llama-server's `json_schema` request field (a schema; absent or `null` for text).
    pub fn from_json_schema(v: Option<&Value>) -> Result<Self, ToolError> {
        match v {
            None | Some(Value::Null) => Ok(ResponseFormat::Text),
            Some(s) => Ok(ResponseFormat::JsonSchema {
                name: None,
                schema: schema_value(s)?,
                strict: true,
            }),
        }
    }
}

/// The strict grammar for a response format; `None` for text.
pub fn response_format_grammar(fmt: &ResponseFormat) -> Result<Option<Grammar>, ToolError> {
    response_format_grammar_with(fmt, &GrammarOptions::default())
}

/// [`response_format_grammar`] with options (a reasoning block before the JSON).
pub fn response_format_grammar_with(
    fmt: &ResponseFormat,
    opts: &GrammarOptions,
) -> Result<Option<Grammar>, ToolError> {
    let schema = match fmt {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => serde_json::json!({"type": "object"}),
        ResponseFormat::JsonSchema { schema, .. } => schema_value(schema)?,
    };
    let mut l = Lark::new(opts);
    let think = l.think_prefix();
    l.rule(format!("answer: {}", json_schema(&schema)));
    // Nothing around the value: the answer ends where the JSON does (a babbling model cannot pad).
    l.rule(format!("start: {think}answer"));
    Ok(Some(Grammar {
        lark: l.finish(),
        triggers: Vec::new(),
        triggers_at_start: false,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_wire_forms() {
        let o = |v: Value| ResponseFormat::from_openai(Some(&v));
        assert_eq!(
            ResponseFormat::from_openai(None).unwrap(),
            ResponseFormat::Text
        );
        assert_eq!(o(json!({"type": "text"})).unwrap(), ResponseFormat::Text);
        assert_eq!(
            o(json!({"type": "json_object"})).unwrap(),
            ResponseFormat::JsonObject
        );
        assert_eq!(
            o(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}}))
                .unwrap(),
            ResponseFormat::JsonSchema {
                name: Some("x".into()),
                schema: json!({"type": "object"}),
                strict: true
            }
        );
        assert!(matches!(
            o(json!({"type": "json_object", "schema": {"type": "array"}})).unwrap(),
            ResponseFormat::JsonSchema { .. }
        ));
        for bad in [
            json!({"type": "xml"}),
            json!({}),
            json!("json"),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": 3}}),
        ] {
            assert!(o(bad.clone()).is_err(), "{bad}");
        }
        let ol = |v: Value| ResponseFormat::from_ollama(Some(&v));
        assert_eq!(ol(json!("json")).unwrap(), ResponseFormat::JsonObject);
        assert_eq!(ol(json!("")).unwrap(), ResponseFormat::Text);
        assert!(matches!(
            ol(json!({"type": "object"})).unwrap(),
            ResponseFormat::JsonSchema { .. }
        ));
        assert!(ol(json!("yaml")).is_err());
        assert!(ol(json!(1)).is_err());
        assert!(matches!(
            ResponseFormat::from_json_schema(Some(&json!({"type": "object"}))).unwrap(),
            ResponseFormat::JsonSchema { .. }
        ));
        assert!(ResponseFormat::from_json_schema(Some(&json!([1]))).is_err());
    }

    #[test]
    fn text_has_no_grammar() {
        assert_eq!(
            response_format_grammar(&ResponseFormat::Text).unwrap(),
            None
        );
        let g = response_format_grammar(&ResponseFormat::JsonObject)
            .unwrap()
            .unwrap();
        assert!(g.triggers.is_empty());
        assert!(g.lark.contains("%json"));
    }
}
