//! Special-token partition of the raw text, after llama.cpp `src/llama-vocab.cpp`
//! (`llama_vocab::impl::tokenizer_st_partition`).
//!
//! The special tokens (CONTROL, USER_DEFINED, UNKNOWN) are taken one at a time, longest text first;
//! each one splits every remaining text fragment at all its occurrences. With `parse_special =
//! false` CONTROL and UNKNOWN tokens are skipped, but USER_DEFINED tokens are still split out (as
//! HF `tokenizers` does for added tokens). Note that this is "longest token first over the whole
//! text", not "longest match at each position": it differs when two special texts overlap.
//! LSTRIP/RSTRIP tokens eat the ASCII whitespace (C `isspace`) next to them.

use crate::vocab::{Vocab, attr};

/// A piece of the input: raw text still to tokenize, or a special token already found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

pub(crate) fn partition<'a>(
    vocab: &Vocab,
    text: &'a str,
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(text));
    for &id in &vocab.special_cache {
        let Some(tok) = vocab.token(id) else { continue };
        if !parse_special && tok.attr & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = tok.text.as_str();
        if needle.is_empty() {
            continue;
        }
        // cheap test first: most special tokens occur nowhere
        if !frags
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
        {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            match f {
                Fragment::Text(t) => split_one(t, needle, id, tok.attr, &mut next),
                tok @ Fragment::Token(_) => next.push(tok),
            }
        }
        frags = next;
    }
    frags
}

/// Splits `t` at every occurrence of `needle`, pushing text / token fragments in order.
fn split_one<'a>(
    mut t: &'a str,
    needle: &str,
    id: u32,
    tok_attr: u32,
    out: &mut Vec<Fragment<'a>>,
) {
    while let Some(pos) = t.find(needle) {
        let mut left = &t[..pos];
        if tok_attr & attr::LSTRIP != 0 {
            left = left.trim_end_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
        }
        if !left.is_empty() {
            out.push(Fragment::Text(left));
        }
        out.push(Fragment::Token(id));
        let mut right = &t[pos + needle.len()..];
        if tok_attr & attr::RSTRIP != 0 {
            right = right.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
        }
        t = right;
    }
    if !t.is_empty() {
        out.push(Fragment::Text(t));
    }
}
