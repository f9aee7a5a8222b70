//! The Python clients hubs run (`openai`, `ollama==0.6.2`: Home Assistant's pin) against the real
//! `emberd serve` binary over TCP, on models of three template families: SmolLM2 (ChatML, the
//! generic tool form), a tiny model with Qwen 2.5's template (`<tool_call>`) and one with Llama
//! 3.2's. The checks themselves are in `clients/hub_clients.py` (tool calls validated with
//! `jsonschema`, whole and streamed; structured output; the Home Assistant turn).
//!
//! The same on MQTT with `paho-mqtt` (MQTT v5) through a real mosquitto: `clients/mqtt_clients.py`
//! (JSON requests with `tools` and `response_format`, and a microcontroller's postcard requests,
//! version 2 and version 1).
//!
//! Needs `pip install openai ollama==0.6.2 jsonschema paho-mqtt` (CI installs them and sets
//! `EMBER_TEST_CLIENTS=1`, which makes a missing package a failure rather than a skip).
#![allow(clippy::unwrap_used)]

use ember_tests::{Broker, emberd, free_port, model_path, mqtt_available, smollm2};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn clients_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai, ollama, jsonschema, paho.mqtt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("EMBER_TEST_CLIENTS").as_deref() != Ok("1"),
            "EMBER_TEST_CLIENTS=1 but the Python clients are missing \
             (pip install openai ollama==0.6.2 jsonschema paho-mqtt)"
        );
        eprintln!(
            "SKIP: pip install openai ollama==0.6.2 jsonschema paho-mqtt to run the client tests"
        );
    }
    ok
}

/// `emberd serve` on `model` at `socket` with `args` (2 threads, a 2048-token context).
fn serve(model: &Path, socket: &Path, args: &[&str]) -> Child {
    Command::new(emberd())
        .args(["serve", "--model"])
        .arg(model)
        .arg("--socket")
        .arg(socket)
        .args(["--threads", "2", "--ctx-size", "2048"])
        .args(args)
        .env("EMBER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Serves `model` (with `extra` serve flags) on a fresh TCP port and runs the client script against
/// it (`no_think`: every request switches thinking off).
fn run_clients(model: &Path, name: &str, extra: &[&str], no_think: bool) {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--model-name", name, "--listen-tcp", &addr];
    args.extend_from_slice(extra);
    let mut daemon = serve(model, &dir.path().join("ember.sock"), &args);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/hub_clients.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg(name)
        .args(no_think.then_some("no-think"))
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

/// The models of the three template families: Qwen 2.5's (`<tool_call>`), Llama 3.2's and
/// SmolLM2's ChatML (the generic form).
fn models() -> Vec<(PathBuf, &'static str)> {
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
    models
}

#[test]
fn openai_and_ollama_clients_get_valid_tool_calls_and_structured_output() {
    if !clients_available() {
        return;
    }
    for (path, name) in models() {
        run_clients(&path, name, &[], false);
    }
}

/// The DeepSeek forms: V3.1's template (`<｜tool▁calls▁begin｜>`, thinking off by default) and an R1
/// distill, whose stock template has no tool section, served with the tool-aware template ember
/// ships (`--template-file`), thinking switched off per request as Home Assistant does.
#[test]
fn openai_and_ollama_clients_get_valid_deepseek_tool_calls() {
    if !clients_available() {
        return;
    }
    run_clients(
        &model_path("tiny-deepseek-v3-q4_k_m"),
        "tiny-deepseek-v3-q4_k_m",
        &[],
        false,
    );
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/ember-toolcall/templates/deepseek-r1-tools.jinja");
    run_clients(
        &model_path("tiny-qwen2-q4_0"),
        "tiny-qwen2-q4_0",
        &["--template-file", template.to_str().unwrap()],
        true,
    );
}

#[test]
fn paho_mqtt_hub_gets_valid_tool_calls_and_structured_output() {
    if !clients_available() || !mqtt_available("paho_mqtt_hub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    for (path, name) in models() {
        let node = format!("hub-{name}");
        let mut daemon = serve(
            &path,
            &dir.path().join(format!("{name}.sock")),
            &["--mqtt-url", &broker.url(), "--node", &node],
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/mqtt_clients.py");
        let out = Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &broker.port.to_string(), &node])
            .output()
            .unwrap();
        let _ = daemon.kill();
        let _ = daemon.wait();
        assert!(
            out.status.success(),
            "{name}: MQTT hub failed:\n{}\n{}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            broker.log()
        );
    }
}
