//! The streaming parser of a model's output: text goes in as it is detokenized, events come out —
//! content that is certainly not part of a call, call starts (index, id, name) and argument
//! fragments — and [`StreamParser::finish`] returns the whole message. It plays the part of
//! llama.cpp's `common_chat_parse` (common/chat-parser.cpp) but is incremental: every byte is looked
//! at a bounded number of times, and a decision never depends on where a piece of text ended
//! (anything that might still turn into call markup, such as a partial `<tool_c`, is held back),
//! so feeding the same text in any split gives the same message.
//!
//! This file holds the driver: free text and the search for each family's call openers. The call
//! syntax of each family lives in its own file (`hermes.rs`, `llama3.rs`, `deepseek.rs`,
//! `generic.rs`); `callobj.rs` is the JSON call object they share.

mod callobj;
mod deepseek;
mod generic;
mod hermes;
mod llama3;

/// The markup strings of each family, shared with the grammars and prompts.
pub(crate) mod deepseek_markers {
    pub(crate) use super::deepseek::{CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP};
}
pub(crate) mod hermes_markers {
    pub(crate) use super::hermes::{TAG, TAG_CLOSE};
}
pub(crate) mod llama3_markers {
    pub(crate) use super::llama3::PYTHON_TAG;
}

use serde_json::Value;

use crate::json::skip_ws;
use crate::{Family, Tool, ToolCall, ToolChoice, ToolError, ids};

/// What the parser found in a piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Text for the message's `content`.
    Content(String),
    /// A tool call begins; its id is the one the final [`ToolCall`] carries.
    CallStart {
        /// 0-based position of the call in the message.
        index: usize,
        /// `call_...`
        id: String,
        /// The function called.
        name: String,
    },
    /// More of a call's arguments, as JSON text: the fragments of one call concatenate to a JSON
    /// object equal to the final call's arguments (OpenAI's streamed `function.arguments`).
    CallArgs {
        /// Which call.
        index: usize,
        /// Next piece of the arguments text.
        fragment: String,
    },
}

/// A complete parsed message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// The text outside calls (markup removed); equal to all [`Event::Content`] texts joined.
    pub content: String,
    /// The calls, in order, arguments checked to be JSON objects.
    pub calls: Vec<ToolCall>,
    /// Events released by the end of the output that were not yet returned by
    /// [`StreamParser::push`] or [`StreamParser::end`] (e.g. text held back as a possible partial
    /// call opener): a streaming caller sends these before closing the stream.
    pub tail: Vec<Event>,
}

/// Whole-output convenience: [`StreamParser`] fed `text` in one piece.
pub fn parse(
    family: &Family,
    tools: &[Tool],
    choice: &ToolChoice,
    text: &str,
) -> Result<Parsed, ToolError> {
    let mut p = StreamParser::new(family, tools, choice);
    p.push(text);
    let mut parsed = p.finish()?;
    parsed.tail.clear();
    Ok(parsed)
}

/// Call syntax in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// No tools or `tool_choice: none`: all text is content.
    Plain,
    Hermes,
    Llama3,
    /// Both DeepSeek families: R1's and V3.1's call forms are both accepted.
    DeepSeek,
    Generic,
}

/// Collects what the parser produces.
#[derive(Debug, Default)]
pub(crate) struct Out {
    events: Vec<Event>,
    content: String,
    calls: Vec<ToolCall>,
    open: Option<(usize, String, String)>,
}

impl Out {
    pub fn content(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        self.content.push_str(s);
        if let Some(Event::Content(last)) = self.events.last_mut() {
            last.push_str(s);
        } else {
            self.events.push(Event::Content(s.to_owned()));
        }
    }

    pub fn call_open(&self) -> bool {
        self.open.is_some()
    }

    /// Index of the call being parsed (or the next one).
    pub fn call_index(&self) -> usize {
        self.calls.len()
    }

    pub fn start_call(&mut self, name: String) {
        let index = self.calls.len();
        let id = ids::new_call_id();
        self.events.push(Event::CallStart {
            index,
            id: id.clone(),
            name: name.clone(),
        });
        self.open = Some((index, id, name));
    }

    pub fn call_args(&mut self, fragment: &str) {
        let Some((index, ..)) = &self.open else {
            return;
        };
        let index = *index;
        if let Some(Event::CallArgs {
            index: i,
            fragment: f,
        }) = self.events.last_mut()
            && *i == index
        {
            f.push_str(fragment);
        } else {
            self.events.push(Event::CallArgs {
                index,
                fragment: fragment.to_owned(),
            });
        }
    }

    pub fn end_call(&mut self, arguments: Value) {
        if let Some((_, id, name)) = self.open.take() {
            self.calls.push(ToolCall {
                id,
                name,
                arguments,
            });
        }
    }
}

