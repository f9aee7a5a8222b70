//! DeepSeek calls, both forms (llama.cpp `common_chat_parse_deepseek_r1` and
//! `common_chat_parse_deepseek_v3_1_content`, common/chat-parser.cpp):
//!
//! * R1 (and V3-0324): `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>`
//!   … `<｜tool▁calls▁end｜>`, calls separated by a newline;
//! * V3.1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>` … `<｜tool▁calls▁end｜>`.
//!
//! Both are accepted whichever template is in use (the grammar decides which one is generated).
//! As llama.cpp does, the misspelled block openers R1 distills produce are accepted, and so are a
//! missing `<｜tool▁call▁begin｜>`, a missing code fence and a name with no arguments.

use serde_json::Value;

use super::callobj::parse_object;
use super::{BlockStep, Out};
use crate::json::{Lit, Step, ValueScan, match_lit, skip_ws};
use crate::tools::{MAX_NAME_LEN, valid_tool_name};

pub(crate) const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
pub(crate) const CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
pub(crate) const SEP: &str = "<｜tool▁sep｜>";
pub(crate) const CALL_END: &str = "<｜tool▁call▁end｜>";
pub(crate) const CALLS_END: &str = "<｜tool▁calls▁end｜>";
/// R1's function-type prefix before the separator.
const FUNCTION: &str = "function";

/// Literals that may open calls in free text: the block opener (with the variants R1 distills
/// write) and a lone call opener.
pub(super) const OPENERS: &[&str] = &[
    CALLS_BEGIN,
    "<｜tool_calls_begin｜>",
    "<｜tool calls begin｜>",
    "<｜tool\\_calls\\_begin｜>",
    "<｜tool▁calls｜>",
    CALL_BEGIN,
];

#[derive(Debug)]
enum Ds {
    /// Between calls (position after the previous marker).
    Block(usize),
    /// After `<｜tool▁call▁begin｜>`: `function<｜tool▁sep｜>` (R1) or `NAME<｜tool▁sep｜>` (V3.1).
    Head(usize),
    /// After R1's `function<｜tool▁sep｜>`: the name, up to a newline.
    R1Name(usize),
    /// After the name: an optional code fence (`true` once seen), then the arguments.
    Fence(usize, bool),
    Args(ValueScan, bool),
    /// After the arguments: the closing fence if one opened, then `<｜tool▁call▁end｜>`.
    After(usize, bool),
    /// After `<｜tool▁calls▁end｜>`: blanks are dropped.
    Tail(usize),
}

#[derive(Debug)]
pub(crate) struct DeepSeek {
    st: Ds,
    calls: usize,
}

/// Which of `lits` is at `pos`: `Ok(Some((i, end)))`, `Ok(None)` if one may still be (an earlier
/// literal wins over a later one it extends, as `` ```json `` over `` ``` ``), `Err(())` if none is.
fn which(buf: &str, pos: usize, lits: &[&str]) -> Result<Option<(usize, usize)>, ()> {
    let mut partial = false;
    for (i, l) in lits.iter().enumerate() {
        match match_lit(buf, pos, l) {
            Lit::Match(_) if partial => return Ok(None),
            Lit::Match(e) => return Ok(Some((i, e))),
            Lit::Partial => partial = true,
            Lit::No => {}
        }
    }
    if partial { Ok(None) } else { Err(()) }
}

impl DeepSeek {
    pub fn new(opener: &str, end: usize) -> Self {
        let st = if opener == CALL_BEGIN {
            Ds::Head(end)
        } else {
            Ds::Block(end)
        };
        DeepSeek { st, calls: 0 }
    }

    fn empty_call(&mut self, out: &mut Out) {
        out.call_args("{}");
        out.end_call(Value::Object(Default::default()));
        self.calls += 1;
    }

