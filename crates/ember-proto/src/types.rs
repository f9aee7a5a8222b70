//! Plain-data parts shared by the owned and the fixed-capacity forms.

use serde::{Deserialize, Serialize};

/// Why generation ended.
///
/// Postcard: variant index (`Stop` = 0, `Length` = 1, `ToolCalls` = 2, the last new in wire version
/// 2). JSON: `"stop"`, `"length"`, `"tool_calls"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The answer is one or more tool calls ([`crate::Final::tool_calls`]), complete and valid.
    ToolCalls,
}

impl FinishReason {
    /// The JSON spelling: `"stop"`, `"length"` or `"tool_calls"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }

    /// The reason spelled `s` in JSON, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(FinishReason::Stop),
            "length" => Some(FinishReason::Length),
            "tool_calls" => Some(FinishReason::ToolCalls),
            _ => None,
        }
    }
}

/// What went wrong, in an [`ErrorReply`](crate::ErrorReply).
///
/// Postcard: variant index in declaration order (`BadRequest` = 0 … `Internal` = 9); JSON: the
/// snake_case name ([`ErrorCode::as_str`]). Adding a code is a wire-version change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be decoded or broke a rule.
    BadRequest,
    /// The request's wire version is not spoken here.
    UnsupportedVersion,
    /// The request's Content-Type is neither JSON nor postcard.
    UnsupportedContentType,
    /// The request is larger than the server accepts.
    TooLarge,
    /// The server's queue is full; retry later.
    Busy,
    /// The prompt does not fit the model's context.
    PromptTooLong,
    /// The requested model is not served here.
    ModelNotFound,
    /// The request waited longer than its deadline (MQTT message expiry) allowed.
    Expired,
    /// The server is stopping and takes no more work.
    ShuttingDown,
    /// Anything else; the message says what.
    Internal,
}

impl ErrorCode {
    /// Every code, in wire (variant index) order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnsupportedContentType,
        ErrorCode::TooLarge,
        ErrorCode::Busy,
        ErrorCode::PromptTooLong,
        ErrorCode::ModelNotFound,
        ErrorCode::Expired,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// The JSON spelling, e.g. `"busy"`, `"prompt_too_long"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnsupportedContentType => "unsupported_content_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::PromptTooLong => "prompt_too_long",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::Expired => "expired",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code spelled `s` in JSON, if any.
    pub fn parse(s: &str) -> Option<Self> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Token counts of a finished request (OpenAI's `usage`, plus the prompt-cache hits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, cached ones included.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u32,
    /// Prompt tokens served from the KV cache rather than evaluated.
    pub cached_tokens: u32,
}

/// Where a finished request's time went (llama.cpp's `timings`), in milliseconds.
///
/// The JSON form adds `prompt_per_second` and `predicted_per_second`, computed on encode
/// ([`Timings::prompt_per_second`], [`Timings::predicted_per_second`]) and ignored on decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time spent waiting for a free slot.
    pub queued_ms: f32,
    /// Prompt tokens evaluated (cache hits excluded).
    pub prompt_n: u32,
    /// Time spent evaluating them.
    pub prompt_ms: f32,
    /// Tokens generated.
    pub predicted_n: u32,
    /// Time spent generating them.
    pub predicted_ms: f32,
}

impl Timings {
    /// Prompt tokens per second; 0 when `prompt_ms` is 0.
    pub fn prompt_per_second(&self) -> f32 {
        per_second(self.prompt_n, self.prompt_ms)
    }

    /// Generated tokens per second; 0 when `predicted_ms` is 0.
    pub fn predicted_per_second(&self) -> f32 {
        per_second(self.predicted_n, self.predicted_ms)
    }
}

fn per_second(n: u32, ms: f32) -> f32 {
    if ms > 0.0 {
        let r = n as f32 * 1000.0 / ms;
        if r.is_finite() { r } else { 0.0 }
    } else {
        0.0
    }
}