/// What a family's call block did with the text.
#[derive(Debug)]
pub(crate) enum BlockStep {
    /// It needs more text to decide.
    More,
    /// The block ended; free text resumes at the position.
    Done(usize),
    /// It was not a call after all: the text from the block's start up to `resume` is content,
    /// and free text resumes there (or, with `plain`, the rest of the output is all content).
    Revert { resume: usize, plain: bool },
    /// The call is malformed.
    Bad(String),
    /// (At the end of the output only.) The output ends inside a call.
    Truncated,
}

#[derive(Debug)]
enum Block {
    Hermes(hermes::Hermes),
    Llama3(llama3::Llama3),
    DeepSeek(deepseek::DeepSeek),
    Generic(generic::Generic),
}

impl Block {
    fn step(&mut self, buf: &str, out: &mut Out) -> BlockStep {
        match self {
            Block::Hermes(b) => b.step(buf, out),
            Block::Llama3(b) => b.step(buf, out),
            Block::DeepSeek(b) => b.step(buf, out),
            Block::Generic(b) => b.step(buf, out),
        }
    }

    fn eof(&mut self) -> BlockStep {
        match self {
            Block::Hermes(b) => b.eof(),
            Block::Llama3(b) => b.eof(),
            Block::DeepSeek(b) => b.eof(),
            Block::Generic(b) => b.eof(),
        }
    }
}

#[derive(Debug)]
enum St {
    /// Before the first non-blank character (Llama 3 and generic outputs decide there), or after a
    /// Llama 3 call (where `;` separates calls); `cursor` is how far blanks were skipped.
    Lead { after_call: bool, cursor: usize },
    /// Free text: content, with each family's openers searched for.
    Text,
    /// Content only, to the end.
    Plain,
    /// Inside a call block that began at `at`.
    Block { at: usize, block: Block },
    /// A malformed call was found: the rest of the output is ignored.
    Failed(ToolError),
    /// `end` was called.
    Ended(Result<(), ToolError>),
}

/// Incremental parser of a model's output for one family (see the module docs).
#[derive(Debug)]
pub struct StreamParser {
    syntax: Syntax,
    buf: String,
    /// Everything before this position has been dealt with.
    pos: usize,
    st: St,
    out: Out,
}

impl StreamParser {
    /// A parser for `family`'s call syntax. With no tools or `tool_choice: none`, all output is
    /// content.
    pub fn new(family: &Family, tools: &[Tool], choice: &ToolChoice) -> Self {
        let syntax = if tools.is_empty() || *choice == ToolChoice::None {
            Syntax::Plain
        } else {
            match family {
                Family::Hermes => Syntax::Hermes,
                Family::Llama3 { .. } => Syntax::Llama3,
                Family::DeepSeekR1 | Family::DeepSeekV3 => Syntax::DeepSeek,
                Family::Generic => Syntax::Generic,
            }
        };
        let st = match syntax {
            Syntax::Llama3 | Syntax::Generic => St::Lead {
                after_call: false,
                cursor: 0,
            },
            Syntax::Plain => St::Plain,
            _ => St::Text,
        };
        StreamParser {
            syntax,
            buf: String::new(),
            pos: 0,
            st,
            out: Out::default(),
        }
    }

    /// Feeds the next piece of output; returns what it settled.
    pub fn push(&mut self, text: &str) -> Vec<Event> {
        if matches!(self.st, St::Failed(_) | St::Ended(_)) {
            return Vec::new();
        }
        self.buf.push_str(text);
        self.run();
        std::mem::take(&mut self.out.events)
    }

    /// Marks the end of the output and returns the last events (held-back text released, ...).
    /// Later pushes are ignored; [`finish`](Self::finish) gives the result.
    pub fn end(&mut self) -> Vec<Event> {
        if !matches!(self.st, St::Ended(_)) {
            self.run();
            let r = self.run_eof();
            self.st = St::Ended(r);
        }
        std::mem::take(&mut self.out.events)
    }

    /// Ends the output (if [`end`](Self::end) was not called) and returns the message, or why a
    /// call in it is malformed or cut off.
    pub fn finish(mut self) -> Result<Parsed, ToolError> {
        let tail = self.end();
        match self.st {
            St::Ended(Err(e)) => Err(e),
            _ => Ok(Parsed {
                content: self.out.content,
                calls: self.out.calls,
                tail,
            }),
        }
    }

