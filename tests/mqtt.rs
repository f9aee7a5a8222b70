//! End-to-end tests of `emberd serve`'s MQTT v5 front against a real mosquitto broker: the real
//! daemon binary and the real broker as separate processes, driven by a real MQTT client
//! (rumqttc, v5 and v3.1.1) and by the stock `mosquitto_pub`/`mosquitto_sub`.
//!
//! Greedy answers are checked against llama.cpp's reference outputs; the rest checks the front's
//! promises: request/response by Response Topic + Correlation Data (JSON and postcard, streamed
//! and not), `reply_to`/`id` for v3.1.1 clients, no answer lost when the broker dies mid-generation,
//! shared-subscription fleets, error replies that leave the daemon serving, busy, de-duplication,
//! message expiry, availability (retained status + Last Will) and Home Assistant discovery.
//!
//! Every test starts its own broker (on a free loopback port, persistent store in a temporary
//! folder) and its own daemon. Without `mosquitto` installed the tests print `SKIP …` and pass,
//! unless `EMBER_TEST_MQTT=1` is set. On failure the daemon's log and the broker's log are
//! printed.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ember_proto::Encoding;
use ember_tests::{Broker, emberd, model_path, mqtt_available, reference};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet, PublishProperties, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::{Client, Event, MqttOptions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The model of the exact-text tests: a tiny Qwen2 with the DeepSeek-R1 chat template (the
/// answer starts inside `<think>`, so exact comparisons ask for `"reasoning_format":"none"`).
const MODEL: &str = "tiny-qwen2-q4_0";
const JSON_CT: &str = "application/json";
const POSTCARD_CT: &str = "application/x-postcard";
/// How long any single expected message may take (the machine may be busy with other tests).
const WAIT: Duration = Duration::from_secs(120);

macro_rules! require_mqtt {
    ($name:expr) => {
        if !mqtt_available($name) {
            return;
        }
    };
}

/// A chat record of the reference data that ended on `length` (its text has no EOG to strip).
fn chat_record() -> Value {
    reference(MODEL)
        .into_iter()
        .find(|r| r["kind"] == "chat" && r["stop"] == "length")
        .unwrap()
}

fn n_greedy(record: &Value) -> usize {
    record["greedy_ids"].as_array().unwrap().len()
}

/// The OpenAI chat body that makes the daemon reproduce `record` exactly: greedy, as many tokens
/// as llama.cpp generated, the raw text (no reasoning split).
fn exact_body(record: &Value, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": record["messages"],
        "max_tokens": n_greedy(record),
        "temperature": 0,
        "reasoning_format": "none",
        "stream": stream,
    })
}

