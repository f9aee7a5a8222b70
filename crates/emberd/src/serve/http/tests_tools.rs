//! Tool calls through the routes with a real engine on a random-weight model (it babbles: only
//! the grammar makes its calls valid), under three template families — the model's own Llama 3.2
//! template, Qwen 2.5's (Hermes `<tool_call>`) and plain ChatML (the generic JSON form): required
//! and named choices always return calls naming a declared tool with valid arguments, whole and
//! streamed; tool-call history in OpenAI's and Ollama's forms renders and answers.

use super::tests_engine::{Rig, json_of, post, rig_with, send, sse_data};
use super::*;
use ember_engine::service::EngineConfig;
use ember_toolcall::{ToolCall, parse_tools, validate_call};
use serde_json::{Value, json};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "HassTurnOn", "description": "Turn on a device",
         "parameters": {"type": "object", "properties": {
            "name": {"type": "string", "enum": ["kitchen light", "fan"]},
            "domain": {"type": "string", "enum": ["light", "switch"]}},
          "required": ["name", "domain"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "HassLightSet",
         "parameters": {"type": "object", "properties": {
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100}},
          "required": ["brightness"], "additionalProperties": false}}}
    ])
}

fn template(name: &str) -> String {
    let p = format!(
        "{}/../../tests/data/reference/vocab/templates/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

const CHATML: &str = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + \
    '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The three families' templates (None: the model's own Llama 3.2 template).
fn families() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("llama3", None),
        ("hermes", Some(template("Qwen-Qwen2.5-7B-Instruct.jinja"))),
        ("generic", Some(CHATML.to_owned())),
    ]
}

/// The engine rig with a 1024-token context and `template` (None: the model's own).
fn rig_for(template: Option<&str>) -> Rig {
    let cfg = EngineConfig {
        n_ctx: 1024,
        ..EngineConfig::default()
    };
    rig_with(cfg, Limits::default(), template, false)
}

fn check_call(fam: &str, id: &str, name: &str, args: &str) -> ToolCall {
    let call = ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("{fam}: arguments not JSON ({e}): {args:?}")),
    };
    validate_call(&call, &parse_tools(&tools()).expect("tools"))
        .unwrap_or_else(|e| panic!("{fam}: {e}: {name} {args}"));
    assert!(id.starts_with("call_"), "{fam}: id {id:?}");
    call
}

fn request(choice: Value, stream: bool, seed: u64) -> Value {
    json!({"model": "tiny", "messages": [
            {"role": "system", "content": "You control a house."},
            {"role": "user", "content": "Turn on the kitchen light."}],
           "tools": tools(), "tool_choice": choice, "temperature": 1.0, "seed": seed,
           // One call: a babbling model would otherwise chain calls until the budget runs out.
           "parallel_tool_calls": false, "max_tokens": 120, "stream": stream})
}

#[tokio::test]
async fn required_and_named_calls_validate_whole_and_streamed() {
    for (fam, tmpl) in families() {
        let r = rig_for(tmpl.as_deref());
        for (choice, seed) in [
            (json!("required"), 1),
            (
                json!({"type": "function", "function": {"name": "HassLightSet"}}),
                2,
            ),
        ] {
            let (status, _, body) = send(
                &r.app,
                post(
                    "/v1/chat/completions",
                    &request(choice.clone(), false, seed),
                ),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{fam}: {}",
                String::from_utf8_lossy(&body)
            );
            let v = json_of(&body);
            let c = &v["choices"][0];
            assert_eq!(c["finish_reason"], "tool_calls", "{fam}: {c}");
            let calls = c["message"]["tool_calls"].as_array().expect("tool_calls");
            assert!(!calls.is_empty(), "{fam}");
            for call in calls {
                assert_eq!(call["type"], "function");
                let f = &call["function"];
                let got = check_call(
                    fam,
                    call["id"].as_str().unwrap_or_default(),
                    f["name"].as_str().unwrap_or_default(),
                    f["arguments"].as_str().unwrap_or_default(),
                );
                if choice.is_object() {
                    assert_eq!(got.name, "HassLightSet", "{fam}");
                }
            }
            let content = c["message"]["content"].as_str().unwrap_or_default();
            assert!(
                !content.contains("tool_call") && !content.contains("\"name\""),
                "{fam}: {content:?}"
            );

            // Streamed: id and name first, then argument fragments, reassembled per index.
            let (status, _, body) = send(
                &r.app,
                post("/v1/chat/completions", &request(choice.clone(), true, seed)),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let mut parts: Vec<(String, String, String)> = Vec::new();
            let mut finish = String::new();
            for d in sse_data(&body).iter().filter(|d| *d != "[DONE]") {
                let chunk = json_of(d.as_bytes());
                let ch = &chunk["choices"][0];
                if let Some(f) = ch["finish_reason"].as_str() {
                    finish = f.to_owned();
                }
                for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    let i = tc["index"].as_u64().expect("index") as usize;
                    if i == parts.len() {
                        parts.push((
                            tc["id"].as_str().expect("id first").to_owned(),
                            tc["function"]["name"]
                                .as_str()
                                .expect("name first")
                                .to_owned(),
                            String::new(),
                        ));
                    }
                    if let Some(a) = tc["function"]["arguments"].as_str() {
                        parts[i].2.push_str(a);
                    }
                }
            }
            assert_eq!(finish, "tool_calls", "{fam}");
            assert!(!parts.is_empty(), "{fam}");
            for (id, name, args) in &parts {
                check_call(fam, id, name, args);
            }
        }
    }
}

