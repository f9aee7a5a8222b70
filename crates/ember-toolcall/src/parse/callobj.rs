//! One JSON call object, `{"name": "...", "arguments": {...}}`, parsed as it streams in: the Hermes
//! body between `<tool_call>` tags, Llama 3's bare call (`"parameters"` instead of `"arguments"`)
//! and the generic wrapper's `tool_call` value all have this shape (llama.cpp accepts the same key
//! aliases in `common_chat_msg_parser::add_tool_call`, common/chat-parser.cpp). Other keys (Llama's
//! `"type": "function"`, an `"id"`) are skipped.
//!
//! The name is reported as soon as its string closes, and the raw text of an object-valued
//! `arguments` is exposed while it grows, so the caller can stream OpenAI `delta.tool_calls`
//! fragments whose concatenation is exactly that text. Arguments sent as a JSON string (some
//! models stringify them) are decoded at the end instead.

use serde_json::Value;

use super::Out;
use crate::json::{ObjWalk, Step, StrDecoder, ValueScan, Walk};
use crate::tools::valid_tool_name;

/// Keys naming the function.
const NAME_KEYS: [&str; 1] = ["name"];
/// Keys holding the arguments.
const ARG_KEYS: [&str; 2] = ["arguments", "parameters"];

#[derive(Debug, Clone)]
enum Cur {
    /// Between values: the walker has the lead.
    Walk,
    Name(StrDecoder, String),
    /// Object-valued arguments, streamed raw.
    ArgsRaw(ValueScan),
    /// String-valued arguments (stringified JSON), decoded.
    ArgsStr(StrDecoder, String),
    /// Any other value (or non-object arguments), skipped over.
    Skip(ValueScan, bool),
}

#[derive(Debug, Clone)]
enum Args {
    Absent,
    Raw(usize, usize),
    Str(String),
    /// A value that is not an object or a string (only `null` is accepted, as "no arguments").
    Other(usize, usize),
}

/// Incremental parser of one call object.
#[derive(Debug, Clone)]
pub(crate) struct CallObj {
    walk: ObjWalk,
    cur: Cur,
    name: Option<String>,
    args: Args,
    /// First key of the object, once read (Llama 3 decides by it whether this is a call).
    first_key: Option<String>,
    /// Raw argument text already handed to the output.
    streamed: usize,
}

impl CallObj {
    /// `pos` is the position of the `{`.
    pub fn new(pos: usize) -> Self {
        CallObj {
            walk: ObjWalk::new(pos),
            cur: Cur::Walk,
            name: None,
            args: Args::Absent,
            first_key: None,
            streamed: 0,
        }
    }

    pub fn first_key(&self) -> Option<&str> {
        self.first_key.as_deref()
    }

    /// Reads up to the first key without touching the output (Llama 3 decides by it whether the
    /// object is a call at all). `Ready(())` once it is known.
    pub fn probe(&mut self, buf: &str) -> Step<()> {
        match self.advance(buf, true) {
            Step::Bad(e) => Step::Bad(e),
            _ if self.first_key.is_some() => Step::Ready(()),
            _ => Step::More,
        }
    }

