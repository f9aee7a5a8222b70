//! The vocabulary read from GGUF `tokenizer.ggml.*` metadata: token texts, scores, attributes,
//! special-token ids, BOS/EOS flags and the end-of-generation set.
//!
//! Follows llama.cpp `src/llama-vocab.cpp`, `llama_vocab::impl::load`: same defaults per tokenizer
//! model and pre-tokenizer, same special-token detection by text (which also forces the CONTROL
//! attribute on those tokens, changing how they are matched and rendered), same EOG rules.
//! Everything read from the file is validated; nothing here indexes unchecked data.

use crate::TokenizerError;
use crate::pretok::{self, PreType};
use ember_gguf::{Metadata, MetadataError};
use std::collections::{BTreeSet, HashMap};

/// Token attributes, the bit values of llama.cpp's `llama_token_attr`.
pub(crate) mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// GGUF `token_type` value -> attribute (llama.cpp `LLAMA_TOKEN_TYPE_*` -> `LLAMA_TOKEN_ATTR_*`).
fn attr_of_type(t: i64) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // UNDEFINED, and unknown values as llama.cpp does
    }
}

/// Which tokenization algorithm the vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `gpt2`: byte-level BPE with merges.
    Bpe,
    /// `llama`: SentencePiece BPE driven by token scores.
    Spm,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenData {
    pub text: String,
    pub score: f32,
    pub attr: u32,
}

/// Special-token ids; `None` is llama.cpp's `LLAMA_TOKEN_NULL`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: Kind,
    pub model: String,
    pub pre: String,
    pub pre_type: Option<PreType>,
    pub tokens: Vec<TokenData>,
    pub token_to_id: HashMap<String, u32>,
    /// BPE merges as stored (`"left right"`), parsed by the BPE encoder.
    pub merges: Vec<String>,
    pub ids: SpecialIds,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    /// Sorted, deduplicated end-of-generation ids.
    pub eog: Vec<u32>,
    /// CONTROL / USER_DEFINED / UNKNOWN tokens, longest text first (llama.cpp `cache_special_tokens`).
    pub special_cache: Vec<u32>,
}

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_MERGES: &str = "tokenizer.ggml.merges";
const K_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const K_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const K_ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const K_BOS: &str = "tokenizer.ggml.bos_token_id";
const K_EOS: &str = "tokenizer.ggml.eos_token_id";

/// Texts that make a token an end-of-generation token (llama.cpp's list in `load`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
    "[e~[",
];
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\u{FF5C}fim\u{2581}begin\u{FF5C}>",
    "<PRE>",
    "\u{2581}<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\u{FF5C}fim\u{2581}hole\u{FF5C}>",
    "<SUF>",
    "\u{2581}<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\u{FF5C}fim\u{2581}end\u{FF5C}>",
    "<MID>",
    "\u{2581}<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Selects one id field of [`SpecialIds`], so tables can list keys/texts next to their field.
type Slot = fn(&mut SpecialIds) -> &mut Option<u32>;

fn opt_bool(meta: &Metadata, key: &str) -> Result<Option<bool>, MetadataError> {
    meta.opt(key, Metadata::get_bool)
}

