//! Every GGUF shipped in tests/data parses, and its metadata and tensor table equal what llama.cpp
//! reported for the same file (`meta.json`).
#![allow(clippy::unwrap_used)]

use ember_gguf::{GgufFile, Value};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

fn check_kv(file: &GgufFile, kv: &serde_json::Map<String, Json>, label: &str) {
    for (key, want) in kv {
        let got = file
            .metadata()
            .get(key)
            .unwrap_or_else(|| panic!("{label}: missing {key}"));
        match (got, want) {
            (Value::String(s), Json::String(w)) => assert_eq!(s, w, "{label}: {key}"),
            (Value::Bool(b), Json::Bool(w)) => assert_eq!(b, w, "{label}: {key}"),
            (Value::Array(_), Json::Array(_)) => {}
            (v, Json::Number(n)) if v.as_int().is_some() => {
                assert_eq!(
                    v.as_int().unwrap(),
                    n.as_i64().unwrap() as i128,
                    "{label}: {key}"
                )
            }
            (v, Json::Number(n)) => {
                let (g, w) = (v.as_float().unwrap(), n.as_f64().unwrap());
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{label}: {key} {g} vs {w}"
                );
            }
            (g, w) => panic!("{label}: {key}: {g:?} vs {w}"),
        }
    }
}

#[test]
fn tiny_models_match_llama_cpp_metadata() {
    let models = std::fs::read_dir(data().join("models")).unwrap();
    let mut checked = 0;
    for entry in models {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let meta: Json = serde_json::from_str(
            &std::fs::read_to_string(data().join("reference").join(&stem).join("meta.json"))
                .unwrap(),
        )
        .unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.file_len(), meta["bytes"].as_u64().unwrap());
        check_kv(&file, meta["gguf_kv"].as_object().unwrap(), &stem);
        let want = meta["tensors"].as_array().unwrap();
        assert_eq!(file.tensors().len(), want.len(), "{stem}");
        for w in want {
            let name = w["name"].as_str().unwrap();
            let t = file
                .tensor(name)
                .unwrap_or_else(|| panic!("{stem}: no tensor {name}"));
            assert_eq!(
                t.ggml_type().name(),
                w["type"].as_str().unwrap(),
                "{stem} {name}"
            );
            let ne: Vec<u64> = w["ne"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            assert_eq!(t.dims(), &ne[..], "{stem} {name}");
            let bytes = file.tensor_data(t).unwrap();
            assert_eq!(bytes.len() as u64, t.n_bytes());
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected the tiny models in tests/data/models"
    );
}

#[test]
fn vocab_only_files_parse() {
    for name in ["qwen2", "llama-bpe", "deepseek-llm", "deepseek-coder"] {
        let path = data().join(format!("reference/vocab/ggml-vocab-{name}.gguf"));
        let file = GgufFile::open(&path).unwrap();
        let meta: Json = serde_json::from_str(
            &std::fs::read_to_string(data().join(format!("reference/vocab-{name}/meta.json")))
                .unwrap(),
        )
        .unwrap();
        let tokens = file
            .metadata()
            .get_str_array("tokenizer.ggml.tokens")
            .unwrap();
        assert_eq!(
            tokens.len() as u64,
            meta["n_vocab"].as_u64().unwrap(),
            "{name}"
        );
        assert!(file.tensors().is_empty());
    }
}