#[tokio::test]
async fn history_in_both_forms_and_ollama_tools() {
    for (fam, tmpl) in families() {
        let r = rig_for(tmpl.as_deref());
        // OpenAI: the call with an id, then the tool's result naming it.
        let req = json!({"model": "tiny", "tools": tools(), "temperature": 0, "max_tokens": 16,
            "messages": [
                {"role": "user", "content": "Turn on the fan."},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "HassTurnOn", "arguments": "{\"name\": \"fan\", \"domain\": \"switch\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"success\": true}"}]});
        let (status, _, body) = send(&r.app, post("/v1/chat/completions", &req)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{fam}: {}",
            String::from_utf8_lossy(&body)
        );

        // Ollama (Home Assistant's turn): tools, keep_alive, num_ctx, think false; then the call
        // (arguments an object, no id) and the tool result sent back.
        let req = json!({"model": "tiny:latest", "stream": false, "keep_alive": -1.0, "think": false,
            "tools": tools(), "options": {"num_ctx": 1024, "temperature": 1.0, "seed": 4, "num_predict": 120},
            "messages": [{"role": "system", "content": "You control a house."},
                         {"role": "user", "content": "Turn on the fan."}]});
        let (status, _, body) = send(&r.app, post("/api/chat", &req)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{fam}: {}",
            String::from_utf8_lossy(&body)
        );
        let v = json_of(&body);
        for c in v["message"]["tool_calls"].as_array().into_iter().flatten() {
            let f = &c["function"];
            check_call(
                fam,
                c["id"].as_str().unwrap_or_default(),
                f["name"].as_str().unwrap_or_default(),
                &f["arguments"].to_string(),
            );
        }
        let req = json!({"model": "tiny:latest", "stream": true, "tools": tools(),
            "options": {"temperature": 0, "num_predict": 16},
            "messages": [{"role": "user", "content": "Turn on the fan."},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "HassTurnOn",
                    "arguments": {"name": "fan", "domain": "switch"}}}]},
                {"role": "tool", "content": "{\"success\": true}"}]});
        let (status, _, body) = send(&r.app, post("/api/chat", &req)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{fam}: {}",
            String::from_utf8_lossy(&body)
        );
        let last = String::from_utf8_lossy(&body)
            .lines()
            .last()
            .map(str::to_owned)
            .unwrap_or_default();
        assert_eq!(json_of(last.as_bytes())["done"], true, "{fam}");
    }
}

#[tokio::test]
async fn bad_tools_are_400() {
    let r = rig_with(
        EngineConfig {
            n_ctx: 512,
            ..EngineConfig::default()
        },
        Limits::default(),
        None,
        false,
    );
    for (tools, choice) in [
        (json!("nope"), Value::Null),
        (
            json!([{"type": "function", "function": {"description": "no name"}}]),
            Value::Null,
        ),
        (
            tools(),
            json!({"type": "function", "function": {"name": "Undeclared"}}),
        ),
        (Value::Null, json!("required")),
    ] {
        let req = json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                         "tools": tools, "tool_choice": choice});
        let (status, _, body) = send(&r.app, post("/v1/chat/completions", &req)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}
