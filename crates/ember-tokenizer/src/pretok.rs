//! Pre-tokenizer table: `tokenizer.ggml.pre` -> the regex sequence and vocabulary flags llama.cpp uses.
//!
//! Follows llama.cpp `src/llama-vocab.cpp` (the pre-type switch in `llama_vocab::impl::load` and the
//! regex lists in the `llm_tokenizer_bpe` constructor) and `src/unicode.cpp` (`unicode_regex_split`).
//!
//! The regexes run through the Hugging Face `tokenizers` `Split` pre-tokenizer (fancy-regex, proper
//! Unicode semantics) on the raw text. llama.cpp does not run them that way: the gpt2, llama3, qwen2,
//! qwen35 and newline patterns go to hand-written matchers (equivalent to the regex), other patterns
//! with `\p{..}` run through `std::regex` on a
//! "collapsed" text (every non-ASCII code point replaced by one byte standing for its category), and
//! the rest through `std::wregex` with non-ASCII whitespace replaced by `\x0B`. [`adapt`] rewrites a
//! llama.cpp pattern so that the Unicode regex matches exactly what llama.cpp's route matches.

use crate::TokenizerError;

/// What one pre-tokenizer type sets in llama.cpp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreType {
    /// Regexes applied in sequence, each splitting the pieces of the previous one.
    pub regexes: &'static [&'static str],
    /// Whole words found in the vocabulary skip the merges (llama.cpp `ignore_merges`).
    pub ignore_merges: bool,
    /// `clean_spaces` (llama.cpp `clean_up_tokenization_spaces`), used by `detokenize`.
    pub clean_spaces: bool,
    /// llama.cpp's default for `add_bos` before the GGUF key overrides it.
    pub add_bos: bool,
    /// llama.cpp clears the BOS id for this type (chatglm).
    pub no_bos: bool,
}

const fn pt(regexes: &'static [&'static str]) -> PreType {
    PreType {
        regexes,
        ignore_merges: false,
        clean_spaces: true,
        add_bos: false,
        no_bos: false,
    }
}

const fn noclean(regexes: &'static [&'static str]) -> PreType {
    PreType {
        clean_spaces: false,
        ..pt(regexes)
    }
}

// The strings below are llama.cpp's, written with `\u{..}` escapes where they hold non-ASCII
// characters (several are canonically equivalent to other characters, e.g. KELVIN SIGN and 'K';
// escapes keep them from being normalised away by an editor).

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const JAIS2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
const EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// `[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|...` shared by deepseek-v3 and spark2_5.
const DS3_MAIN: &str = concat!(
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^"##,
    "\r\n",
    r"\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[",
    "\r\n",
    r"]*|\s*[",
    "\r\n",
    r"]+|\s+(?!\S)|\s+"
);
const SPARK_MAIN: &str = concat!(
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^"##,
    "\r\n",
    r"\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[",
    "\r\n",
    r"]|\s+(?!\S)|\s+"
);
/// `[一-龥぀-ゟ゠-ヿ]+`
const HAN_KANA: &str = "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+";
/// `[一-龥ࠀ-一가-퟿]+`
const CJK_HANGUL: &str = "[\u{4E00}-\u{9FA5}\u{0800}-\u{4E00}\u{AC00}-\u{D7FF}]+";
/// ` ?[^(\s|.,!?…。，、।۔،)]+`
const PORO: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{0964}\u{06D4}\u{060C})]+";

const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    // `\s?[A-Za-zµÀ-ÖØ-öø-ƺ...𞤀-𞥃]+` (cased letters)
    "\\s?[\u{41}-\u{5A}\u{61}-\u{7A}\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\
     \u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\
     \u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\
     \u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\
     \u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\
     \u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\
     \u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\
     \u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\
     \u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\
     \u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\
     \u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\
     \u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\
     \u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\
     \u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\
     \u{1E900}-\u{1E943}]+",
    // `\s?[!-/:-~！-／：-～‘-‟　-。]+`
    "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
    r"\s+$",
    CJK_HANGUL,
    r"\p{N}+",
];
const DEEPSEEK_CODER: &[&str] = &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_HANGUL, r"\p{N}"];
const DEEPSEEK3: &[&str] = &[r"\p{N}{1,3}", HAN_KANA, DS3_MAIN];
const SPARK2_5: &[&str] = &[r"\p{N}{1,3}", HAN_KANA, SPARK_MAIN, r"\p{N}"];
const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"];
const STARCODER: &[&str] = &[r"\p{N}", GPT2];
const CHAMELEON: &[&str] = &[
    r"<sentinel:[0-9]+>",
    r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
    "([\\t\\n]|    |  )",
    r"\p{N}",
    r"[\p{P}!-/:-@\[-`{-~]",
    GPT2,
];

