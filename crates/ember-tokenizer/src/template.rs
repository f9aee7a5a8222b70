//! Chat-template rendering: turns a conversation into the prompt text a model was trained on, from the
//! Jinja source stored in a GGUF file's `tokenizer.chat_template` (or a `--template-file` override).
//!
//! The output has to be byte-identical to what Hugging Face transformers' `apply_chat_template` (Python
//! Jinja2) produces, which is also what llama.cpp's `--jinja` path aims for. So the environment follows
//! HF's conventions rather than minijinja's defaults:
//!
//! * `trim_blocks` and `lstrip_blocks` on, trailing newline of the template dropped, no auto-escaping,
//!   `loopcontrols` (`{% break %}` / `{% continue %}`), lenient undefined values (Jinja2's default
//!   `Undefined`: a missing key renders as nothing, `is defined` works);
//! * `raise_exception(msg)` aborts rendering with [`TemplateError::Raised`];
//! * `tojson` is HF's: `json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`,
//!   i.e. `", "` / `": "` separators and no HTML escaping (minijinja's builtin differs on both);
//! * `strftime_now(fmt)` formats the current time (UTC; Python would use local time);
//! * values print as Python prints them (`None`, `True`, `['a', 1]`, `1.0`), Python string and dict
//!   methods (`strip`, `split`, `startswith`, `items`, `get`, ...) come from `minijinja_contrib::pycompat`
//!   plus `rsplit` / `removeprefix` / `removesuffix` here;
//! * the `{% generation %}` block of HF's `AssistantTracker` extension is accepted as a no-op.
//!
//! The variables a template sees are `messages`, `add_generation_prompt`, `bos_token`, `eos_token`,
//! `tools` (only when given) and any extra variables of the request (`enable_thinking`, `thinking`,
//! `date_string`, ...). As in HF, variables that are not given are undefined, not `None`.

mod pyext;
mod pyfmt;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Map;

/// Name under which the template is registered (shows up in error messages).
const TEMPLATE_NAME: &str = "chat_template";

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template source is not valid Jinja (as far as minijinja can tell).
    #[error("chat template syntax error{}: {message}", line_suffix(*.line))]
    Syntax {
        /// Description of the problem, with minijinja's detail.
        message: String,
        /// 1-based line in the template source, when known.
        line: Option<usize>,
    },
    /// Rendering failed (unknown filter, bad operand types, non-serializable `tojson` value, ...).
    #[error("chat template render error{}: {message}", line_suffix(*.line))]
    Render {
        /// Description of the problem, with minijinja's detail.
        message: String,
        /// 1-based line in the template source, when known.
        line: Option<usize>,
    },
    /// The template called `raise_exception(message)` (e.g. "Conversation roles must alternate").
    #[error("chat template raised an exception: {0}")]
    Raised(String),
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// What to render: the conversation plus the template variables HF's `apply_chat_template` passes.
///
/// Deserializes from JSON such as `{"messages": [...], "add_generation_prompt": true}`; every field but
/// `messages` is optional. Messages stay JSON values so that templates can read any field
/// (`content`, `tool_calls`, `reasoning_content`, ...). `bos_token` / `eos_token` default to empty: the
/// caller fills them from the model's vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderRequest {
    /// The conversation: objects with at least `role` and usually `content`.
    pub messages: Vec<serde_json::Value>,
    /// Whether to end with the header that opens the assistant's turn.
    #[serde(default)]
    pub add_generation_prompt: bool,
    /// Text of the model's BOS token (templates usually print it themselves).
    #[serde(default)]
    pub bos_token: String,
    /// Text of the model's EOS token.
    #[serde(default)]
    pub eos_token: String,
    /// Tool (function) definitions, OpenAI style. Exposed as `tools` only when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Further template variables (`enable_thinking`, `thinking`, `date_string`, ...), HF's `**kwargs` /
    /// llama.cpp's `chat_template_kwargs`. The named fields above win over entries with the same name.
    #[serde(
        default,
        alias = "chat_template_kwargs",
        skip_serializing_if = "Map::is_empty"
    )]
    pub extra: Map<String, serde_json::Value>,
}

