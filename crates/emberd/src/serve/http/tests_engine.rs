//! Router-level tests with a real engine on the tiny Llama of `tests/data` (Llama 3.1 template),
//! through `tower::ServiceExt::oneshot`: the OpenAI and llama-server routes, streaming and whole
//! answers agreeing, errors that need a model, busy refusals, deadlines, and cancellation when
//! the client goes away. The rig here is shared with `tests_ollama`.

use super::*;
use axum::body::Body;
use axum::http::{Method, Request as HttpRequest};
use ember_engine::generate::GenerateParams;
use ember_engine::sampler::SamplingParams;
use ember_engine::service::{EngineConfig, EngineThread, EventStream, Request as EngineRequest};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub(super) const MODEL: &str = "tiny-llama-f16";

pub(super) struct Rig {
    pub(super) app: Router,
    pub(super) state: AppState,
    pub(super) engine: EngineHandle,
    pub(super) tok: Arc<Tokenizer>,
    _thread: EngineThread,
}

pub(super) fn rig_with(
    cfg: EngineConfig,
    limits: Limits,
    template: Option<&str>,
    reasoning: bool,
) -> Rig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/models/tiny-llama-f16.gguf");
    let file = ember_gguf::GgufFile::open(&path).expect("tiny model");
    let tok = Arc::new(Tokenizer::from_gguf(file.metadata()).expect("tokenizer"));
    let template = match template {
        Some(src) => ChatTemplate::new(src).expect("template"),
        None => crate::model::chat_template(Some(&file), None).expect("model template"),
    };
    let model = ember_model::Model::load(&file, &burn::tensor::Device::flex()).expect("model");
    let (engine, thread) =
        ember_engine::service::spawn(model, Arc::clone(&tok), cfg).expect("engine");
    let loaded = Loaded {
        engine: engine.clone(),
        tokenizer: Arc::clone(&tok),
        template: Some(Arc::new(template)),
        model_id: MODEL.into(),
        aliases: vec!["tiny".into()],
        model_path: path,
        model_bytes: 6_733_120,
        family: "llama".into(),
        quant: "F16".into(),
        n_params: 3_000_000,
        reasoning,
        constraints: OnceLock::new(),
    };
    let state = AppState {
        loaded: Arc::new(OnceLock::new()),
        metrics: Arc::new(Metrics::new()),
        limits,
        started: Instant::now(),
    };
    state.loaded.set(loaded).expect("set once");
    Rig {
        app: router(state.clone(), None),
        state,
        engine,
        tok,
        _thread: thread,
    }
}

pub(super) fn rig() -> Rig {
    let cfg = EngineConfig {
        n_ctx: 256,
        ..EngineConfig::default()
    };
    rig_with(cfg, Limits::default(), None, false)
}

pub(super) async fn send(app: &Router, req: HttpRequest<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body.to_vec())
}

pub(super) fn post(path: &str, body: &Value) -> HttpRequest<Body> {
    HttpRequest::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub(super) fn get(path: &str) -> HttpRequest<Body> {
    HttpRequest::builder()
        .uri(path)
        .body(Body::empty())
        .expect("request")
}

pub(super) fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The `data:` payloads of an SSE body.
pub(super) fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

pub(super) fn chat_req(stream: bool) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}],
           "temperature": 0, "max_tokens": 12, "stream": stream,
           "stream_options": {"include_usage": true}})
}

