//! Constrained decoding: a grammar masks the sampler's candidates at each step, so only tokens that
//! keep the output valid can be drawn. The grammar engine is `llguidance` (what llama.cpp's
//! `common/llguidance.cpp` and mistral.rs use) over a `toktrie` token trie built from ember's own
//! vocabulary; ember writes no matcher of its own.
//!
//! * [`ConstraintFactory`] — once per model: the token trie (each token's bytes as ember's
//!   detokenizer produces them; control tokens as `0xFF` + their text, the convention llguidance's
//!   `<|name|>` token references match, as in llama.cpp) and llguidance's parser factory.
//! * [`Constraint`] — one compiled grammar for one request (compiling is where a bad grammar or schema
//!   is refused, with llguidance's reason, before any work). Cloned into each sequence's decoder.
//! * [`ActiveConstraint`] — the per-sequence state the decoder drives: the mask before sampling, the
//!   sampled token after. A lazy constraint (tool calls with `tool_choice: auto`) lets text run free
//!   until one of its trigger strings appears in the output, then replays the tokens generated so far
//!   into the matcher (the grammar's free part accepts exactly the trigger-free texts) and constrains
//!   from there: free text costs no mask work.

use std::fmt;
use std::sync::Arc;

use ember_tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

/// Why a grammar could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ConstraintError {
    /// The grammar or schema was refused by llguidance (the reason is its own words).
    #[error("invalid grammar: {0}")]
    Invalid(String),
    /// The vocabulary cannot carry a grammar (no end-of-generation token, say).
    #[error("constrained decoding is not available for this model: {0}")]
    Unavailable(String),
    /// The matcher failed while generating (a token the mask did not allow was forced, say).
    #[error("grammar matcher: {0}")]
    Matcher(String),
}

/// A grammar as a request gives it, in llguidance's Lark dialect (which embeds JSON schemas with
/// `%json { ... }` and regexes as `/.../`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrammarSpec {
    pub lark: String,
    /// Lazy grammar: generation is free until one of these strings appears in the output (special
    /// tokens rendered); empty for a grammar applied from the first token.
    pub triggers: Vec<String>,
    /// The triggers count only at the very start of the output (after leading blanks).
    pub triggers_at_start: bool,
}

/// The per-model half: token trie and llguidance's parser factory. Cheap to clone.
#[derive(Clone)]
pub struct ConstraintFactory {
    factory: Arc<ParserFactory>,
    /// Every end-of-generation id: allowed exactly where the grammar may end.
    eog: Arc<[u32]>,
    /// The texts of the vocabulary's `<…>` control tokens (what a grammar may reference as a token).
    control: Arc<[String]>,
    /// Ids the trie holds.
    n_vocab: usize,
}

impl fmt::Debug for ConstraintFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConstraintFactory")
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

impl ConstraintFactory {
    /// Builds the trie over `n_vocab` ids (the tokenizer's vocabulary, or the model's logit width
    /// where that is wider: ids without bytes are never allowed, and neither are logits past
    /// `n_vocab`).
    pub fn new(tok: &Tokenizer, n_vocab: usize) -> Result<Self, ConstraintError> {
        let eog: Vec<u32> = tok
            .eog_ids()
            .iter()
            .copied()
            .filter(|&id| (id as usize) < n_vocab)
            .collect();
        let Some(&first) = eog.first() else {
            return Err(ConstraintError::Unavailable(
                "the vocabulary has no end-of-generation token".into(),
            ));
        };
        let vocab_size = u32::try_from(n_vocab)
            .map_err(|_| ConstraintError::Unavailable(format!("vocabulary of {n_vocab}")))?;
        let words: Vec<Vec<u8>> = (0..vocab_size).map(|id| token_bytes(tok, id)).collect();
        let control: Vec<String> = (0..vocab_size)
            .filter(|&id| tok.is_control(id))
            .filter_map(|id| tok.token_text(id))
            .filter(|t| t.starts_with('<') && t.ends_with('>'))
            .map(str::to_owned)
            .collect();
        let trie = TokTrie::from(&TokRxInfo::new(vocab_size, first), &words).with_eos_tokens(&eog);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Unavailable(e.to_string()))?;
        // Warnings and errors come back through the API (and into the 400); nothing on stderr.
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            eog: eog.into(),
            control: control.into(),
            n_vocab,
        })
    }

    /// The texts of the vocabulary's `<…>` control tokens, found once when the trie was built:
    /// markup among them is referenced in grammars as that token, not spelled out as text.
    pub fn control_tokens(&self) -> &[String] {
        &self.control
    }

    /// Compiles `spec` for one request; the error carries llguidance's reason.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, ConstraintError> {
        let grammar = TopLevelGrammar::from_lark(spec.lark.clone());
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid(e));
        }
        Ok(Constraint {
            matcher,
            triggers: spec
                .triggers
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
            triggers_at_start: spec.triggers_at_start,
            eog: Arc::clone(&self.eog),
            n_vocab: self.n_vocab,
        })
    }
}