impl RenderRequest {
    /// A request for `messages` with no generation prompt and empty BOS/EOS texts.
    pub fn new(messages: Vec<serde_json::Value>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Sets `add_generation_prompt`.
    pub fn with_generation_prompt(mut self, add: bool) -> Self {
        self.add_generation_prompt = add;
        self
    }

    /// Sets the BOS and EOS token texts.
    pub fn with_special_tokens(mut self, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        self.bos_token = bos.into();
        self.eos_token = eos.into();
        self
    }

    /// Adds (or replaces) an extra template variable.
    pub fn with_var(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }
}

/// A compiled chat template, ready to render any number of requests (`Send + Sync`).
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    strftime_now: bool,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source().len())
            .field("strftime_now", &self.strftime_now)
            .finish_non_exhaustive()
    }
}

/// Instructions one render may execute. Real chat templates use a few thousand per message; this
/// leaves room for conversations of thousands of turns.
const RENDER_FUEL: u64 = 50_000_000;

impl ChatTemplate {
    /// Compiles a template source (a GGUF `tokenizer.chat_template` or the contents of a template file).
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| TemplateError::Syntax {
                message: error_message(&e),
                line: None,
            })?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        // A template is outside input (GGUF files, --template-file): cap the work one render may do,
        // so a hostile `{% for %}` nest ends in an error instead of hanging the engine thread.
        env.set_fuel(Some(RENDER_FUEL));
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_formatter(python_formatter);
        env.set_unknown_method_callback(pyext::unknown_method);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_filter("string", |v: &Value| pyfmt::py_str(v));
        // Jinja2 builtins that minijinja keeps in its contrib crate.
        env.add_filter("filesizeformat", minijinja_contrib::filters::filesizeformat);
        env.add_filter("truncate", minijinja_contrib::filters::truncate);
        env.add_filter("striptags", minijinja_contrib::filters::striptags);
        env.add_filter("wordcount", |s: &str| pyext::wordcount(s));
        env.add_filter("center", |s: &str, width: Option<usize>| {
            pyext::center(s, width)
        });
        env.add_function("cycler", minijinja_contrib::globals::cycler);
        env.add_function("joiner", minijinja_contrib::globals::joiner);
        let source = rewrite_generation_tags(source).into_owned();
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| TemplateError::Syntax {
                message: error_message(&e),
                line: e.line(),
            })?;
        Ok(Self {
            env,
            source,
            strftime_now: true,
        })
    }

    /// Whether templates see a `strftime_now` function (default: yes, as in HF and llama.cpp). Without
    /// it, `strftime_now is defined` is false and e.g. the Llama 3.x templates fall back to their
    /// built-in date "26 Jul 2024", which makes the output reproducible.
    pub fn with_strftime_now(mut self, enabled: bool) -> Self {
        self.strftime_now = enabled;
        self
    }

    /// The template source as compiled (after the `{% generation %}` rewrite).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation to prompt text.
    pub fn render(&self, req: &RenderRequest) -> Result<String, TemplateError> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        for (name, value) in &req.extra {
            ctx.insert(name, Value::from(Serde(value)));
        }
        if self.strftime_now {
            ctx.insert("strftime_now", Value::from_function(strftime_now));
        }
        if let Some(tools) = &req.tools {
            ctx.insert("tools", Value::from(Serde(tools)));
        }
        ctx.insert("messages", Value::from(Serde(&req.messages)));
        ctx.insert(
            "add_generation_prompt",
            Value::from(req.add_generation_prompt),
        );
        ctx.insert("bos_token", Value::from(req.bos_token.as_str()));
        ctx.insert("eos_token", Value::from(req.eos_token.as_str()));
        template
            .render(Value::from_pairs(ctx))
            .map_err(render_error)
    }
}

/// Carries `raise_exception`'s message through minijinja's error chain so that it can be told apart
/// from engine errors.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: Option<Value>) -> Result<Value, Error> {
    let message = match message {
        Some(v) => pyfmt::py_str(&v)?,
        None => String::new(),
    };
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// minijinja's message for an error plus the messages of its sources.
fn error_message(err: &Error) -> String {
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

fn render_error(err: Error) -> TemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<Raised>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = e.source();
    }
    TemplateError::Render {
        message: error_message(&err),
        line: err.line(),
    }
}

