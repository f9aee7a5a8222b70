//! `emberd run --backend wgpu` (built with the `wgpu` feature; software Vulkan in CI): greedy
//! output of the tiny F16 and Q8_0 models equals llama.cpp's wherever llama.cpp's choice is clear
//! (top-1 margin ≥ 1 logit), and the JSON contract holds. The full acceptance rule on the GPU is
//! ember-model's `greedy_matches_llama_cpp_on_wgpu`.
#![cfg(feature = "wgpu")]
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::Command;

fn data(p: &str) -> String {
    format!("{}/../../tests/data/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn run_backend_wgpu_matches_llama_cpp() {
    let tmp = std::env::temp_dir().join(format!("ember-wgpu-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for stem in ["tiny-llama-f16", "tiny-qwen2-tied-q8_0"] {
        let text =
            std::fs::read_to_string(data(&format!("reference/{stem}/greedy.jsonl"))).unwrap();
        for (n, line) in text.lines().enumerate().take(3) {
            let r: Value = serde_json::from_str(line).unwrap();
            let want = u64s(&r["greedy_ids"]);
            let prompt = tmp.join(format!("{stem}-{n}.txt"));
            std::fs::write(&prompt, r["prompt"].as_str().unwrap()).unwrap();
            let max = want.len().to_string();
            let model = data(&format!("models/{stem}.gguf"));
            let mut args = vec![
                "run",
                "--backend",
                "wgpu",
                "--model",
                &model,
                "--prompt-file",
                prompt.to_str().unwrap(),
                "--temperature",
                "0",
                "--max-tokens",
                &max,
                "--json",
            ];
            if !r["add_bos"].as_bool().unwrap() {
                args.push("--no-bos");
            }
            let out = Command::new(env!("CARGO_BIN_EXE_emberd"))
                .args(&args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stem} #{n}: {stderr}");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["prompt_ids"], r["prompt_ids"], "{stem} #{n}");
            let got = u64s(&v["ids"]);
            let sure = r["top1_margin"]
                .as_array()
                .unwrap()
                .iter()
                .take_while(|m| m.as_f64().unwrap() >= 1.0)
                .count()
                .min(got.len());
            assert_eq!(got[..sure], want[..sure], "{stem} #{n}: {}", v["text"]);
            assert!(v["timings"]["decode_tok_s"].as_f64().unwrap() > 0.0);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