/// The pre-tokenizer llama.cpp selects for `tokenizer.ggml.pre` (`""` is llama.cpp's "missing").
pub(crate) fn lookup(pre: &str) -> Result<PreType, TokenizerError> {
    let t = match pre {
        "" | "default" => pt(DEFAULT),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreType {
            ignore_merges: true,
            add_bos: true,
            ..pt(&[LLAMA3])
        },
        "dbrx" | "smaug-bpe" => pt(&[LLAMA3]),
        "chatglm-bpe" => PreType {
            no_bos: true,
            ..pt(&[LLAMA3])
        },
        "glm4" | "glm5" => PreType {
            no_bos: true,
            ignore_merges: true,
            ..pt(&[LLAMA3])
        },
        "jais-2" => pt(&[JAIS2]),
        "deepseek-llm" => noclean(DEEPSEEK_LLM),
        "deepseek-coder" => noclean(DEEPSEEK_CODER),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => noclean(DEEPSEEK3),
        "spark2_5" => noclean(SPARK2_5),
        "falcon" => pt(FALCON),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "exaone4" => pt(&[GPT2]),
        "trillion" | "granite-docling" => noclean(&[GPT2]),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => pt(STARCODER),
        "command-r" | "smollm" => noclean(STARCODER),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
            noclean(&[QWEN2])
        }
        "stablelm2" | "megrez" => pt(&[QWEN2]),
        "qwen35" => noclean(&[QWEN35]),
        "poro-chat" => noclean(&[PORO]),
        "bloom" | "gpt3-finnish" => pt(&[PORO]),
        "viking" => noclean(&[PORO, r"\p{N}"]),
        "tekken" => PreType {
            ignore_merges: true,
            add_bos: true,
            ..noclean(&[TEKKEN])
        },
        "chameleon" => PreType {
            add_bos: true,
            ..noclean(CHAMELEON)
        },
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => noclean(&[GPT4O]),
        "seed-coder" => noclean(&[SEED_CODER]),
        "grok-2" => noclean(&[QWEN2]),
        "ufakzeka" => noclean(&[UFAKZEKA]),
        "laguna" => noclean(&[r"[^\n]+|[\n]+", QWEN2]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => noclean(&[BAILINGMOE]),
        "exaone-moe" => pt(&[EXAONE_MOE]),
        "minicpm5" => PreType {
            ignore_merges: true,
            ..pt(&[r"\p{N}{1,3}", MINICPM5])
        },
        "kimi-k2"
        | "afmoe"
        | "superbpe"
        | "youtu"
        | "tiny_aya"
        | "cohere2moe"
        | "granite-embed-multi-97m" => {
            return Err(TokenizerError::UnsupportedPre {
                pre: pre.to_owned(),
                reason: "llama.cpp splits it with hand-written code or regex features ember does not reproduce",
            });
        }
        "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" | "whitespace" => {
            return Err(TokenizerError::UnsupportedPre {
                pre: pre.to_owned(),
                reason: "SentencePiece-style BPE over raw UTF-8 is not implemented",
            });
        }
        _ => {
            return Err(TokenizerError::UnknownPre {
                pre: pre.to_owned(),
            });
        }
    };
    Ok(t)
}

/// The `\p{..}` names whose presence makes llama.cpp use its "collapsed" `std::regex` route.
const CATEGORIES: [&str; 10] = [
    r"\p{N}", r"\p{L}", r"\p{P}", r"\p{M}", r"\p{S}", r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}",
    r"\p{Lo}",
];

