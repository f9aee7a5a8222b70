//! Detokenization: one token's bytes, llama.cpp's whole-sequence `detokenize`, and a streaming
//! decoder that never emits half a UTF-8 character.
//!
//! Follows llama.cpp `src/llama-vocab.cpp` (`llama_vocab::impl::token_to_piece`,
//! `llama_decode_text`, `llama_vocab::impl::detokenize`). Pieces are bytes: a byte-level BPE token
//! or an SPM byte token may hold part of a multi-byte character.

use crate::bpe::char_to_byte;
use crate::vocab::{Kind, Vocab, attr};
use crate::{Tokenizer, TokenizerError};
use std::borrow::Cow;

/// llama.cpp `token_to_piece(token, lstrip = 0, special = render_special)`; `None` for an id
/// outside the vocabulary.
pub(crate) fn piece(vocab: &Vocab, id: u32, render_special: bool) -> Option<Cow<'_, [u8]>> {
    let t = vocab.token(id)?;
    let special = attr::UNKNOWN | attr::CONTROL;
    if !render_special && t.attr & special != 0 {
        return Some(Cow::Borrowed(&[]));
    }
    if t.attr & (special | attr::USER_DEFINED) != 0 {
        return Some(Cow::Borrowed(t.text.as_bytes()));
    }
    if t.attr & attr::NORMAL != 0 {
        return Some(match vocab.kind {
            Kind::Bpe => Cow::Owned(decode_byte_level(&t.text)),
            Kind::Spm => Cow::Owned(t.text.replace('\u{2581}', " ").into_bytes()),
        });
    }
    if t.attr & attr::BYTE != 0 {
        return Some(Cow::Owned(vec![hex_byte(&t.text)]));
    }
    // UNUSED / UNDEFINED tokens render as nothing
    Some(Cow::Borrowed(&[]))
}

/// llama.cpp `llama_decode_text`: byte-level characters back to bytes; a character outside the
/// byte alphabet becomes `[UNK_BYTE_0x<its utf-8 hex><token text>]`, as llama.cpp writes it.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp `token_to_byte`: `strtol(text.substr(3, 2), 16)` of a `<0xXX>` token (0 when absent).
fn hex_byte(text: &str) -> u8 {
    let digits = text.get(3..).unwrap_or_default();
    let hex: String = digits
        .chars()
        .take(2)
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u8::from_str_radix(&hex, 16).unwrap_or(0)
}

/// llama.cpp `llama_detokenize(tokens, remove_special, unparse_special)` as bytes.
pub(crate) fn detokenize(
    tok: &Tokenizer,
    mut ids: &[u32],
    remove_special: bool,
    unparse_special: bool,
) -> Result<Vec<u8>, TokenizerError> {
    let vocab = &tok.vocab;
    let mut remove_space = vocab.add_space_prefix;
    if remove_special
        && vocab.add_bos
        && let (Some(&first), Some(bos)) = (ids.first(), vocab.ids.bos)
        && first == bos
    {
        remove_space = false;
        ids = ids.get(1..).unwrap_or_default();
    }
    if remove_special
        && vocab.add_eos
        && let (Some(&last), Some(eos)) = (ids.last(), vocab.ids.eos)
        && last == eos
    {
        ids = ids.get(..ids.len() - 1).unwrap_or_default();
    }
    let mut text = Vec::new();
    for &id in ids {
        let p = tok.piece_or_err(id, unparse_special)?;
        // lstrip = 1 for the first token when the model adds a space prefix
        let p: &[u8] = if remove_space {
            p.strip_prefix(b" ").unwrap_or(&p)
        } else {
            &p
        };
        remove_space = false;
        text.extend_from_slice(p);
    }
    if vocab.clean_spaces {
        text = clean_spaces(&text);
    }
    Ok(text)
}

