//! Splits a reasoning model's output into its thinking (`<think>…</think>`) and its answer, as
//! llama-server's `--reasoning-format deepseek` does. The streaming splitter itself is
//! `ember-toolcall`'s (the same one the tool-call path feeds its parser from); this module holds
//! the daemon's helpers around it.

pub(crate) use ember_toolcall::{ReasoningSplitter, Split, prompt_opens_think};

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

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

/// Whether a chat template is a reasoning template (it writes `<think>`).
pub(crate) fn template_thinks(source: &str) -> bool {
    source.contains(OPEN) || source.contains(CLOSE)
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