/// Rewrites one llama.cpp pattern so that a Unicode regex over the raw text splits like llama.cpp.
///
/// * Collapsed route (pattern uses `\p{..}`): llama.cpp maps each category to one byte plus the
///   list of its ASCII members, which means the same as the Unicode class (given the same Unicode
///   tables), except that the letter subcategories all collapse to "letter": `\p{Lu}` etc. become
///   `\p{L}`. The patterns with hand-written matchers (gpt2, llama3, qwen2, qwen35, newlines) take
///   this route too; those matchers implement the regex exactly.
/// * `std::wregex` route (no `\p{..}`): non-ASCII whitespace in the text is replaced by `\x0B`
///   before matching, so a bracket class listing non-ASCII characters never matches non-ASCII
///   whitespace (U+3000 in `[　-。]`, U+2000.. in `[ࠀ-一]`); those classes get
///   `--[\s&&[^\x00-\x7F]]`. Negated classes are left alone: the ones llama.cpp uses contain `\s`,
///   which already excludes all whitespace in both routes.
pub(crate) fn adapt(expr: &str) -> String {
    if CATEGORIES.iter().any(|c| expr.contains(c)) {
        let mut s = expr.to_owned();
        for sub in [r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}"] {
            s = s.replace(sub, r"\p{L}");
        }
        return s;
    }
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 32);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            // an escape is copied with the character it escapes
            out.push(c);
            if let Some(&n) = chars.get(i + 1) {
                out.push(n);
            }
            i += 2;
            continue;
        }
        if c == '['
            && let Some(end) = class_end(&chars, i)
        {
            let body: String = chars.get(i + 1..end).unwrap_or_default().iter().collect();
            out.push('[');
            out.push_str(&body);
            if !body.starts_with('^') && !body.is_ascii() {
                out.push_str(r"--[\s&&[^\x00-\x7F]]");
            }
            out.push(']');
            i = end + 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Index of the `]` closing the bracket class opened at `open` (no nesting, as in llama.cpp's scan).
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if chars.get(i) == Some(&'^') {
        i += 1;
    }
    // a `]` right after `[` or `[^` is a literal
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            ']' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapt_collapsed_route() {
        assert_eq!(adapt(r" ?[\p{P}\p{S}]+"), r" ?[\p{P}\p{S}]+");
        assert_eq!(adapt(r"\p{Lu}\p{L}"), r"\p{L}\p{L}");
        // gpt2 / llama3 patterns are unchanged
        assert_eq!(adapt(GPT2), GPT2);
        assert_eq!(adapt(LLAMA3), LLAMA3);
    }

    #[test]
    fn adapt_wide_classes_exclude_non_ascii_whitespace() {
        assert_eq!(adapt("[\r\n]"), "[\r\n]");
        assert_eq!(adapt(r"\s+$"), r"\s+$");
        assert_eq!(
            adapt("[a-z\u{3000}-\u{3002}]+"),
            "[a-z\u{3000}-\u{3002}--[\\s&&[^\\x00-\\x7F]]]+"
        );
        assert_eq!(adapt(PORO), PORO);
    }

    #[test]
    fn every_supported_pattern_compiles() {
        let names = [
            "default",
            "llama-bpe",
            "dbrx",
            "glm4",
            "jais-2",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "falcon",
            "gpt-2",
            "trillion",
            "starcoder",
            "smollm",
            "qwen2",
            "stablelm2",
            "qwen35",
            "poro-chat",
            "bloom",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "seed-coder",
            "grok-2",
            "bailingmoe",
            "exaone-moe",
            "minicpm5",
            "ufakzeka",
            "laguna",
        ];
        for name in names {
            let t = lookup(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            for re in t.regexes {
                let a = adapt(re);
                crate::bpe::split_pre_tokenizer(&a)
                    .unwrap_or_else(|e| panic!("{name}: {a:?}: {e}"));
            }
        }
    }

    #[test]
    fn unknown_and_unsupported_pre() {
        assert!(matches!(
            lookup("no-such-pre"),
            Err(TokenizerError::UnknownPre { .. })
        ));
        assert!(matches!(
            lookup("kimi-k2"),
            Err(TokenizerError::UnsupportedPre { .. })
        ));
    }

    #[test]
    fn deepseek_letter_class_is_sorted() {
        // the class is a sorted list of ranges; a lookalike character typed in place of one of
        // its escapes (e.g. 'K' for KELVIN SIGN) would break the order
        let class = DEEPSEEK_LLM[1];
        let body: Vec<char> = class
            .trim_start_matches("\\s?[")
            .trim_end_matches("]+")
            .chars()
            .collect();
        let mut prev = 0u32;
        let mut i = 0;
        while i < body.len() {
            let lo = body[i] as u32;
            let hi = if body.get(i + 1) == Some(&'-') {
                i += 2;
                body[i] as u32
            } else {
                lo
            };
            assert!(lo > prev || prev == 0, "{lo:#x} after {prev:#x}");
            assert!(lo <= hi);
            prev = hi;
            i += 1;
        }
    }
}
