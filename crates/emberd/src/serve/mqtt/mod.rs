//! The MQTT front of `emberd serve`: request/response over an MQTT v5 broker, for hubs, Node-RED,
//! Home Assistant and microcontrollers.
//!
//! - Requests arrive on `ember/<node>/request` and, with a group, on the shared subscription
//!   `$share/<group>/ember/request` (a fleet of boards sharing one queue). The payload is JSON
//!   (the OpenAI chat body) or postcard, by the v5 Content-Type (`ember-proto`).
//! - Replies go to the request's Response Topic with its Correlation Data (v3.1.1 clients: the
//!   payload's `reply_to` and `id`): stream chunks at QoS 0, then the final message (or an error)
//!   at QoS 1, with user properties `seq`, `final` and `node`; never retained.
//! - QoS 1 requests are de-duplicated by (reply topic, correlation data) for ten minutes; one
//!   whose Message Expiry passes before a slot takes it is not run (`expired`).
//! - `ember/<node>/status` is a retained `online`/`offline`, with a Last Will for crashes.
//! - Optional Home Assistant discovery (`discovery.rs`).
//!
//! Structure: [`link::drive`] owns the connection (reconnect with backoff); the manager task
//! owns the [`link::Outbox`] (nothing acknowledged is lost across reconnects), routes incoming
//! messages to one task per request ([`handler::handle`]), and runs the shutdown sequence.

mod discovery;
mod handler;
mod link;
pub mod settings;
mod tools;

use crate::serve::http::AppState;
use anyhow::Result;
use link::{LinkEvent, Out, Outbox};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
pub use settings::{MqttConfig, MqttSettings};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Request keys seen recently (QoS 1 de-duplication).
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashSet<(String, Vec<u8>)>,
    order: VecDeque<(Instant, (String, Vec<u8>))>,
}

impl Dedup {
    pub const WINDOW: Duration = Duration::from_secs(600);
    pub const MAX: usize = 10_000;
}

/// What request tasks share with the manager.
#[derive(Debug)]
pub struct Shared {
    pub settings: MqttSettings,
    pub state: AppState,
    out: mpsc::UnboundedSender<Out>,
    dedup: Mutex<Dedup>,
    draining: AtomicBool,
    /// The last generation's decode speed (f64 bits), for Home Assistant's sensor.
    rate: AtomicU64,
}

impl Shared {
    /// Queues a message for the broker.
    pub fn send(&self, out: Out) {
        // Fails only once the manager ended (shutdown), when nothing can be published anyway.
        let _ = self.out.send(out);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// False when this request was seen within the de-duplication window.
    pub fn dedup_insert(&self, topic: &str, key: Vec<u8>) -> bool {
        match self.dedup.lock() {
            Ok(mut d) => d.insert(topic, key, Instant::now()),
            Err(_) => true,
        }
    }

    pub fn record_rate(&self, t: &ember_proto::Timings) {
        if t.predicted_ms > 0.0 && t.predicted_n > 1 {
            let rate = f64::from(t.predicted_n - 1) / (f64::from(t.predicted_ms) / 1e3);
            self.rate.store(rate.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn last_rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }
}

enum Cmd {
    /// Stop taking requests; answer when the running ones are done.
    Drain(oneshot::Sender<()>),
    /// Publish `offline`, flush, disconnect.
    Close(oneshot::Sender<()>),
}

/// The running MQTT front.
#[derive(Debug)]
pub struct MqttFront {
    cmd: mpsc::UnboundedSender<Cmd>,
    manager: JoinHandle<()>,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Drain(_) => "Drain",
            Cmd::Close(_) => "Close",
        })
    }
}

/// Checks the settings (TLS files) before anything starts.
pub fn check(s: &MqttSettings) -> Result<()> {
    link::check(s)
}

impl MqttFront {
    /// Connects (in the background, retrying) and serves requests with the loaded model.
    pub fn start(settings: MqttSettings, state: AppState) -> Result<Self> {
        let opts = link::options(&settings)?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(
            "mqtt: node {} on {}:{}{} (requests on ember/{}/request{})",
            settings.node,
            settings.host,
            settings.port,
            if settings.tls.is_some() { " (TLS)" } else { "" },
            settings.node,
            settings
                .group
                .as_ref()
                .map(|g| format!(" and $share/{g}/ember/request"))
                .unwrap_or_default()
        );
        let shared = Arc::new(Shared {
            settings,
            state,
            out: out_tx,
            dedup: Mutex::new(Dedup::default()),
            draining: AtomicBool::new(false),
            rate: AtomicU64::new(0f64.to_bits()),
        });
        let driver = tokio::spawn(link::drive(opts, link_tx, stop_rx));
        let manager = tokio::spawn(
            Manager {
                shared,
                outbox: Outbox::default(),
                tasks: JoinSet::new(),
                subscribed: false,
                stop: stop_tx,
                drained: Vec::new(),
                closing: None,
                last_state: None,
            }
            .run(link_rx, out_rx, cmd_rx),
        );
        Ok(MqttFront {
            cmd: cmd_tx,
            manager,
            driver,
        })
    }

    /// Stops taking requests (new ones get `shutting_down`); resolves when the running ones
    /// have sent their last message.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let cmd = self.cmd.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            if cmd.send(Cmd::Drain(tx)).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// Publishes `offline`, waits (3 s at most) for unacknowledged replies, disconnects.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.driver).await;
        self.manager.abort();
    }
}

