//! One MQTT request: decode (JSON or postcard, by Content-Type), find the reply address (the v5
//! Response Topic + Correlation Data, or a v3.1.1 client's `reply_to` + `id`), run it on the
//! engine through the same prompt, parameter and generation code as the HTTP routes, and publish
//! the stream chunks (QoS 0) and the final message or error (QoS 1).

use super::link::{Out, props};
use super::tools;
use super::{Dedup, Shared};
use crate::serve::http::error::ApiError;
use crate::serve::http::generation::{self, RequestCtx, Step};
use crate::serve::http::metrics::Outcome;
use crate::serve::http::params::{self, Knobs};
use crate::serve::http::prompt::{self, ChatInput};
use crate::serve::http::reasoning::{self, ReasoningSplitter, split_all};
use crate::serve::http::structured::{self, Wanted};
use crate::serve::http::tools::{self as http_tools, Tools};
use bytes::Bytes;
use ember_proto::{
    Chunk, Encoding, ErrorCode, ErrorReply, Final, FinishReason, Request, Response, Timings, Usage,
};
use ember_toolcall::Think;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how the answers to one request go.
#[derive(Debug, Clone)]
pub struct Reply {
    pub topic: String,
    pub correlation: Option<Bytes>,
    pub encoding: Encoding,
    /// The wire version to answer in: the request's (a version 1 client reads only version 1).
    pub version: u8,
    pub id: Option<String>,
    node: String,
    /// Chunks sent so far.
    seq: u32,
}

impl Reply {
    fn out(&self, payload: Vec<u8>, qos: QoS, fin: bool) -> Out {
        let mut p = props(
            self.encoding.content_type(),
            vec![
                ("seq".into(), self.seq.to_string()),
                ("final".into(), fin.to_string()),
                ("node".into(), self.node.clone()),
            ],
        );
        p.correlation_data = self.correlation.clone();
        Out {
            topic: self.topic.clone(),
            payload: Bytes::from(payload),
            qos,
            // Replies are never retained.
            retain: false,
            props: p,
        }
    }

    fn encode(&self, r: &Response) -> Option<Vec<u8>> {
        match ember_proto::encode_response_as(self.encoding, self.version, r) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("mqtt: cannot encode a reply: {e}");
                None
            }
        }
    }

    fn chunk(&mut self, shared: &Shared, delta: String, reasoning: Option<String>) {
        let r = Response::Chunk(Chunk {
            id: self.id.clone(),
            seq: self.seq,
            delta,
            reasoning,
        });
        if let Some(b) = self.encode(&r) {
            shared.send(self.out(b, QoS::AtMostOnce, false));
        }
        self.seq += 1;
    }

    fn finish(&self, shared: &Shared, f: Final) {
        if let Some(b) = self.encode(&Response::Final(f)) {
            shared.send(self.out(b, QoS::AtLeastOnce, true));
        }
    }

    pub fn error(&self, shared: &Shared, code: ErrorCode, message: String) {
        tracing::info!(
            target: "emberd::request",
            route = "mqtt",
            reply_to = %self.topic,
            code = code.as_str(),
            "refused: {message}"
        );
        let r = Response::Error(ErrorReply {
            id: self.id.clone(),
            code,
            message,
        });
        if let Some(b) = self.encode(&r) {
            shared.send(self.out(b, QoS::AtLeastOnce, true));
        }
    }
}