/// A `logit_bias` banning every end-of-generation token, so generation runs to its budget.
pub(super) fn ban_eog(tok: &Tokenizer) -> Value {
    let map: serde_json::Map<String, Value> = tok
        .eog_ids()
        .iter()
        .map(|id| (id.to_string(), Value::Bool(false)))
        .collect();
    Value::Object(map)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn chat_whole_and_streamed_agree() {
    let r = rig();
    let (status, headers, body) =
        send(&r.app, post("/v1/chat/completions", &chat_req(false))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(headers.get("x-request-id").is_some());
    let v = json_of(&body);
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(v["model"], MODEL);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let whole = choice["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned();
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap_or("")));
    let u = &v["usage"];
    let (p, c) = (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64());
    assert!(
        p.is_some_and(|p| p > 10) && c.is_some_and(|c| (1..=12).contains(&c)),
        "{u}"
    );
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(p.unwrap_or(0) + c.unwrap_or(0))
    );
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
    for k in [
        "prompt_n",
        "prompt_ms",
        "predicted_n",
        "predicted_ms",
        "prompt_per_second",
        "predicted_per_second",
    ] {
        assert!(v["timings"][k].is_number(), "timings.{k}");
    }

    let (status, headers, body) = send(&r.app, post("/v1/chat/completions", &chat_req(true))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/event-stream"))
    );
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| json_of(d.as_bytes()))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"].as_u64(), c);
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], choice["finish_reason"]);
    assert!(last["timings"]["predicted_n"].is_u64());
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed, whole,
        "greedy: the stream says what the whole answer says"
    );
}