/// The bytes llguidance sees for `id`: its text as streamed, or `0xFF` + its text for a control
/// token (which streams as nothing).
fn token_bytes(tok: &Tokenizer, id: u32) -> Vec<u8> {
    match tok.token_to_piece(id, false) {
        Some(p) if !p.is_empty() => p.into_owned(),
        Some(_) => match tok.token_to_piece(id, true) {
            Some(p) if !p.is_empty() => {
                let mut v = Vec::with_capacity(p.len() + 1);
                v.push(0xFF);
                v.extend_from_slice(&p);
                v
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// A compiled grammar, ready to be cloned into a sequence.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    triggers: Vec<Vec<u8>>,
    triggers_at_start: bool,
    eog: Arc<[u32]>,
    /// Ids the trie knows (wider logits are padding, never allowed).
    n_vocab: usize,
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint")
            .field("lazy", &!self.triggers.is_empty())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// The per-sequence state (a fresh matcher: compiled grammars are shared, state is not).
    pub(crate) fn start(&self) -> ActiveConstraint {
        ActiveConstraint {
            matcher: self.matcher.deep_clone(),
            lazy: !self.triggers.is_empty(),
            triggers: self.triggers.clone(),
            triggers_at_start: self.triggers_at_start,
            eog: Arc::clone(&self.eog),
            n_vocab: self.n_vocab,
            text: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

/// One sequence's grammar state.
pub(crate) struct ActiveConstraint {
    matcher: Matcher,
    /// Still waiting for a trigger (free text).
    lazy: bool,
    triggers: Vec<Vec<u8>>,
    triggers_at_start: bool,
    eog: Arc<[u32]>,
    n_vocab: usize,
    /// Output so far with special tokens rendered, while lazy (for trigger detection).
    text: Vec<u8>,
    /// Tokens so far, while lazy (replayed into the matcher at the trigger).
    tokens: Vec<u32>,
}

impl fmt::Debug for ActiveConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveConstraint")
            .field("lazy", &self.lazy)
            .finish_non_exhaustive()
    }
}

impl ActiveConstraint {
    /// Whether the next token is masked (false while a lazy grammar waits for its trigger).
    pub(crate) fn is_constraining(&self) -> bool {
        !self.lazy
    }

    /// Masks `logits` in place for the next token: every token the grammar does not allow gets
    /// `-inf`; end-of-generation tokens are allowed exactly where the grammar may end. A no-op
    /// while a lazy grammar waits for its trigger.
    pub(crate) fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        if self.lazy {
            return Ok(());
        }
        let mask = self
            .matcher
            .compute_mask()
            .map_err(|e| ConstraintError::Matcher(e.to_string()))?;
        let may_end = self.eog.iter().any(|&id| mask.is_allowed(id));
        let n = mask.len();
        for (id, l) in logits.iter_mut().enumerate() {
            let ok = if id >= n {
                false
            } else if self.eog.contains(&(id as u32)) {
                may_end
            } else {
                mask.is_allowed(id as u32)
            };
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Whether the grammar allows `id` as the next token: one token checked, not a whole mask
    /// (the fast path of sampling: llama.cpp's too). End-of-generation tokens say false here, so
    /// that the full mask decides them; so does an id outside the vocabulary.
    pub(crate) fn allows(&mut self, id: u32) -> Result<bool, ConstraintError> {
        if self.lazy {
            return Ok(true);
        }
        if self.eog.contains(&id) || id as usize >= self.n_vocab {
            return Ok(false);
        }
        let n = self
            .matcher
            .validate_tokens(&[id])
            .map_err(|e| ConstraintError::Matcher(e.to_string()))?;
        Ok(n == 1)
    }

    /// Records the sampled token. `piece` is its text with special tokens rendered (for trigger
    /// detection). End-of-generation tokens are not fed to the matcher: they end the sequence.
    pub(crate) fn accept(&mut self, id: u32, piece: &[u8]) -> Result<(), ConstraintError> {
        if self.eog.contains(&id) {
            return Ok(());
        }
        if self.lazy {
            self.tokens.push(id);
            self.text.extend_from_slice(piece);
            if self.triggered(piece.len()) {
                self.lazy = false;
                let tokens = std::mem::take(&mut self.tokens);
                self.text = Vec::new();
                return self
                    .matcher
                    .consume_tokens(&tokens)
                    .map_err(|e| ConstraintError::Matcher(e.to_string()));
            }
            return Ok(());
        }
        self.matcher
            .consume_token(id)
            .map_err(|e| ConstraintError::Matcher(e.to_string()))
    }

    /// Whether a trigger now appears in the output; only the last `added` bytes are new, so only
    /// a trigger ending among them is looked for.
    fn triggered(&self, added: usize) -> bool {
        if self.triggers_at_start {
            let start = self
                .text
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.text.len());
            let rest = &self.text[start..];
            self.triggers.iter().any(|t| rest.starts_with(t))
        } else {
            self.triggers.iter().any(|t| {
                let from = self
                    .text
                    .len()
                    .saturating_sub(added + t.len().saturating_sub(1));
                !t.is_empty()
                    && self.text[from..]
                        .windows(t.len())
                        .any(|w| w == t.as_slice())
            })
        }
    }

    /// The grammar is complete and allows nothing more: the sequence ends here.
    pub(crate) fn is_done(&self) -> bool {
        !self.lazy && self.matcher.is_stopped()
    }
}
