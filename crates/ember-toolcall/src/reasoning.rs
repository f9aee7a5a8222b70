//! Separates a reasoning model's thinking (`<think>…</think>`) from its answer, streaming, as
//! llama-server's `--reasoning-format deepseek` does (`try_parse_reasoning` in
//! common/chat-parser.cpp): the text of a leading think block goes to `reasoning_content`, without
//! its surrounding blanks, and what follows (leading blanks dropped) is the answer, which the
//! daemon then hands to the [`StreamParser`](crate::StreamParser).
//!
//! DeepSeek-R1 templates end the prompt with `<think>\n`, so the output starts inside the block with
//! no opening tag: [`ReasoningSplitter::new`] takes whether the prompt opened it
//! ([`prompt_opens_think`]). A tag split across pieces, and blanks that may turn out to be
//! trailing, are held back until the next piece decides; a block that never closes is all
//! reasoning (the answer was cut off).

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// What one piece of output split into (either part may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Thinking text.
    pub reasoning: String,
    /// Answer text.
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Only blanks so far: `<think>` may still open.
    Start,
    /// Inside the block; `leading` until its first non-blank character.
    Think { leading: bool },
    /// After `</think>`: blanks before the answer are dropped.
    After,
    /// The answer.
    Content,
}

/// The streaming splitter: [`push`](Self::push) every piece, then [`finish`](Self::finish).
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    state: State,
    /// Text not decided yet.
    pending: String,
}

/// Whether a rendered prompt leaves the model inside a `<think>` block (ends with `<think>` and
/// maybe blanks).
pub fn prompt_opens_think(rendered: &str) -> bool {
    rendered.trim_end().ends_with(OPEN)
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.as_bytes().ends_with(&tag.as_bytes()[..n]))
        .unwrap_or(0)
}

impl ReasoningSplitter {
    /// `opened_by_prompt`: the prompt ended inside a think block ([`prompt_opens_think`]).
    pub fn new(opened_by_prompt: bool) -> Self {
        ReasoningSplitter {
            state: if opened_by_prompt {
                State::Think { leading: true }
            } else {
                State::Start
            },
            pending: String::new(),
        }
    }

    /// Splits the next piece.
    pub fn push(&mut self, text: &str) -> Split {
        self.pending.push_str(text);
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let t = self.pending.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.state = State::Think { leading: true };
                    } else if !t.is_empty() && !OPEN.starts_with(t) {
                        out.content.push_str(&std::mem::take(&mut self.pending));
                        self.state = State::Content;
                    } else {
                        return out;
                    }
                }
                State::Think { leading } => {
                    if leading {
                        let t = self.pending.trim_start();
                        if t.is_empty() {
                            self.pending.clear();
                            return out;
                        }
                        self.pending = t.to_owned();
                        self.state = State::Think { leading: false };
                    }
                    if let Some(i) = self.pending.find(CLOSE) {
                        out.reasoning.push_str(self.pending[..i].trim_end());
                        self.pending = self.pending[i + CLOSE.len()..].to_owned();
                        self.state = State::After;
                        continue;
                    }
                    // Hold back a possible partial `</think>` and blanks that may be trailing.
                    let keep_tag = partial_suffix(&self.pending, CLOSE);
                    let body = &self.pending[..self.pending.len() - keep_tag];
                    let settled = body.trim_end().len();
                    out.reasoning.push_str(&self.pending[..settled]);
                    self.pending = self.pending[settled..].to_owned();
                    return out;
                }
                State::After => {
                    let t = self.pending.trim_start();
                    if t.is_empty() {
                        self.pending.clear();
                        return out;
                    }
                    self.pending = t.to_owned();
                    self.state = State::Content;
                }
                State::Content => {
                    out.content.push_str(&std::mem::take(&mut self.pending));
                    return out;
                }
            }
        }
    }

    /// The end of the output: releases what was held back.
    pub fn finish(&mut self) -> Split {
        let mut out = Split::default();
        let pending = std::mem::take(&mut self.pending);
        match self.state {
            State::Start | State::Content => out.content = pending,
            State::Think { .. } => out.reasoning = pending.trim_end().to_owned(),
            State::After => {}
        }
        self.state = State::Content;
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn split_all(opened: bool, pieces: &[&str]) -> (String, String) {
        let mut s = ReasoningSplitter::new(opened);
        let (mut r, mut c) = (String::new(), String::new());
        for p in pieces {
            let o = s.push(p);
            r += &o.reasoning;
            c += &o.content;
        }
        let o = s.finish();
        (r + &o.reasoning, c + &o.content)
    }

    fn chars(s: &str) -> Vec<String> {
        s.chars().map(String::from).collect()
    }

    #[test]
    fn splits_whole_and_char_by_char() {
        let cases: &[(bool, &str, &str, &str)] = &[
            (
                false,
                "<think>I'm\nthinking</think>Hello, world!",
                "I'm\nthinking",
                "Hello, world!",
            ),
            (false, "  <think>\n a </think>\n\n b ", "a", "b "),
            (
                true,
                "\nI'm\nthinking\n</think>\n\nHello",
                "I'm\nthinking",
                "Hello",
            ),
            (false, "Hello <think>", "", "Hello <think>"),
            (false, "<thin", "", "<thin"),
            (true, "never closed </thi", "never closed </thi", ""),
            (
                true,
                "REASONING</think><｜tool▁calls▁begin｜>x",
                "REASONING",
                "<｜tool▁calls▁begin｜>x",
            ),
            (false, "", "", ""),
        ];
        for &(opened, text, reasoning, content) in cases {
            assert_eq!(
                split_all(opened, &[text]),
                (reasoning.into(), content.into()),
                "{text:?}"
            );
            let pieces = chars(text);
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            assert_eq!(
                split_all(opened, &pieces),
                (reasoning.into(), content.into()),
                "{text:?} by chars"
            );
        }
    }

    #[test]
    fn prompt_detection() {
        assert!(prompt_opens_think("<｜Assistant｜><think>\n"));
        assert!(prompt_opens_think("<｜Assistant｜><think>"));
        assert!(!prompt_opens_think("<｜Assistant｜><think></think>"));
    }
}
