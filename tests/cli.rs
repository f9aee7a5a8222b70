//! End-to-end tests of the `emberd` CLI contract: `info`, `tokenize`, `detokenize`, `template` run as
//! a separate process on real GGUF files, checked against llama.cpp's reference data, plus bad input
//! (exit code 2, one line on stderr, never a panic).
#![allow(clippy::unwrap_used)]

use ember_tests::{data_dir, model_path, run, run_env, smollm2};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every model file to check `info` on, with its reference dir: the tiny models copied into
/// tests/data, every tiny model in ../shared/models when that folder is beside the checkout (as in
/// CI; `EMBER_SHARED_DIR` names another), and the SmolLM2 file when fetched.
fn models() -> Vec<(PathBuf, PathBuf)> {
    let refs = data_dir().join("reference");
    let mut out = Vec::new();
    let shared = std::env::var_os("EMBER_SHARED_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("models");
    for dir in [data_dir().join("models"), shared] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            if p.extension().is_some_and(|x| x == "gguf") && refs.join(&stem).is_dir() {
                out.push((p, refs.join(stem)));
            }
        }
    }
    if let Some(p) = smollm2() {
        out.push((p, refs.join("smollm2-135m-instruct-q4_1")));
    } else {
        eprintln!("SKIP smollm2 info check: model not fetched (run scripts/fetch_model.py)");
    }
    out
}

fn info_json(model: &Path) -> Value {
    let out = run(&["info", "--model", model.to_str().unwrap(), "--json"], b"");
    assert_eq!(out.code, 0, "{}: {}", model.display(), out.stderr);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn info_matches_llama_cpp_on_every_model() {
    let models = models();
    assert!(models.len() >= 5);
    for (model, refdir) in models {
        let meta = read_json(&refdir.join("meta.json"));
        let info = info_json(&model);
        let label = model.display().to_string();
        let kv = &meta["gguf_kv"];
        let arch = kv["general.architecture"].as_str().unwrap();
        assert_eq!(info["architecture"], arch, "{label}");
        assert_eq!(info["file_bytes"], meta["bytes"], "{label}");
        assert_eq!(info["tensor_types"], meta["tensor_types"], "{label}");
        let params: u64 = meta["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["ne"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product::<u64>()
            })
            .sum();
        assert_eq!(info["parameters"], params, "{label}");
        assert_eq!(
            info["context_length"],
            kv[format!("{arch}.context_length")],
            "{label}"
        );
        for key in [
            "block_count",
            "embedding_length",
            "attention.head_count",
            "feed_forward_length",
        ] {
            assert_eq!(
                info["hparams"][key],
                kv[format!("{arch}.{key}")],
                "{label} {key}"
            );
        }
        // KV cache per token: llama.cpp's per-layer K/V widths in f16; with MLA (deepseek2) only
        // the compressed latent plus the rope key.
        let get = |k: &str| kv[format!("{arch}.{k}")].as_u64();
        let n_layer = get("block_count").unwrap();
        let want_kv = if arch == "deepseek2" {
            n_layer
                * (get("attention.kv_lora_rank").unwrap() + get("rope.dimension_count").unwrap())
                * 2
        } else {
            let heads = get("attention.head_count").unwrap();
            let head_dim =
                get("attention.key_length").unwrap_or(get("embedding_length").unwrap() / heads);
            n_layer * 2 * get("attention.head_count_kv").unwrap_or(heads) * head_dim * 2
        };
        assert_eq!(info["engine"]["kv_bytes_per_token"], want_kv, "{label}");
        let vocab = &info["vocab"];
        assert_eq!(vocab["size"], meta["n_vocab"], "{label}");
        assert_eq!(vocab["bos_id"], meta["bos_id"], "{label}");
        assert_eq!(vocab["eos_id"], meta["eos_id"], "{label}");
        assert_eq!(vocab["eog_ids"], meta["eog_ids"], "{label}");
        assert_eq!(vocab["add_bos"], meta["add_bos"], "{label}");
        assert_eq!(
            info["chat_template"].is_string(),
            meta["has_chat_template"].as_bool().unwrap(),
            "{label}"
        );
        assert!(
            info["unsupported_tensors"].as_array().unwrap().is_empty(),
            "{label}"
        );

        let text = run(&["info", "--model", model.to_str().unwrap()], b"");
        assert_eq!(text.code, 0);
        let text = text.text();
        assert!(
            text.contains(arch)
                && text.contains(&params.to_string())
                && text.contains(&format!("{want_kv} bytes/token")),
            "{label}: {text}"
        );
    }
}

