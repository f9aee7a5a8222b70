//! The crate's error type: everything a client can get wrong in `tools`, `tool_choice`, `messages`
//! or `response_format`, and what a model's output can get wrong in a tool call. Every message says
//! which field or call is at fault, so the daemon can pass it on as a 400 (request) or log it
//! (output). Follows the style of the other ember crates (one `thiserror` enum per crate).

/// Why a request's tool data or a model's tool-call output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// `tools` is not an array (or `null`).
    #[error("tools must be an array of {{\"type\": \"function\", \"function\": {{...}}}} objects")]
    ToolsNotArray,
    /// More tools than this crate builds grammars and prompts for.
    #[error("too many tools: {count} (at most {max})")]
    TooManyTools {
        /// How many were sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One entry of `tools` is malformed.
    #[error("tools[{index}]: {reason}")]
    BadTool {
        /// Position in `tools`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Two tools share a name.
    #[error("tools: the name {0:?} is used twice")]
    DuplicateTool(String),
    /// `tool_choice` is malformed or names a tool that was not given.
    #[error("tool_choice: {0}")]
    BadToolChoice(String),
    /// One entry of `messages` is malformed.
    #[error("messages[{index}]: {reason}")]
    BadMessage {
        /// Position in `messages`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `response_format` / `format` / `json_schema` is malformed or of an unknown type.
    #[error("response format: {0}")]
    BadResponseFormat(String),
    /// The model's output holds a tool call that is not well formed (bad JSON, no name,
    /// arguments that are not an object, a broken closing tag).
    #[error("tool call {index} in the model output is malformed: {reason}")]
    MalformedCall {
        /// 0-based index of the call in the output.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The model's output ended inside a tool call (typically the token limit was reached).
    #[error("the model output ended inside tool call {index}")]
    TruncatedCall {
        /// 0-based index of the call in the output.
        index: usize,
    },
    /// A tool call names a tool that was not declared.
    #[error("tool call names an unknown tool {0:?}")]
    UnknownTool(String),
    /// A tool call's arguments do not match the tool's `parameters` schema.
    #[error("arguments of {name:?} do not match its parameters: {reason}")]
    InvalidArguments {
        /// The tool.
        name: String,
        /// The first mismatch found (with its JSON path).
        reason: String,
    },
}