/// Handles one request message to its end.
pub async fn handle(shared: Arc<Shared>, publish: Publish) {
    let received = Instant::now();
    let props = publish.properties.clone().unwrap_or_default();
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    let mut reply = Reply {
        topic: props.response_topic.clone().unwrap_or_default(),
        correlation: props.correlation_data.clone(),
        encoding: Encoding::Json,
        version: ember_proto::WIRE_VERSION,
        id: None,
        node: shared.settings.node.clone(),
        seq: 0,
    };
    let can_reply = |r: &Reply| {
        if r.topic.is_empty() {
            tracing::warn!("mqtt request on {topic}: no response topic or reply_to; dropped");
            false
        } else if !ember_proto::valid_publish_topic(&r.topic) {
            tracing::warn!(
                "mqtt request on {topic}: reply topic {:?} is not a plain topic (wildcards or '$'); dropped",
                r.topic
            );
            false
        } else {
            true
        }
    };
    let encoding = match Encoding::from_content_type(props.content_type.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            if can_reply(&reply) {
                reply.error(&shared, e.code(), e.to_string());
            }
            return;
        }
    };
    reply.encoding = encoding;
    // A postcard request that cannot be read is answered in the version it says it is, when this
    // build reads that version (so that a version 1 client can read the error).
    if encoding == Encoding::Postcard
        && let Some(&v) = publish.payload.first()
        && (ember_proto::OLDEST_READ..=ember_proto::WIRE_VERSION).contains(&v)
    {
        reply.version = v;
    }
    let max = shared.settings.max_payload;
    if publish.payload.len() > max {
        if can_reply(&reply) {
            reply.error(
                &shared,
                ErrorCode::TooLarge,
                format!(
                    "payload of {} bytes is over the limit of {max} bytes",
                    publish.payload.len()
                ),
            );
        }
        return;
    }
    let req = match ember_proto::decode_request(encoding, &publish.payload) {
        Ok(r) => r,
        Err(e) => {
            if can_reply(&reply) {
                reply.error(&shared, e.code(), e.to_string());
            }
            return;
        }
    };
    if reply.topic.is_empty()
        && let Some(t) = &req.reply_to
    {
        reply.topic = t.clone();
    }
    reply.id = req.id.clone();
    reply.version = req.v;
    if !can_reply(&reply) {
        return;
    }
    if publish.qos != QoS::AtMostOnce {
        let key = reply
            .correlation
            .as_ref()
            .map(|c| c.to_vec())
            .or_else(|| req.id.as_ref().map(|i| i.as_bytes().to_vec()));
        if let Some(key) = key
            && !shared.dedup_insert(&reply.topic, key)
        {
            tracing::info!(
                "mqtt: duplicate request for {} (same correlation data); not run again",
                reply.topic
            );
            return;
        }
    }
    if shared.is_draining() {
        reply.error(
            &shared,
            ErrorCode::ShuttingDown,
            "the daemon is shutting down".into(),
        );
        return;
    }
    // Message Expiry: the broker sends what is left of the interval; the request must start
    // within it (once running it finishes).
    let start_by = props
        .message_expiry_interval
        .map(|s| received + Duration::from_secs(u64::from(s)));
    let ctx = RequestCtx {
        id: generation::random_id("mqtt-"),
        route: "mqtt".into(),
        peer: Some(reply.topic.clone()),
        started: received,
    };
    let stream = req.stream;
    let result = run(&shared, &ctx, req, start_by, |delta, reasoning| {
        if stream {
            reply.chunk(&shared, delta, reasoning);
        }
    })
    .await;
    match result {
        Ok(f) => {
            shared.record_rate(&f.timings);
            reply.finish(&shared, f);
        }
        Err((code, message)) => reply.error(&shared, code, message),
    }
}