#[tokio::test]
async fn completions_text_and_token_ids() {
    let r = rig();
    let (status, _, body) = send(
        &r.app,
        post(
            "/tokenize",
            &json!({"content": "The sky is", "add_special": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ids = json_of(&body)["tokens"].clone();
    assert!(ids.as_array().is_some_and(|a| a.len() >= 3));
    let mut answers = Vec::new();
    for prompt in [json!("The sky is"), ids] {
        let req =
            json!({"prompt": prompt, "temperature": 0, "max_tokens": 6, "model": "tiny:latest"});
        let (status, _, body) = send(&r.app, post("/v1/completions", &req)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v = json_of(&body);
        assert_eq!(v["object"], "text_completion");
        answers.push(v["choices"][0]["text"].clone());
    }
    assert_eq!(answers[0], answers[1]);
    let req = json!({"prompt": "The sky is", "temperature": 0, "max_tokens": 6, "stream": true});
    let (_, _, body) = send(&r.app, post("/v1/completions", &req)).await;
    let data = sse_data(&body);
    let text: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            json_of(d.as_bytes())["choices"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(Some(text.as_str()), answers[0].as_str());
}

#[tokio::test]
async fn tokenize_and_detokenize() {
    let r = rig();
    let (status, _, body) = send(
        &r.app,
        post(
            "/tokenize",
            &json!({"content": "Hello world", "with_pieces": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let toks = json_of(&body)["tokens"].clone();
    let pieces: String = toks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["piece"].as_str())
        .collect();
    assert_eq!(pieces, "Hello world");
    let ids: Vec<u32> = r.tok.encode("Hello world", false, true);
    let (status, _, body) = send(&r.app, post("/detokenize", &json!({"tokens": ids}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["content"], "Hello world");
    for bad in [
        json!({"tokens": [999_999_999]}),
        json!({"tokens": [-1]}),
        json!({"tokens": "x"}),
    ] {
        let (status, _, body) = send(&r.app, post("/detokenize", &bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(json_of(&body)["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn client_errors_need_a_model() {
    let r = rig();
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": msgs}),
            404,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "n": 2}),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "top_p": 2.0}),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "logit_bias": {"99999999": 1}}),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "stop": 5}),
            400,
        ),
        ("/v1/chat/completions", json!({"messages": []}), 400),
        ("/v1/chat/completions", json!({"prompt": "x"}), 400),
        (
            "/v1/completions",
            json!({"prompt": "word ".repeat(400)}),
            400,
        ),
        ("/v1/completions", json!({"prompt": [1, 99_999_999]}), 400),
        ("/v1/completions", json!({"prompt": []}), 400),
    ];
    for (path, body, want) in cases {
        let (status, _, resp) = send(&r.app, post(path, &body)).await;
        assert_eq!(
            status.as_u16(),
            want,
            "{path} {body}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(json_of(&resp)["error"]["message"].is_string());
    }
    let (status, _, resp) = send(
        &r.app,
        post(
            "/api/chat",
            &json!({"model": "llama3:8b", "messages": msgs}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json_of(&resp)["error"].is_string());
    // Still serving after all of these.
    let (status, _, _) = send(&r.app, post("/v1/chat/completions", &chat_req(false))).await;
    assert_eq!(status, StatusCode::OK);
}

/// A long greedy request submitted straight to the engine (end-of-generation banned).
fn long_request(r: &Rig) -> EventStream {
    let sampling = SamplingParams {
        temperature: 0.0,
        logit_bias: r
            .tok
            .eog_ids()
            .iter()
            .map(|&id| (id, f32::NEG_INFINITY))
            .collect(),
        ..SamplingParams::default()
    };
    let prompt = r.tok.encode("Once upon a time", true, true);
    let params = GenerateParams {
        max_tokens: 4000,
        sampling,
        stop: Vec::new(),
        logits_top: 0,
        constraint: None,
    };
    r.engine
        .submit(EngineRequest {
            prompt,
            params,
            deadline: None,
            start_by: None,
        })
        .expect("submitted")
}

#[tokio::test]
async fn busy_is_503_with_retry_after() {
    let cfg = EngineConfig {
        n_ctx: 4096,
        slots: 1,
        queue: 1,
        ..EngineConfig::default()
    };
    let r = rig_with(cfg, Limits::default(), None, false);
    let _first = long_request(&r);
    wait_until("first request active", || r.engine.stats().active == 1).await;
    let _second = long_request(&r);
    let (status, headers, body) =
        send(&r.app, post("/v1/chat/completions", &chat_req(false))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let secs: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=5).contains(&secs));
    assert_eq!(json_of(&body)["error"]["type"], "server_busy");
    let (status, headers, body) = send(&r.app, post("/api/chat", &chat_req(false))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get(header::RETRY_AFTER).is_some());
    assert!(json_of(&body)["error"].is_string());
}

#[tokio::test]
async fn dropped_stream_frees_the_slot() {
    let cfg = EngineConfig {
        n_ctx: 4096,
        ..EngineConfig::default()
    };
    let r = rig_with(cfg, Limits::default(), None, false);
    let req = json!({"messages": [{"role": "user", "content": "Tell me a story"}], "stream": true,
                     "max_tokens": 4000, "logit_bias": ban_eog(&r.tok), "temperature": 0});
    let resp = r
        .app
        .clone()
        .oneshot(post("/v1/chat/completions", &req))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    for _ in 0..3 {
        body.frame().await.expect("a frame").expect("no error");
    }
    assert_eq!(r.engine.stats().active, 1);
    drop(body); // the client goes away
    wait_until("slot freed", || r.engine.stats().active == 0).await;
    let text = r.state.metrics.render();
    assert!(
        text.contains(r#"route="/v1/chat/completions",outcome="cancelled"} 1"#),
        "{text}"
    );

    // The same for a whole (non-streamed) answer: hyper drops the handler future.
    let mut req = req;
    req["stream"] = false.into();
    let app = r.app.clone();
    let task = tokio::spawn(async move { app.oneshot(post("/v1/chat/completions", &req)).await });
    wait_until("second request active", || r.engine.stats().active == 1).await;
    task.abort();
    wait_until("slot freed again", || r.engine.stats().active == 0).await;
}

#[tokio::test]
async fn deadline_passed_in_queue_is_a_timeout() {
    let limits = Limits {
        request_timeout: Some(Duration::ZERO),
        ..Limits::default()
    };
    let cfg = EngineConfig {
        n_ctx: 256,
        ..EngineConfig::default()
    };
    let r = rig_with(cfg, limits, None, false);
    let (status, _, body) = send(&r.app, post("/v1/chat/completions", &chat_req(false))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(r.state.metrics.render().contains(r#"outcome="timeout"} 1"#));
}

#[tokio::test]
async fn metrics_after_a_generation() {
    let r = rig();
    send(&r.app, post("/v1/chat/completions", &chat_req(false))).await;
    let (_, _, body) = send(&r.app, get("/metrics")).await;
    let text = String::from_utf8_lossy(&body);
    for needle in [
        r#"ember_http_requests_total{route="/v1/chat/completions",outcome="ok"} 1"#,
        "ember_time_to_first_token_seconds_count 1",
        "ember_active_slots 0",
        "ember_queue_depth 0",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    assert!(!text.contains("ember_generated_tokens_total 0\n"));
}
