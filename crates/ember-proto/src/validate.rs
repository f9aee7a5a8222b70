//! Request rules shared by the owned and the fixed forms.

use crate::{DecodeError, WIRE_VERSION, valid_publish_topic};

/// The chat roles a message may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Longest request `id`, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// The parts of a request the rules look at, borrowed from either form.
pub(crate) struct RequestView<'r, I> {
    pub(crate) v: u8,
    pub(crate) id: Option<&'r str>,
    pub(crate) reply_to: Option<&'r str>,
    pub(crate) has_prompt: bool,
    pub(crate) n_messages: usize,
    pub(crate) roles: I,
    /// (field name, "field must be finite" message, value).
    pub(crate) floats: [(&'static str, &'static str, Option<f32>); 6],
}

pub(crate) fn check<'r, I: Iterator<Item = &'r str>>(
    view: RequestView<'r, I>,
) -> Result<(), DecodeError> {
    if view.v != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(view.v));
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
    for role in view.roles {
        if !ROLES.contains(&role) {
            return Err(DecodeError::invalid(
                "message role must be one of system, user, assistant, tool",
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
