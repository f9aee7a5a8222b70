//! Fuzz target: text from stdin, HTTP or MQTT is outside input. Tokenizing it (both special modes),
//! detokenizing and streaming must never panic, every id must be in the vocabulary, and plain-mode
//! byte-level BPE must round-trip exactly. Uses the tiny DeepSeek-V3 vocabulary (pre-tokenizer
//! `deepseek-v3`, the most complex regex list) and the tiny Llama 3 one (`llama-bpe`).
#![no_main]

use ember_tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn load(name: &str) -> Tokenizer {
    let path = format!("{}/../tests/data/models/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = ember_gguf::GgufFile::open(&path).expect("fixture model");
    Tokenizer::from_gguf(file.metadata()).expect("fixture tokenizer")
}

fuzz_target!(|data: &[u8]| {
    static TOKS: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    let toks = TOKS.get_or_init(|| [load("tiny-deepseek-v3-q4_k_m.gguf"), load("tiny-llama-q2_k.gguf")]);
    let Ok(text) = std::str::from_utf8(data) else { return };
    for tok in toks {
        for parse_special in [false, true] {
            let ids = tok.encode(text, false, parse_special);
            assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
            let bytes = tok.decode_bytes(&ids, true).expect("ids come from the tokenizer");
            if !parse_special {
                assert_eq!(bytes, text.as_bytes(), "plain-mode round trip");
            }
            let mut stream = tok.stream(true);
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(&stream.push(id).expect("valid id"));
            }
            streamed.push_str(&stream.finish());
            assert_eq!(streamed, String::from_utf8_lossy(&bytes));
        }
    }
});
