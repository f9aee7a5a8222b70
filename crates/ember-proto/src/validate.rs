//! Request rules shared by the owned and the fixed forms.

use crate::{DecodeError, OLDEST_READ, WIRE_VERSION, valid_publish_topic};

/// The chat roles a message may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Longest request `id`, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// The parts of a message the rules look at.
pub(crate) struct MessageView<'r> {
    pub(crate) role: &'r str,
    pub(crate) has_calls: bool,
    pub(crate) has_call_id: bool,
}

/// The parts of a request the rules look at, borrowed from either form.
pub(crate) struct RequestView<'r, I> {
    pub(crate) v: u8,
    pub(crate) id: Option<&'r str>,
    pub(crate) reply_to: Option<&'r str>,
    pub(crate) has_prompt: bool,
    pub(crate) n_messages: usize,
    pub(crate) messages: I,
    /// Tools or a response format (wire version 2 only).
    pub(crate) has_v2_fields: bool,
    /// (field name, "field must be finite" message, value).
    pub(crate) floats: [(&'static str, &'static str, Option<f32>); 6],
}

pub(crate) fn check<'r, I: Iterator<Item = MessageView<'r>>>(
    view: RequestView<'r, I>,
) -> Result<(), DecodeError> {
    if !(OLDEST_READ..=WIRE_VERSION).contains(&view.v) {
        return Err(DecodeError::UnsupportedVersion(view.v));
    }
    if view.v < 2 && view.has_v2_fields {
        return Err(DecodeError::invalid(
            "tools, tool calls and `response_format` need wire version 2",
        ));
    }
    match (view.has_prompt, view.n_messages > 0) {
        (true, true) => {
            return Err(DecodeError::invalid(
                "give either `prompt` or `messages`, not both",
            ));
        }
        (false, false) => {
            return Err(DecodeError::invalid(
                "a request needs `prompt` or a non-empty `messages`",
            ));
        }
        _ => {}
    }
    for m in view.messages {
        if !ROLES.contains(&m.role) {
            return Err(DecodeError::invalid(
                "message role must be one of system, user, assistant, tool",
            ));
        }
        if m.has_calls && m.role != "assistant" {
            return Err(DecodeError::invalid(
                "only an `assistant` message may carry `tool_calls`",
            ));
        }
        if m.has_call_id && m.role != "tool" {
            return Err(DecodeError::invalid(
                "only a `tool` message may carry `tool_call_id`",
            ));
        }
    }
    if let Some(topic) = view.reply_to
        && !valid_publish_topic(topic)
    {
        return Err(DecodeError::invalid(
            "`reply_to` is not a topic one may publish to (empty, too long, wildcard, NUL or `$`)",
        ));
    }
    if view.id.is_some_and(|id| id.len() > MAX_ID_LEN) {
        return Err(DecodeError::invalid("`id` is longer than 256 bytes"));
    }
    for (_, message, value) in view.floats {
        if value.is_some_and(|x| !x.is_finite()) {
            return Err(DecodeError::invalid(message));
        }
    }
    Ok(())
}

/// The request's float fields as (name, error message, value), in wire order (both forms have the
/// same ones).
macro_rules! request_floats {
    ($r:expr) => {
        [
            $crate::validate::request_floats!(@ $r, temperature),
            $crate::validate::request_floats!(@ $r, top_p),
            $crate::validate::request_floats!(@ $r, min_p),
            $crate::validate::request_floats!(@ $r, repeat_penalty),
            $crate::validate::request_floats!(@ $r, presence_penalty),
            $crate::validate::request_floats!(@ $r, frequency_penalty),
        ]
    };
    (@ $r:expr, $field:ident) => {
        (
            stringify!($field),
            concat!("`", stringify!($field), "` must be finite"),
            $r.$field,
        )
    };
}
pub(crate) use request_floats;

/// Whether a request (either form) carries a field of wire version 2: tools, a tool choice, a
/// response format, or tool-call history in its messages.
macro_rules! has_v2_fields {
    ($r:expr) => {
        $r.response_format.is_some()
            || !$r.tools.is_empty()
            || $r.tool_choice.is_some()
            || $r.parallel_tool_calls.is_some()
            || $r
                .messages
                .iter()
                .any(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some())
    };
}
pub(crate) use has_v2_fields;
