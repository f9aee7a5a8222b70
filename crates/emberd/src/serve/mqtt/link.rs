//! The broker connection: a driver task that owns rumqttc's event loop (connect, reconnect with
//! capped exponential backoff and jitter) and an [`Outbox`] that makes sure no QoS 1 reply is lost
//! across a reconnect.
//!
//! rumqttc keeps unacknowledged publishes for retransmission, but drops them when the broker
//! comes back without our session (a restarted broker without persistence), and what sits in its
//! request channel at that moment is lost with it. So each connection gets a fresh rumqttc client
//! (a *generation*); the outbox follows every QoS 1 reply from hand-over (`handed`, in the order
//! rumqttc sends them), to `Outgoing::Publish(pkid)` (`inflight`), to `PubAck(pkid)` (done). When
//! a connection ends, whatever was not acknowledged goes back to the front of the queue and is
//! published again on the next connection: at least once, as QoS 1 promises. QoS 0 stream chunks
//! are not kept: a chunk that misses its connection is dropped (the final message carries the
//! whole text).

use super::settings::MqttSettings;
use anyhow::{Context, Result};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, LastWill, LastWillProperties, Packet, Publish, PublishProperties,
};
use rumqttc::v5::{AsyncClient, ClientError, ConnectionError, Event, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// rumqttc's request channel, per connection. Small: the outbox is the real queue.
const CHANNEL: usize = 64;
/// Most QoS 1 messages kept for a broker that is away (oldest dropped, with a warning, beyond).
const MAX_QUEUED: usize = 10_000;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Out {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub props: PublishProperties,
}

/// What the driver reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// A connection is up (CONNACK success); publish through `client`.
    Connected {
        generation: u64,
        client: AsyncClient,
        session_present: bool,
    },
    /// The connection `generation` ended.
    Disconnected { generation: u64 },
    /// A message from the broker.
    Message { publish: Publish },
    /// rumqttc took the next handed message off its channel (`pkid` 0 for QoS 0).
    Sent { generation: u64, pkid: u16 },
    /// The broker acknowledged a QoS 1 publish.
    Acked { generation: u64, pkid: u16 },
}