/// Runs a request on the engine; `on_delta(content, reasoning)` gets the streamed text.
pub async fn run(
    shared: &Shared,
    ctx: &RequestCtx,
    req: Request,
    start_by: Option<Instant>,
    mut on_delta: impl FnMut(String, Option<String>),
) -> Result<Final, (ErrorCode, String)> {
    let fail = |e: ApiError| (code_of(&e), e.message);
    let state = &shared.state;
    let loaded = state.model().map_err(fail)?;
    prompt::check_model(loaded, req.model.as_deref()).map_err(fail)?;
    let wanted = tools::wanted(&req).map_err(fail)?;
    let calls = tools::tools(loaded, &req).map_err(fail)?;
    if calls.active() && wanted != Wanted::Free {
        return Err(fail(ApiError::bad_request(
            "`tools` and a structured `response_format` together are not supported: give one",
        )));
    }
    let (ids, opens_think, think) = if let Some(text) = req.prompt.clone() {
        if !req.tools.is_empty() {
            return Err(fail(ApiError::bad_request(
                "`tools` need a chat (`messages`), not a raw `prompt`",
            )));
        }
        let tok = loaded.tokenizer.clone();
        let p = prompt::blocking(move || Ok(prompt::text_prompt(&tok, &text)))
            .await
            .map_err(fail)?;
        (p.ids, false, Think::None)
    } else {
        let messages = tools::messages(&req.messages).map_err(fail)?;
        let mut vars = serde_json::Map::new();
        let messages = calls
            .prepare(
                &params::normalize_messages(&messages).map_err(fail)?,
                &mut vars,
            )
            .map_err(fail)?;
        let input = ChatInput {
            tokenizer: loaded.tokenizer.clone(),
            template: loaded.template.clone(),
            messages,
            vars,
        };
        let p = prompt::blocking(move || prompt::chat_prompt(&input))
            .await
            .map_err(fail)?;
        let think = p.think(loaded);
        (p.ids, p.opens_think, think)
    };
    let n_ctx = loaded.engine.config().n_ctx;
    if let Err(e) = prompt::check_fits(ids.len(), n_ctx) {
        let code = if ids.is_empty() {
            ErrorCode::BadRequest
        } else {
            ErrorCode::PromptTooLong
        };
        return Err((code, e.message));
    }
    let knobs = Knobs {
        temperature: req.temperature,
        top_k: req.top_k,
        top_p: req.top_p,
        min_p: req.min_p,
        seed: req.seed.map(Value::from),
        stop: (!req.stop.is_empty()).then(|| Value::from(req.stop.clone())),
        repeat_penalty: req.repeat_penalty,
        repeat_last_n: None,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: None,
    };
    let mut gen_params = knobs
        .generate_params(req.max_tokens.map(i64::from), ids.len(), n_ctx)
        .map_err(fail)?;
    gen_params.constraint = if calls.active() {
        calls.constraint(loaded, think).await
    } else {
        structured::compile(loaded, wanted, think).await
    }
    .map_err(fail)?;
    let calls = calls.active().then_some(calls);
    // Streamed content goes through the call parser, so that call markup never reaches a chunk;
    // the calls themselves arrive whole in the final reply.
    let mut parser = calls.as_ref().map(Tools::parser);
    let mut emit =
        |s: reasoning::Split, parser: &mut Option<ember_toolcall::StreamParser>, end: bool| {
            let content = match parser {
                Some(p) => {
                    let mut events = p.push(&s.content);
                    if end {
                        events.extend(p.end());
                    }
                    events
                        .into_iter()
                        .filter_map(|ev| match ev {
                            ember_toolcall::Event::Content(t) => Some(t),
                            _ => None,
                        })
                        .collect()
                }
                None => s.content,
            };
            if !content.is_empty() || !s.reasoning.is_empty() {
                on_delta(content, (!s.reasoning.is_empty()).then_some(s.reasoning));
            }
        };
    let prompt_tokens = ids.len();
    let mut running =
        generation::submit(state, loaded, ctx, ids, gen_params, start_by).map_err(fail)?;
    let split = loaded.thinks() && req.reasoning_format.as_deref() != Some("none");
    let mut splitter = split.then(|| ReasoningSplitter::new(opens_think));
    while let Some(step) = running.next().await {
        match step {
            Step::Delta(d) => {
                let s = reasoning::push_opt(&mut splitter, d);
                emit(s, &mut parser, false);
            }
            Step::Done { finished, finish } => {
                let tail = match splitter.as_mut() {
                    Some(sp) => sp.finish(),
                    None => reasoning::Split::default(),
                };
                emit(tail, &mut parser, true);
                let g = &finished.generation;
                let (text, reasoning) = if split {
                    let s = split_all(&g.text, opens_think);
                    (s.content, (!s.reasoning.is_empty()).then_some(s.reasoning))
                } else {
                    (g.text.clone(), None)
                };
                // An answer cut inside a call keeps its text and has no calls: `length` says so.
                let (text, tool_calls) = match &calls {
                    Some(c) => {
                        let p = http_tools::parse_whole(c, &text);
                        // Blanks around calls are not an answer (OpenAI's `content: null`).
                        let content = if !p.calls.is_empty() && p.content.trim().is_empty() {
                            String::new()
                        } else {
                            p.content
                        };
                        (content, tools::wire_calls(&p.calls))
                    }
                    None => (text, Vec::new()),
                };
                let t = &g.timings;
                let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
                let completion = g.tokens.len();
                return Ok(Final {
                    id: req.id.clone(),
                    text,
                    reasoning,
                    finish_reason: match (finish, tool_calls.is_empty()) {
                        ("stop", true) => FinishReason::Stop,
                        ("stop", false) => FinishReason::ToolCalls,
                        _ => FinishReason::Length,
                    },
                    tool_calls,
                    usage: Usage {
                        prompt_tokens: n(prompt_tokens),
                        completion_tokens: n(completion),
                        total_tokens: n(prompt_tokens + completion),
                        cached_tokens: n(finished.prompt_cached),
                    },
                    timings: Timings {
                        queued_ms: finished.queued_ms as f32,
                        prompt_n: n(t.prompt_n),
                        prompt_ms: t.prompt_ms as f32,
                        predicted_n: n(t.predicted_n),
                        predicted_ms: t.predicted_ms as f32,
                    },
                });
            }
            Step::Failed(e) => return Err(fail(e)),
        }
    }
    Err((
        ErrorCode::Internal,
        "the generation ended without a result".into(),
    ))
}

