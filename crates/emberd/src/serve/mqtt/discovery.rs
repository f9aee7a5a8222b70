//! Home Assistant MQTT discovery: a text entity to type a prompt into, a sensor holding the
//! answer (its state is capped at 255 characters by Home Assistant, so the whole answer goes in
//! the sensor's attributes), and sensors for decode speed, queue depth and busy. The configs are
//! retained, and published again when Home Assistant announces `online` on
//! `<prefix>/status` (it lost them when it restarted without a persistent broker).

use super::Shared;
use super::handler;
use super::link::{Out, props};
use crate::serve::http::generation::{self, RequestCtx};
use bytes::Bytes;
use ember_proto::{Message, Request};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Home Assistant's longest state.
const MAX_STATE_CHARS: usize = 255;

/// Topics of this node's Home Assistant entities.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prompt: String,
    pub answer: String,
    pub attributes: String,
    pub state: String,
    pub ha_status: String,
}

impl Topics {
    pub fn new(base: &str, prefix: &str) -> Self {
        Topics {
            prompt: format!("{base}/ha/prompt"),
            answer: format!("{base}/ha/answer"),
            attributes: format!("{base}/ha/answer/attributes"),
            state: format!("{base}/ha/state"),
            ha_status: format!("{prefix}/status"),
        }
    }
}