/// rumqttc's options from the settings: a persistent session, the Last Will, TLS.
pub fn options(s: &MqttSettings) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    o.set_keep_alive(s.keep_alive);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(s.session_expiry));
    // Requests bigger than the limit still arrive (and get a `too_large` reply) up to this size;
    // beyond it the broker drops them.
    let incoming = u32::try_from(s.max_payload.saturating_mul(4).max(1 << 20)).unwrap_or(u32::MAX);
    o.set_max_packet_size(Some(incoming));
    o.set_connection_timeout(10);
    // Stream chunks are small packets sent as tokens come: Nagle would hold them back.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(10);
    o.set_network_options(net);
    if let Some(user) = &s.username {
        let pass = s.password.as_ref().map_or("", |p| p.expose());
        o.set_credentials(user.clone(), pass.to_owned());
    }
    o.set_last_will(LastWill::new(
        format!("{}/status", s.base()),
        "offline",
        QoS::AtLeastOnce,
        true,
        Some(LastWillProperties {
            delay_interval: None,
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: Some("text/plain".into()),
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    ));
    if let Some(files) = &s.tls {
        let cfg = super::settings::tls_config(files)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(o)
}

/// Reconnect delays: 0.5 s doubling to 10 s, each drawn in [d/2, d] ("equal jitter") so a fleet
/// that lost its broker does not come back in lockstep.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The delay before the next attempt; `unit` is a random number in [0, 1).
    pub fn delay(&mut self, unit: f64) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::CAP);
        d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

fn jitter() -> f64 {
    (crate::serve::http::generation::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs connections until `stop` is set and the current one has ended.
pub async fn drive(
    opts: MqttOptions,
    events: mpsc::UnboundedSender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    let mut generation = 0u64;
    // Failed attempts in a row: a broker away for an hour logs a warning a minute, not 360.
    let mut failures = 0u32;
    let target = format!("{}:{}", opts.broker_address().0, opts.broker_address().1);
    while !*stop.borrow() {
        generation += 1;
        let (client, mut eventloop) = AsyncClient::new(opts.clone(), CHANNEL);
        let mut connected = false;
        loop {
            let polled = tokio::select! {
                r = eventloop.poll() => r,
                _ = stop.wait_for(|s| *s), if !connected => break,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        tracing::error!(
                            "mqtt broker {target} refused the connection: {:?}",
                            ack.code
                        );
                        break;
                    }
                    connected = true;
                    backoff.reset();
                    failures = 0;
                    tracing::info!(
                        "mqtt connected to {target} (session {})",
                        if ack.session_present {
                            "resumed"
                        } else {
                            "new"
                        }
                    );
                    let _ = events.send(LinkEvent::Connected {
                        generation,
                        client: client.clone(),
                        session_present: ack.session_present,
                    });
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let _ = events.send(LinkEvent::Message { publish });
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let _ = events.send(LinkEvent::Acked {
                        generation,
                        pkid: ack.pkid,
                    });
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid) | Outgoing::AwaitAck(pkid))) => {
                    let _ = events.send(LinkEvent::Sent { generation, pkid });
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::debug!("mqtt disconnect sent");
                }
                Ok(_) => {}
                Err(e) => {
                    if connected && !*stop.borrow() {
                        tracing::warn!("mqtt connection to {target} lost: {e}");
                    } else if !connected {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(6) {
                            if let ConnectionError::ConnectionRefused(code) = &e {
                                tracing::error!(
                                    "mqtt broker {target} refused the connection: {code:?} \
                                     (check the username, password, client certificate and \
                                     client id; attempt {failures})"
                                );
                            } else {
                                tracing::warn!(
                                    "mqtt cannot connect to {target} (attempt {failures}): {e}"
                                );
                            }
                        }
                    }
                    break;
                }
            }
        }
        if connected {
            let _ = events.send(LinkEvent::Disconnected { generation });
        }
        if *stop.borrow() {
            break;
        }
        let wait = backoff.delay(jitter());
        tracing::debug!("mqtt reconnecting in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Replies waiting for, and on their way to, the broker.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Not handed to any connection yet (or taken back from one that ended).
    queue: VecDeque<(u64, Out)>,
    /// Handed to the current connection's client, in order; rumqttc has not sent them yet.
    handed: VecDeque<(u64, Out)>,
    /// Sent at QoS 1, waiting for PUBACK, by packet id.
    inflight: HashMap<u16, (u64, Out)>,
    /// The current connection.
    link: Option<(u64, AsyncClient)>,
    next_id: u64,
    /// QoS 0 messages dropped because no connection was up.
    pub dropped: u64,
}

impl Outbox {
    /// Queues a message and sends what the connection takes. QoS 0 messages are dropped when no
    /// connection is up.
    pub fn push(&mut self, out: Out) {
        if self.link.is_none() && out.qos == QoS::AtMostOnce {
            self.dropped += 1;
            return;
        }
        if self.queue.len() >= MAX_QUEUED {
            tracing::warn!("mqtt outbox full ({MAX_QUEUED} messages): dropping the oldest reply");
            self.queue.pop_front();
        }
        self.next_id += 1;
        self.queue.push_back((self.next_id, out));
        self.flush();
    }

    /// Hands queued messages to the client while its channel has room.
    pub fn flush(&mut self) {
        let Some((_, client)) = &self.link else {
            return;
        };
        while let Some((id, out)) = self.queue.pop_front() {
            match client.try_publish_with_properties(
                out.topic.clone(),
                out.qos,
                out.retain,
                out.payload.clone(),
                out.props.clone(),
            ) {
                Ok(()) => self.handed.push_back((id, out)),
                Err(ClientError::TryRequest(_)) => {
                    // Full (wait for the next `Sent`) or closed (a `Disconnected` follows).
                    self.queue.push_front((id, out));
                    break;
                }
                Err(e) => {
                    tracing::warn!("mqtt: cannot publish to {}: {e}", out.topic);
                }
            }
        }
    }

    /// Which connection is current.
    pub fn generation(&self) -> Option<u64> {
        self.link.as_ref().map(|(g, _)| *g)
    }

    pub fn client(&self) -> Option<&AsyncClient> {
        self.link.as_ref().map(|(_, c)| c)
    }

    /// A new connection: what the last one left unacknowledged goes first.
    pub fn connected(&mut self, generation: u64, client: AsyncClient) {
        self.requeue_unacked();
        self.link = Some((generation, client));
        self.flush();
    }

    /// The connection ended: keep its unacknowledged QoS 1 messages for the next one.
    pub fn disconnected(&mut self, generation: u64) {
        if self.generation() == Some(generation) {
            self.link = None;
            self.requeue_unacked();
        }
    }

    fn requeue_unacked(&mut self) {
        let mut back: Vec<(u64, Out)> = self.inflight.drain().map(|(_, v)| v).collect();
        back.extend(self.handed.drain(..));
        back.retain(|(_, o)| o.qos != QoS::AtMostOnce);
        back.sort_by_key(|(id, _)| *id);
        for m in back.into_iter().rev() {
            self.queue.push_front(m);
        }
    }

    /// rumqttc sent the oldest handed message (`pkid` 0: QoS 0) or retransmitted one in flight.
    pub fn sent(&mut self, generation: u64, pkid: u16) {
        if self.generation() != Some(generation) {
            return;
        }
        if pkid != 0 && self.inflight.contains_key(&pkid) {
            return;
        }
        if let Some((id, out)) = self.handed.pop_front() {
            match (out.qos, pkid) {
                (QoS::AtMostOnce, 0) => {}
                (QoS::AtMostOnce, _) | (_, 0) => {
                    // Out of step with rumqttc: should not happen. Keep the message safe.
                    tracing::warn!("mqtt outbox out of step (pkid {pkid}); re-queueing");
                    if out.qos != QoS::AtMostOnce {
                        self.queue.push_front((id, out));
                    }
                }
                _ => {
                    self.inflight.insert(pkid, (id, out));
                }
            }
        }
        self.flush();
    }

    pub fn acked(&mut self, generation: u64, pkid: u16) {
        if self.generation() == Some(generation) {
            self.inflight.remove(&pkid);
        }
    }

    /// Nothing waiting or unacknowledged.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.handed.is_empty() && self.inflight.is_empty()
    }

    /// Messages not yet acknowledged (for logs at shutdown).
    pub fn len(&self) -> usize {
        self.queue.len() + self.handed.len() + self.inflight.len()
    }
}