#[test]
fn info_smollm2_figures() {
    let Some(model) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not fetched");
        return;
    };
    let info = info_json(&model);
    let h = &info["hparams"];
    // The figures of ../shared/reference/README.md.
    assert_eq!(info["file_bytes"], 98_362_432);
    assert_eq!(info["file_type"], "Q4_1");
    assert_eq!(
        (
            &h["block_count"],
            &h["embedding_length"],
            &h["attention.head_count"],
            &h["attention.head_count_kv"]
        ),
        (&json!(30), &json!(576), &json!(9), &json!(3))
    );
    assert_eq!(
        (&h["feed_forward_length"], &h["rope.freq_base"]),
        (&json!(1536), &json!(100000.0))
    );
    assert_eq!(info["vocab"]["size"], 49152);
    assert_eq!(info["vocab"]["pre"], "smollm");
    assert_eq!(info["vocab"]["add_bos"], false);
    assert_eq!(
        info["tensor_types"],
        json!({"F32": 61, "Q4_1": 210, "Q8_0": 1})
    );
}

fn tiny_llama() -> String {
    data_dir()
        .join("models/tiny-llama-q2_k.gguf")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn tokenize_and_detokenize_single_and_batch() {
    let model = tiny_llama();
    let records = read_jsonl(&data_dir().join("reference/tiny-llama-q2_k/tokenize.jsonl"));
    let input: String = records.iter().map(|r| format!("{}\n", r["text"])).collect();
    for (flag, field, detok) in [
        (None, "ids_special", "detok_special"),
        (Some("--no-special"), "ids_plain", "detok_plain"),
    ] {
        let mut args = vec!["tokenize", "--model", &model, "--jsonl"];
        args.extend(flag);
        let out = run(&args, input.as_bytes());
        assert_eq!(out.code, 0, "{}", out.stderr);
        let lines: Vec<Value> = out
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), records.len());
        for (got, r) in lines.iter().zip(&records) {
            assert_eq!(got, &r[field], "{flag:?} {}", r["text"]);
        }
        // Batch detokenize.
        let ids: String = records.iter().map(|r| format!("{}\n", r[field])).collect();
        let mut args = vec!["detokenize", "--model", &model, "--jsonl"];
        if flag.is_some() {
            args.push("--no-special");
        }
        let out = run(&args, ids.as_bytes());
        assert_eq!(out.code, 0, "{}", out.stderr);
        for (line, r) in out.text().lines().zip(&records) {
            let got: String = serde_json::from_str(line).unwrap();
            assert_eq!(got, r[detok].as_str().unwrap());
        }
    }
    // Single mode: all of stdin is one text; output one array.
    let r = records
        .iter()
        .find(|r| r["text"].as_str().unwrap().contains('<'))
        .unwrap_or(&records[0]);
    let text = r["text"].as_str().unwrap();
    let out = run(&["tokenize", "--model", &model], text.as_bytes());
    assert_eq!(out.code, 0);
    assert_eq!(out.text(), format!("{}\n", r["ids_special"]));
    let out = run(
        &["detokenize", "--model", &model],
        r["ids_special"].to_string().as_bytes(),
    );
    assert_eq!(out.stdout, r["detok_special"].as_str().unwrap().as_bytes());
}