/// llama.cpp's three in-place `clean_spaces` passes, ported index for index (the second pass
/// overwrites the space it skips with NUL, which the next comparison then sees): drop the space in
/// " ?", " !", " .", " ,"; turn " ' " into "'"; drop the space before "'s", "'m", "'re", "'ve".
fn clean_spaces(text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    let n1 = t.len();
    let mut total = usize::from(n1 > 0);
    for i in 1..n1 {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    let n2 = total;
    total = usize::from(n2 > 0);
    let mut i = 1;
    while i < n2 {
        let x = t[i];
        if x == b'\'' && i + 1 < n2 && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    let n3 = total;
    total = usize::from(n3 > 0);
    for i in 1..n3 {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n3 {
            let x1 = t[i + 1];
            if matches!(x1, b's' | b'm') {
                total -= 1;
            } else if !matches!(x1, b't' | b'd') && i + 2 < n3 {
                let x2 = t[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    t
}

/// Appends the complete UTF-8 prefix of `pending` to `out` and keeps an incomplete tail.
/// Bytes that can never start a valid character become U+FFFD right away, exactly as
/// `String::from_utf8_lossy` would replace them in the whole text.
fn drain_utf8(pending: &mut Vec<u8>, out: &mut String) {
    let mut start = 0;
    while start < pending.len() {
        let rest = pending.get(start..).unwrap_or_default();
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                start = pending.len();
            }
            Err(e) => {
                let valid = rest.get(..e.valid_up_to()).unwrap_or_default();
                out.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start += e.valid_up_to() + n;
                    }
                    None => {
                        start += e.valid_up_to();
                        break; // incomplete character at the end: wait for more bytes
                    }
                }
            }
        }
    }
    pending.drain(..start.min(pending.len()));
}

/// Streaming detokenizer: push ids one at a time, get back only complete UTF-8 text.
///
/// The concatenation of every [`push`](Self::push) result and [`finish`](Self::finish) equals
/// [`Tokenizer::decode`] of the same ids.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    render_special: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tok: &'a Tokenizer, render_special: bool) -> Self {
        Self {
            tok,
            render_special,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let p = self.tok.piece_or_err(id, self.render_special)?;
        self.pending.extend_from_slice(&p);
        let mut out = String::new();
        drain_utf8(&mut self.pending, &mut out);
        Ok(out)
    }

    /// Bytes held back because they end in an incomplete character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: an incomplete trailing character becomes U+FFFD. The decoder is empty
    /// afterwards and can be reused.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_passes() {
        let c = |s: &str| String::from_utf8(clean_spaces(s.as_bytes())).unwrap_or_default();
        assert_eq!(c("Hello , world !"), "Hello, world!");
        assert_eq!(c("a ' b"), "a'b");
        // the skipped space is NUL-ed in place, so the next " ' " is not seen
        assert_eq!(c("a ' ' b"), "a'' b");
        assert_eq!(
            c("it 's I 'm we 're they 've I 'll I 'd"),
            "it's I'm we're they've I 'll I 'd"
        );
    }

    #[test]
    fn hex_byte_tokens() {
        assert_eq!(hex_byte("<0x0A>"), 10);
        assert_eq!(hex_byte("<0xff>"), 255);
        assert_eq!(hex_byte("<0x"), 0);
        assert_eq!(hex_byte("<0xZZ>"), 0);
    }

    #[test]
    fn byte_level_decode_marks_foreign_chars() {
        assert_eq!(decode_byte_level("\u{120}hi"), b" hi");
        assert_eq!(
            decode_byte_level("a\u{2581}"),
            b"a[UNK_BYTE_0xe29681a\xe2\x96\x81]"
        );
    }

    #[test]
    fn drain_keeps_incomplete_tail_only() {
        let mut p = vec![b'a', 0xF0, 0x9F];
        let mut out = String::new();
        drain_utf8(&mut p, &mut out);
        assert_eq!(out, "a");
        assert_eq!(p, vec![0xF0, 0x9F]);
        p.extend_from_slice(&[0x98, 0x80, 0xFF, b'b', 0xE4]);
        drain_utf8(&mut p, &mut out);
        assert_eq!(out, "a\u{1F600}\u{FFFD}b");
        assert_eq!(p, vec![0xE4]);
    }
}
