//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`), hand-written after llama.cpp
//! `src/llama-vocab.cpp` (`llm_tokenizer_spm_session`).
//!
//! The text (spaces already escaped to U+2581 by the caller) is split into UTF-8 characters; the
//! adjacent pair whose concatenation is the vocabulary token with the highest score is merged first
//! (equal scores: leftmost pair), until no pair forms a token. Symbols that are not tokens are
//! emitted as byte tokens `<0xXX>`. The HF `tokenizers` crate has no score-driven BPE (its BPE
//! needs merges, its Unigram is a different algorithm), hence this file.

use crate::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the smaller left index (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the ids of `text` (one raw-text fragment, spaces escaped) to `out`.
pub(crate) fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, c) in text.char_indices() {
        let index = symbols.len();
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: index.checked_sub(1),
            next: (start + c.len_utf8() < text.len()).then_some(index + 1),
        });
    }

    let mut queue = BinaryHeap::new();
    let try_add =
        |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: usize, right: usize| {
            let (Some(l), Some(r)) = (symbols.get(left), symbols.get(right)) else {
                return;
            };
            let Some(piece) = text.get(l.start..r.start + r.len) else {
                return;
            };
            let Some(id) = vocab.text_to_token(piece) else {
                return;
            };
            let score = vocab.token(id).map_or(0.0, |t| t.score);
            queue.push(Bigram {
                left,
                right,
                score,
                size: piece.len(),
            });
        };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, i - 1, i);
    }

    while let Some(b) = queue.pop() {
        let (Some(&l), Some(&r)) = (symbols.get(b.left), symbols.get(b.right)) else {
            continue;
        };
        // stale entry: one side was merged away or grew since the pair was queued
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        if let Some(s) = symbols.get_mut(b.left) {
            s.len += r.len;
            s.next = r.next;
        }
        if let Some(s) = symbols.get_mut(b.right) {
            s.len = 0;
        }
        if let Some(s) = r.next.and_then(|n| symbols.get_mut(n)) {
            s.prev = Some(b.left);
        }
        if let Some(p) = l.prev {
            try_add(&mut queue, &symbols, p, b.left);
        }
        if let Some(n) = r.next {
            try_add(&mut queue, &symbols, b.left, n);
        }
    }

    // Every merged symbol is a token (pairs are only queued when they are), so llama.cpp's
    // `resegment` reduces to: the symbol's token, or its bytes.
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(idx) = i {
        let Some(s) = symbols.get(idx) else { break };
        let piece = text.get(s.start..s.start + s.len).unwrap_or_default();
        match vocab.text_to_token(piece) {
            Some(id) => out.push(id),
            None => piece.bytes().for_each(|b| push_byte(vocab, b, out)),
        }
        i = s.next;
    }
}

/// llama.cpp `byte_to_token` for SPM: `<0xXX>`, else the byte itself as a one-character token.
/// llama.cpp throws when neither exists; here the unknown token stands in (or nothing).
fn push_byte(vocab: &Vocab, b: u8, out: &mut Vec<u32>) {
    let hex = format!("<0x{b:02X}>");
    let id = vocab
        .text_to_token(&hex)
        .or_else(|| {
            b.is_ascii()
                .then(|| vocab.text_to_token(&char::from(b).to_string()))
                .flatten()
        })
        .or(vocab.ids.unk);
    match id {
        Some(id) => out.push(id),
        None => tracing::warn!("no byte token for {hex}; byte dropped"),
    }
}

#[cfg(test)]
mod tests {
    use crate::Tokenizer;
    use ember_gguf::{Array, GgufFile, GgufWriter, Value};

