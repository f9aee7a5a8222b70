//! The generic format's output: the whole answer is one JSON object, either
//! `{"tool_call": {"name": ..., "arguments": {...}}}` or `{"response": "..."}` (the shape of
//! llama.cpp's `common_chat_params_init_generic` / `common_chat_parse_generic`; `tool_calls` with
//! an array is accepted as well). The wrapper never reaches the client: a call becomes a
//! [`ToolCall`](crate::ToolCall), and the `response` string is decoded and streamed as content as it
//! is generated.
//!
//! An output that is not such an object (the model ignored the instructions and no grammar held
//! it) is all content.

use serde_json::Value;

use super::callobj::CallObj;
use super::{BlockStep, Out};
use crate::json::{ObjWalk, Step, StrDecoder, ValueScan, Walk, skip_ws};

#[derive(Debug)]
enum G {
    Walk,
    Response(StrDecoder),
    /// A `response` that is not a string: its JSON text becomes the content.
    ResponseRaw(ValueScan),
    Call(CallObj),
    /// `tool_calls`: position, the call object being read, whether a `{` (or `]`) comes next.
    Calls(usize, Option<CallObj>, bool),
    Skip(ValueScan),
    /// After the wrapper: blanks are dropped.
    Tail(usize),
}

#[derive(Debug)]
pub(crate) struct Generic {
    brace: usize,
    walk: ObjWalk,
    cur: G,
    committed: bool,
}

/// Keys that make an object the generic wrapper.
const KEYS: [&str; 3] = ["tool_call", "tool_calls", "response"];

impl Generic {
    /// `brace` is the position of the `{` that starts the output.
    pub fn new(brace: usize) -> Self {
        Generic {
            brace,
            walk: ObjWalk::new(brace),
            cur: G::Walk,
            committed: false,
        }
    }

    fn revert(&self) -> BlockStep {
        BlockStep::Revert {
            resume: self.brace,
            plain: true,
        }
    }

    pub fn step(&mut self, buf: &str, out: &mut Out) -> BlockStep {
        let b = buf.as_bytes();
        loop {
            match &mut self.cur {
                G::Walk => match self.walk.step(buf) {
                    Step::Ready(Walk::Key(key, at)) => {
                        if !self.committed {
                            if !KEYS.contains(&key.as_str()) {
                                return self.revert();
                            }
                            self.committed = true;
                        }
                        let c = b.get(at).copied();
                        self.cur = match (key.as_str(), c) {
                            ("response", Some(b'"')) => G::Response(StrDecoder::new(at + 1)),
                            ("response", _) => G::ResponseRaw(ValueScan::new(at)),
                            ("tool_call", Some(b'{')) => G::Call(CallObj::new(at)),
                            ("tool_calls", Some(b'[')) => G::Calls(at + 1, None, true),
                            ("tool_call" | "tool_calls", _) => {
                                return BlockStep::Bad(format!("{key:?} has the wrong type"));
                            }
                            _ => G::Skip(ValueScan::new(at)),
                        };
                    }
                    Step::Ready(Walk::End(end)) if self.committed => self.cur = G::Tail(end),
                    Step::More => return BlockStep::More,
                    Step::Bad(e) if self.committed => return BlockStep::Bad(e),
                    Step::Ready(Walk::End(_)) | Step::Bad(_) => return self.revert(),
                },
                G::Response(dec) => {
                    let mut s = String::new();
                    let r = dec.step(buf, &mut s);
                    out.content(&s);
                    match r {
                        Step::Ready(end) => {
                            self.walk.value_done(end);
                            self.cur = G::Walk;
                        }
                        Step::More => return BlockStep::More,
                        Step::Bad(e) => return BlockStep::Bad(e),
                    }
                }
                G::ResponseRaw(scan) => match scan.step(buf) {
                    Step::Ready(end) => {
                        let text = &buf[scan.start()..end];
                        match serde_json::from_str::<Value>(text) {
                            Ok(v) => out.content(&v.to_string()),
                            Err(e) => return BlockStep::Bad(format!("bad response value: {e}")),
                        }
                        self.walk.value_done(end);
                        self.cur = G::Walk;
                    }
                    Step::More => return BlockStep::More,
                    Step::Bad(e) => return BlockStep::Bad(e),
                },
                G::Call(obj) => match obj.step(buf, out) {
                    Step::Ready(end) => {
                        self.walk.value_done(end);
                        self.cur = G::Walk;
                    }
                    Step::More => return BlockStep::More,
                    Step::Bad(e) => return BlockStep::Bad(e),
                },
                G::Calls(pos, obj, want_obj) => {
                    if let Some(o) = obj {
                        match o.step(buf, out) {
                            Step::Ready(end) => {
                                *pos = end;
                                *obj = None;
                                *want_obj = false;
                            }
                            Step::More => return BlockStep::More,
                            Step::Bad(e) => return BlockStep::Bad(e),
                        }
                        continue;
                    }
                    let p = skip_ws(buf, *pos);
                    *pos = p;
                    match (b.get(p), *want_obj) {
                        (None, _) => return BlockStep::More,
                        (Some(b'{'), true) => *obj = Some(CallObj::new(p)),
                        (Some(b','), false) => {
                            *pos = p + 1;
                            *want_obj = true;
                        }
                        (Some(b']'), _) => {
                            self.walk.value_done(p + 1);
                            self.cur = G::Walk;
                        }
                        _ => return BlockStep::Bad("malformed \"tool_calls\" array".into()),
                    }
                }
                G::Skip(scan) => match scan.step(buf) {
                    Step::Ready(end) => {
                        self.walk.value_done(end);
                        self.cur = G::Walk;
                    }
                    Step::More => return BlockStep::More,
                    Step::Bad(e) => return BlockStep::Bad(e),
                },
                G::Tail(from) => {
                    let p = skip_ws(buf, *from);
                    *from = p;
                    if p == buf.len() {
                        return BlockStep::More;
                    }
                    return BlockStep::Done(p);
                }
            }
        }
    }

    pub fn eof(&mut self) -> BlockStep {
        if !self.committed {
            return self.revert();
        }
        match &self.cur {
            G::Call(_) | G::Calls(_, Some(_), _) => BlockStep::Truncated,
            // A response cut off by the token limit is still the answer so far; an unclosed
            // wrapper after complete values is forgiven.
            _ => BlockStep::Done(0),
        }
    }
}