    fn openers(&self) -> &'static [&'static str] {
        match self.syntax {
            Syntax::Hermes => hermes::OPENERS,
            Syntax::Llama3 => llama3::OPENERS,
            Syntax::DeepSeek => deepseek::OPENERS,
            Syntax::Plain | Syntax::Generic => &[],
        }
    }

    fn run(&mut self) {
        loop {
            let buf = self.buf.as_str();
            match &mut self.st {
                St::Lead { after_call, cursor } => {
                    let p = if *after_call {
                        skip_blank_or_semicolon(buf, (*cursor).max(self.pos))
                    } else {
                        skip_ws(buf, (*cursor).max(self.pos))
                    };
                    *cursor = p;
                    match buf.as_bytes().get(p) {
                        None => return,
                        Some(b'{') => {
                            let block = match self.syntax {
                                Syntax::Generic => Block::Generic(generic::Generic::new(p)),
                                _ => Block::Llama3(llama3::Llama3::at_brace(p)),
                            };
                            self.st = St::Block {
                                at: self.pos,
                                block,
                            };
                        }
                        Some(_) => {
                            if *after_call {
                                // Blanks between a call and what follows are markup.
                                self.pos = p;
                            }
                            self.st = match self.syntax {
                                Syntax::Generic => St::Plain,
                                _ => St::Text,
                            };
                        }
                    }
                }
                St::Plain => {
                    self.out.content(&buf[self.pos..]);
                    self.pos = buf.len();
                    return;
                }
                St::Text => {
                    let rest = &buf[self.pos..];
                    let found = self
                        .openers()
                        .iter()
                        .enumerate()
                        .filter_map(|(i, o)| rest.find(o).map(|at| (at, i)))
                        .min();
                    match found {
                        Some((at, which)) => {
                            let at = self.pos + at;
                            self.out.content(&buf[self.pos..at]);
                            self.pos = at;
                            let block = self.open_block(which, at);
                            self.st = St::Block { at, block };
                        }
                        None => {
                            let keep = held_back(rest, self.openers());
                            let end = buf.len() - keep;
                            self.out.content(&buf[self.pos..end]);
                            self.pos = end;
                            return;
                        }
                    }
                }
                St::Block { at, block } => {
                    let at = *at;
                    match block.step(buf, &mut self.out) {
                        BlockStep::More => return,
                        step => self.after_block(at, step),
                    }
                }
                St::Failed(_) | St::Ended(_) => return,
            }
        }
    }

    /// Handles a block's final step (not `More`).
    fn after_block(&mut self, at: usize, step: BlockStep) {
        match step {
            BlockStep::More => {}
            BlockStep::Done(end) => {
                self.pos = end;
                self.st = match self.syntax {
                    Syntax::Llama3
                        if !self.out.calls.is_empty() && self.last_block_was_llama_json() =>
                    {
                        St::Lead {
                            after_call: true,
                            cursor: end,
                        }
                    }
                    Syntax::Generic => St::Plain,
                    _ => St::Text,
                };
            }
            BlockStep::Revert { resume, plain } => {
                let buf = self.buf.as_str();
                self.out.content(&buf[at..resume]);
                self.pos = resume;
                self.st = if plain { St::Plain } else { St::Text };
            }
            BlockStep::Bad(reason) => {
                self.st = St::Failed(ToolError::MalformedCall {
                    index: self.out.call_index(),
                    reason,
                });
            }
            BlockStep::Truncated => {
                self.st = St::Failed(ToolError::TruncatedCall {
                    index: self.out.call_index(),
                });
            }
        }
    }

    fn last_block_was_llama_json(&self) -> bool {
        matches!(&self.st, St::Block { block: Block::Llama3(b), .. } if b.is_json())
    }

    fn open_block(&self, which: usize, at: usize) -> Block {
        let opener = self.openers()[which];
        let end = at + opener.len();
        match self.syntax {
            Syntax::Hermes => Block::Hermes(hermes::Hermes::new(opener, end)),
            Syntax::Llama3 => Block::Llama3(llama3::Llama3::after_python_tag(end)),
            _ => Block::DeepSeek(deepseek::DeepSeek::new(opener, end)),
        }
    }

    /// Settles the end of the output.
    fn run_eof(&mut self) -> Result<(), ToolError> {
        loop {
            let buf = self.buf.as_str();
            match &mut self.st {
                St::Lead { after_call, .. } => {
                    if !*after_call {
                        self.out.content(&buf[self.pos..]);
                    }
                    return Ok(());
                }
                St::Text | St::Plain => {
                    self.out.content(&buf[self.pos..]);
                    self.pos = buf.len();
                    return Ok(());
                }
                St::Block { at, block } => {
                    let at = *at;
                    let step = block.eof();
                    match step {
                        BlockStep::Done(_) => return Ok(()),
                        BlockStep::More => {
                            return Err(ToolError::TruncatedCall {
                                index: self.out.call_index(),
                            });
                        }
                        step => self.after_block(at, step),
                    }
                    // A revert re-opens free text, which may hold further calls.
                    self.run();
                }
                St::Failed(e) => return Err(e.clone()),
                St::Ended(r) => return r.clone(),
            }
        }
    }
}

/// Skips blanks and `;` (what may separate Llama 3 calls).
fn skip_blank_or_semicolon(buf: &str, mut pos: usize) -> usize {
    let b = buf.as_bytes();
    while pos < b.len() && (crate::json::is_ws(b[pos]) || b[pos] == b';') {
        pos += 1;
    }
    pos
}

/// Length of the longest suffix of `text` that is a proper prefix of an opener (held back until
/// the next piece decides).
fn held_back(text: &str, openers: &[&str]) -> usize {
    let b = text.as_bytes();
    let mut keep = 0;
    for o in openers {
        let o = o.as_bytes();
        for len in (keep + 1..o.len().min(b.len() + 1)).rev() {
            if b.ends_with(&o[..len]) {
                keep = len;
                break;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stream;