    pub fn step(&mut self, buf: &str, out: &mut Out) -> BlockStep {
        let b = buf.as_bytes();
        loop {
            match &mut self.st {
                Ds::Block(from) => {
                    let p = skip_ws(buf, *from);
                    *from = p;
                    if p == buf.len() {
                        return BlockStep::More;
                    }
                    let r1_head = format!("{FUNCTION}{SEP}");
                    match which(buf, p, &[CALL_BEGIN, &r1_head, CALLS_END]) {
                        Ok(Some((0, e))) => self.st = Ds::Head(e),
                        Ok(Some((1, e))) => self.st = Ds::R1Name(e),
                        Ok(Some((_, e))) => self.st = Ds::Tail(e),
                        Ok(None) => return BlockStep::More,
                        // The closing marker is forgiven once a call was made.
                        Err(()) if self.calls > 0 => return BlockStep::Done(p),
                        Err(()) => return BlockStep::Bad(format!("expected {CALL_BEGIN}")),
                    }
                }
                Ds::Head(from) => {
                    let from = *from;
                    let Some(i) = buf[from..].find(SEP) else {
                        if buf.len() - from > MAX_NAME_LEN + SEP.len() {
                            return BlockStep::Bad(format!("expected NAME{SEP}"));
                        }
                        return BlockStep::More;
                    };
                    let head = &buf[from..from + i];
                    let after = from + i + SEP.len();
                    if head == FUNCTION {
                        // R1, unless a tool is itself called "function" (V3.1 with `{` next).
                        let p = skip_ws(buf, after);
                        match b.get(p) {
                            None => return BlockStep::More,
                            Some(b'{') => {}
                            Some(_) => {
                                self.st = Ds::R1Name(after);
                                continue;
                            }
                        }
                    }
                    if !valid_tool_name(head) {
                        return BlockStep::Bad(format!("{head:?} is not a valid tool name"));
                    }
                    out.start_call(head.to_owned());
                    self.st = Ds::Fence(after, false);
                }
                Ds::R1Name(from) => {
                    let from = *from;
                    let rest = &buf[from..];
                    let len = rest
                        .bytes()
                        .position(|c| {
                            !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
                        })
                        .unwrap_or(rest.len());
                    if len > MAX_NAME_LEN {
                        return BlockStep::Bad("the tool name is too long".into());
                    }
                    let end = from + len;
                    let name = &rest[..len];
                    let Some(&c) = b.get(end) else {
                        return BlockStep::More;
                    };
                    if !valid_tool_name(name) {
                        return BlockStep::Bad(format!("{name:?} is not a valid tool name"));
                    }
                    if crate::json::is_ws(c) {
                        out.start_call(name.to_owned());
                        self.st = Ds::Fence(end, false);
                    } else {
                        match match_lit(buf, end, CALL_END) {
                            Lit::Partial => return BlockStep::More,
                            Lit::No => {
                                return BlockStep::Bad(format!(
                                    "expected a newline after the name {name:?}"
                                ));
                            }
                            Lit::Match(e) => {
                                out.start_call(name.to_owned());
                                self.empty_call(out);
                                self.st = Ds::Block(e);
                            }
                        }
                    }
                }
                Ds::Fence(from, fenced) => {
                    let fenced = *fenced;
                    let p = skip_ws(buf, *from);
                    match b.get(p) {
                        None => return BlockStep::More,
                        Some(b'{') => {
                            self.st = Ds::Args(ValueScan::new(p), fenced);
                            continue;
                        }
                        Some(_) => {}
                    }
                    let fences: &[&str] = if fenced { &[] } else { &["```json", "```"] };
                    let mut lits = fences.to_vec();
                    lits.push(CALL_END);
                    match which(buf, p, &lits) {
                        Ok(Some((i, e))) if i + 1 < lits.len() => self.st = Ds::Fence(e, true),
                        Ok(Some((_, e))) => {
                            self.empty_call(out);
                            self.st = Ds::Block(e);
                        }
                        Ok(None) => return BlockStep::More,
                        Err(()) => return BlockStep::Bad("expected the JSON arguments".into()),
                    }
                }
                Ds::Args(scan, fenced) => {
                    let from = scan.pos;
                    match scan.step(buf) {
                        Step::Ready(end) => {
                            out.call_args(&buf[from..end]);
                            match parse_object(&buf[scan.start()..end]) {
                                Ok(args) => out.end_call(args),
                                Err(e) => return BlockStep::Bad(e),
                            }
                            self.calls += 1;
                            self.st = Ds::After(end, *fenced);
                        }
                        Step::More => {
                            out.call_args(&buf[from..scan.pos]);
                            return BlockStep::More;
                        }
                        Step::Bad(e) => return BlockStep::Bad(e),
                    }
                }
                Ds::After(from, fenced) => {
                    let p = skip_ws(buf, *from);
                    *from = p;
                    if p == buf.len() {
                        return BlockStep::More;
                    }
                    if *fenced {
                        match match_lit(buf, p, "```") {
                            Lit::Partial => return BlockStep::More,
                            Lit::Match(e) => {
                                self.st = Ds::After(e, false);
                                continue;
                            }
                            // A missing closing fence is forgiven.
                            Lit::No => {}
                        }
                    }
                    match which(buf, p, &[CALL_END, CALLS_END, CALL_BEGIN]) {
                        Ok(Some((0, e))) => self.st = Ds::Block(e),
                        Ok(Some((1, e))) => self.st = Ds::Tail(e),
                        Ok(Some((_, e))) => self.st = Ds::Head(e),
                        Ok(None) => return BlockStep::More,
                        Err(()) => return BlockStep::Bad(format!("expected {CALL_END}")),
                    }
                }
                Ds::Tail(from) => {
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
        match self.st {
            Ds::Block(p) if self.calls > 0 => BlockStep::Done(p),
            Ds::After(p, _) | Ds::Tail(p) => BlockStep::Done(p),
            _ => BlockStep::Truncated,
        }
    }
}
