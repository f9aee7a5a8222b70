//! Acceptance tests against llama.cpp's own outputs (see `tests/data/reference/README.md`):
//! the `ggml-vocab-*.gguf.inp/.out` vectors, every `tokenize.jsonl` record, `meta.json` special ids,
//! and the streaming detokenizer.

#![allow(clippy::unwrap_used)]

use ember_gguf::{GgufFile, Metadata};
use ember_tokenizer::{Tokenizer, TokenizerError};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data");

fn data(rel: &str) -> PathBuf {
    Path::new(DATA).join(rel)
}

fn meta_of(path: &Path) -> Metadata {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.metadata().clone()
}

type CacheKey = (PathBuf, Option<String>);

/// Each vocabulary is built once per test binary (the big ones take a moment).
fn tokenizer(path: &Path, pre: Option<&str>) -> Arc<Tokenizer> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<Tokenizer>>>> = OnceLock::new();
    let key = (path.to_path_buf(), pre.map(str::to_owned));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap().get(&key) {
        return t.clone();
    }
    let meta = meta_of(path);
    let tok = match pre {
        Some(p) => Tokenizer::from_gguf_with_pre(&meta, p),
        None => Tokenizer::from_gguf(&meta),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Arc::new(tok);
    cache.lock().unwrap().insert(key, tok.clone());
    tok
}