/// Prints `{{ value }}` the way Python's `str()` would (`None`, `True`, `[1, 'a']`, `2.0`).
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    _state: &mut State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    if value.is_undefined() {
        return Ok(());
    }
    let text = match value.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(pyfmt::py_str(value)?),
    };
    out.write_str(&text)
        .map_err(|_| Error::new(ErrorKind::WriteFailure, "formatting failed"))
}

/// HF's `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
/// (`separators` and `sort_keys` by keyword only).
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let arg = |positional: Option<Value>, name: &str| -> Result<Option<Value>, Error> {
        let named: Option<Value> = kwargs.get(name)?;
        Ok(named.or(positional).filter(|v| !v.is_undefined()))
    };
    let indent = match arg(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.to_string()),
        Some(v) => match v.as_i64() {
            Some(n) if v.is_integer() => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be int or str",
                ));
            }
        },
    };
    // Python's defaults: ", " between items on one line, "," when items go on their own lines.
    let (mut item_separator, mut key_separator) = (
        if indent.is_some() { "," } else { ", " }.to_owned(),
        ": ".to_owned(),
    );
    if let Some(seps) = arg(None, "separators")?.filter(|v| !v.is_none()) {
        let parts: Vec<Value> = seps.try_iter()?.collect();
        match parts.as_slice() {
            [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                item_separator = item.to_string();
                key_separator = key.to_string();
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be a pair of strings",
                ));
            }
        }
    }
    let opts = pyfmt::JsonOptions {
        ensure_ascii: arg(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true()),
        indent,
        item_separator,
        key_separator,
        sort_keys: arg(None, "sort_keys")?.is_some_and(|v| v.is_true()),
    };
    kwargs.assert_all_used()?;
    pyfmt::json_dumps(value, &opts).map(Value::from)
}

/// `strftime_now(format)`: the current time (UTC) formatted with C `strftime` directives.
fn strftime_now(state: &State<'_, '_>, format: String) -> Result<String, Error> {
    if !format.contains('%') {
        // Nothing to substitute; also keeps minijinja-contrib's named formats ("short", ...) out.
        return Ok(format);
    }
    let kwargs = Kwargs::from_iter([("format", Value::from(format))]);
    minijinja_contrib::filters::datetimeformat(state, minijinja_contrib::globals::now(), kwargs)
}