/// The reference renders had no `strftime_now`, so the Llama 3.x templates printed their built-in
/// date; emberd provides `strftime_now` (as llama.cpp does), so the tests pin the date through
/// `chat_template_kwargs`.
fn request(r: &Value) -> Value {
    json!({"messages": r["messages"], "add_generation_prompt": r["add_generation_prompt"],
           "bos_token": r["bos_token"], "eos_token": r["eos_token"],
           "chat_template_kwargs": {"date_string": "26 Jul 2024"}})
}

#[test]
fn template_from_model_and_from_file() {
    let model = tiny_llama();
    for r in read_jsonl(&data_dir().join("reference/tiny-llama-q2_k/template.jsonl")) {
        let out = run(
            &["template", "--model", &model],
            request(&r).to_string().as_bytes(),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.text(), r["rendered"].as_str().unwrap());
    }
    let records = read_jsonl(&data_dir().join("reference/chat-templates/template.jsonl"));
    let dir = data_dir().join("reference/vocab/templates");
    for r in &records {
        let file = dir.join(r["template"].as_str().unwrap());
        let req = request(r);
        let line = format!("{req}\n{req}\n");
        let out = run(
            &[
                "template",
                "--template-file",
                file.to_str().unwrap(),
                "--jsonl",
            ],
            line.as_bytes(),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        let want = r["rendered"].as_str().unwrap();
        let lines: Vec<String> = out
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![want.to_owned(), want.to_owned()]);
    }
}

