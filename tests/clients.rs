//! The Python clients hubs run (`openai`, `ollama==0.6.2`: Home Assistant's pin) against the real
//! `emberd serve` binary over TCP, on models of three template families: SmolLM2 (ChatML, the
//! generic tool form), a tiny model with Qwen 2.5's template (`<tool_call>`) and one with Llama
//! 3.2's. The checks themselves are in `clients/hub_clients.py` (tool calls validated with
//! `jsonschema`, whole and streamed; structured output; the Home Assistant turn).
//!
//! Needs `pip install openai ollama==0.6.2 jsonschema` (CI installs them and sets
//! `EMBER_TEST_CLIENTS=1`, which makes a missing package a failure rather than a skip).
#![allow(clippy::unwrap_used)]

use ember_tests::{emberd, free_port, model_path, smollm2};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn clients_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai, ollama, jsonschema"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("EMBER_TEST_CLIENTS").as_deref() != Ok("1"),
            "EMBER_TEST_CLIENTS=1 but the Python clients are missing \
             (pip install openai ollama==0.6.2 jsonschema)"
        );
        eprintln!("SKIP: pip install openai ollama==0.6.2 jsonschema to run the client tests");
    }
    ok
}

/// Serves `model` on a fresh TCP port and runs the client script against it.
fn run_clients(model: &Path, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut daemon = Command::new(emberd())
        .args(["serve", "--model"])
        .arg(model)
        .arg("--socket")
        .arg(dir.path().join("ember.sock"))
        .args(["--model-name", name])
        .args([
            "--listen-tcp",
            &addr,
            "--threads",
            "2",
            "--ctx-size",
            "2048",
        ])
        .env("EMBER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/hub_clients.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg(name)
        .output()
        .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        out.status.success(),
        "{name}: hub clients failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openai_and_ollama_clients_get_valid_tool_calls_and_structured_output() {
    if !clients_available() {
        return;
    }
    let mut models = vec![
        (
            model_path("tiny-qwen2-tied-q4_k_m"),
            "tiny-qwen2-tied-q4_k_m",
        ),
        (model_path("tiny-llama-q2_k"), "tiny-llama-q2_k"),
    ];
    match smollm2() {
        Some(p) => models.push((p, "smollm2")),
        None => eprintln!("SKIP smollm2: EMBER_SMOLLM2 not set"),
    }
    for (path, name) in models {
        run_clients(&path, name);
    }
}
