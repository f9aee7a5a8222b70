//! Router-level tests of the Ollama routes and of reasoning-model output with a real engine (the
//! rig of `tests_engine`): NDJSON streaming agreeing with whole answers, load-only replies,
//! `tags`/`show`/`ps`, and `<think>` text going to `reasoning_content` / `thinking`.

use super::tests_engine::{
    MODEL, ban_eog, chat_req, get, json_of, post, rig, rig_with, send, sse_data,
};
use super::*;
use ember_engine::service::EngineConfig;
use serde_json::{Value, json};

#[tokio::test]
async fn ollama_chat_streamed_and_whole() {
    let r = rig();
    let req = json!({"model": "tiny:latest", "messages": [{"role": "user", "content": "Hi"}],
                     "options": {"temperature": 0, "num_predict": 10}});
    let (status, headers, body) = send(&r.app, post("/api/chat", &req)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .map(|l| json_of(l.as_bytes()))
        .collect();
    let last = lines.last().expect("final line");
    assert_eq!(last["done"], true);
    assert!(["stop", "length"].contains(&last["done_reason"].as_str().unwrap_or("")));
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(last[k].is_u64(), "{k}");
    }
    assert!(
        lines
            .iter()
            .all(|l| l["model"] == "tiny:latest" && l["created_at"].is_string())
    );
    let streamed: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    let mut whole_req = req.clone();
    whole_req["stream"] = false.into();
    let (status, _, body) = send(&r.app, post("/api/chat", &whole_req)).await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert_eq!(v["done"], true);
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(v["message"]["content"].as_str(), Some(streamed.as_str()));
}

#[tokio::test]
async fn ollama_generate_tags_show_ps() {
    let r = rig();
    let (_, _, body) = send(&r.app, post("/api/generate", &json!({"model": MODEL}))).await;
    let v = json_of(&body);
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    let req = json!({"model": MODEL, "prompt": "Say hi", "system": "Be brief", "stream": false,
                     "options": {"temperature": 0, "num_predict": 5}});
    let (status, _, body) = send(&r.app, post("/api/generate", &req)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(json_of(&body)["response"].is_string());
    let raw = json!({"model": MODEL, "prompt": "The sky is", "raw": true, "options": {"temperature": 0, "num_predict": 5}});
    let (status, _, body) = send(&r.app, post("/api/generate", &raw)).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .map(|l| json_of(l.as_bytes()))
        .collect();
    assert!(
        lines
            .last()
            .is_some_and(|l| l["done"] == true && l["eval_count"].is_u64())
    );

    let (status, _, body) = send(&r.app, get("/api/tags")).await;
    assert_eq!(status, StatusCode::OK);
    let m = &json_of(&body)["models"][0];
    assert_eq!(m["name"], "tiny-llama-f16:latest");
    assert_eq!(m["details"]["format"], "gguf");
    assert_eq!(m["details"]["parameter_size"], "3M");
    assert!(m["digest"].as_str().is_some_and(|d| d.len() == 64));
    let (status, _, body) = send(
        &r.app,
        post("/api/show", &json!({"model": "tiny-llama-f16:latest"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert!(
        v["template"]
            .as_str()
            .is_some_and(|t| t.contains("start_header_id"))
    );
    assert_eq!(v["capabilities"], json!(["completion"]));
    assert_eq!(v["model_info"]["llama.context_length"], 256);
    let (status, _, _) = send(&r.app, post("/api/show", &json!({"model": "other"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, body) = send(&r.app, get("/api/ps")).await;
    assert_eq!(json_of(&body)["models"][0]["name"], "tiny-llama-f16:latest");
    let (status, _, body) = send(&r.app, get("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["data"][0]["id"], MODEL);
    let (status, _, body) = send(&r.app, get("/health")).await;
    assert_eq!(
        (status, json_of(&body)),
        (StatusCode::OK, json!({"status": "ok"}))
    );
}

/// A template that opens a think block, as DeepSeek-R1 distills' do: everything the model says
/// is then reasoning (the block never closes in 8 tokens of a tiny random model).
const THINK_TEMPLATE: &str = "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n\
{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant\
<|end_header_id|>\n\n<think>\n{% endif %}";

#[tokio::test]
async fn reasoning_goes_to_its_own_field() {
    let cfg = EngineConfig {
        n_ctx: 256,
        ..EngineConfig::default()
    };
    let r = rig_with(cfg, Limits::default(), Some(THINK_TEMPLATE), true);
    let mut req = chat_req(false);
    req["logit_bias"] = ban_eog(&r.tok);
    req["stop"] = json!("</think>"); // the tiny model must not close it by chance
    let (status, _, body) = send(&r.app, post("/v1/chat/completions", &req)).await;
    assert_eq!(status, StatusCode::OK);
    let msg = json_of(&body)["choices"][0]["message"].clone();
    assert_eq!(msg["content"], "");
    let thought = msg["reasoning_content"]
        .as_str()
        .expect("reasoning")
        .to_owned();
    assert!(!thought.is_empty());
    req["stream"] = true.into();
    let (_, _, body) = send(&r.app, post("/v1/chat/completions", &req)).await;
    let data = sse_data(&body);
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| json_of(d.as_bytes()))
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(streamed, thought);
    assert!(chunks.iter().all(|c| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
    }));
    // Ollama: `thinking`, left out with `think: false`.
    let ollama = json!({"messages": [{"role": "user", "content": "Hello there"}], "stream": false,
                        "options": {"temperature": 0, "num_predict": 12, "stop": ["</think>"]}});
    let (_, _, body) = send(&r.app, post("/api/chat", &ollama)).await;
    let v = json_of(&body);
    assert!(
        v["message"]["thinking"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    let mut no_think = ollama.clone();
    no_think["think"] = false.into();
    let (_, _, body) = send(&r.app, post("/api/chat", &no_think)).await;
    assert!(json_of(&body)["message"].get("thinking").is_none());
}