impl Vocab {
    /// Reads the vocabulary; `pre_override` replaces `tokenizer.ggml.pre`.
    pub(crate) fn load(
        meta: &Metadata,
        pre_override: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let model = meta.get_str(K_MODEL)?.to_owned();
        let pre = match pre_override {
            Some(p) => p.to_owned(),
            None => meta
                .opt(K_PRE, Metadata::get_str)?
                .unwrap_or_default()
                .to_owned(),
        };

        // Per-model defaults (llama.cpp sets these before reading the keys).
        let mut ids = SpecialIds::default();
        let (kind, pre_type) = match model.as_str() {
            "gpt2" => {
                ids.bos = Some(11);
                ids.eos = Some(11);
                if pre.is_empty() {
                    tracing::warn!(
                        "tokenizer.ggml.pre is missing, using 'default': generation quality will be degraded, consider regenerating the model"
                    );
                }
                (Kind::Bpe, Some(pretok::lookup(&pre)?))
            }
            "llama" => {
                ids.bos = Some(1);
                ids.eos = Some(2);
                ids.unk = Some(0);
                (Kind::Spm, None)
            }
            _ => return Err(TokenizerError::UnsupportedModel { model }),
        };
        let (mut add_bos, mut add_space_prefix, clean_spaces) = match pre_type {
            Some(t) => {
                if t.no_bos {
                    ids.bos = None;
                }
                (t.add_bos, false, t.clean_spaces)
            }
            None => (true, true, false), // SPM
        };
        let mut add_eos = false;
        if let Some(v) = opt_bool(meta, K_ADD_PREFIX)? {
            add_space_prefix = v;
        }

        let texts = meta.get_str_array(K_TOKENS)?;
        let n = texts.len();
        if n == 0 || n > i32::MAX as usize {
            return Err(TokenizerError::Inconsistent(format!(
                "{K_TOKENS} holds {n} tokens"
            )));
        }
        let scores = read_scores(meta, n)?;
        let types = match meta.opt(K_TYPES, Metadata::get_int_array)? {
            Some(t) if t.len() != n => {
                return Err(TokenizerError::Inconsistent(format!(
                    "{K_TYPES} has {} entries but {K_TOKENS} has {n}",
                    t.len()
                )));
            }
            t => t,
        };

        let mut tokens = Vec::with_capacity(n);
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, raw) in texts.iter().enumerate() {
            let id = i as u32; // n <= i32::MAX
            // llama.cpp renames empty tokens so that they stay addressable and unique
            let text = if raw.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                raw.clone()
            };
            if let Some(&first) = token_to_id.get(&text) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: id,
                });
            }
            token_to_id.insert(text.clone(), id);
            let score = scores
                .as_ref()
                .and_then(|s| s.get(i).copied())
                .unwrap_or(0.0);
            let attr = match &types {
                Some(t) => t.get(i).map_or(0, |&v| attr_of_type(v)),
                None => attr::NORMAL,
            };
            tokens.push(TokenData { text, score, attr });
        }

        let merges = match kind {
            Kind::Bpe => meta.get_str_array(K_MERGES)?.to_vec(),
            Kind::Spm => Vec::new(),
        };

        read_special_ids(meta, &mut ids, n)?;
        if let Some(v) = opt_bool(meta, K_ADD_BOS)? {
            add_bos = v;
        }
        if let Some(v) = opt_bool(meta, K_ADD_EOS)? {
            add_eos = v;
        }
        if add_bos && ids.bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                add_key: K_ADD_BOS,
                id_key: K_BOS,
            });
        }
        if add_eos && ids.eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                add_key: K_ADD_EOS,
                id_key: K_EOS,
            });
        }

        let mut vocab = Vocab {
            kind,
            model,
            pre: if pre.is_empty() && kind == Kind::Bpe {
                "default".to_owned()
            } else {
                pre
            },
            pre_type,
            tokens,
            token_to_id,
            merges,
            ids,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            eog: Vec::new(),
            special_cache: Vec::new(),
        };
        vocab.detect_specials_by_text();
        vocab.build_eog();
        vocab.build_special_cache();
        vocab.apply_model_attrs(meta)?;
        Ok(vocab)
    }

    pub(crate) fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn token(&self, id: u32) -> Option<&TokenData> {
        self.tokens.get(id as usize)
    }

    pub(crate) fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    fn force_control(&mut self, id: u32) {
        if let Some(t) = self.tokens.get_mut(id as usize)
            && t.attr & attr::CONTROL == 0
        {
            tracing::warn!(
                "control-looking token {id} {:?} was not control-type; its type is overridden",
                t.text
            );
            t.attr |= attr::CONTROL;
        }
    }

    /// EOT/EOM/FIM tokens not given by keys are found by their text (llama.cpp does the same and
    /// marks each found token CONTROL). llama.cpp walks a hash map, so with several candidates its
    /// pick is arbitrary; the lowest id is taken here.
    fn detect_specials_by_text(&mut self) {
        let slots: [(Slot, &[&str]); 8] = [
            (|s| &mut s.eot, EOT_TEXTS),
            (|s| &mut s.eom, EOM_TEXTS),
            (|s| &mut s.fim_pre, FIM_PRE_TEXTS),
            (|s| &mut s.fim_suf, FIM_SUF_TEXTS),
            (|s| &mut s.fim_mid, FIM_MID_TEXTS),
            (|s| &mut s.fim_pad, FIM_PAD_TEXTS),
            (|s| &mut s.fim_rep, FIM_REP_TEXTS),
            (|s| &mut s.fim_sep, FIM_SEP_TEXTS),
        ];
        for (slot, texts) in slots {
            if slot(&mut self.ids).is_some() {
                continue;
            }
            let found = (0..self.tokens.len()).find(|&i| {
                self.tokens
                    .get(i)
                    .is_some_and(|t| texts.contains(&t.text.as_str()))
            });
            if let Some(i) = found {
                let id = i as u32;
                *slot(&mut self.ids) = Some(id);
                self.force_control(id);
            }
        }
    }

    fn build_eog(&mut self) {
        let mut eog = BTreeSet::new();
        let ids = self.ids.clone();
        eog.extend(
            [ids.fim_pad, ids.fim_rep, ids.fim_sep]
                .into_iter()
                .flatten(),
        );
        let mut forced = Vec::new();
        for (i, t) in self.tokens.iter_mut().enumerate() {
            let id = i as u32;
            if EOG_TEXTS.contains(&t.text.as_str()) {
                eog.insert(id);
                forced.push(id);
            } else if matches!(
                t.text.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                // llama.cpp's gpt-oss hack: always render these
                t.attr = attr::USER_DEFINED;
            }
        }
        for id in forced {
            self.force_control(id);
        }
        for (name, id) in [("eos", ids.eos), ("eot", ids.eot), ("eom", ids.eom)] {
            if let Some(id) = id
                && eog.insert(id)
            {
                tracing::warn!("special_{name}_id {id} is not in the EOG set; adding it");
            }
        }
        let tokens = &self.tokens;
        let find = |eog: &BTreeSet<u32>, text: &str| {
            eog.iter()
                .copied()
                .find(|&id| tokens.get(id as usize).is_some_and(|t| t.text == text))
        };
        // o200k_harmony / solar-open: "<|end|>" is not EOG when "<|return|>"+"<|call|>" or
        // "<|calls|>"+"<|flush|>" are present; it becomes user-defined.
        let has_call = find(&eog, "<|call|>").is_some() || find(&eog, "<|calls|>").is_some();
        let has_return = find(&eog, "<|return|>").is_some();
        let has_flush = find(&eog, "<|flush|>").is_some();
        let end = find(&eog, "<|end|>").filter(|_| has_call && (has_return || has_flush));
        // gemma4 / paddleocr: "</s>" is not EOG when "<|tool_response>" is.
        let s_tok = find(&eog, "</s>").filter(|_| find(&eog, "<|tool_response>").is_some());
        for (id, new_attr) in [(end, attr::USER_DEFINED), (s_tok, attr::NORMAL)] {
            if let Some(id) = id {
                eog.remove(&id);
                if let Some(t) = self.tokens.get_mut(id as usize) {
                    t.attr = new_attr;
                }
            }
        }
        self.eog = eog.into_iter().collect();
    }

    fn build_special_cache(&mut self) {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut cache: Vec<u32> = (0..self.tokens.len())
            .filter(|&i| self.tokens.get(i).is_some_and(|t| t.attr & mask != 0))
            .map(|i| i as u32)
            .collect();
        // llama.cpp uses an unstable sort by length; ties (same length) are kept in id order here
        cache.sort_by_key(|&id| std::cmp::Reverse(self.token(id).map_or(0, |t| t.text.len())));
        self.special_cache = cache;
    }

    /// Sets or clears an attribute bit of the token with this text (absent tokens are skipped;
    /// llama.cpp would throw).
    fn set_attr(&mut self, text: &str, bit: u32, on: bool) {
        if let Some(&id) = self.token_to_id.get(text)
            && let Some(t) = self.tokens.get_mut(id as usize)
        {
            t.attr = if on { t.attr | bit } else { t.attr & !bit };
        }
    }

    /// llama.cpp's per-model LSTRIP/RSTRIP attributes (set by model name / pre / architecture).
    fn apply_model_attrs(&mut self, meta: &Metadata) -> Result<(), TokenizerError> {
        let name = meta
            .opt("general.name", Metadata::get_str)?
            .unwrap_or_default()
            .to_lowercase();
        let arch = meta
            .opt("general.architecture", Metadata::get_str)?
            .unwrap_or_default();
        let pre = self.pre.as_str();
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|a| arch.contains(a))
        {
            self.set_attr("<mask>", attr::LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for id in self.special_cache.clone() {
                if let Some(t) = self.tokens.get_mut(id as usize) {
                    t.attr |= attr::RSTRIP;
                }
            }
            self.set_attr("</s>", attr::RSTRIP, true);
            for text in ["<unk>", "<s>", "<|endoftext|>"] {
                self.set_attr(text, attr::RSTRIP, false);
            }
        } else if name.contains("modern-bert") {
            self.set_attr("[MASK]", attr::LSTRIP, true);
        }
        Ok(())
    }
}