#[test]
fn template_dates_come_from_strftime_now() {
    let model = tiny_llama();
    let out = run(
        &["template", "--model", &model],
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    assert!(
        text.contains("Today Date: ") && !text.contains("26 Jul 2024"),
        "{text}"
    );
}

#[test]
fn template_takes_bos_and_eos_from_the_model() {
    // tiny-qwen2 (R1 distill template) prints bos_token itself: not given on stdin, the model's is used.
    let model = data_dir().join("models/tiny-qwen2-q4_0.gguf");
    let out = run(
        &["template", "--model", model.to_str().unwrap()],
        br#"{"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":true}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.text().starts_with("<｜begin▁of▁sentence｜>"),
        "{}",
        out.text()
    );
}

fn assert_clean_error(out: &ember_tests::Output, needle: &str) {
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_batch_error(out, needle);
}

/// An error after some output (batch mode answers the lines before the bad one).
fn assert_batch_error(out: &ember_tests::Output, needle: &str) {
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    let err = out.stderr.trim_end();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("emberd: error:"), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = std::env::temp_dir().join(format!("ember-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let not_gguf = tmp.join("notes.gguf");
    std::fs::write(&not_gguf, "hello, I am not a model\n").unwrap();
    let truncated = tmp.join("truncated.gguf");
    let bytes = std::fs::read(tiny_llama()).unwrap();
    std::fs::write(&truncated, &bytes[..100_000]).unwrap();
    let empty = tmp.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let model = tiny_llama();

    for cmd in ["info", "tokenize", "detokenize"] {
        assert_clean_error(
            &run(&[cmd, "--model", "/no/such/model.gguf"], b"x"),
            "/no/such/model.gguf",
        );
        assert_clean_error(
            &run(&[cmd, "--model", not_gguf.to_str().unwrap()], b"x"),
            "not a GGUF file",
        );
        assert_clean_error(
            &run(&[cmd, "--model", truncated.to_str().unwrap()], b"x"),
            "truncated.gguf",
        );
        assert_clean_error(
            &run(&[cmd, "--model", empty.to_str().unwrap()], b"x"),
            "truncated",
        );
        assert_clean_error(
            &run(&[cmd, "--model", tmp.to_str().unwrap()], b"x"),
            "not a regular file",
        );
    }
    assert_clean_error(&run(&["tokenize", "--model", &model], b"\xff\xfe"), "UTF-8");
    let out = run(
        &["tokenize", "--model", &model, "--jsonl"],
        b"\"ok\"\nnot json\n\"never\"\n",
    );
    assert_batch_error(&out, "line 2");
    assert_eq!(
        out.text().lines().count(),
        1,
        "line 1 answered, nothing after the bad line"
    );
    assert_clean_error(
        &run(&["detokenize", "--model", &model], b"[1, 2"),
        "JSON array",
    );
    assert_clean_error(
        &run(&["detokenize", "--model", &model], b"[999999]"),
        "999999",
    );
    assert_clean_error(
        &run(&["detokenize", "--model", &model], b"[-1]"),
        "JSON array",
    );
    assert_clean_error(
        &run(&["template", "--model", &model], b"{\"messages\": 3}"),
        "stdin",
    );
    assert_clean_error(&run(&["template", "--model", &model], b"[]"), "messages");
    assert_clean_error(&run(&["template", "--model", &model], b"{"), "invalid JSON");
    let bad_tmpl = tmp.join("bad.jinja");
    std::fs::write(&bad_tmpl, "{% for x in %}").unwrap();
    assert_clean_error(
        &run(
            &["template", "--template-file", bad_tmpl.to_str().unwrap()],
            b"{\"messages\":[]}",
        ),
        "bad.jinja",
    );
    let raising = tmp.join("raise.jinja");
    std::fs::write(&raising, "{{ raise_exception('roles must alternate') }}").unwrap();
    assert_clean_error(
        &run(
            &["template", "--template-file", raising.to_str().unwrap()],
            b"{\"messages\":[]}",
        ),
        "roles must alternate",
    );
    // A model without a chat template.
    let v2 = data_dir().join("models/tiny-deepseek-v2-lite-q4_k_m.gguf");
    assert_clean_error(
        &run(
            &["template", "--model", v2.to_str().unwrap()],
            b"{\"messages\":[]}",
        ),
        "no chat template",
    );
    // Usage errors are clap's, also exit 2.
    assert_eq!(run(&["tokenize"], b"").code, 2);
    assert_eq!(run(&["template"], b"").code, 2);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `emberd run --json --temperature 0` reproduces llama.cpp's greedy tokens (up to the first step
/// whose top-1 margin is under one logit, where numeric noise may legitimately flip the choice),
/// and `--chat` builds exactly llama.cpp's prompt ids.
#[test]
fn run_greedy_matches_llama_cpp() {
    let tmp = std::env::temp_dir().join(format!("ember-run-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let v3 = model_path("tiny-deepseek-v3-q4_k_m");
    let mut cases = vec![
        (tiny_llama(), "tiny-llama-q2_k"),
        (v3.to_str().unwrap().to_owned(), "tiny-deepseek-v3-q4_k_m"),
    ];
    if let Some(p) = smollm2() {
        cases.push((p.to_str().unwrap().to_owned(), "smollm2-135m-instruct-q4_1"));
    }
    for (model, stem) in cases {
        for (n, r) in read_jsonl(&data_dir().join(format!("reference/{stem}/greedy.jsonl")))
            .iter()
            .enumerate()
            .take(4)
        {
            let greedy: Vec<u64> = r["greedy_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let prompt_file = tmp.join(format!("{stem}-{n}.txt"));
            std::fs::write(&prompt_file, r["prompt"].as_str().unwrap()).unwrap();
            let max = greedy.len().to_string();
            let mut args = vec![
                "run",
                "--model",
                &model,
                "--prompt-file",
                prompt_file.to_str().unwrap(),
            ];
            args.extend([
                "--temperature",
                "0",
                "--max-tokens",
                &max,
                "--json",
                "--logits-top",
                "3",
            ]);
            if !r["add_bos"].as_bool().unwrap() {
                args.push("--no-bos");
            }
            let out = run(&args, b"");
            assert_eq!(out.code, 0, "{}", out.stderr);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["prompt_ids"], r["prompt_ids"], "{stem} #{n}");
            let got: Vec<u64> = v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let margins = r["top1_margin"].as_array().unwrap();
            let sure = margins
                .iter()
                .take_while(|m| m.as_f64().unwrap() >= 1.0)
                .count();
            assert_eq!(
                got[..sure.min(got.len())],
                greedy[..sure.min(got.len())],
                "{stem} #{n}: {}",
                v["text"]
            );
            assert_eq!(v["top"].as_array().unwrap().len(), got.len());
            assert_eq!(v["top"][0].as_array().unwrap().len(), 3);
            assert_eq!(v["top"][0][0][0], json!(got[0]));
            for key in ["load_ms", "prefill_tok_s", "decode_tok_s", "ttft_ms"] {
                assert!(v["timings"][key].is_number(), "{key}");
            }
            if sure == greedy.len() {
                assert_eq!(
                    v["finish_reason"],
                    if r["stop"] == "eog" { "stop" } else { "length" }
                );
            }
            // The chat path renders and tokenizes to the same ids (SmolLM2's template has no date).
            let msgs = r["messages"].as_array();
            if stem.starts_with("smollm2")
                && msgs.is_some_and(|m| m.len() <= 2 && m.last().unwrap()["role"] == "user")
            {
                let msgs = msgs.unwrap();
                let user = msgs.last().unwrap()["content"].as_str().unwrap();
                let mut args = vec![
                    "run",
                    "--model",
                    &model,
                    "--chat",
                    "--prompt",
                    user,
                    "--max-tokens",
                    "1",
                    "--json",
                ];
                if msgs.len() == 2 {
                    args.extend(["--system", msgs[0]["content"].as_str().unwrap()]);
                }
                let out = run(&args, b"");
                assert_eq!(out.code, 0, "{}", out.stderr);
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["prompt_ids"], r["prompt_ids"], "{stem} #{n} chat");
            }
        }
    }
    // Bad input to run: one line, exit 2.
    let model = tiny_llama();
    assert_clean_error(
        &run(
            &[
                "run",
                "--model",
                &model,
                "--prompt",
                "hi",
                "--ctx-size",
                "1",
            ],
            b"",
        ),
        "context",
    );
    assert_clean_error(
        &run(
            &["run", "--model", &model, "--prompt", "hi", "--top-p", "7"],
            b"",
        ),
        "top_p",
    );
    assert_clean_error(
        &run(
            &["run", "--model", &model, "--prompt", "hi", "--threads", "0"],
            b"",
        ),
        "threads",
    );
    // A binary built without the GPU backend says so. scripts/test.sh builds the suite with it
    // when Vulkan is present (and says so in EMBERD_FEATURES); crates/emberd/tests/wgpu_cli.rs
    // covers that binary.
    if std::env::var("EMBERD_FEATURES").is_ok_and(|f| f.contains("wgpu")) {
        eprintln!("SKIP the no-wgpu error: this emberd has the wgpu backend");
    } else {
        assert_clean_error(
            &run(
                &[
                    "run",
                    "--model",
                    &model,
                    "--prompt",
                    "hi",
                    "--backend",
                    "wgpu",
                ],
                b"",
            ),
            "wgpu",
        );
    }
    // An architecture ember does not run: tiny-llama relabelled (same-length name).
    let mut bytes = std::fs::read(tiny_llama()).unwrap();
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 8;
    assert_eq!(&bytes[at..at + 5], b"llama");
    bytes[at..at + 5].copy_from_slice(b"gemma");
    let other = tmp.join("gemma.gguf");
    std::fs::write(&other, bytes).unwrap();
    assert_clean_error(
        &run(
            &["run", "--model", other.to_str().unwrap(), "--prompt", "hi"],
            b"",
        ),
        "'gemma' is not supported",
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `emberd run` without `--model` takes the default model from the cache, after checking its
/// sha256, and without going to the network (the index it would fetch from is unreachable here).
#[test]
fn run_without_model_uses_the_cached_default() {
    let Some(model) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not fetched (scripts/test.sh fetches it)");
        return;
    };
    let cache = std::env::temp_dir().join(format!("ember-cache-{}", std::process::id()));
    let models = cache.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let cached = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if std::fs::hard_link(&model, &cached).is_err() {
        std::fs::copy(&model, &cached).unwrap();
    }
    let nowhere = Path::new("http://127.0.0.1:9/simple");
    let env = [
        ("EMBER_CACHE_DIR", cache.as_path()),
        ("EMBER_PYPI_URL", nowhere),
    ];
    let args = [
        "run",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
    ];
    let out = run_env(
        &[&args[..], &["--temperature", "0", "--json"]].concat(),
        b"",
        &env,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = run(
        &["tokenize", "--model", model.to_str().unwrap()],
        b"The capital of France is",
    );
    let want: Value = serde_json::from_slice(&want.stdout).unwrap();
    assert_eq!(v["prompt_ids"], want);
    assert_eq!(v["ids"].as_array().unwrap().len(), 4);

    // A corrupt cached file is not used: it is re-fetched, which fails here, with one clear line
    // (the URL source is tried last; it only answers where a model hub is reachable).
    if std::env::var_os("EMBER_TEST_OFFLINE").is_some() {
        std::fs::remove_file(&cached).unwrap();
        std::fs::write(&cached, b"not a model").unwrap();
        let quiet = [&env[..], &[("EMBER_LOG", Path::new("off"))]].concat();
        let out = run_env(&args, b"", &quiet);
        assert_clean_error(&out, "could not fetch smollm2-135m-instruct-q4_1");
    }
    let _ = std::fs::remove_dir_all(&cache);
}

/// `emberd bench`: the table, then one JSON object as the last line with the contract's fields.
#[test]
fn bench_reports_speed_memory_and_roofline() {
    let model = tiny_llama();
    let args = [
        "bench",
        "--model",
        &model,
        "--threads",
        "1",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "--repeat",
        "1",
        "--json",
    ];
    let out = run(&args, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    assert!(
        text.contains("| pp16 |") && text.contains("| tg4 |"),
        "{text}"
    );
    let v: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    for key in [
        "prefill_tok_s",
        "decode_tok_s",
        "ttft_ms",
        "load_ms",
        "peak_rss_mib",
        "bandwidth_gb_s",
        "roofline_fraction",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert_eq!(v["threads"], 1);
    let file_len = std::fs::metadata(&model).unwrap().len();
    assert!(v["weight_bytes_per_token"].as_u64().unwrap() <= file_len);
    assert_clean_error(
        &run(&["bench", "--model", &model, "--repeat", "0"], b""),
        "--repeat",
    );
}

/// MLA: `bench` reports the latent KV cache (`(kv_lora_rank + qk_rope) × 2 bytes × n_layer`, 3 ×
/// 272 × 2 for tiny-deepseek-v3) and counts only the routed experts a token uses (2 of 8) in the
/// weights it reads per token.
#[test]
fn bench_reports_mla_kv_and_moe_bytes() {
    let model = model_path("tiny-deepseek-v3-q4_k_m");
    let model = model.to_str().unwrap();
    let out = run(
        &[
            "bench",
            "--model",
            model,
            "--threads",
            "1",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "2",
            "--repeat",
            "1",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    assert!(text.contains("KV cache: 1632 bytes/token"), "{text}");
    let v: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(v["kv_bytes_per_token"], 3 * (256 + 16) * 2);
    let meta = read_json(&data_dir().join("reference/tiny-deepseek-v3-q4_k_m/meta.json"));
    let file = meta["bytes"].as_u64().unwrap();
    let read = v["weight_bytes_per_token"].as_u64().unwrap();
    // The six expert stacks of layers 1-2 are most of the file; a token reads a quarter of them.
    assert!(read < file * 2 / 3, "{read} of {file}");
    assert!(v["decode_tok_s"].as_f64().unwrap() > 0.0);
}
