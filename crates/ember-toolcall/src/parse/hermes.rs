//! Hermes / Qwen 2.5 calls: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one or
//! more, with content allowed before them. Also the `<function=NAME>{...}</function>` form some
//! Hermes-style fine-tunes emit (llama.cpp's `common_chat_parse_hermes_2_pro` accepts both).
//!
//! As in llama.cpp, `<tool_call>` only opens a call when a `{` follows (after blanks): prose that
//! mentions the tag stays content. A missing `</tool_call>` is forgiven (the object itself is
//! complete); blanks around calls are dropped.

use super::callobj::{CallObj, parse_object};
use super::{BlockStep, Out};
use crate::json::{Lit, Step, ValueScan, match_lit, skip_ws};
use crate::tools::{MAX_NAME_LEN, valid_tool_name};

pub(crate) const TAG: &str = "<tool_call>";
pub(crate) const TAG_CLOSE: &str = "</tool_call>";
const FUNC: &str = "<function=";
const FUNC_CLOSE: &str = "</function>";

/// Literals that may open a call in free text.
pub(super) const OPENERS: &[&str] = &[TAG, FUNC];

/// Blanks tolerated between `<tool_call>` and the `{` before the tag is taken for prose.
const MAX_GAP: usize = 64;

#[derive(Debug)]
pub(crate) enum Hermes {
    /// After `<tool_call>` (ending at the position): blanks, then `{`.
    Tag(usize),
    Obj(CallObj),
    /// After a call (ending at the position): blanks, then the closing tag if any.
    Close(usize, &'static str),
    /// After `<function=` (ending at the position): the name, `>`, blanks, `{`.
    Func(usize),
    FuncArgs(ValueScan),
}

impl Hermes {
    pub fn new(opener: &str, end: usize) -> Self {
        if opener == FUNC {
            Hermes::Func(end)
        } else {
            Hermes::Tag(end)
        }
    }

    pub fn step(&mut self, buf: &str, out: &mut Out) -> BlockStep {
        loop {
            match self {
                Hermes::Tag(end) => {
                    let p = skip_ws(buf, *end);
                    // The gap is judged on its own, never on where the buffer happens to end.
                    match buf.as_bytes().get(p) {
                        _ if p - *end > MAX_GAP => {
                            return BlockStep::Revert {
                                resume: *end,
                                plain: false,
                            };
                        }
                        None => return BlockStep::More,
                        Some(b'{') => *self = Hermes::Obj(CallObj::new(p)),
                        _ => {
                            return BlockStep::Revert {
                                resume: *end,
                                plain: false,
                            };
                        }
                    }
                }
                Hermes::Obj(obj) => match obj.step(buf, out) {
                    Step::Ready(end) => *self = Hermes::Close(end, TAG_CLOSE),
                    Step::More => return BlockStep::More,
                    Step::Bad(e) => return BlockStep::Bad(e),
                },
                Hermes::Close(end, close) => {
                    let p = skip_ws(buf, *end);
                    if p == buf.len() {
                        // Blanks are dropped whatever follows: no need to look at them again.
                        *end = p;
                        return BlockStep::More;
                    }
                    let close = *close;
                    match match_lit(buf, p, close) {
                        Lit::Partial => return BlockStep::More,
                        // Blanks after the tag are dropped too, once something else follows.
                        Lit::Match(e) if !close.is_empty() => *self = Hermes::Close(e, ""),
                        Lit::Match(_) | Lit::No => return BlockStep::Done(p),
                    }
                }
                Hermes::Func(end) => {
                    let rest = &buf[*end..];
                    let name_len = rest
                        .bytes()
                        .position(|b| {
                            !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                        })
                        .unwrap_or(rest.len());
                    let revert = BlockStep::Revert {
                        resume: *end,
                        plain: false,
                    };
                    if name_len > MAX_NAME_LEN {
                        return revert;
                    }
                    let after = *end + name_len;
                    match buf.as_bytes().get(after) {
                        None => return BlockStep::More,
                        Some(b'>') if valid_tool_name(&rest[..name_len]) => {
                            let p = skip_ws(buf, after + 1);
                            match buf.as_bytes().get(p) {
                                _ if p - after > MAX_GAP => return revert,
                                None => return BlockStep::More,
                                Some(b'{') => {
                                    out.start_call(rest[..name_len].to_owned());
                                    *self = Hermes::FuncArgs(ValueScan::new(p));
                                }
                                _ => return revert,
                            }
                        }
                        _ => return revert,
                    }
                }
                Hermes::FuncArgs(scan) => {
                    let from = scan.pos.max(scan.start());
                    match scan.step(buf) {
                        Step::Ready(end) => {
                            out.call_args(&buf[from..end]);
                            match parse_object(&buf[scan.start()..end]) {
                                Ok(args) => out.end_call(args),
                                Err(e) => return BlockStep::Bad(e),
                            }
                            *self = Hermes::Close(end, FUNC_CLOSE);
                        }
                        Step::More => {
                            out.call_args(&buf[from..scan.pos]);
                            return BlockStep::More;
                        }
                        Step::Bad(e) => return BlockStep::Bad(e),
                    }
                }
            }
        }
    }

    pub fn eof(&mut self) -> BlockStep {
        match self {
            Hermes::Tag(end) | Hermes::Func(end) => BlockStep::Revert {
                resume: *end,
                plain: false,
            },
            Hermes::Obj(_) | Hermes::FuncArgs(_) => BlockStep::Truncated,
            Hermes::Close(end, _) => BlockStep::Done(*end),
        }
    }
}
