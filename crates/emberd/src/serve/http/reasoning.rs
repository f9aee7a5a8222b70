//! Splits a reasoning model's output into its thinking (`<think>…</think>`) and its answer, as
//! llama-server's `--reasoning-format deepseek` does (common/chat.cpp `try_parse_reasoning`): the
//! text of a leading think block goes to `reasoning_content`, stripped of surrounding whitespace,
//! and the rest (leading whitespace dropped) to `content`.
//!
//! Streaming-aware: text arrives in deltas, a tag may be split across them, so a possible partial
//! tag (and whitespace that may turn out to be trailing) is held back until the next delta
//! decides. DeepSeek-R1 distill templates end the generation prompt with `<think>\n`, so the output
//! starts inside the block without an opening tag: [`ReasoningSplitter::new`] takes whether the
//! prompt opened it. A block that never closes is all reasoning (the answer was cut off).

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Text split from one delta (either part may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Split {
    pub reasoning: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace seen: a leading `<think>` may still come.
    Start,
    /// Inside the think block; `leading` while no reasoning text was emitted yet.
    Think { leading: bool },
    /// Just after `</think>`: whitespace before the answer is dropped.
    AfterThink,
    /// The answer: everything passes through.
    Content,
}

/// The streaming splitter: `push` every delta, then `finish` once.
#[derive(Debug, Clone)]
pub(crate) struct ReasoningSplitter {
    state: State,
    /// Text not yet decided (a partial tag, whitespace that may be trailing).
    pending: String,
}

impl ReasoningSplitter {
    /// `opened_by_prompt`: the rendered prompt ends with `<think>` (see [`prompt_opens_think`]).
    pub fn new(opened_by_prompt: bool) -> Self {
        let state = if opened_by_prompt {
            State::Think { leading: true }
        } else {
            State::Start
        };
        ReasoningSplitter {
            state,
            pending: String::new(),
        }
    }

    /// Feeds one delta; returns what can be emitted now.
    pub fn push(&mut self, delta: &str) -> Split {
        self.pending.push_str(delta);
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let t = self.pending.trim_start();
                    if t.is_empty() {
                        return out;
                    }
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.state = State::Think { leading: true };
                    } else if OPEN.starts_with(t) {
                        return out; // maybe the start of `<think>`
                    } else {
                        self.state = State::Content;
                    }
                }
                State::Think { leading } => {
                    if let Some(i) = self.pending.find(CLOSE) {
                        let mut text = self.pending[..i].trim_end();
                        if leading {
                            text = text.trim_start();
                        }
                        out.reasoning.push_str(text);
                        self.pending.drain(..i + CLOSE.len());
                        self.state = State::AfterThink;
                        continue;
                    }
                    // Hold a suffix that may begin `</think>`, and whitespace before it that
                    // would be trailing if the tag follows.
                    let tag_at = self.pending.len() - partial_suffix(&self.pending, CLOSE);
                    let keep_from = self.pending[..tag_at].trim_end().len();
                    let mut text = &self.pending[..keep_from];
                    if leading {
                        text = text.trim_start();
                    }
                    if !text.is_empty() {
                        out.reasoning.push_str(text);
                        self.state = State::Think { leading: false };
                    }
                    // Emitted, or (while leading) whitespace that is dropped anyway.
                    self.pending.drain(..keep_from);
                    return out;
                }
                State::AfterThink => {
                    let t = self.pending.trim_start();
                    if t.is_empty() {
                        self.pending.clear();
                        return out;
                    }
                    self.pending = t.to_owned();
                    self.state = State::Content;
                }
                State::Content => {
                    out.content.push_str(&self.pending);
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// Flushes what was held back at the end of the output.
    pub fn finish(&mut self) -> Split {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Split::default();
        match self.state {
            // Only whitespace or a beginning of `<think>` that never completed: it was answer.
            State::Start | State::Content => out.content = pending,
            // An unclosed block: the held text was reasoning after all, minus trailing space.
            State::Think { leading } => {
                let t = pending.trim_end();
                out.reasoning = if leading { t.trim_start() } else { t }.to_owned();
            }
            State::AfterThink => {}
        }
        self.state = State::Content;
        out
    }
}

/// Splits `delta` with `splitter`, or passes it all as content when the request does not split.
pub(crate) fn push_opt(splitter: &mut Option<ReasoningSplitter>, delta: String) -> Split {
    match splitter {
        Some(s) => s.push(&delta),
        None => Split {
            reasoning: String::new(),
            content: delta,
        },
    }
}

/// Whether a rendered chat prompt leaves the model inside a think block (R1 distills' templates
/// end the generation prompt with `<think>\n`).
pub(crate) fn prompt_opens_think(prompt: &str) -> bool {
    prompt.trim_end().ends_with(OPEN)
}

/// Whether a chat template is a reasoning template (it writes `<think>`).
pub(crate) fn template_thinks(source: &str) -> bool {
    source.contains(OPEN) || source.contains(CLOSE)
}

/// The length of the longest proper suffix of `s` that is a prefix of `tag` (ASCII tag, so the
/// cut is on a character boundary).
fn partial_suffix(s: &str, tag: &str) -> usize {
    let max = tag.len().saturating_sub(1).min(s.len());
    (1..=max)
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

/// Splits a complete output at once (the non-streaming path).
pub(crate) fn split_all(text: &str, opened_by_prompt: bool) -> Split {
    let mut s = ReasoningSplitter::new(opened_by_prompt);
    let mut out = s.push(text);
    let tail = s.finish();
    out.reasoning.push_str(&tail.reasoning);
    out.content.push_str(&tail.content);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(pieces: &[&str], opened: bool) -> Split {
        let mut s = ReasoningSplitter::new(opened);
        let mut out = Split::default();
        for p in pieces {
            let o = s.push(p);
            out.reasoning.push_str(&o.reasoning);
            out.content.push_str(&o.content);
        }
        let o = s.finish();
        out.reasoning.push_str(&o.reasoning);
        out.content.push_str(&o.content);
        out
    }

    fn boundaries(s: &str) -> Vec<usize> {
        (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect()
    }

    /// Every way to cut `text` in two and in three pieces, and one char at a time, gives
    /// the same split as the whole text at once.
    fn check_all_splits(text: &str, opened: bool, reasoning: &str, content: &str) {
        let want = Split {
            reasoning: reasoning.into(),
            content: content.into(),
        };
        assert_eq!(split_all(text, opened), want, "whole: {text:?}");
        let b = boundaries(text);
        for &i in &b {
            for &j in b.iter().filter(|&&j| j >= i) {
                let got = run(&[&text[..i], &text[i..j], &text[j..]], opened);
                assert_eq!(got, want, "split at {i},{j}: {text:?}");
            }
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&refs, opened), want, "char by char: {text:?}");
    }

    #[test]
    fn explicit_block() {
        check_all_splits(
            "<think>\nhmm, 2+2\n</think>\n\nIt is 4.",
            false,
            "hmm, 2+2",
            "It is 4.",
        );
    }

    #[test]
    fn block_opened_by_the_prompt() {
        check_all_splits("Let me see.\n</think>\n\n4", true, "Let me see.", "4");
    }

    #[test]
    fn no_block_is_all_content() {
        check_all_splits("  Hello <think> world", false, "", "  Hello <think> world");
        check_all_splits("<thin", false, "", "<thin");
        check_all_splits("", false, "", "");
    }

    #[test]
    fn unclosed_block_is_all_reasoning() {
        check_all_splits(
            "<think> still thinking </thi",
            false,
            "still thinking </thi",
            "",
        );
        check_all_splits("thinking  ", true, "thinking", "");
    }

    #[test]
    fn inner_whitespace_and_lookalikes_kept() {
        check_all_splits(
            "a < b </ c </thinker>\n\n x </think>y  z ",
            true,
            "a < b </ c </thinker>\n\n x",
            "y  z ",
        );
    }

    #[test]
    fn multibyte_text() {
        check_all_splits("日本語 🤔\n</think>é ü", true, "日本語 🤔", "é ü");
    }

    #[test]
    fn empty_reasoning_and_empty_answer() {
        check_all_splits("<think>\n\n</think>\n\nOk", false, "", "Ok");
        check_all_splits("x</think>  ", true, "x", "");
    }

    #[test]
    fn prompt_detection() {
        assert!(prompt_opens_think("<｜Assistant｜><think>\n"));
        assert!(!prompt_opens_think("<|im_start|>assistant\n"));
        assert!(template_thinks("{{ '<think>\\n' }}"));
        assert!(!template_thinks("{{ '<|im_start|>' }}"));
    }
}
