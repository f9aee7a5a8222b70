//! Structured output through the routes, with a real engine on a random-weight model (it babbles:
//! only the mask makes its answers valid): OpenAI `response_format` json_schema whole and streamed,
//! llama-server `json_schema` and `grammar`, Ollama `format`; a schema or grammar llguidance refuses
//! is a 400 with its reason; a budget that ends inside the value says `length`.

use super::tests_engine::{MODEL, json_of, post, rig, send, sse_data};
use super::*;
use serde_json::{Value, json};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "room": {"type": "string", "enum": ["kitchen", "hall"]},
            "on": {"type": "boolean"},
            "level": {"type": "integer", "minimum": 1, "maximum": 9}
        },
        "required": ["room", "on", "level"],
        "additionalProperties": false
    })
}

fn check(content: &str) {
    let v: Value = serde_json::from_str(content)
        .unwrap_or_else(|e| panic!("content is not JSON ({e}): {content:?}"));
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 3, "{content}");
    assert!(["kitchen", "hall"].contains(&o["room"].as_str().expect("room")));
    assert!(o["on"].is_boolean());
    assert!((1..=9).contains(&o["level"].as_i64().expect("level")));
}

fn chat(extra: Value) -> Value {
    let mut v = json!({"model": MODEL, "messages": [{"role": "user", "content": "Lights?"}],
                       "temperature": 1.0, "seed": 5, "max_tokens": 60});
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    v
}

#[tokio::test]
async fn openai_json_schema_whole_and_streamed() {
    let r = rig();
    let rf = json!({"response_format": {"type": "json_schema",
        "json_schema": {"name": "lights", "schema": schema(), "strict": true}}});
    let (status, _, body) = send(&r.app, post("/v1/chat/completions", &chat(rf.clone()))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v = json_of(&body);
    check(
        v["choices"][0]["message"]["content"]
            .as_str()
            .expect("content"),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(
        v["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n > 5)
    );

    let mut req = chat(rf);
    req["stream"] = true.into();
    let (status, _, body) = send(&r.app, post("/v1/chat/completions", &req)).await;
    assert_eq!(status, StatusCode::OK);
    let mut text = String::new();
    for d in sse_data(&body).iter().filter(|d| *d != "[DONE]") {
        let c = json_of(d.as_bytes());
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    check(&text);
}

#[tokio::test]
async fn llama_server_fields_and_ollama_format() {
    let r = rig();
    let (status, _, body) = send(
        &r.app,
        post(
            "/v1/chat/completions",
            &chat(json!({"json_schema": schema()})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    check(
        json_of(&body)["choices"][0]["message"]["content"]
            .as_str()
            .expect("content"),
    );

    let g = json!({"prompt": "Answer:", "grammar": "start: (\"yes\" | \"no\") \"!\"",
                   "temperature": 1.0, "max_tokens": 20});
    let (status, _, body) = send(&r.app, post("/v1/completions", &g)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let text = json_of(&body)["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(text == "yes!" || text == "no!", "{text:?}");

    let req = json!({"model": "tiny:latest", "messages": [{"role": "user", "content": "Lights?"}],
                     "stream": false, "format": schema(),
                     "options": {"temperature": 1.0, "seed": 3, "num_predict": 60}});
    let (status, _, body) = send(&r.app, post("/api/chat", &req)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v = json_of(&body);
    check(v["message"]["content"].as_str().expect("content"));
    assert!(v["eval_count"].as_u64().is_some_and(|n| n > 5));
    // `"json"` bounds nothing (keys and strings may be any length): a babbling model may run out
    // of budget inside a string, which must then say `length`; a finished answer is an object.
    let req = json!({"model": "tiny:latest", "prompt": "Lights?", "stream": false, "format": "json",
                     "options": {"num_predict": 60}});
    let (status, _, body) = send(&r.app, post("/api/generate", &req)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v = json_of(&body);
    let resp = v["response"].as_str().expect("response").to_owned();
    assert!(resp.starts_with('{'), "{resp:?}");
    match v["done_reason"].as_str() {
        Some("stop") => {
            let o: Value = serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{e}: {resp:?}"));
            assert!(o.is_object());
        }
        other => assert_eq!(other, Some("length"), "{resp:?}"),
    }
}

#[tokio::test]
async fn refused_grammars_are_400_and_a_cut_value_is_length() {
    let r = rig();
    for extra in [
        json!({"grammar": "start: undefined_rule"}),
        json!({"json_schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}}),
        json!({"response_format": {"type": "xml"}}),
        json!({"response_format": {"type": "json_object"}, "grammar": "start: \"a\""}),
    ] {
        let (status, _, body) =
            send(&r.app, post("/v1/chat/completions", &chat(extra.clone()))).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{extra}: {}",
            String::from_utf8_lossy(&body)
        );
        let msg = json_of(&body)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!msg.is_empty(), "{extra}");
    }
    let req = json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                     "stream": false, "format": "yaml"});
    let (status, _, _) = send(&r.app, post("/api/chat", &req)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut req = chat(json!({"json_schema": schema()}));
    req["max_tokens"] = 3.into();
    let (status, _, body) = send(&r.app, post("/v1/chat/completions", &req)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["choices"][0]["finish_reason"], "length");
}