/// The manager task's state.
struct Manager {
    shared: Arc<Shared>,
    outbox: Outbox,
    tasks: JoinSet<()>,
    subscribed: bool,
    stop: watch::Sender<bool>,
    drained: Vec<oneshot::Sender<()>>,
    closing: Option<(Instant, oneshot::Sender<()>)>,
    last_state: Option<serde_json::Value>,
}

impl Manager {
    const CLOSE_WAIT: Duration = Duration::from_secs(3);

    async fn run(
        mut self,
        mut link: mpsc::UnboundedReceiver<LinkEvent>,
        mut out: mpsc::UnboundedReceiver<Out>,
        mut cmd: mpsc::UnboundedReceiver<Cmd>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                Some(ev) = link.recv() => self.on_link(ev),
                Some(o) = out.recv() => self.outbox.push(o),
                Some(c) = cmd.recv() => match c {
                    Cmd::Drain(tx) => {
                        self.shared.draining.store(true, Ordering::Release);
                        self.drained.push(tx);
                    }
                    Cmd::Close(tx) => {
                        let s = &self.shared.settings;
                        self.outbox.push(status(s, "offline"));
                        self.closing = Some((Instant::now() + Self::CLOSE_WAIT, tx));
                    }
                },
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                _ = tick.tick() => {
                    ticks += 1;
                    // Home Assistant's sensors: every 10 s, when they changed.
                    if ticks.is_multiple_of(20) {
                        self.publish_state(false);
                    }
                }
            }
            if self.tasks.is_empty() {
                for tx in self.drained.drain(..) {
                    let _ = tx.send(());
                }
            }
            if let Some((deadline, _)) = &self.closing
                && (self.outbox.is_empty()
                    || self.outbox.client().is_none()
                    || Instant::now() >= *deadline)
            {
                if !self.outbox.is_empty() {
                    tracing::warn!(
                        "mqtt: {} message(s) not acknowledged by the broker at shutdown",
                        self.outbox.len()
                    );
                }
                if let Some(c) = self.outbox.client() {
                    let _ = c.try_disconnect();
                }
                let _ = self.stop.send(true);
                if let Some((_, tx)) = self.closing.take() {
                    let _ = tx.send(());
                }
                return;
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected {
                generation,
                client,
                session_present,
            } => {
                let s = &self.shared.settings;
                // A broker that kept our session kept the subscriptions too.
                if !session_present || !self.subscribed {
                    let mut topics = vec![format!("{}/request", s.base())];
                    if let Some(g) = &s.group {
                        topics.push(format!("$share/{g}/ember/request"));
                    }
                    if let Some(prefix) = &s.discovery {
                        let t = discovery::Topics::new(&s.base(), prefix);
                        topics.push(t.prompt);
                        topics.push(t.ha_status);
                    }
                    for t in topics {
                        if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                            tracing::error!("mqtt: cannot subscribe to {t}: {e}");
                        }
                    }
                    self.subscribed = true;
                }
                self.outbox.connected(generation, client);
                self.outbox.push(status(&self.shared.settings, "online"));
                if let Some(prefix) = self.shared.settings.discovery.clone() {
                    for m in discovery::config_messages(&self.shared, &prefix) {
                        self.outbox.push(m);
                    }
                    self.publish_state(true);
                }
            }
            LinkEvent::Disconnected { generation } => self.outbox.disconnected(generation),
            LinkEvent::Message { publish } => self.dispatch(publish),
            LinkEvent::Sent { generation, pkid } => self.outbox.sent(generation, pkid),
            LinkEvent::Acked { generation, pkid } => self.outbox.acked(generation, pkid),
        }
    }

    fn dispatch(&mut self, publish: Publish) {
        let s = &self.shared.settings;
        let topic = String::from_utf8_lossy(&publish.topic);
        if topic == format!("{}/request", s.base()) || topic == "ember/request" {
            self.tasks
                .spawn(handler::handle(Arc::clone(&self.shared), publish));
            return;
        }
        if let Some(prefix) = &s.discovery {
            let t = discovery::Topics::new(&s.base(), prefix);
            if topic == t.ha_status {
                if publish.payload.as_ref() == b"online" {
                    tracing::info!("mqtt: Home Assistant is online; publishing discovery");
                    for m in discovery::config_messages(&self.shared, prefix) {
                        self.outbox.push(m);
                    }
                    self.publish_state(true);
                }
                return;
            }
            if topic == t.prompt {
                if self.shared.is_draining() {
                    return;
                }
                self.tasks
                    .spawn(discovery::prompt(Arc::clone(&self.shared), publish, t));
                return;
            }
        }
        tracing::debug!("mqtt: message on {topic} ignored");
    }

    fn publish_state(&mut self, force: bool) {
        let Some(prefix) = &self.shared.settings.discovery else {
            return;
        };
        let v = discovery::state(&self.shared);
        if !force && self.last_state.as_ref() == Some(&v) {
            return;
        }
        let t = discovery::Topics::new(&self.shared.settings.base(), prefix);
        self.outbox.push(discovery::json_out(t.state, &v, false));
        self.last_state = Some(v);
    }
}

/// The retained availability message.
fn status(s: &MqttSettings, what: &str) -> Out {
    Out {
        topic: format!("{}/status", s.base()),
        payload: bytes::Bytes::from(what.to_owned()),
        qos: QoS::AtLeastOnce,
        retain: true,
        props: link::props("text/plain", Vec::new()),
    }
}
