//! Llama 3.1 / 3.2 calls. The model answers a call with a bare JSON object at the very start of
//! its output, `{"name": "f", "parameters": {...}}` (`"arguments"` accepted too, and llama.cpp's
//! optional leading `"type": "function"`); content never contains a call further on. Templates
//! with built-in tools also use `<|python_tag|>`, followed either by the same JSON or by
//! `brave_search.call(query="...")` (Meta's llama-models prompt format; llama.cpp's
//! `common_chat_parse_llama_3_1`). Consecutive calls may be separated by blanks or `;`.
//!
//! An output that starts with `{` but whose first key is neither `name` nor `type` is content.

use serde_json::{Map, Value};

use super::callobj::CallObj;
use super::{BlockStep, Out};
use crate::json::{Lit, Step, ValueScan, match_lit, skip_ws};
use crate::tools::{MAX_NAME_LEN, valid_tool_name};

pub(crate) const PYTHON_TAG: &str = "<|python_tag|>";
/// Literals that may open a call in free text (the bare JSON form is only looked for at the start).
pub(super) const OPENERS: &[&str] = &[PYTHON_TAG];

#[derive(Debug)]
pub(crate) enum Llama3 {
    /// A `{` (at the position) that may be a call: wait for its first key.
    Probe(CallObj, usize),
    /// A call object; `true` for the bare form (more may follow after `;`).
    Obj(CallObj, bool),
    /// After `<|python_tag|>` (ending at the position).
    PyTag(usize),
    /// `name.call(key=value, ...)`.
    Builtin(Builtin),
}

#[derive(Debug)]
pub(crate) struct Builtin {
    pos: usize,
    name_start: usize,
    started: bool,
    args: Map<String, Value>,
    scan: Option<(String, ValueScan)>,
}

impl Llama3 {
    pub fn at_brace(p: usize) -> Self {
        Llama3::Probe(CallObj::new(p), p)
    }

    pub fn after_python_tag(end: usize) -> Self {
        Llama3::PyTag(end)
    }

    /// A bare JSON call (after which `;` and more calls may follow).
    pub fn is_json(&self) -> bool {
        matches!(self, Llama3::Obj(_, true) | Llama3::Probe(..))
    }

    pub fn step(&mut self, buf: &str, out: &mut Out) -> BlockStep {
        loop {
            match self {
                Llama3::Probe(obj, brace) => {
                    let revert = BlockStep::Revert {
                        resume: *brace + 1,
                        plain: false,
                    };
                    match obj.probe(buf) {
                        Step::More => return BlockStep::More,
                        Step::Bad(_) => return revert,
                        Step::Ready(()) => match obj.first_key() {
                            Some("name" | "type") => {
                                let obj = std::mem::replace(obj, CallObj::new(0));
                                *self = Llama3::Obj(obj, true);
                            }
                            _ => return revert,
                        },
                    }
                }
                Llama3::Obj(obj, _) => {
                    return match obj.step(buf, out) {
                        Step::Ready(end) => BlockStep::Done(end),
                        Step::More => BlockStep::More,
                        Step::Bad(e) => BlockStep::Bad(e),
                    };
                }
                Llama3::PyTag(end) => {
                    let p = skip_ws(buf, *end);
                    match buf.as_bytes().get(p) {
                        None => return BlockStep::More,
                        Some(b'{') => *self = Llama3::Obj(CallObj::new(p), false),
                        Some(c) if c.is_ascii_alphabetic() => {
                            *self = Llama3::Builtin(Builtin {
                                pos: p,
                                name_start: p,
                                started: false,
                                args: Map::new(),
                                scan: None,
                            });
                        }
                        Some(_) => {
                            return BlockStep::Bad(format!("expected a call after {PYTHON_TAG}"));
                        }
                    }
                }
                Llama3::Builtin(b) => return b.step(buf, out),
            }
        }
    }

    pub fn eof(&mut self) -> BlockStep {
        match self {
            Llama3::Probe(_, brace) => BlockStep::Revert {
                resume: *brace + 1,
                plain: false,
            },
            _ => BlockStep::Truncated,
        }
    }
}

impl Builtin {
    fn step(&mut self, buf: &str, out: &mut Out) -> BlockStep {
        let b = buf.as_bytes();
        if !self.started {
            let rest = &buf[self.name_start..];
            let len = rest
                .bytes()
                .position(|c| !(c.is_ascii_alphanumeric() || c == b'_'))
                .unwrap_or(rest.len());
            if len > MAX_NAME_LEN {
                return BlockStep::Bad("the builtin tool name is too long".into());
            }
            let dot = self.name_start + len;
            match match_lit(buf, dot, ".call(") {
                Lit::Partial => return BlockStep::More,
                Lit::No => {
                    return BlockStep::Bad("expected NAME.call( after <|python_tag|>".into());
                }
                Lit::Match(e) => {
                    let name = &rest[..len];
                    if !valid_tool_name(name) {
                        return BlockStep::Bad(format!("{name:?} is not a valid tool name"));
                    }
                    out.start_call(name.to_owned());
                    self.started = true;
                    self.pos = e;
                }
            }
        }
        loop {
            if let Some((key, scan)) = &mut self.scan {
                match scan.step(buf) {
                    Step::Ready(end) => {
                        let v = match serde_json::from_str::<Value>(&buf[scan.start()..end]) {
                            Ok(v) => v,
                            Err(e) => return BlockStep::Bad(format!("argument {key:?}: {e}")),
                        };
                        self.args.insert(std::mem::take(key), v);
                        self.scan = None;
                        self.pos = end;
                    }
                    Step::More => return BlockStep::More,
                    Step::Bad(e) => return BlockStep::Bad(e),
                }
            }
            let p = skip_ws(buf, self.pos);
            match b.get(p) {
                None => return BlockStep::More,
                Some(b')') => {
                    let args = Value::Object(std::mem::take(&mut self.args));
                    out.call_args(&args.to_string());
                    out.end_call(args);
                    return BlockStep::Done(p + 1);
                }
                Some(b',') => self.pos = p + 1,
                Some(_) => {
                    let rest = &buf[p..];
                    let len = rest
                        .bytes()
                        .position(|c| !(c.is_ascii_alphanumeric() || c == b'_'))
                        .unwrap_or(rest.len());
                    if len > MAX_NAME_LEN {
                        return BlockStep::Bad("argument name too long".into());
                    }
                    let q = skip_ws(buf, p + len);
                    match b.get(q) {
                        None => return BlockStep::More,
                        Some(b'=') if len > 0 => {
                            let v = skip_ws(buf, q + 1);
                            if v == buf.len() {
                                return BlockStep::More;
                            }
                            self.scan = Some((rest[..len].to_owned(), ValueScan::new(v)));
                        }
                        Some(_) => {
                            return BlockStep::Bad("expected key=value in a builtin call".into());
                        }
                    }
                }
            }
        }
    }
}
