//! End-to-end tests of `emberd serve`: the real binary on a real Unix socket (and TCP), driven by
//! a real HTTP client (hyper) and by curl. Greedy answers are checked against llama.cpp's
//! reference outputs; the rest checks the daemon's promises: busy → 503 + Retry-After, 4xx JSON
//! errors that leave it serving, a disconnect that frees the slot, socket permissions and stale
//! sockets, SIGTERM drain.
#![allow(clippy::unwrap_used)]

use ember_tests::{emberd, model_path, reference};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// The model the exact-text tests use: a tiny Qwen2 with the DeepSeek-R1 chat template (the
/// answer starts inside `<think>`), whose greedy output llama.cpp recorded.
const MODEL: &str = "tiny-qwen2-q4_0";

/// A running `emberd serve`, killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(model: &Path, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ember.sock");
        Daemon::start_at(model, &socket, extra, dir)
    }

    fn start_at(model: &Path, socket: &Path, extra: &[&str], dir: tempfile::TempDir) -> Daemon {
        let child = spawn_serve(model, socket, extra);
        let d = Daemon {
            child,
            socket: socket.to_owned(),
            _dir: dir,
        };
        d.wait_healthy();
        d
    }

    fn wait_healthy(&self) {
        let t0 = Instant::now();
        loop {
            if let Ok(r) = rt().block_on(get(&self.socket, "/health"))
                && r.0 == StatusCode::OK
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "emberd serve did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(model: &Path, socket: &Path, extra: &[&str]) -> Child {
    Command::new(emberd())
        .args(["serve", "--model"])
        .arg(model)
        .arg("--socket")
        .arg(socket)
        .args(["--threads", "1"])
        .args(extra)
        .env("EMBER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends one request on a fresh connection; returns the response with its body still streaming.
async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> std::io::Result<Response<Incoming>> {
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .map_err(std::io::Error::other)
}

async fn collect(r: Response<Incoming>) -> (StatusCode, hyper::HeaderMap, Vec<u8>) {
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

async fn get(
    socket: &Path,
    path: &str,
) -> std::io::Result<(StatusCode, hyper::HeaderMap, Vec<u8>)> {
    Ok(collect(send(socket, "GET", path, &[], Vec::new()).await?).await)
}

async fn post(socket: &Path, path: &str, body: &Value) -> (StatusCode, hyper::HeaderMap, Value) {
    let (s, h, b) = collect(
        send(socket, "POST", path, &[], serde_json::to_vec(body).unwrap())
            .await
            .unwrap(),
    )
    .await;
    let v = serde_json::from_slice(&b).unwrap_or_else(|e| {
        panic!(
            "{path}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&b)
        )
    });
    (s, h, v)
}

/// The text llama.cpp generated for `record`, without the end-of-generation token it rendered.
fn expected_text(record: &Value) -> String {
    let text = record["greedy_text"].as_str().unwrap().to_owned();
    assert_eq!(
        record["stop"], "length",
        "records ending in EOG need the EOG text removed"
    );
    text
}

fn chat_body(record: &Value, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": record["messages"],
        "max_tokens": record["greedy_ids"].as_array().unwrap().len(),
        "temperature": 0,
        "stream": stream,
    })
}

/// The answer text of a non-streamed chat completion, split as llama-server splits it.
fn message(v: &Value) -> (String, String) {
    let m = &v["choices"][0]["message"];
    (
        m["reasoning_content"].as_str().unwrap_or("").to_owned(),
        m["content"].as_str().unwrap_or("").to_owned(),
    )
}

/// How llama-server (`--reasoning-format deepseek`) splits a raw answer that starts inside the
/// think block opened by the prompt: the reasoning trimmed, the answer without leading space.
fn split(raw: &str) -> (String, String) {
    match raw.split_once("</think>") {
        Some((r, c)) => (r.trim().to_owned(), c.trim_start().to_owned()),
        None => (raw.trim().to_owned(), String::new()),
    }
}

/// Compares a reasoning model's answer (reasoning, content) with llama.cpp's raw text.
fn assert_split(reasoning: &str, content: &str, raw: &str, what: &str) {
    let (r, c) = split(raw);
    assert_eq!((reasoning, content), (r.as_str(), c.as_str()), "{what}");
}

/// Reads an SSE body to `[DONE]`: the reassembled (reasoning, content) and the events.
async fn read_sse(r: Response<Incoming>) -> ((String, String), Vec<Value>) {
    let (_, _, body) = collect(r).await;
    let text = String::from_utf8(body).unwrap();
    let mut events = Vec::new();
    let (mut reasoning, mut content) = (String::new(), String::new());
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        assert!(!done, "data after [DONE]");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(d) = v["choices"][0]["delta"].as_object() {
            reasoning.push_str(
                d.get("reasoning_content")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
            content.push_str(d.get("content").and_then(Value::as_str).unwrap_or(""));
        }
        events.push(v);
    }
    assert!(done, "the stream did not end with data: [DONE]: {text}");
    ((reasoning, content), events)
}

#[test]
fn eight_concurrent_chats_return_llama_cpp_greedy_text_streamed_or_not() {
    let d = Daemon::start(&model_path(MODEL), &["--slots", "4", "--queue", "8"]);
    let records: Vec<Value> = reference(MODEL)
        .into_iter()
        .filter(|r| r["kind"] == "chat")
        .collect();
    assert!(records.len() >= 7);
    let rt = rt();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let record = records[i % records.len()].clone();
            let socket = d.socket.clone();
            let stream = i % 2 == 1;
            // Half of them without the reasoning split: the raw text, exactly.
            let raw = i % 4 < 2;
            tasks.push(tokio::spawn(async move {
                let mut body = chat_body(&record, stream);
                if raw {
                    body["reasoning_format"] = json!("none");
                }
                let body = serde_json::to_vec(&body).unwrap();
                let r = send(&socket, "POST", "/v1/chat/completions", &[], body)
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let (reasoning, content) = if stream {
                    assert_eq!(r.headers()["content-type"], "text/event-stream");
                    let (got, events) = read_sse(r).await;
                    let last = events
                        .iter()
                        .rev()
                        .find(|e| e["choices"][0]["finish_reason"].is_string());
                    assert_eq!(last.unwrap()["choices"][0]["finish_reason"], "length");
                    got
                } else {
                    let (_, _, b) = collect(r).await;
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    assert_eq!(v["choices"][0]["finish_reason"], "length");
                    assert_eq!(
                        v["usage"]["completion_tokens"],
                        record["greedy_ids"].as_array().unwrap().len()
                    );
                    assert_eq!(
                        v["usage"]["prompt_tokens"],
                        record["prompt_ids"].as_array().unwrap().len()
                    );
                    message(&v)
                };
                let what = format!("request {i} (stream: {stream}, raw: {raw})");
                if raw {
                    assert_eq!(
                        (reasoning.as_str(), content.as_str()),
                        ("", expected_text(&record).as_str()),
                        "{what}"
                    );
                } else {
                    assert_split(&reasoning, &content, &expected_text(&record), &what);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn completions_ollama_and_tokenize_routes_answer_like_their_peers() {
    let d = Daemon::start(&model_path(MODEL), &["--slots", "2"]);
    let raw = reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "raw")
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        let n = raw["greedy_ids"].as_array().unwrap().len();
        // /v1/completions on the exact prompt text (BOS as llama.cpp adds it).
        let (s, _, v) = post(
            &d.socket,
            "/v1/completions",
            &json!({"prompt": raw["prompt"], "max_tokens": n, "temperature": 0}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["choices"][0]["text"], raw["greedy_text"]);
        // /tokenize gives llama.cpp's ids (the BOS is added with add_special).
        let (s, _, v) = post(
            &d.socket,
            "/tokenize",
            &json!({"content": raw["prompt"], "add_special": raw["add_bos"]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["tokens"], raw["prompt_ids"]);
        let (s, _, v) = post(
            &d.socket,
            "/detokenize",
            &json!({"tokens": raw["greedy_ids"]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["content"], raw["greedy_text"]);
        // The models lists name the loaded model.
        let (s, _, b) = get(&d.socket, "/v1/models").await.unwrap();
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["data"][0]["id"], MODEL);
        let (_, _, b) = get(&d.socket, "/api/tags").await.unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(v["models"][0]["name"].as_str().unwrap().starts_with(MODEL));
        let (s, _, b) = get(&d.socket, "/api/version").await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert!(serde_json::from_slice::<Value>(&b).unwrap()["version"].is_string());
    });
    // Ollama /api/chat streams NDJSON (stream defaults to true), driven by curl.
    let chat = reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "chat")
        .unwrap();
    let body = json!({
        "model": MODEL,
        "messages": chat["messages"],
        "options": {"temperature": 0, "num_predict": chat["greedy_ids"].as_array().unwrap().len()},
    });
    let out = curl(
        &d.socket,
        &[
            "-X",
            "POST",
            "http://localhost/api/chat",
            "-d",
            &body.to_string(),
        ],
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "length");
    assert!(last["eval_count"].as_u64().unwrap() > 0);
    let (mut thinking, mut content) = (String::new(), String::new());
    for l in &lines {
        thinking.push_str(l["message"]["thinking"].as_str().unwrap_or(""));
        content.push_str(l["message"]["content"].as_str().unwrap_or(""));
    }
    assert_split(
        &thinking,
        &content,
        &expected_text(&chat),
        "ollama /api/chat",
    );
}

fn curl(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--unix-socket"])
        .arg(socket)
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The Prometheus value of `name` (a sample line starting with it), summed over its labels.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn busy_gets_503_with_retry_after_bad_requests_get_4xx_json_and_the_daemon_keeps_serving() {
    let d = Daemon::start(
        &model_path(MODEL),
        &[
            "--slots",
            "1",
            "--queue",
            "1",
            "--ctx-size",
            "4096",
            "--max-body-bytes",
            "65536",
        ],
    );
    let chat = reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "chat")
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        // One long streaming request holds the slot, one waits in the queue...
        let mut long = chat_body(&chat, true);
        long["max_tokens"] = json!(3000);
        let holder = send(&d.socket, "POST", "/v1/chat/completions", &[], serde_json::to_vec(&long).unwrap())
            .await
            .unwrap();
        assert_eq!(holder.status(), StatusCode::OK);
        let mut holder = holder.into_body();
        holder.frame().await.unwrap().unwrap();
        // The first SSE frame can precede the engine taking the job: wait until it holds the slot
        // (on a loaded machine the holder may otherwise still sit in the queue).
        let t0 = Instant::now();
        loop {
            let (_, _, m) = get(&d.socket, "/metrics").await.unwrap();
            let m = String::from_utf8(m).unwrap();
            if metric(&m, "ember_active_slots", "") >= 1.0 && metric(&m, "ember_queue_depth", "") == 0.0 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "the first request never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting = tokio::spawn({
            let socket = d.socket.clone();
            let body = serde_json::to_vec(&chat_body(&chat, false)).unwrap();
            async move { collect(send(&socket, "POST", "/v1/chat/completions", &[], body).await.unwrap()).await }
        });
        let t0 = Instant::now();
        loop {
            let (_, _, m) = get(&d.socket, "/metrics").await.unwrap();
            if metric(&String::from_utf8(m).unwrap(), "ember_queue_depth", "") >= 1.0 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "the second request never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The depth counts a request just before it enters the queue: let it get there.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so the next is refused at once.
        let (s, h, v) = post(&d.socket, "/v1/chat/completions", &chat_body(&chat, false)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        assert!(v["error"]["message"].as_str().unwrap().contains("busy"), "{v}");
        // The holder disconnects: the waiting request runs and gets the reference answer.
        drop(holder);
        let (s, _, b) = waiting.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        let (r, c) = message(&serde_json::from_slice(&b).unwrap());
        assert_split(&r, &c, &expected_text(&chat), "the queued request");

        // Malformed JSON, a wrong type, an oversized body, an unknown model, a prompt over the
        // context: 4xx with a JSON error each.
        for (body, want) in [
            (b"{\"messages\": [".to_vec(), StatusCode::BAD_REQUEST),
            (br#"{"messages": "hi"}"#.to_vec(), StatusCode::BAD_REQUEST),
            (vec![b' '; 70_000], StatusCode::PAYLOAD_TOO_LARGE),
            (
                serde_json::to_vec(&json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})).unwrap(),
                StatusCode::NOT_FOUND,
            ),
            (
                serde_json::to_vec(&json!({"messages": [{"role": "user", "content": "word ".repeat(6000)}]})).unwrap(),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let (s, _, b) = collect(send(&d.socket, "POST", "/v1/chat/completions", &[], body).await.unwrap()).await;
            assert_eq!(s, want, "{}", String::from_utf8_lossy(&b));
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        let (s, _, b) = get(&d.socket, "/no/such/route").await.unwrap();
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(serde_json::from_slice::<Value>(&b).is_ok());
        // Still serving, and the metrics counted the outcomes.
        let (s, _, v) = post(&d.socket, "/v1/chat/completions", &chat_body(&chat, false)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, _, m) = get(&d.socket, "/metrics").await.unwrap();
        let m = String::from_utf8(m).unwrap();
        let chat_route = |outcome: &str| {
            metric(&m, "ember_http_requests_total", &format!("route=\"/v1/chat/completions\",outcome=\"{outcome}\""))
        };
        assert_eq!(chat_route("busy"), 1.0, "{m}");
        assert_eq!(chat_route("ok"), 2.0, "{m}");
        assert_eq!(chat_route("cancelled"), 1.0, "{m}");
        assert!(m.contains("ember_time_to_first_token_seconds_bucket"), "{m}");
    });
}

#[test]
fn a_client_disconnect_frees_the_slot_mid_generation_and_mid_prefill() {
    let d = Daemon::start(
        &model_path(MODEL),
        &[
            "--slots",
            "1",
            "--ctx-size",
            "8192",
            "--prefill-chunk",
            "16",
        ],
    );
    let chat = reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "chat")
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        // Mid-generation: read one chunk of a long stream, hang up.
        let mut long = chat_body(&chat, true);
        long["max_tokens"] = json!(8000);
        let r = send(
            &d.socket,
            "POST",
            "/v1/chat/completions",
            &[],
            serde_json::to_vec(&long).unwrap(),
        )
        .await
        .unwrap();
        let mut body = r.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        let t0 = Instant::now();
        let (s, _, v) = post(&d.socket, "/v1/chat/completions", &chat_body(&chat, false)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the slot was not freed"
        );

        // Mid-prefill: a long prompt, non-streaming; the client hangs up right after sending.
        let (_, _, m) = get(&d.socket, "/metrics").await.unwrap();
        let before = metric(
            &String::from_utf8(m).unwrap(),
            "ember_prompt_tokens_total",
            "",
        );
        let unit = "alpha beta gamma delta ";
        let (_, _, v) = post(&d.socket, "/tokenize", &json!({"content": unit.repeat(10)})).await;
        let per_10 = v["tokens"].as_array().unwrap().len();
        let n_prompt = 6000 / per_10 * per_10;
        let big = json!({"prompt": unit.repeat(n_prompt / per_10 * 10), "max_tokens": 4});
        let fut = send(
            &d.socket,
            "POST",
            "/v1/completions",
            &[],
            serde_json::to_vec(&big).unwrap(),
        );
        let _ = tokio::time::timeout(Duration::from_millis(150), fut).await;
        // The next request is served, and the long prompt was not prefilled to its end.
        let (s, _, v) = post(&d.socket, "/v1/chat/completions", &chat_body(&chat, false)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, _, m) = get(&d.socket, "/metrics").await.unwrap();
        let m = String::from_utf8(m).unwrap();
        let prefilled = metric(&m, "ember_prompt_tokens_total", "") - before;
        assert!(
            prefilled < 0.9 * n_prompt as f64,
            "the cancelled prompt of {n_prompt} tokens was prefilled: {prefilled} tokens"
        );
        // Both hang-ups were counted as cancellations (not as bad requests).
        assert_eq!(
            metric(&m, "ember_http_requests_total", "outcome=\"cancelled\""),
            2.0,
            "{m}"
        );
        assert!(prefilled > 0.0, "the long prompt never started");
    });
}

#[test]
fn socket_permissions_stale_and_live_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ember.sock");
    // A stale socket file (its daemon died without removing it) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    let d = Daemon::start_at(&model_path(MODEL), &socket, &[], dir);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // A live one is refused with a clear error, and left alone.
    let out = spawn_serve(&model_path(MODEL), &socket, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&socket.display().to_string()) && err.contains("another daemon is listening"),
        "{err}"
    );
    assert_eq!(
        rt().block_on(get(&d.socket, "/health")).unwrap().0,
        StatusCode::OK
    );
    // A path that is not a socket is never deleted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let out = spawn_serve(&model_path(MODEL), &file, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn sigterm_drains_in_flight_work_removes_the_socket_and_exits_0() {
    let mut d = Daemon::start(&model_path(MODEL), &["--slots", "2", "--grace", "30"]);
    let chat = reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "chat")
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        // A generation long enough (thousands of steps) to be in flight when the signal comes.
        let mut long = chat_body(&chat, true);
        long["max_tokens"] = json!(3000);
        let r = send(
            &d.socket,
            "POST",
            "/v1/chat/completions",
            &[],
            serde_json::to_vec(&long).unwrap(),
        )
        .await
        .unwrap();
        let mut body = r.into_body();
        body.frame().await.unwrap().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(d.pid(), libc::SIGTERM) }, 0);
        // New connections are refused at once (the socket file is gone)...
        let t0 = Instant::now();
        while d.socket.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the socket stayed after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(UnixStream::connect(&d.socket).await.is_err());
        // ...while the request in flight runs to its end, not cancelled.
        let rest = body.collect().await.unwrap().to_bytes();
        let rest = String::from_utf8(rest.to_vec()).unwrap();
        assert!(rest.contains("[DONE]"), "{rest}");
        assert!(rest.contains(r#""finish_reason":"length""#), "{rest}");
        assert!(!rest.contains("cancel"), "{rest}");
    });
    // ...and the daemon exits 0 with its socket removed.
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "emberd did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!d.socket.exists(), "the socket file was left behind");
}

