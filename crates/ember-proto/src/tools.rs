//! Tool calls and structured output (wire version 2), owned forms.
//!
//! JSON text that the daemon must read as JSON (a tool's parameter schema, a call's arguments, a
//! response schema) travels as a string in postcard, so that a microcontroller can send a fixed
//! string and needs no JSON code; the JSON encoding carries it as the JSON value itself, in
//! OpenAI's shapes.

use alloc::string::String;

use serde::{Deserialize, Serialize};

/// A tool call: one in an assistant message of the history, or one the model made
/// ([`crate::Final::tool_calls`]).
///
/// Postcard: `id`, `name`, `arguments` (strings). JSON: OpenAI's
/// `{"id","type":"function","function":{"name","arguments"}}`, `arguments` a string of JSON (an
/// object is accepted too, as Ollama sends it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (`call_…`), which the `tool` message answering it names in `tool_call_id`.
    pub id: String,
    /// The function called.
    pub name: String,
    /// The arguments: a JSON object, as text.
    pub arguments: String,
}

/// A function the model may call.
///
/// Postcard: `name`, `description` (optional), `parameters` (optional JSON Schema text). JSON:
/// OpenAI's `{"type":"function","function":{"name","description","parameters":{…}}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON Schema of its arguments (an object schema), as text; `None` means no arguments.
    pub parameters: Option<String>,
}

/// Whether and which tools the model must call (OpenAI's `tool_choice`).
///
/// Postcard: variant index (`Auto` 0, `None` 1, `Required` 2, `Function` 3 then the name). JSON:
/// `"auto"`, `"none"`, `"required"`, `{"type":"function","function":{"name":…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model answers in text or calls tools, as it likes (the default with tools).
    Auto,
    /// No calls: the tools are only described.
    None,
    /// At least one call.
    Required,
    /// A call of this function.
    Function(String),
}

/// The shape the answer must have (OpenAI's `response_format`); absent means free text.
///
/// Postcard: variant index (`JsonObject` 0, `JsonSchema` 1 then the schema text). JSON:
/// `{"type":"json_object"}`, `{"type":"json_schema","json_schema":{"name","schema":{…}}}`
/// (`{"type":"text"}` is free text, i.e. absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this JSON Schema (as text).
    JsonSchema(String),
}
