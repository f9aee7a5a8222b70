//! Router-level tests through `tower::ServiceExt::oneshot`: no socket, no engine (the model is
//! "loading"), so they cover what must work before and around generation: health, auth, body
//! limits, malformed bodies, unknown routes and methods, request ids, metrics.

use super::*;
use axum::body::Body;
use axum::http::{Method, Request as HttpRequest};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn state(max_body: usize) -> AppState {
    AppState {
        loaded: Arc::new(OnceLock::new()),
        metrics: Arc::new(Metrics::new()),
        limits: Limits {
            max_body_bytes: max_body,
            request_timeout: None,
        },
        started: Instant::now(),
    }
}

fn app() -> Router {
    router(state(1 << 20), None)
}

async fn send(app: Router, req: HttpRequest<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.oneshot(req).await.expect("router is infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn post(path: &str, body: impl Into<Body>) -> HttpRequest<Body> {
    HttpRequest::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

fn get(path: &str) -> HttpRequest<Body> {
    HttpRequest::builder()
        .uri(path)
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn health_says_loading_with_503() {
    let (status, headers, body) = send(app(), get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(&body), json!({"status": "loading"}));
    assert!(headers.get("x-request-id").is_some());
}

#[tokio::test]
async fn generation_routes_are_503_while_loading() {
    let chat = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/tokenize",
        "/detokenize",
    ] {
        let body = match path {
            "/v1/completions" => json!({"prompt": "hi"}).to_string(),
            "/tokenize" => json!({"content": "hi"}).to_string(),
            "/detokenize" => json!({"tokens": [1]}).to_string(),
            _ => chat.clone(),
        };
        let (status, _, body) = send(app(), post(path, body)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let v = json_of(&body);
        assert_eq!(v["error"]["type"], "unavailable_error", "{path}");
        assert_eq!(v["error"]["code"], 503, "{path}");
    }
    let (status, _, body) = send(app(), get("/v1/models")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(&body)["error"]["message"].is_string());
}

#[tokio::test]
async fn ollama_routes_answer_in_ollama_shape() {
    let (status, _, body) = send(app(), post("/api/chat", chat_body())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(&body)["error"].is_string());
    let (status, _, body) = send(app(), post("/api/generate", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json_of(&body)["error"].is_string());
    let (status, _, body) = send(app(), get("/api/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["version"], OLLAMA_VERSION_FOR_TESTS);
    let (status, _, body) = send(app(), get("/api/ps")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body), json!({"models": []}));
    let (status, _, body) = send(app(), get("/api/tags")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(&body)["error"].is_string());
    let (status, _, body) = send(app(), get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"Ollama is running");
    let head = HttpRequest::builder()
        .method(Method::HEAD)
        .uri("/")
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = send(app(), head).await;
    assert_eq!(status, StatusCode::OK);
}

const OLLAMA_VERSION_FOR_TESTS: &str = "0.9.0";

fn chat_body() -> String {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test]
async fn malformed_bodies_are_json_400() {
    for body in [
        "",
        "{",
        "[1,2]",
        r#"{"messages": "x"}"#,
        r#"{"temperature": "hot"}"#,
    ] {
        let (status, _, resp) = send(app(), post("/v1/chat/completions", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        let v = json_of(&resp);
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body:?}");
        assert_eq!(v["error"]["code"], 400);
    }
    // No content type at all (curl -d sends a form type; some clients none): still parsed.
    let req = HttpRequest::builder()
        .method(Method::POST)
        .uri("/tokenize")
        .body(Body::from(r#"{"content": 5}"#))
        .expect("request");
    let (status, _, _) = send(app(), req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_body_is_json_413() {
    let app = router(state(64), None);
    let big = json!({"prompt": "x".repeat(200)}).to_string();
    let (status, _, body) = send(app.clone(), post("/v1/completions", big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let v = json_of(&body);
    assert_eq!(v["error"]["code"], 413);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("64"))
    );
    // Also when the length is not announced (chunked body).
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(16)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let req = HttpRequest::builder()
        .method(Method::POST)
        .uri("/api/chat")
        .body(Body::from_stream(stream))
        .expect("request");
    let (status, _, body) = send(app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json_of(&body)["error"].is_string());
}

#[tokio::test]
async fn unknown_route_404_and_wrong_method_405() {
    let (status, _, body) = send(app(), get("/v2/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&body)["error"]["type"], "not_found_error");
    let (status, _, body) = send(app(), get("/v1/chat/completions")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json_of(&body)["error"]["code"], 405);
    let (status, _, _) = send(app(), post("/health", "{}")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn api_key_guards_everything_but_health() {
    let app = router(state(1 << 20), Some("s3cret".into()));
    let (status, _, _) = send(app.clone(), get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE); // not 401
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret"),
        Some("Bearer s3cre"),
    ] {
        let mut req = get("/v1/models");
        if let Some(a) = auth {
            req.headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static(a));
        }
        let (status, headers, body) = send(app.clone(), req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(json_of(&body)["error"]["type"], "authentication_error");
        assert!(headers.get(header::WWW_AUTHENTICATE).is_some());
    }
    let mut req = get("/api/version");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("bearer s3cret"),
    );
    let (status, _, _) = send(app.clone(), req).await;
    assert_eq!(status, StatusCode::OK);
    let mut req = get("/metrics");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer s3cret"),
    );
    let (status, _, _) = send(app, req).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn constant_time_compare() {
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(!ct_eq(b"", b"a"));
    assert!(ct_eq(b"", b""));
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let mut req = get("/api/version");
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("client-42"));
    let (_, headers, _) = send(app(), req).await;
    assert_eq!(headers["x-request-id"], "client-42");
    let mut req = get("/api/version");
    req.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_static("bad id with spaces"),
    );
    let (_, headers, _) = send(app(), req).await;
    let id = headers["x-request-id"].to_str().expect("ascii");
    assert!(id.starts_with("req-"), "{id}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_outcome() {
    let st = state(1 << 20);
    let app = router(st.clone(), None);
    send(app.clone(), get("/health")).await;
    send(app.clone(), post("/v1/chat/completions", "{")).await;
    send(app.clone(), get("/nope")).await;
    let (status, headers, body) = send(app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|c| c.starts_with("application/openmetrics-text"))
    );
    let text = String::from_utf8(body).expect("utf-8");
    for needle in [
        r#"ember_http_requests_total{route="/health",outcome="unavailable"} 1"#,
        r#"ember_http_requests_total{route="/v1/chat/completions",outcome="bad_request"} 1"#,
        r#"ember_http_requests_total{route="other",outcome="bad_request"} 1"#,
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
}