    /// Advances over `buf` without touching the output; `Ready(end)` once the object closed.
    fn advance(&mut self, buf: &str, until_first_key: bool) -> Step<usize> {
        loop {
            if until_first_key && self.first_key.is_some() {
                return Step::More;
            }
            match &mut self.cur {
                Cur::Walk => match self.walk.step(buf) {
                    Step::Ready(Walk::Key(key, at)) => {
                        if self.first_key.is_none() {
                            self.first_key = Some(key.clone());
                        }
                        let c = buf.as_bytes().get(at).copied();
                        if NAME_KEYS.contains(&key.as_str()) {
                            if self.name.is_some() {
                                return Step::Bad("the name is given twice".into());
                            }
                            if c != Some(b'"') {
                                return Step::Bad("the name is not a string".into());
                            }
                            self.cur = Cur::Name(StrDecoder::new(at + 1), String::new());
                        } else if ARG_KEYS.contains(&key.as_str()) {
                            if !matches!(self.args, Args::Absent) {
                                return Step::Bad("the arguments are given twice".into());
                            }
                            self.cur = match c {
                                Some(b'{') => {
                                    self.args = Args::Raw(at, at);
                                    self.streamed = at;
                                    Cur::ArgsRaw(ValueScan::new(at))
                                }
                                Some(b'"') => Cur::ArgsStr(StrDecoder::new(at + 1), String::new()),
                                _ => Cur::Skip(ValueScan::new(at), true),
                            };
                        } else {
                            self.cur = Cur::Skip(ValueScan::new(at), false);
                        }
                    }
                    Step::Ready(Walk::End(end)) => return Step::Ready(end),
                    Step::More => return Step::More,
                    Step::Bad(e) => return Step::Bad(e),
                },
                Cur::Name(dec, s) => match dec.step(buf, s) {
                    Step::Ready(_) if s.len() > crate::tools::MAX_NAME_LEN => {
                        return Step::Bad("the tool name is too long".into());
                    }
                    Step::Ready(end) => {
                        if !valid_tool_name(s) {
                            return Step::Bad(format!("{s:?} is not a valid tool name"));
                        }
                        self.name = Some(std::mem::take(s));
                        self.walk.value_done(end);
                        self.cur = Cur::Walk;
                    }
                    Step::More if s.len() > crate::tools::MAX_NAME_LEN => {
                        return Step::Bad("the tool name is too long".into());
                    }
                    other => return other.map_more(),
                },
                Cur::ArgsRaw(scan) => match scan.step(buf) {
                    Step::Ready(end) => {
                        self.args = Args::Raw(scan.start(), end);
                        self.walk.value_done(end);
                        self.cur = Cur::Walk;
                    }
                    Step::More => {
                        self.args = Args::Raw(scan.start(), scan.pos);
                        return Step::More;
                    }
                    Step::Bad(e) => return Step::Bad(e),
                },
                Cur::ArgsStr(dec, s) => match dec.step(buf, s) {
                    Step::Ready(end) => {
                        self.args = Args::Str(std::mem::take(s));
                        self.walk.value_done(end);
                        self.cur = Cur::Walk;
                    }
                    other => return other.map_more(),
                },
                Cur::Skip(scan, is_args) => match scan.step(buf) {
                    Step::Ready(end) => {
                        if *is_args {
                            self.args = Args::Other(scan.start(), end);
                        }
                        self.walk.value_done(end);
                        self.cur = Cur::Walk;
                    }
                    other => return other.map_more(),
                },
            }
        }
    }

    /// Advances and reports to `out`: the call starts once its name is known, raw argument text is
    /// streamed as it arrives, and the finished call is recorded. `Ready(end)` once complete.
    pub fn step(&mut self, buf: &str, out: &mut Out) -> Step<usize> {
        let r = self.advance(buf, false);
        if let Some(name) = &self.name
            && !out.call_open()
        {
            out.start_call(name.clone());
        }
        if out.call_open()
            && let Args::Raw(start, upto) = self.args
        {
            let from = self.streamed.max(start);
            if upto > from {
                out.call_args(&buf[from..upto]);
                self.streamed = upto;
            }
        }
        match r {
            Step::Ready(end) => match self.finish(buf, out) {
                Ok(()) => Step::Ready(end),
                Err(e) => Step::Bad(e),
            },
            other => other,
        }
    }

    fn finish(&mut self, buf: &str, out: &mut Out) -> Result<(), String> {
        let name = self.name.clone().ok_or("the call has no \"name\"")?;
        let (args, raw) = match &self.args {
            Args::Absent => (Value::Object(Default::default()), false),
            Args::Raw(s, e) => (parse_object(&buf[*s..*e])?, true),
            Args::Str(s) if s.trim().is_empty() => (Value::Object(Default::default()), false),
            Args::Str(s) => (parse_object(s)?, false),
            Args::Other(s, e) => match serde_json::from_str::<Value>(&buf[*s..*e]) {
                Ok(Value::Null) => (Value::Object(Default::default()), false),
                _ => return Err("the arguments are not a JSON object".into()),
            },
        };
        if !out.call_open() {
            out.start_call(name);
        }
        if !raw {
            // Nothing was streamed: send the arguments in one fragment.
            out.call_args(&args.to_string());
        }
        out.end_call(args);
        Ok(())
    }
}

/// Parses JSON text that must be an object.
pub(crate) fn parse_object(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("the arguments are not a JSON object".into()),
        Err(e) => Err(format!("the arguments are not valid JSON ({e})")),
    }
}

impl<T> Step<T> {
    /// `More` and `Bad` pass through; `Ready` of another type cannot (callers only use this on
    /// arms where `Ready` was handled).
    fn map_more<U>(self) -> Step<U> {
        match self {
            Step::Bad(e) => Step::Bad(e),
            _ => Step::More,
        }
    }
}