/// `tokenizer.ggml.scores`: f32 array, or (as llama.cpp accepts) an integer array.
fn read_scores(meta: &Metadata, n: usize) -> Result<Option<Vec<f32>>, TokenizerError> {
    let scores = match meta.opt(K_SCORES, Metadata::get_f32_array) {
        Ok(s) => s.map(<[f32]>::to_vec),
        Err(MetadataError::WrongType { .. }) => meta
            .opt(K_SCORES, Metadata::get_int_array)?
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
        Err(e) => return Err(e.into()),
    };
    if let Some(s) = &scores
        && s.len() != n
    {
        return Err(TokenizerError::Inconsistent(format!(
            "{K_SCORES} has {} entries but {K_TOKENS} has {n}",
            s.len()
        )));
    }
    Ok(scores)
}

/// Special-token ids from their keys. As in llama.cpp, a default outside the vocabulary is
/// dropped, and an id outside the vocabulary in the file keeps the default (with a warning).
fn read_special_ids(meta: &Metadata, ids: &mut SpecialIds, n: usize) -> Result<(), TokenizerError> {
    let table: [(&str, Slot); 17] = [
        (K_BOS, |s| &mut s.bos),
        (K_EOS, |s| &mut s.eos),
        ("tokenizer.ggml.eot_token_id", |s| &mut s.eot),
        ("tokenizer.ggml.eom_token_id", |s| &mut s.eom),
        ("tokenizer.ggml.unknown_token_id", |s| &mut s.unk),
        ("tokenizer.ggml.seperator_token_id", |s| &mut s.sep),
        ("tokenizer.ggml.padding_token_id", |s| &mut s.pad),
        ("tokenizer.ggml.mask_token_id", |s| &mut s.mask),
        ("tokenizer.ggml.fim_pre_token_id", |s| &mut s.fim_pre),
        ("tokenizer.ggml.fim_suf_token_id", |s| &mut s.fim_suf),
        ("tokenizer.ggml.fim_mid_token_id", |s| &mut s.fim_mid),
        ("tokenizer.ggml.fim_pad_token_id", |s| &mut s.fim_pad),
        ("tokenizer.ggml.fim_rep_token_id", |s| &mut s.fim_rep),
        ("tokenizer.ggml.fim_sep_token_id", |s| &mut s.fim_sep),
        // deprecated spellings, read after the new ones as llama.cpp does
        ("tokenizer.ggml.prefix_token_id", |s| &mut s.fim_pre),
        ("tokenizer.ggml.suffix_token_id", |s| &mut s.fim_suf),
        ("tokenizer.ggml.middle_token_id", |s| &mut s.fim_mid),
    ];
    for (key, slot) in table {
        let id = slot(ids);
        if id.is_some_and(|v| v as usize >= n) {
            tracing::warn!("default special token '{key}' = {id:?} out of vocab range, disabling");
            *id = None;
        }
        let Some(v) = meta.opt(key, Metadata::get_int::<i64>)? else {
            continue;
        };
        match u32::try_from(v) {
            Ok(v) if (v as usize) < n => *id = Some(v),
            _ => tracing::warn!("bad special token: '{key}' = {v}, using default id {id:?}"),
        }
    }
    Ok(())
}
