//! Robustness: malformed vocabulary metadata gives clear errors, tiny hand-made vocabularies
//! behave like llama.cpp, and arbitrary text never panics and round-trips through byte-level BPE.

#![allow(clippy::unwrap_used)]

use ember_gguf::{GgufFile, Metadata};
use ember_tokenizer::{Tokenizer, TokenizerError};
use std::path::Path;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data");

fn tokenizer(rel: &str) -> Tokenizer {
    let path = Path::new(DATA).join(rel);
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(file.metadata()).unwrap()
}

fn meta_from(kv: Vec<(&str, ember_gguf::Value)>) -> Metadata {
    let mut w = ember_gguf::GgufWriter::new();
    for (k, v) in kv {
        w = w.kv(k, v);
    }
    GgufFile::from_bytes(w.to_bytes())
        .unwrap()
        .metadata()
        .clone()
}

fn small_bpe(extra: Vec<(&'static str, ember_gguf::Value)>) -> Result<Tokenizer, TokenizerError> {
    use ember_gguf::{Array, Value};
    let mut kv = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("qwen2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(
                ["a", "b", "ab", "\u{120}", "<|end|>"]
                    .map(String::from)
                    .to_vec(),
            )),
        ),
        (
            "tokenizer.ggml.merges",
            // the second merge names a token the vocabulary lacks: dropped, not an error
            Value::Array(Array::String(vec![
                "a b".into(),
                "ab zz".into(),
                "nospace".into(),
            ])),
        ),
    ];
    for (k, v) in extra {
        kv.retain(|(key, _)| *key != k);
        kv.push((k, v));
    }
    Tokenizer::from_gguf(&meta_from(kv))
}

#[test]
fn small_bpe_vocab_works() {
    use ember_gguf::Value;
    let tok = small_bpe(vec![("tokenizer.ggml.eos_token_id", Value::U32(4))]).unwrap();
    assert_eq!(tok.encode("ab", false, false), [2]);
    assert_eq!(tok.encode("ba b", false, false), [1, 0, 3, 1]);
    // chars with no token are dropped, as llama.cpp does
    assert_eq!(tok.encode("abc", false, false), [2]);
    // no token types: every token is normal, but "<|end|>" is an EOG text (forced control)
    assert_eq!(tok.eog_ids(), [4]);
    assert!(tok.is_control(4));
    assert_eq!(tok.bos(), None); // the BPE default (11) is outside this vocabulary
}

#[test]
fn bad_metadata_is_reported() {
    use ember_gguf::{Array, Value};
    let err =
        |r: Result<Tokenizer, TokenizerError>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let e = small_bpe(vec![(
        "tokenizer.ggml.pre",
        Value::String("no-such-pre".into()),
    )]);
    assert!(matches!(e, Err(TokenizerError::UnknownPre { .. })));
    let e = small_bpe(vec![(
        "tokenizer.ggml.pre",
        Value::String("kimi-k2".into()),
    )]);
    assert!(matches!(e, Err(TokenizerError::UnsupportedPre { .. })));
    let e = small_bpe(vec![("tokenizer.ggml.model", Value::String("bert".into()))]);
    assert!(
        matches!(e, Err(TokenizerError::UnsupportedModel { .. })),
        "{}",
        err(e)
    );
    let e = small_bpe(vec![(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1, 1])),
    )]);
    assert!(matches!(e, Err(TokenizerError::Inconsistent(_))));
    let e = small_bpe(vec![(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0; 7])),
    )]);
    assert!(matches!(e, Err(TokenizerError::Inconsistent(_))));
    let e = small_bpe(vec![(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into(), "b".into(), "a".into()])),
    )]);
    assert!(matches!(
        e,
        Err(TokenizerError::DuplicateToken {
            first: 0,
            second: 2,
            ..
        })
    ));
    let e = small_bpe(vec![(
        "tokenizer.ggml.tokens",
        Value::Array(Array::U32(vec![1, 2])),
    )]);
    assert!(matches!(e, Err(TokenizerError::Metadata(_))), "{}", err(e));
    let e = small_bpe(vec![("tokenizer.ggml.merges", Value::U32(3))]);
    assert!(matches!(e, Err(TokenizerError::Metadata(_))));
    let e = small_bpe(vec![("tokenizer.ggml.add_bos_token", Value::Bool(true))]);
    assert!(
        matches!(e, Err(TokenizerError::MissingSpecialToken { .. })),
        "{}",
        err(e)
    );
    let e = small_bpe(vec![(
        "tokenizer.ggml.add_bos_token",
        Value::String("yes".into()),
    )]);
    assert!(matches!(e, Err(TokenizerError::Metadata(_))));
    // an out-of-range id in the file keeps the default (here: none)
    let tok = small_bpe(vec![("tokenizer.ggml.bos_token_id", Value::U32(99))]).unwrap();
    assert_eq!(tok.bos(), None);
    let tok = small_bpe(vec![("tokenizer.ggml.bos_token_id", Value::I32(-1))]).unwrap();
    assert_eq!(tok.bos(), None);
    let no_model = Tokenizer::from_gguf(&meta_from(vec![]));
    assert!(matches!(no_model, Err(TokenizerError::Metadata(_))));
}

/// Arbitrary text (a deterministic pseudo-random mix of scripts, controls, whitespace and
/// special-token fragments) never panics and byte-level BPE always round-trips.
#[test]
fn arbitrary_text_round_trips() {
    let alphabet: Vec<char> = "aZ9 \t\n\r\u{0B}\u{0C}\u{85}\u{A0}\u{3000}\u{2009}'~!?.,<|>_ßéÅ中文한국어ひらカタ😀👍🏽\u{200D}\u{FE0F}\u{0301}\u{10FFFF}\u{E000}\u{FFFD}\u{1F}"
        .chars()
        .collect();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let toks = [
        tokenizer("reference/vocab/ggml-vocab-qwen2.gguf"),
        tokenizer("reference/vocab/ggml-vocab-deepseek-llm.gguf"),
        tokenizer("models/tiny-deepseek-v3-q4_k_m.gguf"),
        tokenizer("models/tiny-llama-q2_k.gguf"),
    ];
    for _ in 0..300 {
        let len = (next() % 40) as usize;
        let mut s: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if next() % 4 == 0 {
            s.push_str("<|im_end|><\u{FF5C}User\u{FF5C}>");
        }
        for tok in &toks {
            let ids = tok.encode(&s, false, false);
            assert_eq!(tok.decode(&ids, false).unwrap(), s, "{}: {s:?}", tok.pre());
            let ids = tok.encode(&s, true, true);
            let _ = tok.decode(&ids, true).unwrap();
        }
    }
}