/// Rewrites HF's `{% generation %}` / `{% endgeneration %}` (AssistantTracker extension, a no-op
/// when rendering) into `{% if true %}` / `{% endif %}`, which minijinja knows and which strip
/// whitespace exactly like a block tag does.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len() + 16);
    let mut rest = source;
    while let Some(pos) = rest.find("{%") {
        let (before, tag) = rest.split_at(pos);
        out.push_str(before);
        let body = &tag[2..];
        let trimmed = body.trim_start_matches(['-', '+']);
        let marker_len = body.len() - trimmed.len();
        let inner = trimmed.trim_start();
        let replacement = [("endgeneration", "endif"), ("generation", "if true")]
            .into_iter()
            .find_map(|(kw, rep)| {
                let after = inner.strip_prefix(kw)?;
                let after_trim = after.trim_start().trim_start_matches(['-', '+']);
                after_trim.starts_with("%}").then_some((rep, after))
            })
            .filter(|_| marker_len <= 1);
        match replacement {
            Some((rep, after)) => {
                out.push_str(&tag[..2 + marker_len]);
                out.push(' ');
                out.push_str(rep);
                rest = after;
            }
            None => {
                out.push_str("{%");
                rest = body;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, messages: serde_json::Value) -> Result<String, TemplateError> {
        let messages = messages.as_array().cloned().unwrap_or_default();
        ChatTemplate::new(source)?.render(&RenderRequest::new(messages))
    }

    #[test]
    fn raise_exception_is_raised_error() {
        let err = render("{{ raise_exception('roles must alternate') }}", json!([]));
        assert_eq!(
            err,
            Err(TemplateError::Raised("roles must alternate".into()))
        );
        let err = render(
            "{% macro f() %}{{ raise_exception('deep') }}{% endmacro %}{{ f() }}",
            json!([]),
        );
        assert_eq!(err, Err(TemplateError::Raised("deep".into())));
    }

    #[test]
    fn tojson_matches_python() {
        // Keys in sorted order: serde_json keeps insertion order only with its `preserve_order` feature.
        let msgs =
            json!([{"content": {"a": "héllo \"x\" <&> \n ✓", "b": [1, 2.0, null, true], "c": {}}}]);
        let out = render("{{ messages[0].content | tojson }}", msgs.clone());
        assert_eq!(
            out.as_deref(),
            Ok(r#"{"a": "héllo \"x\" <&> \n ✓", "b": [1, 2.0, null, true], "c": {}}"#)
        );
        let out = render("{{ messages[0].content | tojson(indent=2) }}", msgs.clone());
        let want = "{\n  \"a\": \"héllo \\\"x\\\" <&> \\n ✓\",\n  \"b\": [\n    1,\n    2.0,\n    null,\n    true\n  ],\n  \"c\": {}\n}";
        assert_eq!(out.as_deref(), Ok(want));
        let out = render(
            "{{ messages[0].content | tojson(sort_keys=true, separators=(',', ':'), ensure_ascii=true) }}",
            msgs,
        );
        assert_eq!(
            out.as_deref(),
            Ok(r#"{"a":"h\u00e9llo \"x\" <&> \n \u2713","b":[1,2.0,null,true],"c":{}}"#)
        );
        assert!(matches!(
            render("{{ nothing | tojson }}", json!([])),
            Err(TemplateError::Render { .. })
        ));
    }

    #[test]
    fn syntax_error_is_clean() {
        let err = ChatTemplate::new("line one\n{% if x %}\n{{ foo(}}\n{% endif %}");
        match err {
            Err(TemplateError::Syntax { line, message }) => {
                assert_eq!(line, Some(3), "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(matches!(
            ChatTemplate::new("{% for x in y %}"),
            Err(TemplateError::Syntax { .. })
        ));
    }

    #[test]
    fn strftime_now_works() {
        let t = ChatTemplate::new(
            "{{ strftime_now('%Y-%m-%d|%d %b %Y') }}|{{ strftime_now is defined }}",
        );
        let out = t
            .and_then(|t| t.render(&RenderRequest::default()))
            .unwrap_or_default();
        let (date, rest) = out.split_once('|').unwrap_or_default();
        assert_eq!(date.len(), 10, "{out}");
        assert!(date.starts_with("20"), "{out}");
        assert_eq!(rest.split('|').nth(1), Some("True"), "{out}");
        let t =
            ChatTemplate::new("{{ strftime_now is defined }}").map(|t| t.with_strftime_now(false));
        assert_eq!(
            t.and_then(|t| t.render(&RenderRequest::default()))
                .as_deref(),
            Ok("False")
        );
    }

    #[test]
    fn python_semantics() {
        let src = "{{ none }} {{ true }} {{ messages[0] }} {{ messages[0].missing }}|{{ 'a b '.strip().split(' ') }}\
                   {% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m['content'] }}{% endfor %}";
        let out = render(
            src,
            json!([{"content": "x", "role": "user"}, {"content": 1.0}]),
        );
        assert_eq!(
            out.as_deref(),
            Ok("None True {'content': 'x', 'role': 'user'} |['a', 'b']1.0")
        );
    }

    #[test]
    fn whitespace_and_generation_tags() {
        let src = "{% for m in messages %}\n  {% generation %}\n{{ m.content }}\n  {%- endgeneration %}\n{% endfor %}\n";
        let out = render(src, json!([{"content": "a"}, {"content": "b"}]));
        assert_eq!(out.as_deref(), Ok("ab"));
    }

    #[test]
    fn template_is_send_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<ChatTemplate>();
    }

    #[test]
    fn request_deserializes() {
        let req: Result<RenderRequest, _> = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"hi","tool_calls":[{"id":1}]}],"add_generation_prompt":true,
                "chat_template_kwargs":{"enable_thinking":false}}"#,
        );
        let req = req.unwrap_or_default();
        assert!(req.add_generation_prompt);
        assert_eq!(req.bos_token, "");
        assert_eq!(req.extra.get("enable_thinking"), Some(&json!(false)));
        let t = ChatTemplate::new("{{ messages[0].tool_calls[0].id }}{{ enable_thinking }}");
        assert_eq!(t.and_then(|t| t.render(&req)).as_deref(), Ok("1False"));
    }
}