/// The discovery messages: (config topic, config).
pub fn configs(node: &str, prefix: &str, model: &str) -> Vec<(String, Value)> {
    let base = format!("ember/{node}");
    let t = Topics::new(&base, prefix);
    let device = json!({
        "identifiers": [format!("ember_{node}")],
        "name": format!("ember {node}"),
        "manufacturer": "ember",
        "model": model,
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let entity = |component: &str, object: &str, fields: Value| {
        let mut c = json!({
            "unique_id": format!("ember_{node}_{object}"),
            "object_id": format!("ember_{node}_{object}"),
            "availability_topic": format!("{base}/status"),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        });
        if let (Some(c), Value::Object(f)) = (c.as_object_mut(), fields) {
            c.extend(f);
        }
        (format!("{prefix}/{component}/{node}/{object}/config"), c)
    };
    let sensor = |object: &str, name: &str, unit: Option<&str>, icon: &str| {
        let mut f = json!({
            "name": name,
            "state_topic": t.state,
            "value_template": format!("{{{{ value_json.{object} }}}}"),
            "state_class": "measurement",
            "icon": icon,
        });
        if let Some(u) = unit {
            f["unit_of_measurement"] = u.into();
        }
        entity("sensor", object, f)
    };
    vec![
        entity(
            "text",
            "prompt",
            json!({
                "name": "Prompt",
                "command_topic": t.prompt,
                "mode": "text",
                "max": MAX_STATE_CHARS,
                "icon": "mdi:chat-question",
            }),
        ),
        entity(
            "sensor",
            "answer",
            json!({
                "name": "Answer",
                "state_topic": t.answer,
                "json_attributes_topic": t.attributes,
                "icon": "mdi:chat",
            }),
        ),
        sensor(
            "tokens_per_second",
            "Decode speed",
            Some("tok/s"),
            "mdi:speedometer",
        ),
        sensor("queue_depth", "Queue depth", None, "mdi:tray-full"),
        entity(
            "binary_sensor",
            "busy",
            json!({
                "name": "Busy",
                "state_topic": t.state,
                "value_template": "{{ value_json.busy }}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "running",
            }),
        ),
    ]
}

/// The retained config messages.
pub fn config_messages(shared: &Shared, prefix: &str) -> Vec<Out> {
    let model = shared
        .state
        .loaded
        .get()
        .map_or_else(|| "unknown".to_owned(), |l| l.model_id.clone());
    configs(&shared.settings.node, prefix, &model)
        .into_iter()
        .map(|(topic, c)| json_out(topic, &c, true))
        .collect()
}

/// The sensors' state: `{"tokens_per_second", "queue_depth", "busy"}`.
pub fn state(shared: &Shared) -> Value {
    let (queued, active) = shared.state.loaded.get().map_or((0, 0), |l| {
        let s = l.engine.stats();
        (s.queued, s.active)
    });
    json!({
        "tokens_per_second": (shared.last_rate() * 10.0).round() / 10.0,
        "queue_depth": queued,
        "busy": if active > 0 { "ON" } else { "OFF" },
    })
}

pub fn json_out(topic: String, v: &Value, retain: bool) -> Out {
    Out {
        topic,
        payload: Bytes::from(v.to_string()),
        qos: QoS::AtLeastOnce,
        retain,
        props: props(ember_proto::CONTENT_TYPE_JSON, Vec::new()),
    }
}

/// The first `MAX_STATE_CHARS` characters (never splitting one).
fn state_text(text: &str) -> &str {
    match text.char_indices().nth(MAX_STATE_CHARS) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A prompt typed into Home Assistant: runs it as a one-message chat and publishes the answer.
pub async fn prompt(shared: Arc<Shared>, publish: Publish, topics: Topics) {
    let text = String::from_utf8_lossy(&publish.payload).trim().to_owned();
    if text.is_empty() {
        return;
    }
    if publish.payload.len() > shared.settings.max_payload {
        tracing::warn!("mqtt: Home Assistant prompt over max_payload; ignored");
        return;
    }
    let req = Request {
        messages: vec![Message::new("user", text.clone())],
        ..Default::default()
    };
    let ctx = RequestCtx {
        id: generation::random_id("ha-"),
        route: "mqtt".into(),
        peer: Some(topics.prompt.clone()),
        started: Instant::now(),
    };
    let attributes = match handler::run(&shared, &ctx, req, None, |_, _| {}).await {
        Ok(f) => {
            shared.record_rate(&f.timings);
            shared.send(Out {
                topic: topics.answer.clone(),
                payload: Bytes::from(state_text(&f.text).to_owned()),
                qos: QoS::AtLeastOnce,
                retain: false,
                props: props("text/plain", Vec::new()),
            });
            json!({
                "prompt": text,
                "text": f.text,
                "reasoning": f.reasoning,
                "finish_reason": f.finish_reason.as_str(),
                "completion_tokens": f.usage.completion_tokens,
            })
        }
        Err((code, message)) => {
            tracing::warn!("mqtt: Home Assistant prompt failed: {message}");
            json!({"prompt": text, "error": {"code": code.as_str(), "message": message}})
        }
    };
    shared.send(json_out(topics.attributes.clone(), &attributes, false));
    shared.send(json_out(topics.state.clone(), &state(&shared), false));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_follow_home_assistant_discovery() {
        let c = configs("pi5", "homeassistant", "smollm2");
        let topics: Vec<&str> = c.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/text/pi5/prompt/config",
                "homeassistant/sensor/pi5/answer/config",
                "homeassistant/sensor/pi5/tokens_per_second/config",
                "homeassistant/sensor/pi5/queue_depth/config",
                "homeassistant/binary_sensor/pi5/busy/config",
            ]
        );
        for (_, v) in &c {
            assert_eq!(v["availability_topic"], "ember/pi5/status");
            assert_eq!(v["device"]["identifiers"][0], "ember_pi5");
            assert!(
                v["unique_id"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("ember_pi5_"))
            );
        }
        assert_eq!(c[0].1["command_topic"], "ember/pi5/ha/prompt");
        assert_eq!(
            c[1].1["json_attributes_topic"],
            "ember/pi5/ha/answer/attributes"
        );
        assert_eq!(
            c[2].1["value_template"],
            "{{ value_json.tokens_per_second }}"
        );
    }

    #[test]
    fn state_text_keeps_255_characters() {
        let long = "é".repeat(300);
        assert_eq!(state_text(&long).chars().count(), 255);
        assert_eq!(state_text("short"), "short");
    }
}
