//! The public [`Tokenizer`]: text -> ids and ids -> text, like llama.cpp's `llama_tokenize`,
//! `llama_token_to_piece` and `llama_detokenize`.
//!
//! Follows llama.cpp `src/llama-vocab.cpp` (`llama_vocab::impl::tokenize`): the text is first cut
//! at special tokens ([`crate::special`]), then each raw fragment goes through the BPE or SPM
//! encoder, with BOS/EOS added around the whole when asked.

use crate::bpe::BpeEncoder;
use crate::detok::{self, StreamDecoder};
use crate::special::{Fragment, partition};
use crate::vocab::{Kind, Vocab, attr};
use crate::{TokenizerError, spm};
use ember_gguf::Metadata;
use std::borrow::Cow;

/// A GGUF vocabulary ready to tokenize. `Send + Sync`; share it with `Arc`.
pub struct Tokenizer {
    pub(crate) vocab: Vocab,
    bpe: Option<BpeEncoder>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.vocab.model)
            .field("pre", &self.vocab.pre)
            .field("n_vocab", &self.vocab.n_tokens())
            .field("bos", &self.vocab.ids.bos)
            .field("eos", &self.vocab.ids.eos)
            .field("eog", &self.vocab.eog)
            .field("add_bos", &self.vocab.add_bos)
            .field("add_eos", &self.vocab.add_eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(meta: &Metadata) -> Result<Self, TokenizerError> {
        Self::build(meta, None)
    }

    /// As [`from_gguf`](Self::from_gguf), with `pre` in place of `tokenizer.ggml.pre`.
    pub fn from_gguf_with_pre(meta: &Metadata, pre: &str) -> Result<Self, TokenizerError> {
        Self::build(meta, Some(pre))
    }

    fn build(meta: &Metadata, pre: Option<&str>) -> Result<Self, TokenizerError> {
        let vocab = Vocab::load(meta, pre)?;
        let bpe = match (vocab.kind, vocab.pre_type) {
            (Kind::Bpe, Some(t)) => Some(BpeEncoder::new(&vocab, t.ignore_merges)?),
            _ => None,
        };
        Ok(Self { vocab, bpe })
    }

    /// Text -> ids. `add_special` adds BOS/EOS as the model asks (`add_bos`/`add_eos`);
    /// `parse_special` lets control tokens be written as text (`"<|im_start|>"`). User-defined
    /// tokens are always recognised in the text, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let v = &self.vocab;
        let frags = partition(v, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        // add_bos implies a BOS id (checked at load); `if let` keeps this panic-free anyway
        if add_special
            && v.add_bos
            && let Some(bos) = v.ids.bos
        {
            out.push(bos);
        }
        match (v.kind, &self.bpe) {
            (Kind::Bpe, Some(bpe)) => {
                for f in frags {
                    match f {
                        Fragment::Text(t) => bpe.encode(v, t, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            _ => {
                // SPM: a space is prepended to the first fragment and to every fragment that
                // follows a special token (llama.cpp's `is_prev_special`)
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if v.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            spm::encode(v, &s.replace(' ', "\u{2581}"), &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
        }
        if add_special
            && v.add_eos
            && let Some(eos) = v.ids.eos
        {
            out.push(eos);
        }
        out
    }

    pub(crate) fn piece_or_err(
        &self,
        id: u32,
        render_special: bool,
    ) -> Result<Cow<'_, [u8]>, TokenizerError> {
        detok::piece(&self.vocab, id, render_special).ok_or(TokenizerError::InvalidTokenId {
            id,
            n_vocab: self.vocab.n_tokens(),
        })
    }

    /// The bytes of one token (llama.cpp `llama_token_to_piece` with `lstrip = 0`). Control and
    /// unknown tokens are empty unless `render_special`. `None` for an id outside the vocabulary.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> Option<Cow<'_, [u8]>> {
        detok::piece(&self.vocab, id, render_special)
    }

    /// Ids -> bytes: the pieces concatenated, nothing removed or cleaned.
    pub fn decode_bytes(
        &self,
        ids: &[u32],
        render_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(&self.piece_or_err(id, render_special)?);
        }
        Ok(out)
    }

    /// Ids -> text: [`decode_bytes`](Self::decode_bytes) with invalid UTF-8 replaced by U+FFFD.
    /// This is what llama.cpp streams and what `llama-cpp-python`'s `detokenize` returns.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids, render_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// llama.cpp `llama_detokenize`: like [`decode`](Self::decode), but `remove_special` drops a
    /// leading BOS / trailing EOS the model adds, the first token's leading space is dropped when
    /// the model adds a space prefix (SPM), and `clean_up_tokenization_spaces` is applied when the
    /// vocabulary asks for it (e.g. " ," -> ","). Lossy, so not used for streaming.
    pub fn detokenize(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String, TokenizerError> {
        let bytes = detok::detokenize(self, ids, remove_special, unparse_special)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A streaming decoder over this vocabulary.
    pub fn stream(&self, render_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, render_special)
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// The raw vocabulary text of a token (byte-level or `▁`-escaped form).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.token(id).map(|t| t.text.as_str())
    }

    /// The id of a vocabulary text, if it is a token.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.text_to_token(text)
    }

    /// The token's score (`tokenizer.ggml.scores`, 0 when absent).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.vocab.token(id).map(|t| t.score)
    }

    /// Whether the token is a control token (rendered only on request, matched in text only with
    /// `parse_special`).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab
            .token(id)
            .is_some_and(|t| t.attr & attr::CONTROL != 0)
    }

    pub fn bos(&self) -> Option<u32> {
        self.vocab.ids.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.ids.eos
    }

    /// End-of-turn token (from `tokenizer.ggml.eot_token_id` or found by its text).
    pub fn eot(&self) -> Option<u32> {
        self.vocab.ids.eot
    }

    pub fn unk(&self) -> Option<u32> {
        self.vocab.ids.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.vocab.ids.pad
    }

    /// Every end-of-generation id, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether SPM encoding prefixes a space (`tokenizer.ggml.add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.vocab.add_space_prefix
    }

    /// `tokenizer.ggml.model`: `"gpt2"` or `"llama"`.
    pub fn model_kind(&self) -> &str {
        &self.vocab.model
    }

    /// The pre-tokenizer in use (`"default"` when a BPE file names none).
    pub fn pre(&self) -> &str {
        &self.vocab.pre
    }
}
