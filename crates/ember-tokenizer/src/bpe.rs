//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) on top of the Hugging Face `tokenizers` crate.
//!
//! Follows llama.cpp `src/llama-vocab.cpp` (`llm_tokenizer_bpe_session::tokenize`, merges loading in
//! `llama_vocab::impl::load`) and `src/unicode.cpp` (`unicode_regex_split`, byte encoding):
//!
//! 1. the regex sequence of the pre-type splits the text (HF `Split`, behaviour `Isolated`: matches
//!    and the gaps between them become separate pieces; each regex splits the previous pieces), with
//!    the patterns rewritten by [`crate::pretok::adapt`] to match llama.cpp's regex route exactly;
//! 2. each piece is mapped byte -> GPT-2 byte-level character (HF `ByteLevel`, no regex, no prefix);
//! 3. each piece is merged by rank (HF `BPE`, lowest rank first, leftmost on ties, exactly
//!    llama.cpp's `llm_bigram_bpe` order) with `ignore_merges` where llama.cpp sets it.
//!
//! Merges are given to HF in llama.cpp's terms: split at the first space after the first byte,
//! first occurrence of a pair wins (llama.cpp's `bpe_ranks.emplace`; HF would let the last win),
//! and merges whose parts or result are not in the vocabulary are dropped (HF refuses them). In
//! llama.cpp such a merge would still fire and the resulting non-token symbol would be looked up
//! byte by byte (mostly finding nothing); converters never write such merges, and the truncated
//! test vocabularies keep only complete ones, so this only matters for malformed files.

use crate::TokenizerError;
use crate::pretok::adapt;
use crate::vocab::Vocab;
use std::collections::HashSet;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
    SplitDelimiterBehavior,
};

/// The HF `Split` pre-tokenizer for one (already adapted) regex.
pub(crate) fn split_pre_tokenizer(regex: &str) -> Result<Split, TokenizerError> {
    Split::new(
        SplitPattern::Regex(regex.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| TokenizerError::Bpe(format!("pre-tokenizer regex {regex:?}: {e}")))
}

/// The GPT-2 byte -> character table (`unicode_byte_to_utf8_map` in llama.cpp): printable Latin-1
/// bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
};

/// Inverse of [`BYTE_TO_CHAR`], indexed by code point (all byte characters are below U+0144);
/// -1 marks characters outside the byte-level alphabet.
const CHAR_TO_BYTE: [i16; 0x144] = {
    let mut table = [-1i16; 0x144];
    let mut b = 0usize;
    while b < 256 {
        table[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
};

pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[usize::from(b)]
}

/// The byte a byte-level character stands for; `None` outside the alphabet.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let v = *CHAR_TO_BYTE.get(c as usize)?;
    u8::try_from(v).ok()
}

pub(crate) struct BpeEncoder {
    pre: Sequence,
    model: BPE,
}

impl std::fmt::Debug for BpeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeEncoder")
            .field("pre", &self.pre)
            .finish_non_exhaustive()
    }
}

impl BpeEncoder {
    pub(crate) fn new(vocab: &Vocab, ignore_merges: bool) -> Result<Self, TokenizerError> {
        let mut steps = Vec::new();
        for re in vocab.pre_type.map(|t| t.regexes).unwrap_or_default() {
            steps.push(PreTokenizerWrapper::Split(split_pre_tokenizer(&adapt(re))?));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));

        let mut seen = HashSet::new();
        let mut merges = Vec::with_capacity(vocab.merges.len());
        let mut dropped = 0usize;
        for m in &vocab.merges {
            // llama.cpp: `word.find(' ', 1)`; a line without such a space yields an unusable pair
            let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                dropped += 1;
                continue;
            };
            // `pos` is an ASCII space, so both slices fall on character boundaries
            let (Some(a), Some(b)) = (m.get(..pos), m.get(pos + 1..)) else {
                dropped += 1;
                continue;
            };
            let known = |s: &str| vocab.token_to_id.contains_key(s);
            if !(known(a) && known(b) && known(&format!("{a}{b}"))) {
                dropped += 1;
                continue;
            }
            if seen.insert((a, b)) {
                merges.push((a.to_owned(), b.to_owned()));
            }
        }
        if dropped > 0 {
            tracing::debug!(
                "{dropped} BPE merges reference tokens missing from the vocabulary; ignored"
            );
        }
        let ids: tokenizers::models::bpe::Vocab = vocab
            .token_to_id
            .iter()
            .map(|(k, &v)| (k.clone(), v))
            .collect();
        let model = BPE::builder()
            .vocab_and_merges(ids, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        Ok(Self {
            pre: Sequence::new(steps),
            model,
        })
    }

    /// Appends the ids of one piece of raw text (no special tokens in it).
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut pts = PreTokenizedString::from(text);
        if let Err(e) = self.pre.pre_tokenize(&mut pts) {
            // cannot happen with the built-in patterns; never lose text silently
            tracing::error!("BPE pre-tokenization failed ({e}); falling back to byte tokens");
            let encoded: String = text.bytes().map(byte_to_char).collect();
            char_tokens(vocab, &encoded, out);
            return;
        }
        for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::None) {
            match self.model.tokenize(piece) {
                Ok(tokens) => out.extend(tokens.iter().map(|t| t.id)),
                Err(e) => {
                    tracing::error!("BPE merge failed ({e}); falling back to byte tokens");
                    char_tokens(vocab, piece, out);
                }
            }
        }
    }
}

/// One token per byte-level character, skipping characters missing from the vocabulary (what
/// llama.cpp's final `text_to_token` lookup does for symbols that are not tokens).
fn char_tokens(vocab: &Vocab, encoded: &str, out: &mut Vec<u32>) {
    let mut buf = [0u8; 4];
    out.extend(
        encoded
            .chars()
            .filter_map(|c| vocab.text_to_token(c.encode_utf8(&mut buf))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_map_is_gpt2() {
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(b' '), '\u{120}'); // 'Ġ'
        assert_eq!(byte_to_char(b'\n'), '\u{10A}'); // 'Ċ'
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }
}