/// A small greedy chat request.
fn small_body(text: &str, max_tokens: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// A running `emberd serve` with its MQTT front, killed on drop; its log is printed when the test
/// panics.
struct Daemon {
    child: Child,
    node: String,
    socket: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `emberd serve` on the tiny model, connected to `broker` as `node`, and waits until
    /// it is ready: `/health` answers on its socket and its retained status is `online`.
    fn start(broker: &Broker, node: &str, extra: &[&str]) -> Daemon {
        Daemon::start_model(broker, node, MODEL, extra)
    }

    /// [`Daemon::start`] with another tiny model.
    fn start_model(broker: &Broker, node: &str, model: &str, extra: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(broker, node, model, extra);
        d.wait_ready(broker);
        d
    }

    fn spawn(broker: &Broker, node: &str, model: &str, extra: &[&str]) -> Daemon {
        Daemon::spawn_at(&broker.url(), node, model, extra)
    }

    /// Starts `emberd serve` connected to the broker at `url`; does not wait.
    fn spawn_at(url: &str, node: &str, model: &str, extra: &[&str]) -> Daemon {
        let dir = tempdir();
        let socket = dir.path().join("s.sock");
        let mut child = Command::new(emberd())
            .args(["serve", "--model"])
            .arg(model_path(model))
            .arg("--socket")
            .arg(&socket)
            .args(["--threads", "1", "--mqtt-url", url, "--node", node])
            .args(extra)
            .env("EMBER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain stderr into memory: a full pipe would block the daemon, and the log is printed on
        // failure and searched by some tests.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&strip_ansi(&line));
                l.push('\n');
            }
        });
        Daemon {
            child,
            node: node.to_owned(),
            socket,
            log,
            _dir: dir,
        }
    }

    fn wait_ready(&mut self, broker: &Broker) {
        let t0 = Instant::now();
        loop {
            if http_get(&self.socket, "/health").is_some_and(|(s, _)| s == 200) {
                break;
            }
            self.assert_running();
            assert!(t0.elapsed() < WAIT, "emberd serve did not become healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut c = Mqtt::connect(broker, &format!("ready-{}", self.node));
        c.subscribe(&self.status_topic());
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the daemon never published {} = online",
                self.status_topic()
            );
            let slice = left.min(Duration::from_millis(500));
            if let Some(m) = c.wait(slice, |m| m.topic == self.status_topic())
                && m.payload == b"online"
            {
                return;
            }
            self.assert_running();
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("emberd serve exited early ({status})");
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < timeout, "emberd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn request_topic(&self) -> String {
        format!("ember/{}/request", self.node)
    }

    fn status_topic(&self) -> String {
        format!("ember/{}/status", self.node)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The value of Prometheus sample `name` (summed over its labels), from `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = http_get(&self.socket, "/metrics").unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- emberd log (node {}) ----\n{}", self.node, self.log());
        }
    }
}

/// `line` without terminal colour codes (ESC `[` … letter).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts a streamed HTTP request on the daemon's Unix socket and returns once the first event
/// arrived (the request holds a slot); dropping the returned connection cancels it.
fn http_stream(socket: &Path, path: &str, body: &Value) -> UnixStream {
    let body = serde_json::to_vec(body).unwrap();
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "HTTP stream ended: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// GET over the daemon's Unix socket (HTTP/1.0: the body runs to the end of the connection, never
/// chunked); `(status, body)`, or `None` when the socket does not answer.
fn http_get(socket: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

// ---------------------------------------------------------------------------------------------
// The MQTT v5 client

/// A message as a subscriber saw it.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    props: PublishProperties,
    at: Instant,
}

impl Msg {
    fn user(&self, key: &str) -> Option<&str> {
        self.props
            .user_properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn corr(&self) -> Option<&[u8]> {
        self.props.correlation_data.as_deref()
    }

    fn content_type(&self) -> Option<&str> {
        self.props.content_type.as_deref()
    }

    fn is_final(&self) -> bool {
        self.user("final") == Some("true")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload decoded by its Content-Type (JSON when absent), as JSON.
    fn body(&self) -> Value {
        match self.content_type() {
            Some(POSTCARD_CT) => postcard_response(&self.payload),
            _ => serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
                panic!("reply on {} is not JSON ({e}): {}", self.topic, self.text())
            }),
        }
    }
}

enum Ev {
    Msg(Box<Msg>),
    ConnAck { session_present: bool },
    SubAck(Vec<SubscribeReasonCode>),
    Down(String),
}

/// A v5 client: a thread drives rumqttc's event loop (reconnecting after errors) and forwards
/// what arrives; messages not yet asked for wait in `buf`.
struct Mqtt {
    client: Client,
    rx: Receiver<Ev>,
    buf: VecDeque<Msg>,
    id: String,
    /// The last connection error (shown when an expected message does not come).
    last_error: Option<String>,
}

struct Opts {
    clean_start: bool,
    session_expiry: Option<u32>,
}

impl Mqtt {
    fn connect(broker: &Broker, id: &str) -> Mqtt {
        Mqtt::connect_with(
            broker,
            id,
            Opts {
                clean_start: true,
                session_expiry: None,
            },
        )
    }

    fn connect_with(broker: &Broker, id: &str, o: Opts) -> Mqtt {
        let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_start(o.clean_start)
            .set_max_packet_size(Some(64 << 20));
        if o.session_expiry.is_some() {
            opts.set_session_expiry_interval(o.session_expiry);
        }
        let (client, mut conn) = Client::new(opts, 256);
        let (tx, rx) = channel();
        std::thread::spawn(move || pump(&mut conn, &tx));
        let mut c = Mqtt {
            client,
            rx,
            buf: VecDeque::new(),
            id: id.to_owned(),
            last_error: None,
        };
        c.wait_connack(Duration::from_secs(30));
        c
    }

    /// Waits for the next CONNACK (the first connection, or a reconnection); returns whether the
    /// broker still had this client's session.
    fn wait_connack(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline) {
                Some(Ev::ConnAck { session_present }) => return session_present,
                Some(Ev::Msg(m)) => self.buf.push_back(*m),
                Some(_) => {}
                None => panic!(
                    "{}: no CONNACK from the broker (last error: {:?})",
                    self.id, self.last_error
                ),
            }
        }
    }

    fn next_event(&mut self, deadline: Instant) -> Option<Ev> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ev::Down(e)) => self.last_error = Some(e),
                Ok(ev) => return Some(ev),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => panic!("{}: client thread ended", self.id),
            }
        }
    }

    /// Subscribes at QoS 1 with Retain As Published (so a reply's retain flag is seen as sent)
    /// and waits for the SUBACK.
    fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe_many([Filter {
                path: filter.to_owned(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: true,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }])
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.next_event(deadline) {
                Some(Ev::SubAck(codes)) => {
                    assert!(
                        codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                        "{}: subscribe {filter} refused: {codes:?}",
                        self.id
                    );
                    return;
                }
                Some(Ev::Msg(m)) => self.buf.push_back(*m),
                Some(_) => {}
                None => panic!("{}: no SUBACK for {filter}", self.id),
            }
        }
    }

    fn publish(
        &self,
        topic: &str,
        qos: QoS,
        payload: impl Into<Vec<u8>>,
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, false, payload.into(), props)
            .unwrap();
    }

    /// The first message (buffered or arriving within `timeout`) that `pred` accepts; the others
    /// stay buffered.
    fn wait(&mut self, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        if let Some(i) = self.buf.iter().position(&pred) {
            return self.buf.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline)? {
                Ev::Msg(m) if pred(&m) => return Some(*m),
                Ev::Msg(m) => self.buf.push_back(*m),
                _ => {}
            }
        }
    }

    /// Takes every buffered message, after draining what has already arrived.
    fn drain(&mut self) -> Vec<Msg> {
        while let Ok(ev) = self.rx.try_recv() {
            if let Ev::Msg(m) = ev {
                self.buf.push_back(*m);
            }
        }
        self.buf.drain(..).collect()
    }

    /// Every message on `topic` with correlation data `corr` up to and including the final one
    /// (user property `final` = `true`). Panics after `timeout`, showing what did arrive.
    fn reply(&mut self, topic: &str, corr: &[u8], timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        let mut chunks = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.wait(left, |m| m.topic == topic && m.corr() == Some(corr)) else {
                panic!(
                    "no final reply for correlation data {:?} on {topic} within {timeout:?}; \
                     got {} chunk(s) before: {:?}",
                    String::from_utf8_lossy(corr),
                    chunks.len(),
                    chunks.iter().map(Msg::text).collect::<Vec<_>>()
                );
            };
            if m.is_final() {
                return Reply { chunks, last: m };
            }
            chunks.push(m);
        }
    }
}

/// Drives a client's event loop until the client is dropped.
fn pump(conn: &mut rumqttc::v5::Connection, tx: &Sender<Ev>) {
    for ev in conn.iter() {
        let ev = match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => Ev::Msg(Box::new(Msg {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                props: p.properties.unwrap_or_default(),
                at: Instant::now(),
            })),
            Ok(Event::Incoming(Packet::ConnAck(a))) => Ev::ConnAck {
                session_present: a.session_present,
            },
            Ok(Event::Incoming(Packet::SubAck(a))) => Ev::SubAck(a.return_codes),
            Ok(_) => continue,
            Err(e) => {
                // The broker is gone (or refused us): retry, not too fast.
                if tx.send(Ev::Down(e.to_string())).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// A request's reply messages: the stream chunks (if any), then the final message.
#[derive(Debug)]
struct Reply {
    chunks: Vec<Msg>,
    last: Msg,
}

impl Reply {
    /// Checks what every reply message must carry, whatever the request: never retained,
    /// correlation data echoed, Content-Type = the request's encoding, user properties `seq`,
    /// `final` and `node`; chunks at QoS 0 with contiguous `seq` from 0, the final at QoS 1.
    fn check_envelope(&self, corr: &[u8], content_type: &str, node: &str) {
        for (i, m) in self.chunks.iter().chain([&self.last]).enumerate() {
            let is_last = i == self.chunks.len();
            let what = format!("reply message {i} (final: {is_last}) on {}", m.topic);
            assert!(!m.retain, "{what}: retained");
            assert_eq!(m.corr(), Some(corr), "{what}: correlation data");
            assert_eq!(m.content_type(), Some(content_type), "{what}: content type");
            assert_eq!(m.user("node"), Some(node), "{what}: user property node");
            assert_eq!(
                m.user("final"),
                Some(if is_last { "true" } else { "false" }),
                "{what}: user property final"
            );
            let seq = m
                .user("seq")
                .unwrap_or_else(|| panic!("{what}: no user property seq"));
            let seq: usize = seq
                .parse()
                .unwrap_or_else(|_| panic!("{what}: user property seq {seq:?}"));
            if is_last {
                assert_eq!(m.qos, QoS::AtLeastOnce, "{what}: QoS");
            } else {
                assert_eq!(m.qos, QoS::AtMostOnce, "{what}: QoS");
                assert_eq!(seq, i, "{what}: seq not contiguous from 0");
                let body = m.body();
                assert_eq!(body["seq"], json!(i), "{what}: {body}");
                assert!(body["delta"].is_string(), "{what}: {body}");
            }
        }
    }

    /// The concatenated `delta`s of the chunks.
    fn deltas(&self) -> String {
        self.chunks
            .iter()
            .map(|m| m.body()["delta"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn req_props(reply_topic: &str, corr: &[u8], content_type: Option<&str>) -> PublishProperties {
    PublishProperties {
        response_topic: Some(reply_topic.to_owned()),
        correlation_data: Some(Bytes::copy_from_slice(corr)),
        content_type: content_type.map(str::to_owned),
        ..Default::default()
    }
}

/// The `error.code` of an error reply, checking its shape.
fn error_code(m: &Msg) -> String {
    let v = m.body();
    assert!(
        v["error"]["message"].is_string(),
        "error reply without a message: {v}"
    );
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error reply: {v}"))
        .to_owned()
}

/// Checks a successful final reply against `record`'s greedy generation.
fn check_final(v: &Value, record: &Value, what: &str) {
    let n = n_greedy(record);
    let np = record["prompt_ids"].as_array().unwrap().len();
    assert_eq!(v["text"], record["greedy_text"], "{what}: {v}");
    assert_eq!(v["finish_reason"], "length", "{what}: {v}");
    assert!(v.get("error").is_none(), "{what}: {v}");
    let u = &v["usage"];
    assert_eq!(u["completion_tokens"], json!(n), "{what}: {v}");
    assert_eq!(u["prompt_tokens"], json!(np), "{what}: {v}");
    assert_eq!(u["total_tokens"], json!(n + np), "{what}: {v}");
    assert!(u["cached_tokens"].is_u64(), "{what}: {v}");
    let t = &v["timings"];
    for k in [
        "queued_ms",
        "prompt_n",
        "prompt_ms",
        "predicted_n",
        "predicted_ms",
        "prompt_per_second",
        "predicted_per_second",
    ] {
        assert!(t[k].is_number(), "{what}: timings.{k}: {v}");
    }
    assert_eq!(t["predicted_n"], json!(n), "{what}: {v}");
}

/// Asserts that nothing is retained on `topic`: subscribes, then publishes a marker there; a
/// retained message would be delivered before it.
fn assert_nothing_retained(broker: &Broker, topic: &str) {
    let mut c = Mqtt::connect(broker, "retained-probe");
    c.subscribe(topic);
    c.publish(
        topic,
        QoS::AtLeastOnce,
        "marker",
        PublishProperties::default(),
    );
    let first = c.wait(WAIT, |m| m.topic == topic).unwrap();
    assert_eq!(
        first.text(),
        "marker",
        "a message is retained on {topic}: {first:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Postcard (ember-proto)

/// The postcard encoding of a request given as its JSON form (read by ember-proto's JSON decoder).
fn postcard_request(body: &Value) -> Vec<u8> {
    let req = ember_proto::decode_request(Encoding::Json, &serde_json::to_vec(body).unwrap())
        .unwrap_or_else(|e| panic!("ember-proto refuses the test's own request ({e}): {body}"));
    ember_proto::encode_request(Encoding::Postcard, &req).unwrap()
}

/// A postcard reply decoded with ember-proto, as its JSON form (the shape of a JSON reply).
fn postcard_response(bytes: &[u8]) -> Value {
    let r = ember_proto::decode_response(Encoding::Postcard, bytes)
        .unwrap_or_else(|e| panic!("undecodable postcard reply ({e}): {bytes:?}"));
    serde_json::from_slice(&ember_proto::encode_response(Encoding::Json, &r).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 0. The broker fixture itself (no daemon)

#[test]
fn broker_fixture_relays_and_keeps_a_persistent_session_across_kill_and_restart() {
    require_mqtt!("mqtt broker fixture");
    let dir = tempdir();
    let mut broker = Broker::start(dir.path());
    let persistent = Opts {
        clean_start: false,
        session_expiry: Some(3600),
    };
    let mut sub = Mqtt::connect_with(&broker, "fixture-sub", persistent);
    sub.subscribe("fixture/#");
    let subscribed = SystemTime::now();
    let publisher = Mqtt::connect(&broker, "fixture-pub");
    let props = req_props("fixture/reply", b"c-1", Some(JSON_CT));
    publisher.publish("fixture/a", QoS::AtLeastOnce, "one", props);
    let m = sub.wait(WAIT, |m| m.topic == "fixture/a").unwrap();
    assert_eq!(
        (m.text().as_str(), m.corr(), m.content_type()),
        ("one", Some(&b"c-1"[..]), Some(JSON_CT))
    );
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert!(!m.retain);

    broker.wait_saved_after(subscribed);
    broker.kill();
    drop(publisher);
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    assert!(
        sub.wait_connack(Duration::from_secs(30)),
        "the broker lost the session"
    );
    let publisher = Mqtt::connect(&broker, "fixture-pub2");
    publisher.publish(
        "fixture/b",
        QoS::AtLeastOnce,
        "two",
        PublishProperties::default(),
    );
    let m = sub.wait(WAIT, |m| m.topic == "fixture/b").unwrap();
    assert_eq!(m.text(), "two");
    assert!(broker.log().contains("fixture-sub"), "{}", broker.log());
}

// ---------------------------------------------------------------------------------------------
// 1. Request/response

#[test]
fn v5_request_response_json_and_postcard_streamed_or_not_return_llama_cpp_greedy_text() {
    require_mqtt!("mqtt v5 request/response");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let d = Daemon::start(&broker, "t1", &["--slots", "2"]);
    let record = chat_record();
    let replies = "test/t1/replies";
    let mut c = Mqtt::connect(&broker, "t1-client");
    c.subscribe(replies);

    // (correlation data, Content-Type sent, encoding, streamed)
    let cases: [(&[u8], Option<&str>, &str, bool); 4] = [
        (b"json-plain", None, JSON_CT, false),
        (b"json-stream", Some(JSON_CT), JSON_CT, true),
        (b"\x00\xffpc-plain", Some(POSTCARD_CT), POSTCARD_CT, false),
        (b"\x01pc-stream", Some(POSTCARD_CT), POSTCARD_CT, true),
    ];
    for (corr, ct, enc, stream) in cases {
        let body = exact_body(&record, stream);
        let payload = if enc == POSTCARD_CT {
            postcard_request(&body)
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        c.publish(
            &d.request_topic(),
            QoS::AtLeastOnce,
            payload,
            req_props(replies, corr, ct),
        );
    }
    for (corr, _, enc, stream) in cases {
        let what = format!("{enc}, stream: {stream}");
        let r = c.reply(replies, corr, WAIT);
        r.check_envelope(corr, enc, "t1");
        let v = r.last.body();
        check_final(&v, &record, &what);
        if stream {
            assert!(!r.chunks.is_empty(), "{what}: no stream chunks");
            assert_eq!(r.deltas(), v["text"].as_str().unwrap(), "{what}");
        } else {
            assert!(
                r.chunks.is_empty(),
                "{what}: chunks for a request that did not stream"
            );
        }
    }
    // Without "reasoning_format":"none" the think block (the template opens it) goes to
    // "reasoning", as llama-server splits it: the reasoning trimmed, the text after </think>.
    let mut body = exact_body(&record, false);
    body.as_object_mut().unwrap().remove("reasoning_format");
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&body).unwrap(),
        req_props(replies, b"json-reasoning", None),
    );
    let v = c.reply(replies, b"json-reasoning", WAIT).last.body();
    let raw = record["greedy_text"].as_str().unwrap();
    let (reasoning, text) = match raw.split_once("</think>") {
        Some((r, t)) => (r.trim(), t.trim_start()),
        None => (raw.trim(), ""),
    };
    assert_eq!(
        v["reasoning"].as_str().map(str::trim),
        Some(reasoning),
        "{v}"
    );
    assert_eq!(v["text"].as_str().map(str::trim_start), Some(text), "{v}");
    assert_eq!(v["finish_reason"], "length", "{v}");
    assert_nothing_retained(&broker, replies);
}

// ---------------------------------------------------------------------------------------------
// 2. MQTT v3.1.1 clients

#[test]
fn v311_client_gets_its_answer_by_reply_to_and_id_in_the_payload() {
    require_mqtt!("mqtt v3.1.1 reply_to");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let d = Daemon::start(&broker, "t2", &["--slots", "2"]);
    let record = chat_record();
    let replies = "test/t2/replies";

    let mut opts = rumqttc::MqttOptions::new("t2-v311", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut conn) = rumqttc::Client::new(opts, 64);
    let (tx, rx) = channel::<rumqttc::Publish>();
    let (acks_tx, acks_rx) = channel::<()>();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = acks_tx.send(());
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    client
        .subscribe(replies, rumqttc::QoS::AtLeastOnce)
        .unwrap();
    acks_rx.recv_timeout(Duration::from_secs(30)).unwrap();

    for (id, stream) in [("v3-plain", false), ("v3-stream", true)] {
        let mut body = exact_body(&record, stream);
        body["reply_to"] = json!(replies);
        body["id"] = json!(id);
        client
            .publish(
                d.request_topic(),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&body).unwrap(),
            )
            .unwrap();
    }
    let mut got: BTreeMap<String, Vec<(rumqttc::Publish, Value)>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while got
        .values()
        .filter(|v| {
            v.last()
                .is_some_and(|(_, b)| b.get("text").is_some() || b.get("error").is_some())
        })
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("v3.1.1 replies missing; got {got:?}"));
        assert_eq!(p.topic, replies);
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        let id = v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a reply without the request's id: {v}"))
            .to_owned();
        got.entry(id).or_default().push((p, v));
    }
    for (id, stream) in [("v3-plain", false), ("v3-stream", true)] {
        let msgs = &got[id];
        let (last, v) = msgs.last().unwrap();
        check_final(v, &record, id);
        assert_eq!(last.qos, rumqttc::QoS::AtLeastOnce, "{id}: final QoS");
        assert!(!last.retain, "{id}: retained");
        let chunks = &msgs[..msgs.len() - 1];
        if stream {
            assert!(!chunks.is_empty(), "{id}: no chunks");
        } else {
            assert!(chunks.is_empty(), "{id}: chunks without stream");
        }
        let mut text = String::new();
        for (i, (p, c)) in chunks.iter().enumerate() {
            assert_eq!(c["seq"], json!(i), "{id}: {c}");
            assert_eq!(p.qos, rumqttc::QoS::AtMostOnce, "{id}: chunk QoS");
            assert!(!p.retain, "{id}: retained chunk");
            text.push_str(c["delta"].as_str().unwrap());
        }
        if stream {
            assert_eq!(text, v["text"].as_str().unwrap(), "{id}: deltas vs text");
        }
    }
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// 3. Broker failure mid-generation

#[test]
fn broker_killed_mid_generation_the_answer_arrives_after_it_restarts() {
    require_mqtt!("mqtt broker restart");
    let dir = tempdir();
    let mut broker = Broker::start(dir.path());
    let d = Daemon::start(&broker, "t3", &["--slots", "1", "--ctx-size", "8192"]);
    let record = chat_record();
    let replies = "test/t3/replies";
    // A persistent session, so the broker keeps the subscription (in its store) and queues the
    // final reply while this client is away.
    let mut c = Mqtt::connect_with(
        &broker,
        "t3-client",
        Opts {
            clean_start: false,
            session_expiry: Some(3600),
        },
    );
    c.subscribe(replies);
    let subscribed = SystemTime::now();

    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&exact_body(&record, false)).unwrap(),
        req_props(replies, b"warm-up", None),
    );
    let warm = c.reply(replies, b"warm-up", WAIT).last.body();
    check_final(&warm, &record, "warm-up");
    // The store must hold the client's subscription before the broker is killed.
    broker.wait_saved_after(subscribed);
    // Long enough (seconds, even on a fast machine) to be under way when the broker dies.
    let n = 4000;

    // Twice: the broker back after about a second (the answer is finished after the daemon has
    // reconnected), then back only once the generation has ended (the daemon holds the finished
    // answer while it has no broker).
    for (corr, wait_for_the_end) in [
        (&b"restart-after-1s"[..], false),
        (b"restart-after-the-end", true),
    ] {
        let what = String::from_utf8_lossy(corr).into_owned();
        let mut body = exact_body(&record, true);
        body["max_tokens"] = json!(n);
        c.publish(
            &d.request_topic(),
            QoS::AtLeastOnce,
            serde_json::to_vec(&body).unwrap(),
            req_props(replies, corr, None),
        );
        // A few chunks: the generation is running.
        for i in 0..3 {
            let m = c
                .wait(WAIT, |m| m.topic == replies && m.corr() == Some(corr))
                .unwrap_or_else(|| panic!("{what}: stream chunk {i} never came"));
            assert!(
                !m.is_final(),
                "{what}: the generation ended before the broker was killed: {m:?}"
            );
        }
        broker.kill();
        let killed = Instant::now();
        if wait_for_the_end {
            let t0 = Instant::now();
            while d.metric("ember_active_slots") > 0.0 {
                assert!(t0.elapsed() < WAIT, "{what}: the generation never ended");
                std::thread::sleep(Duration::from_millis(50));
            }
        } else {
            std::thread::sleep(Duration::from_secs(1));
        }
        broker.restart();
        c.wait_connack(Duration::from_secs(30));
        // The final reply (or an explicit error) arrives, after the restart.
        let m = c
            .wait(Duration::from_secs(60), |m| {
                m.topic == replies && m.corr() == Some(corr) && m.is_final()
            })
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no final reply within 60 s of the broker's restart (the answer was \
                     lost); daemon still serving HTTP: {}",
                    http_get(&d.socket, "/health").is_some()
                )
            });
        assert!(m.at > killed, "{what}: the final came before the kill");
        eprintln!(
            "t3 {what}: {n} tokens; the final came {:?} after the kill",
            m.at - killed
        );
        let v = m.body();
        if let Some(text) = v["text"].as_str() {
            assert!(v["finish_reason"].is_string(), "{what}: {v}");
            let got = v["usage"]["completion_tokens"].as_u64().unwrap();
            assert!(got as usize <= n && got > 3, "{what}: {got} tokens of {n}");
            assert!(
                text.starts_with(record["greedy_text"].as_str().unwrap()),
                "{what}: the answer is not the greedy continuation"
            );
        } else {
            // An explicit error is allowed too, just not silence.
            error_code(&m);
        }
        assert_eq!(m.qos, QoS::AtLeastOnce, "{what}");
        assert_eq!(m.user("node"), Some("t3"), "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A fleet on a shared subscription

#[test]
fn two_daemons_in_one_group_split_fleet_requests_each_answered_once() {
    require_mqtt!("mqtt shared subscription");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let a = Daemon::start(&broker, "t4a", &["--slots", "2", "--mqtt-group", "g"]);
    let b = Daemon::start(&broker, "t4b", &["--slots", "2", "--mqtt-group", "g"]);
    let replies = "test/t4/replies";
    let mut c = Mqtt::connect(&broker, "t4-client");
    c.subscribe(replies);
    let n = 20;
    for i in 0..n {
        c.publish(
            "ember/request",
            QoS::AtLeastOnce,
            serde_json::to_vec(&small_body(&format!("Count to {i}."), 4)).unwrap(),
            req_props(replies, format!("fleet-{i}").as_bytes(), None),
        );
    }
    let mut finals: BTreeMap<Vec<u8>, Vec<Msg>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while finals.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c
            .wait(left, |m| m.topic == replies && m.is_final())
            .unwrap_or_else(|| panic!("only {} of {n} fleet requests answered", finals.len()));
        finals
            .entry(m.corr().unwrap().to_vec())
            .or_default()
            .push(m);
    }
    // Late duplicates would come now.
    std::thread::sleep(Duration::from_secs(3));
    for m in c.drain() {
        if m.topic == replies && m.is_final() {
            finals
                .entry(m.corr().unwrap().to_vec())
                .or_default()
                .push(m);
        }
    }
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let corr = format!("fleet-{i}").into_bytes();
        let ms = finals.get(&corr).map_or(&[][..], Vec::as_slice);
        assert_eq!(ms.len(), 1, "request {i} answered {} times", ms.len());
        let v = ms[0].body();
        assert!(v["text"].is_string(), "request {i}: {v}");
        let node = ms[0].user("node").unwrap().to_owned();
        assert!(node == "t4a" || node == "t4b", "{node}");
        *by_node.entry(node).or_default() += 1;
    }
    assert_eq!(
        finals.len(),
        n,
        "replies for unknown correlation data: {:?}",
        finals.keys()
    );
    assert_eq!(
        by_node.len(),
        2,
        "one daemon answered everything: {by_node:?}"
    );
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// 5. Bad requests

#[test]
fn malformed_requests_get_error_replies_and_the_daemon_keeps_serving() {
    require_mqtt!("mqtt malformed requests");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let mut d = Daemon::start(
        &broker,
        "t5",
        &["--slots", "1", "--mqtt-max-payload", "4096"],
    );
    let replies = "test/t5/replies";
    let mut c = Mqtt::connect(&broker, "t5-client");
    c.subscribe(replies);
    c.subscribe(&d.status_topic());
    assert_eq!(
        c.wait(WAIT, |m| m.topic == d.status_topic())
            .unwrap()
            .payload,
        b"online"
    );
    let hi = json!([{"role": "user", "content": "hi"}]);
    let big =
        json!({"messages": [{"role": "user", "content": "word ".repeat(1000)}], "max_tokens": 1});
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        (
            "not JSON",
            b"{\"messages\": [".to_vec(),
            None,
            "bad_request",
        ),
        (
            "not an object",
            b"[1, 2]".to_vec(),
            Some(JSON_CT),
            "bad_request",
        ),
        (
            "messages of the wrong type",
            br#"{"messages": "hi"}"#.to_vec(),
            None,
            "bad_request",
        ),
        (
            "max_tokens of the wrong type",
            serde_json::to_vec(&json!({"messages": hi, "max_tokens": "many"})).unwrap(),
            None,
            "bad_request",
        ),
        (
            "empty messages",
            br#"{"messages": []}"#.to_vec(),
            None,
            "bad_request",
        ),
        (
            "neither prompt nor messages",
            br#"{"max_tokens": 3}"#.to_vec(),
            None,
            "bad_request",
        ),
        (
            "prompt and messages",
            serde_json::to_vec(&json!({"prompt": "hi", "messages": hi})).unwrap(),
            None,
            "bad_request",
        ),
        (
            "version 3",
            serde_json::to_vec(&json!({"v": 3, "messages": hi})).unwrap(),
            None,
            "unsupported_version",
        ),
        (
            "postcard garbage",
            vec![0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x13, 0x37],
            Some(POSTCARD_CT),
            "bad_request",
        ),
        (
            "postcard of version 3",
            {
                let mut p = postcard_request(&small_body("hi", 2));
                p[0] = 3;
                p
            },
            Some(POSTCARD_CT),
            "unsupported_version",
        ),
        (
            "unknown content type",
            b"hello".to_vec(),
            Some("text/plain"),
            "unsupported_content_type",
        ),
        (
            "payload over --mqtt-max-payload",
            serde_json::to_vec(&big).unwrap(),
            None,
            "too_large",
        ),
    ];
    for (i, (what, payload, ct, want)) in cases.iter().enumerate() {
        let corr = format!("bad-{i}");
        c.publish(
            &d.request_topic(),
            QoS::AtLeastOnce,
            payload.clone(),
            req_props(replies, corr.as_bytes(), *ct),
        );
        let r = c.reply(replies, corr.as_bytes(), WAIT);
        assert!(r.chunks.is_empty(), "{what}: chunks before the error");
        assert_eq!(r.last.qos, QoS::AtLeastOnce, "{what}: error QoS");
        assert!(!r.last.retain, "{what}: retained");
        assert_eq!(r.last.user("node"), Some("t5"), "{what}");
        assert_eq!(r.last.corr(), Some(corr.as_bytes()), "{what}");
        // In the request's encoding (an unknown one has none to echo).
        match ct {
            Some(POSTCARD_CT) => assert_eq!(r.last.content_type(), Some(POSTCARD_CT), "{what}"),
            None | Some(JSON_CT) => assert_eq!(r.last.content_type(), Some(JSON_CT), "{what}"),
            Some(_) => {}
        }
        assert_eq!(error_code(&r.last), *want, "{what}: {}", r.last.text());
        d.assert_running();
    }
    // Reply addresses that must never be published to (v3.1.1 style, in the payload; a v5
    // Response Topic with a wildcard is refused by the broker itself), and no address at all.
    for (i, reply_to) in ["test/t5/#", "test/+/replies", "$SYS/ember"]
        .iter()
        .enumerate()
    {
        let mut body = small_body("hi", 2);
        body["reply_to"] = json!(reply_to);
        body["id"] = json!(format!("bad-addr-{i}"));
        c.publish(
            &d.request_topic(),
            QoS::AtLeastOnce,
            serde_json::to_vec(&body).unwrap(),
            PublishProperties::default(),
        );
    }
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&small_body("hi", 2)).unwrap(),
        PublishProperties::default(),
    );
    // Still serving, over the same connection: a publish to a wildcard topic would have made the
    // broker drop it, and its Last Will would have said offline.
    let record = chat_record();
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&exact_body(&record, false)).unwrap(),
        req_props(replies, b"good", None),
    );
    let r = c.reply(replies, b"good", WAIT);
    check_final(&r.last.body(), &record, "the request after the bad ones");
    d.assert_running();
    let status: Vec<String> = c
        .drain()
        .into_iter()
        .filter(|m| m.topic == d.status_topic())
        .map(|m| m.text())
        .collect();
    assert!(status.is_empty(), "the daemon's status changed: {status:?}");
    assert!(
        !d.log().contains("panicked"),
        "the daemon panicked:\n{}",
        d.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Busy

#[test]
fn a_full_queue_gets_an_immediate_busy_error_reply() {
    require_mqtt!("mqtt busy");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    // --queue 0 is refused ("queue must be at least 1"): one slot, one queue place.
    let d = Daemon::start(
        &broker,
        "t6",
        &["--slots", "1", "--queue", "1", "--ctx-size", "4096"],
    );
    let record = chat_record();
    let replies = "test/t6/replies";
    let mut c = Mqtt::connect(&broker, "t6-client");
    c.subscribe(replies);
    let mut long = exact_body(&record, true);
    long["max_tokens"] = json!(4000);
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&long).unwrap(),
        req_props(replies, b"holder", None),
    );
    let first = c
        .wait(WAIT, |m| m.topic == replies && m.corr() == Some(b"holder"))
        .unwrap();
    assert!(
        !first.is_final(),
        "the long request ended at once: {}",
        first.text()
    );
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&small_body("wait", 2)).unwrap(),
        req_props(replies, b"queued", None),
    );
    let t0 = Instant::now();
    while d.metric("ember_queue_depth") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the second request never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        serde_json::to_vec(&small_body("refuse me", 2)).unwrap(),
        req_props(replies, b"third", None),
    );
    let sent = Instant::now();
    let r = c.reply(replies, b"third", Duration::from_secs(30));
    assert_eq!(error_code(&r.last), "busy", "{}", r.last.text());
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "busy took {:?}",
        sent.elapsed()
    );
    // At once: the holder is still generating.
    let holder_done = c
        .drain()
        .into_iter()
        .any(|m| m.corr() == Some(b"holder") && m.is_final());
    assert!(!holder_done, "busy came only after the long request ended");
}

// ---------------------------------------------------------------------------------------------
// 7. De-duplication and message expiry

#[test]
fn a_redelivered_request_is_answered_once_and_an_expired_one_is_not_run() {
    require_mqtt!("mqtt dedup and expiry");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let d = Daemon::start(&broker, "t7", &["--slots", "1", "--ctx-size", "8192"]);
    let record = chat_record();
    let replies = "test/t7/replies";
    let other = "test/t7/other";
    let mut c = Mqtt::connect(&broker, "t7-client");
    c.subscribe(replies);
    c.subscribe(other);

    // The same request twice (same response topic and correlation data), and the same
    // correlation data for another response topic (not a duplicate).
    let body = serde_json::to_vec(&exact_body(&record, false)).unwrap();
    for _ in 0..2 {
        c.publish(
            &d.request_topic(),
            QoS::AtLeastOnce,
            body.clone(),
            req_props(replies, b"dup", None),
        );
    }
    c.publish(
        &d.request_topic(),
        QoS::AtLeastOnce,
        body.clone(),
        req_props(other, b"dup", None),
    );
    let first = c.reply(replies, b"dup", WAIT).last.body();
    check_final(&first, &record, "dup");
    let other_answer = c.reply(other, b"dup", WAIT).last.body();
    check_final(
        &other_answer,
        &record,
        "same correlation data, other response topic",
    );
    // A second answer would be generated now (requests may run in any order): give it time,
    // then count the answers and the tokens the engine generated.
    std::thread::sleep(Duration::from_secs(2));
    let again: Vec<String> = c
        .drain()
        .into_iter()
        .filter(|m| m.corr() == Some(b"dup"))
        .map(|m| format!("{}: {}", m.topic, m.text()))
        .collect();
    assert!(
        again.is_empty(),
        "the duplicated request was answered again: {again:?}"
    );
    let generated = d.metric("ember_generated_tokens");
    assert_eq!(
        generated,
        2.0 * n_greedy(&record) as f64,
        "the duplicate ran"
    );

    // Expiry: a long HTTP request holds the only slot; a request that may wait 1 s at most
    // queues behind it; once that second has passed the HTTP client hangs up, which frees the
    // slot: the queued request must not run.
    let mut long = exact_body(&record, true);
    long["max_tokens"] = json!(8000);
    let hold = http_stream(&d.socket, "/v1/chat/completions", &long);
    let mut props = req_props(replies, b"short-lived", None);
    props.message_expiry_interval = Some(1);
    c.publish(&d.request_topic(), QoS::AtLeastOnce, body.clone(), props);
    let sent = Instant::now();
    while d.metric("ember_queue_depth") < 1.0 {
        assert!(
            sent.elapsed() < WAIT,
            "the short-lived request never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its expiry passes while it waits (this wait is the point of the test).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        d.metric("ember_queue_depth") >= 1.0,
        "the short-lived request left the queue while the slot was held"
    );
    drop(hold);
    let r = c.reply(replies, b"short-lived", WAIT);
    assert_eq!(error_code(&r.last), "expired", "{}", r.last.text());
    assert!(r.chunks.is_empty());
    assert!(r.last.body().get("text").is_none());
}

// ---------------------------------------------------------------------------------------------
// 8. Availability

#[test]
fn status_is_online_then_offline_on_sigterm_and_by_last_will_on_sigkill() {
    require_mqtt!("mqtt availability");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let mut a = Daemon::start(&broker, "t8a", &[]);
    let b = Daemon::start(&broker, "t8b", &[]);
    let mut obs = Mqtt::connect(&broker, "t8-observer");
    obs.subscribe("ember/+/status");
    for d in [&a, &b] {
        let m = obs.wait(WAIT, |m| m.topic == d.status_topic()).unwrap();
        assert_eq!(m.text(), "online");
        assert!(m.retain, "status is not retained");
    }
    // SIGTERM: the daemon says offline itself, retained, and exits 0.
    a.signal(libc::SIGTERM);
    let m = obs
        .wait(Duration::from_secs(60), |m| m.topic == a.status_topic())
        .unwrap();
    assert_eq!(m.text(), "offline");
    assert!(m.retain, "offline is not retained");
    assert_eq!(a.wait_exit(Duration::from_secs(60)).code(), Some(0));
    // SIGKILL: the broker publishes the Last Will.
    b.signal(libc::SIGKILL);
    let m = obs
        .wait(Duration::from_secs(60), |m| m.topic == b.status_topic())
        .unwrap();
    assert_eq!(m.text(), "offline");
    assert!(m.retain, "the Last Will is not retained");
    // A newcomer sees both offline, retained.
    let mut late = Mqtt::connect(&broker, "t8-late");
    late.subscribe("ember/+/status");
    for d in [&a, &b] {
        let m = late.wait(WAIT, |m| m.topic == d.status_topic()).unwrap();
        assert_eq!(
            (m.text().as_str(), m.retain),
            ("offline", true),
            "{}",
            d.node
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Home Assistant discovery

#[test]
fn home_assistant_discovery_configs_and_a_prompt_from_the_text_entity() {
    require_mqtt!("mqtt home assistant discovery");
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    // A model whose template does not open a think block (the answer is all text, not
    // reasoning), and a small context that bounds an answer asked without max_tokens.
    let d = Daemon::start_model(
        &broker,
        "t9",
        "tiny-llama-q2_k",
        &["--mqtt-discovery", "--ctx-size", "256"],
    );
    let node = "t9";
    let configs = [
        "homeassistant/text/t9/prompt/config",
        "homeassistant/sensor/t9/answer/config",
        "homeassistant/sensor/t9/tokens_per_second/config",
        "homeassistant/sensor/t9/queue_depth/config",
        "homeassistant/binary_sensor/t9/busy/config",
    ];
    let mut c = Mqtt::connect(&broker, "t9-ha");
    c.subscribe("homeassistant/+/t9/+/config");
    let mut seen: BTreeMap<&str, Value> = BTreeMap::new();
    for topic in configs {
        let m = c
            .wait(WAIT, |m| m.topic == topic)
            .unwrap_or_else(|| panic!("no discovery config on {topic}"));
        assert!(m.retain, "{topic} is not retained");
        let v: Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{topic}: not JSON ({e}): {}", m.text()));
        assert_eq!(
            v["availability_topic"],
            format!("ember/{node}/status"),
            "{topic}: {v}"
        );
        let uid = v["unique_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{topic}: no unique_id: {v}"));
        assert!(!uid.is_empty(), "{topic}: {v}");
        let ids = v["device"]["identifiers"]
            .as_array()
            .unwrap_or_else(|| panic!("{topic}: no device.identifiers: {v}"));
        assert!(
            ids.contains(&json!(format!("ember_{node}"))),
            "{topic}: {v}"
        );
        seen.insert(topic, v);
    }
    let uids: std::collections::BTreeSet<&str> = seen
        .values()
        .map(|v| v["unique_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids.len(),
        configs.len(),
        "unique_ids are not unique: {uids:?}"
    );
    let text = &seen[configs[0]];
    assert_eq!(
        text["command_topic"],
        format!("ember/{node}/ha/prompt"),
        "{text}"
    );
    let answer = &seen[configs[1]];
    assert_eq!(
        answer["state_topic"],
        format!("ember/{node}/ha/answer"),
        "{answer}"
    );
    assert_eq!(
        answer["json_attributes_topic"],
        format!("ember/{node}/ha/answer/attributes"),
        "{answer}"
    );
    for topic in &configs[2..] {
        assert!(
            seen[topic]["state_topic"].is_string(),
            "{topic}: {}",
            seen[topic]
        );
    }
    // Home Assistant restarted: every config again.
    c.publish(
        "homeassistant/status",
        QoS::AtLeastOnce,
        "online",
        PublishProperties::default(),
    );
    for topic in configs {
        let m = c.wait(WAIT, |m| m.topic == topic).unwrap_or_else(|| {
            panic!("{topic} not re-published after homeassistant/status online")
        });
        serde_json::from_slice::<Value>(&m.payload).unwrap();
    }
    // A prompt typed into the text entity: the answer sensor gets the first 255 characters, its
    // attributes the whole text.
    c.subscribe(&format!("ember/{node}/ha/answer"));
    c.subscribe(&format!("ember/{node}/ha/answer/attributes"));
    c.publish(
        &format!("ember/{node}/ha/prompt"),
        QoS::AtLeastOnce,
        "Tell me a long story about the sea.",
        PublishProperties::default(),
    );
    let attrs = c
        .wait(WAIT, |m| {
            m.topic == format!("ember/{node}/ha/answer/attributes")
        })
        .expect("no answer attributes");
    let state = c
        .wait(WAIT, |m| m.topic == format!("ember/{node}/ha/answer"))
        .expect("no answer state");
    let attrs: Value = serde_json::from_slice(&attrs.payload).unwrap();
    let full = attrs["text"].as_str().unwrap_or_else(|| panic!("{attrs}"));
    assert!(
        attrs["finish_reason"] == "stop" || attrs["finish_reason"] == "length",
        "{attrs}"
    );
    let state = state.text();
    assert!(
        state.chars().count() <= 255,
        "state of {} chars",
        state.chars().count()
    );
    let head: String = full.chars().take(255).collect();
    assert_eq!(state, head);
    assert!(!full.is_empty());
    drop(d);
}

// ---------------------------------------------------------------------------------------------
// 10. The stock command-line clients

#[test]
fn mosquitto_pub_and_sub_drive_the_daemon() {
    require_mqtt!("mqtt mosquitto_pub/mosquitto_sub");
    let on_path = |tool: &str| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).any(|d| d.join(tool).is_file())
    };
    if !(on_path("mosquitto_pub") && on_path("mosquitto_sub")) {
        assert!(
            std::env::var_os("EMBER_TEST_MQTT").is_none_or(|v| v != "1"),
            "EMBER_TEST_MQTT=1 but mosquitto_pub/mosquitto_sub are not on PATH"
        );
        eprintln!(
            "SKIP mqtt_cli.sh: mosquitto_pub/mosquitto_sub not on PATH (apt install mosquitto-clients)"
        );
        return;
    }
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let d = Daemon::start(&broker, "t10", &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mqtt_cli.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(broker.port.to_string())
        .arg(&d.node)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mqtt_cli.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("\"finish_reason\""), "{stdout}\n{stderr}");
}

/// Runs `cmd`, panicking with its stderr when it fails.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test CA, and a certificate it signed for `name` (`localhost` also gets the SAN the broker
/// is reached by), as PEM files `<name>.pem` / `<name>.key` in `dir`.
fn issue_cert(dir: &Path, name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    if !dir.join("ca.pem").exists() {
        run_ok(
            Command::new("openssl")
                .current_dir(dir)
                .args(["req", "-x509"])
                .args(ec)
                .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
                .args(["-subj", "/CN=ember test CA"]),
        );
    }
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .arg("req")
            .args(ec)
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ])
            .args(["-subj", &format!("/CN={name}")]),
    );
    run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args(["x509", "-req", "-in", &format!("{name}.csr")])
            .args(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
            .args(["-out", &format!("{name}.pem"), "-days", "2", "-extfile"])
            .arg(&ext),
    );
}

#[test]
fn mqtts_with_client_certificate_and_password() {
    require_mqtt!("mqtt TLS");
    let tools = [
        "openssl",
        "mosquitto_passwd",
        "mosquitto_pub",
        "mosquitto_sub",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(t) = tools
        .iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
    {
        assert!(
            std::env::var_os("EMBER_TEST_MQTT").is_none_or(|v| v != "1"),
            "EMBER_TEST_MQTT=1 but {t} is not on PATH"
        );
        eprintln!("SKIP mqtt TLS: {t} not on PATH");
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    issue_cert(d, "localhost");
    issue_cert(d, "emberd");
    issue_cert(d, "hub");
    run_ok(
        Command::new("mosquitto_passwd")
            .current_dir(d)
            .args(["-b", "-c", "passwd", "kitchen", "s3cret"]),
    );
    std::fs::write(d.join("password"), "s3cret\n").unwrap();
    std::fs::write(d.join("wrong"), "guess\n").unwrap();
    let p = |f: &str| d.join(f).display().to_string();
    let broker = Broker::start_with(
        d,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             allow_anonymous false\npassword_file {}\n",
            p("ca.pem"),
            p("localhost.pem"),
            p("localhost.key"),
            p("passwd")
        ),
    );
    let url = format!("mqtts://localhost:{}", broker.port);
    let tls = |password: &str| {
        vec![
            "--mqtt-ca".to_owned(),
            p("ca.pem"),
            "--mqtt-client-cert".to_owned(),
            p("emberd.pem"),
            "--mqtt-client-key".to_owned(),
            p("emberd.key"),
            "--mqtt-username".to_owned(),
            "kitchen".to_owned(),
            "--mqtt-password-file".to_owned(),
            p(password),
        ]
    };
    let args = tls("password");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = Daemon::spawn_at(&url, "tls", MODEL, &args);
    let client_args = format!(
        "--cafile {} --cert {} --key {} -u kitchen -P s3cret",
        p("ca.pem"),
        p("hub.pem"),
        p("hub.key")
    );
    // The retained status, read over TLS, says the daemon got in.
    let t0 = Instant::now();
    loop {
        let out = Command::new("mosquitto_sub")
            .args(["-V", "5", "-h", "localhost", "-p", &broker.port.to_string()])
            .args(client_args.split(' '))
            .args(["-t", "ember/tls/status", "-C", "1", "-W", "2"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "online" {
            break;
        }
        daemon.assert_running();
        assert!(t0.elapsed() < WAIT, "the daemon never came online over TLS");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mqtt_cli.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(broker.port.to_string())
        .arg("tls")
        .env("EMBER_MQTT_HOST", "localhost")
        .env("EMBER_MQTT_CLIENT_ARGS", &client_args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mqtt_cli.sh over TLS failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"finish_reason\""), "{stdout}");

    // A wrong password is refused by the broker: the daemon says so and keeps retrying.
    let args = tls("wrong");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut refused = Daemon::spawn_at(&url, "tls2", MODEL, &args);
    let t0 = Instant::now();
    while !refused.log().contains("refused the connection") {
        refused.assert_running();
        assert!(t0.elapsed() < WAIT, "no refusal logged:\n{}", refused.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