/// The MQTT error code of an API error.
fn code_of(e: &ApiError) -> ErrorCode {
    match e.outcome {
        Outcome::Busy => ErrorCode::Busy,
        Outcome::Timeout => ErrorCode::Expired,
        Outcome::Unavailable => ErrorCode::ShuttingDown,
        _ => match e.status.as_u16() {
            404 => ErrorCode::ModelNotFound,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        },
    }
}

impl Dedup {
    /// Records a request key; false when it was seen within the window.
    pub fn insert(&mut self, topic: &str, key: Vec<u8>, now: Instant) -> bool {
        let window = Dedup::WINDOW;
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < window && self.order.len() < Dedup::MAX {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
        let k = (topic.to_owned(), key);
        if self.seen.contains(&k) {
            return false;
        }
        self.seen.insert(k.clone());
        self.order.push_back((now, k));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_window_and_cap() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        assert!(d.insert("r", b"1".to_vec(), t0));
        assert!(!d.insert("r", b"1".to_vec(), t0 + Duration::from_secs(5)));
        // Same correlation data, other reply topic: another request.
        assert!(d.insert("s", b"1".to_vec(), t0));
        // After the window, the key is forgotten.
        assert!(d.insert(
            "r",
            b"1".to_vec(),
            t0 + Dedup::WINDOW + Duration::from_secs(1)
        ));
        for i in 0..(Dedup::MAX + 10) {
            assert!(d.insert("m", i.to_le_bytes().to_vec(), t0 + Dedup::WINDOW * 3));
        }
        assert!(d.seen.len() <= Dedup::MAX);
    }

    #[test]
    fn api_errors_map_to_mqtt_codes() {
        assert_eq!(code_of(&ApiError::busy("x", 1)), ErrorCode::Busy);
        assert_eq!(code_of(&ApiError::bad_request("x")), ErrorCode::BadRequest);
        assert_eq!(code_of(&ApiError::not_found("x")), ErrorCode::ModelNotFound);
        assert_eq!(code_of(&ApiError::internal("x")), ErrorCode::Internal);
        assert_eq!(
            code_of(&ApiError::unavailable("x")),
            ErrorCode::ShuttingDown
        );
        let expired = ApiError::from_engine(&ember_engine::service::EngineError::DeadlineExpired);
        assert_eq!(code_of(&expired), ErrorCode::Expired);
    }
}