    /// A small SentencePiece vocabulary: specials, the 256 byte tokens, then scored pieces.
    fn spm(pieces: &[(&str, f32)], extra: &[(&str, Value)]) -> Tokenizer {
        let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
        let mut types = vec![2i32, 3, 3];
        let mut scores = vec![0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for &(p, s) in pieces {
            tokens.push(p.to_owned());
            types.push(1);
            scores.push(s);
        }
        let mut w = GgufWriter::new()
            .kv("tokenizer.ggml.model", Value::String("llama".into()))
            .kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
            .kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
            .kv("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
        for (k, v) in extra {
            w = w.kv(k, v.clone());
        }
        let file = GgufFile::from_bytes(w.to_bytes()).expect("valid gguf");
        Tokenizer::from_gguf(file.metadata()).expect("valid vocab")
    }

    fn no_prefix() -> [(&'static str, Value); 1] {
        [("tokenizer.ggml.add_space_prefix", Value::Bool(false))]
    }

    fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| tok.token_text(id).unwrap_or("?").to_owned())
            .collect()
    }

    #[test]
    fn higher_score_merges_first() {
        let base = [("a", -10.0), ("b", -10.0), ("c", -10.0)];
        let tok = spm(
            &[&base[..], &[("ab", -2.0), ("bc", -1.0)]].concat(),
            &no_prefix(),
        );
        assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["a", "bc"]);
        let tok = spm(
            &[&base[..], &[("ab", -1.0), ("bc", -2.0)]].concat(),
            &no_prefix(),
        );
        assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["ab", "c"]);
        // equal scores: the leftmost pair wins
        let tok = spm(
            &[&base[..], &[("ab", -1.0), ("bc", -1.0)]].concat(),
            &no_prefix(),
        );
        assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["ab", "c"]);
        // merges continue while the concatenation is a token
        let tok = spm(
            &[&base[..], &[("ab", -1.0), ("abc", -3.0)]].concat(),
            &no_prefix(),
        );
        assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["abc"]);
    }

    #[test]
    fn space_prefix_and_escape() {
        let pieces = [
            ("\u{2581}", -1.0),
            ("h", -9.0),
            ("i", -9.0),
            ("\u{2581}h", -3.0),
            ("\u{2581}hi", -2.0),
            ("hi", -4.0),
        ];
        let tok = spm(&pieces, &[]);
        assert!(tok.add_space_prefix() && tok.add_bos() && !tok.add_eos());
        assert_eq!(
            texts(&tok, &tok.encode("hi hi", false, false)),
            ["\u{2581}hi", "\u{2581}hi"]
        );
        assert_eq!(tok.encode("hi", true, false).first(), Some(&1));
        let tok = spm(&pieces, &no_prefix());
        assert_eq!(
            texts(&tok, &tok.encode("hi hi", false, false)),
            ["hi", "\u{2581}hi"]
        );
    }

    #[test]
    fn byte_fallback_for_unknown_chars() {
        let tok = spm(&[("\u{2581}", -1.0), ("a", -2.0)], &no_prefix());
        let ids = tok.encode("aé", false, false);
        assert_eq!(texts(&tok, &ids), ["a", "<0xC3>", "<0xA9>"]);
        assert_eq!(tok.decode(&ids, false).expect("ids valid"), "aé");
        // a byte token alone is half a character
        assert_eq!(
            tok.token_to_piece(ids[1], false).as_deref(),
            Some(&[0xC3][..])
        );
    }

    #[test]
    fn special_tokens_and_prefix_after_them() {
        let pieces = [
            ("\u{2581}", -1.0),
            ("h", -9.0),
            ("i", -9.0),
            ("\u{2581}hi", -2.0),
            ("hi", -4.0),
        ];
        let tok = spm(&pieces, &[]);
        // after a special token the next text gets the space prefix again (llama.cpp)
        let ids = tok.encode("hi</s>hi", false, true);
        assert_eq!(texts(&tok, &ids), ["\u{2581}hi", "</s>", "\u{2581}hi"]);
        // without parse_special the control text is plain text (bytes for '<', '/', '>', 's')
        let plain = tok.encode("</s>", false, false);
        assert!(!plain.contains(&2));
        assert_eq!(tok.decode(&plain, false).expect("ids valid"), " </s>");
        // control tokens render only on request; the EOS is end-of-generation
        assert_eq!(tok.decode(&ids, false).expect("ids valid"), " hi hi");
        assert_eq!(tok.decode(&ids, true).expect("ids valid"), " hi</s> hi");
        assert!(tok.is_eog(2));
        assert_eq!(tok.eog_ids(), [2]);
        // llama_detokenize drops the leading space of the first piece
        assert_eq!(
            tok.detokenize(&ids, false, false).expect("ids valid"),
            "hi hi"
        );
        let with_bos = tok.encode("hi", true, false);
        assert_eq!(
            tok.detokenize(&with_bos, true, false).expect("ids valid"),
            " hi"
        );
    }
}