/// A message's user properties and content type.
pub fn props(content_type: &str, user: Vec<(String, String)>) -> PublishProperties {
    PublishProperties {
        content_type: Some(content_type.to_owned()),
        user_properties: user,
        ..Default::default()
    }
}

/// Connects once to check the settings at start (bad TLS files fail before anything runs).
pub fn check(s: &MqttSettings) -> Result<()> {
    options(s).map(drop).context("mqtt settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let d: Vec<f64> = (0..8).map(|_| b.delay(1.0).as_secs_f64()).collect();
        assert_eq!(d, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
        b.reset();
        assert_eq!(b.delay(0.0), Duration::from_millis(250));
        assert!((0..100).all(|_| {
            let x = jitter();
            (0.0..1.0).contains(&x)
        }));
    }

    fn out(topic: &str, qos: QoS) -> Out {
        Out {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            props: PublishProperties::default(),
        }
    }

    fn topics(o: &Outbox) -> Vec<String> {
        o.queue.iter().map(|(_, m)| m.topic.clone()).collect()
    }

    #[test]
    fn unacked_qos1_survives_a_reconnect_in_order_and_qos0_does_not() {
        let opts = MqttOptions::new("t", "127.0.0.1", 1);
        let mut o = Outbox::default();
        // Not connected: QoS 1 waits, QoS 0 is dropped.
        o.push(out("a", QoS::AtLeastOnce));
        o.push(out("chunk", QoS::AtMostOnce));
        assert_eq!(topics(&o), ["a"]);
        assert_eq!(o.dropped, 1);
        let (client, _el) = AsyncClient::new(opts.clone(), 8);
        o.connected(1, client);
        assert!(o.queue.is_empty());
        o.push(out("c0", QoS::AtMostOnce));
        o.push(out("b", QoS::AtLeastOnce));
        o.push(out("c", QoS::AtLeastOnce));
        // rumqttc sends a (pkid 1), the chunk, b (pkid 2); c is still in its channel.
        o.sent(1, 1);
        o.sent(1, 0);
        o.sent(1, 2);
        o.acked(1, 1);
        // A retransmission of pkid 2 does not consume a handed message.
        o.sent(1, 2);
        assert_eq!(o.handed.len(), 1);
        o.disconnected(1);
        // b (in flight) and c (handed) come back, b first.
        assert_eq!(topics(&o), ["b", "c"]);
        // Stale events of the old connection change nothing.
        o.acked(1, 2);
        assert_eq!(o.len(), 2);
        let (client, _el2) = AsyncClient::new(opts, 8);
        o.connected(2, client);
        assert_eq!(o.handed.len(), 2);
        o.sent(2, 1);
        o.sent(2, 2);
        o.acked(2, 1);
        o.acked(2, 2);
        assert!(o.is_empty());
    }
}