fn smollm2_path() -> Option<PathBuf> {
    let p = match std::env::var_os("EMBER_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/ember/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    p.exists().then_some(p)
}

/// The model file a reference directory was produced with (families share one tokenizer; only one
/// file per family is stored). `None` when it is not available.
fn model_for_dir(dir: &str) -> Option<PathBuf> {
    if let Some(name) = dir.strip_prefix("vocab-") {
        return Some(data(&format!("reference/vocab/ggml-vocab-{name}.gguf")));
    }
    if dir.starts_with("smollm2-") {
        return smollm2_path();
    }
    let exact = data(&format!("models/{dir}.gguf"));
    if exact.exists() {
        return Some(exact);
    }
    let family = if dir.starts_with("tiny-qwen2-tied-") {
        "tiny-qwen2-tied-q4_k_m"
    } else if dir.starts_with("tiny-qwen2-") {
        "tiny-qwen2-q4_0"
    } else if dir.starts_with("tiny-llama-") {
        "tiny-llama-q2_k"
    } else if dir.starts_with("tiny-deepseek-v3-") {
        "tiny-deepseek-v3-q4_k_m"
    } else if dir.starts_with("tiny-deepseek-v2-lite-") {
        "tiny-deepseek-v2-lite-q4_k_m"
    } else {
        panic!("no model mapping for reference dir {dir}");
    };
    Some(data(&format!("models/{family}.gguf")))
}

/// Every reference directory that has a `tokenize.jsonl`.
fn reference_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(data("reference"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("tokenize.jsonl").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 28, "reference dirs missing: {dirs:?}");
    dirs
}

fn ids_of(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `.inp` (texts separated by `\n__ggml_vocab_test__\n`) against `.out` (one id line per text).
fn check_vocab_vectors(vocab: &str, vectors: &str, pre: Option<&str>) -> usize {
    let tok = tokenizer(
        &data(&format!("reference/vocab/ggml-vocab-{vocab}.gguf")),
        pre,
    );
    let inp = std::fs::read_to_string(data(&format!(
        "reference/vocab/ggml-vocab-{vectors}.gguf.inp"
    )))
    .unwrap();
    let out = std::fs::read_to_string(data(&format!(
        "reference/vocab/ggml-vocab-{vectors}.gguf.out"
    )))
    .unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(
        texts.pop(),
        Some(""),
        "{vectors}.inp must end with a separator"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        texts.len(),
        lines.len(),
        "{vectors}: .inp/.out sizes differ"
    );
    let mut failures = Vec::new();
    for (text, line) in texts.iter().zip(&lines) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let got = tok.encode(text, false, false);
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
        // byte-level BPE without special parsing always round-trips
        assert_eq!(tok.decode(&got, false).unwrap(), *text, "{vectors}: decode");
    }
    assert!(
        failures.is_empty(),
        "{vectors}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    texts.len()
}

#[test]
fn vocab_vectors_qwen2() {
    assert_eq!(check_vocab_vectors("qwen2", "qwen2", None), 46);
}

#[test]
fn vocab_vectors_llama_bpe() {
    assert_eq!(check_vocab_vectors("llama-bpe", "llama-bpe", None), 46);
}

#[test]
fn vocab_vectors_deepseek_llm() {
    assert_eq!(
        check_vocab_vectors("deepseek-llm", "deepseek-llm", None),
        46
    );
}

#[test]
fn vocab_vectors_deepseek_coder() {
    assert_eq!(
        check_vocab_vectors("deepseek-coder", "deepseek-coder", None),
        46
    );
}

#[test]
fn vocab_vectors_deepseek_r1_qwen() {
    let n = check_vocab_vectors("qwen2", "deepseek-r1-qwen", Some("deepseek-r1-qwen"));
    assert_eq!(n, 46);
    assert_eq!(
        tokenizer(
            &data("reference/vocab/ggml-vocab-qwen2.gguf"),
            Some("deepseek-r1-qwen")
        )
        .pre(),
        "deepseek-r1-qwen"
    );
}

/// Checks one `tokenize.jsonl`; returns the number of records.
fn check_tokenize_jsonl(dir: &str, tok: &Tokenizer) -> usize {
    let path = data(&format!("reference/{dir}/tokenize.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        let r: Json = serde_json::from_str(line).unwrap();
        let input = r["text"].as_str().unwrap();
        let ids_special = ids_of(&r["ids_special"]);
        let ids_plain = ids_of(&r["ids_plain"]);
        let got_special = tok.encode(input, false, true);
        let got_plain = tok.encode(input, false, false);
        if got_special != ids_special {
            failures.push(format!(
                "{input:?} (special)\n  want {ids_special:?}\n  got  {got_special:?}"
            ));
        }
        if got_plain != ids_plain {
            failures.push(format!(
                "{input:?} (plain)\n  want {ids_plain:?}\n  got  {got_plain:?}"
            ));
        }
        let detok_special = r["detok_special"].as_str().unwrap();
        let detok_plain = r["detok_plain"].as_str().unwrap();
        let d_special = tok.decode(&ids_special, true).unwrap();
        let d_plain = tok.decode(&ids_plain, false).unwrap();
        if d_special != detok_special {
            failures.push(format!(
                "{input:?} detok_special\n  want {detok_special:?}\n  got  {d_special:?}"
            ));
        }
        if d_plain != detok_plain {
            failures.push(format!(
                "{input:?} detok_plain\n  want {detok_plain:?}\n  got  {d_plain:?}"
            ));
        }
        // round trip wherever llama.cpp's own detokenization round-trips
        if detok_special == input {
            assert_eq!(
                tok.decode(&got_special, true).unwrap(),
                input,
                "{dir}: round trip (special)"
            );
        }
        if detok_plain == input {
            assert_eq!(
                tok.decode(&got_plain, false).unwrap(),
                input,
                "{dir}: round trip (plain)"
            );
        }
        // the stream decoder agrees with decode
        let mut s = tok.stream(true);
        let mut streamed = String::new();
        for &id in &ids_special {
            streamed += &s.push(id).unwrap();
        }
        streamed += &s.finish();
        assert_eq!(streamed, d_special, "{dir}: stream vs decode for {input:?}");
    }
    assert!(
        failures.is_empty(),
        "{dir}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}

/// `meta.json`: n_vocab, bos/eos, EOG ids, add_bos.
fn check_meta(dir: &str, tok: &Tokenizer, model: &Path) {
    let m: Json = serde_json::from_str(
        &std::fs::read_to_string(data(&format!("reference/{dir}/meta.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        tok.n_vocab() as u64,
        m["n_vocab"].as_u64().unwrap(),
        "{dir}: n_vocab"
    );
    assert_eq!(tok.bos().map(u64::from), m["bos_id"].as_u64(), "{dir}: bos");
    assert_eq!(tok.eos().map(u64::from), m["eos_id"].as_u64(), "{dir}: eos");
    if let Some(eog) = m.get("eog_ids") {
        assert_eq!(tok.eog_ids(), ids_of(eog).as_slice(), "{dir}: eog_ids");
        for id in ids_of(eog) {
            assert!(tok.is_eog(id));
        }
        // meta.json of model dirs comes from llama.cpp's loaded vocab
        assert_eq!(
            tok.add_bos(),
            m["add_bos"].as_bool().unwrap(),
            "{dir}: add_bos"
        );
    } else {
        // vocab-* dirs: meta.json was written from the raw GGUF keys (it has `tokenizer_pre` and no
        // `eog_ids`), so `add_bos` is `tokenizer.ggml.add_bos_token`, false when absent. llama.cpp's
        // effective value differs only where the key is absent and the pre-type defaults it to
        // true (llama3 family: `llama-bpe`).
        let key = meta_of(model)
            .opt("tokenizer.ggml.add_bos_token", Metadata::get_bool)
            .unwrap();
        assert_eq!(
            key.unwrap_or(false),
            m["add_bos"].as_bool().unwrap(),
            "{dir}: raw add_bos key"
        );
        let llama_cpp_default = tok.pre() == "llama-bpe";
        assert_eq!(
            tok.add_bos(),
            key.unwrap_or(llama_cpp_default),
            "{dir}: add_bos"
        );
        assert_eq!(
            tok.pre(),
            m["tokenizer_pre"].as_str().unwrap(),
            "{dir}: pre"
        );
    }
}

#[test]
fn tokenize_jsonl_all_dirs() {
    let mut records = 0;
    let mut checked = Vec::new();
    for dir in reference_dirs() {
        let Some(model) = model_for_dir(&dir) else {
            eprintln!(
                "SKIP {dir}: SmolLM2-135M-Instruct.Q4_1.gguf not found (set EMBER_SMOLLM2 or put it in ~/.cache/ember/models/)"
            );
            continue;
        };
        let tok = tokenizer(&model, None);
        records += check_tokenize_jsonl(&dir, &tok);
        check_meta(&dir, &tok, &model);
        checked.push(dir);
    }
    eprintln!(
        "tokenize.jsonl: {records} records in {} dirs checked",
        checked.len()
    );
    assert!(checked.len() >= 27);
}

/// `tests/data/llamacpp-xcheck.jsonl`: llama.cpp's ids for 100 pseudo-random hard texts per
/// reference tokenizer (generated by `tests/data/gen_llamacpp_xcheck.py` with llama-cpp-python
/// 0.3.36, the same llama.cpp as the reference data).
#[test]
fn llamacpp_xcheck() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/llamacpp-xcheck.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut failures = Vec::new();
    let (mut checked, mut skipped) = (0, 0);
    for line in text.lines() {
        let r: Json = serde_json::from_str(line).unwrap();
        let dir = r["dir"].as_str().unwrap();
        let Some(model) = model_for_dir(dir) else {
            skipped += 1;
            continue;
        };
        let tok = tokenizer(&model, None);
        let input = r["text"].as_str().unwrap();
        for (key, parse_special) in [("ids_special", true), ("ids_plain", false)] {
            let want = ids_of(&r[key]);
            let got = tok.encode(input, false, parse_special);
            if got != want {
                failures.push(format!(
                    "{dir} {key} {input:?}\n  want {want:?}\n  got  {got:?}"
                ));
            }
            checked += 1;
        }
    }
    if skipped > 0 {
        eprintln!("SKIP {skipped} llamacpp-xcheck records: SmolLM2 model not found");
    }
    eprintln!("llamacpp-xcheck: {checked} encodings checked");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_special_tokens() {
    let Some(path) = smollm2_path() else {
        eprintln!("SKIP smollm2_special_tokens: SmolLM2 model not found");
        return;
    };
    let tok = tokenizer(&path, None);
    assert_eq!(tok.pre(), "smollm");
    assert!(!tok.add_bos());
    let ids = tok.encode("<|im_start|>user\nHi there<|im_end|>\n", true, true);
    assert_eq!(ids.first(), Some(&1));
    assert!(ids.contains(&2));
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1));
}

// ---- streaming detokenizer ----

fn qwen2() -> Arc<Tokenizer> {
    tokenizer(&data("reference/vocab/ggml-vocab-qwen2.gguf"), None)
}

/// The byte-level token of each byte of `s`.
fn byte_tokens(tok: &Tokenizer, s: &str) -> Vec<u32> {
    s.bytes()
        .map(|b| {
            (0..tok.n_vocab() as u32)
                .find(|&id| tok.token_to_piece(id, false).is_some_and(|p| *p == [b]))
                .unwrap()
        })
        .collect()
}

#[test]
fn stream_splits_multibyte_chars() {
    let tok = qwen2();
    let ids = byte_tokens(&tok, "😀中");
    assert_eq!(ids.len(), 7);
    let mut s = tok.stream(false);
    let outs: Vec<String> = ids.iter().map(|&id| s.push(id).unwrap()).collect();
    assert_eq!(outs, ["", "", "", "😀", "", "", "中"]);
    assert_eq!(s.finish(), "");
    assert_eq!(tok.decode(&ids, false).unwrap(), "😀中");
}

#[test]
fn stream_never_emits_partial_chars() {
    let tok = qwen2();
    let text = "Emoji: 😀🎉 family 👨‍👩‍👧‍👦 DeepSeek 通过技术微创新 naïve café";
    let ids = tok.encode(text, false, false);
    let mut s = tok.stream(false);
    let mut all = String::new();
    for &id in &ids {
        let out = s.push(id).unwrap();
        assert!(!out.contains('\u{FFFD}'));
        all += &out;
        assert!(text.starts_with(&all));
    }
    all += &s.finish();
    assert_eq!(all, text);
    assert_eq!(all, tok.decode(&ids, false).unwrap());
}

#[test]
fn stream_invalid_and_truncated_bytes() {
    let tok = qwen2();
    // 0xF0 0x9F (start of an emoji), then 'a': the prefix can never complete
    let mut ids = byte_tokens(&tok, "😀");
    ids.truncate(2);
    ids.extend(tok.encode("a", false, false));
    ids.extend(byte_tokens(&tok, "中").into_iter().take(1)); // dangling lead byte at the end
    let mut s = tok.stream(false);
    let mut all = String::new();
    for &id in &ids {
        all += &s.push(id).unwrap();
    }
    assert_eq!(all, "\u{FFFD}a");
    assert_eq!(s.pending_bytes(), &[0xE4]);
    all += &s.finish();
    assert_eq!(all, "\u{FFFD}a\u{FFFD}");
    assert_eq!(all, tok.decode(&ids, false).unwrap());
    assert_eq!(
        tok.decode_bytes(&ids, false).unwrap(),
        [0xF0, 0x9F, b'a', 0xE4]
    );
}

#[test]
fn invalid_ids_are_errors() {
    let tok = qwen2();
    let n = tok.n_vocab() as u32;
    assert!(
        matches!(tok.decode(&[1, n], false), Err(TokenizerError::InvalidTokenId { id, .. }) if id == n)
    );
    assert!(tok.stream(false).push(u32::MAX).is_err());
    assert!(tok.token_to_piece(n, true).is_none());
    assert!(tok.token_text(n).is_none());
}

#[test]
fn special_tokens_render_only_when_asked() {
    let tok = qwen2();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(tok.decode(&[im_start], false).unwrap(), "");
    assert_eq!(tok.decode(&[im_start], true).unwrap(), "<|im_start|>");
    // control tokens are text unless parse_special
    assert_eq!(tok.encode("<|im_start|>", false, true), [im_start]);
    assert_ne!(tok.encode("<|im_start|>", false, false), [im_start]);
    // user-defined tokens are matched even without parse_special
    let pad = tok.token_id("[PAD151646]").unwrap();
    assert_eq!(tok.encode("[PAD151646]", false, false), [pad]);
    assert_eq!(tok.decode(&[pad], false).unwrap(), "[PAD151646]");
}

#[test]
fn add_special_adds_bos() {
    let tok = tokenizer(&data("models/tiny-llama-q2_k.gguf"), None);
    let ids = tok.encode("Hello", true, false);
    assert_eq!(ids.first(), Some(&4090));
    assert_eq!(&ids[1..], tok.encode("Hello", false, false).as_slice());
    assert!(!tok.add_eos());
    // llama_detokenize: remove_special drops the BOS the model adds
    assert_eq!(tok.detokenize(&ids, true, true).unwrap(), "Hello");
    assert_eq!(
        tok.detokenize(&ids, false, true).unwrap(),
        "<|begin_of_text|>Hello"
    );
    // llama-bpe cleans spaces in llama_detokenize only
    let ids = tok.encode("Hello , world !", false, false);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello , world !");
    assert_eq!(tok.detokenize(&ids, false, false).unwrap(), "Hello, world!");
}

#[test]
fn tokenizer_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    let tok = qwen2();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let tok = tok.clone();
            std::thread::spawn(move || tok.encode(&format!("thread {i} says hello"), false, false))
        })
        .collect();
    for h in handles {
        assert!(!h.join().unwrap().is_empty());
    }
}