#[test]
fn tcp_listener_with_an_api_key_and_prefix_reuse() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(
        &model_path(MODEL),
        &[
            "--listen-tcp",
            &addr,
            "--tcp-api-key",
            "s3cret",
            "--slots",
            "1",
        ],
    );
    let chat = reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "chat")
        .unwrap();
    let body = chat_body(&chat, false).to_string();
    let url = format!("http://{addr}/v1/chat/completions");
    let curl_tcp = |extra: &[&str]| {
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                &url,
                "-d",
                &body,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_eq!(String::from_utf8(curl_tcp(&[]).stdout).unwrap(), "401");
    assert_eq!(
        String::from_utf8(curl_tcp(&["-H", "Authorization: Bearer wrong"]).stdout).unwrap(),
        "401"
    );
    assert_eq!(
        String::from_utf8(curl_tcp(&["-H", "Authorization: Bearer s3cret"]).stdout).unwrap(),
        "200"
    );
    // The Unix socket needs no key unless configured; the same prompt again reuses its prefix.
    rt().block_on(async {
        let (s, _, v) = post(&d.socket, "/v1/chat/completions", &chat_body(&chat, false)).await;
        assert_eq!(s, StatusCode::OK);
        let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"],
            prompt - 1,
            "{v}"
        );
    });
}
