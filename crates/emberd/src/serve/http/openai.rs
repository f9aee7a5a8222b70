//! OpenAI-compatible routes, in the shapes of OpenAI's API and llama-server's `tools/server`
//! (`server.cpp` `handle_chat_completions`, `to_json_oaicompat_chat[_stream]`):
//! `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.
//!
//! Streaming is SSE: `chat.completion.chunk` objects, the first carrying `delta.role`, the last a
//! `finish_reason` and llama-server's `timings`, then (with `stream_options.include_usage`) a
//! usage chunk with no choices, then `data: [DONE]`. A reasoning model's `<think>` block goes to
//! `reasoning_content` (llama-server `--reasoning-format deepseek`).

use super::error::{ApiError, JsonBody, Logged};
use super::generation::{self, RequestCtx, Running, Step, timings_json, usage_json};
use super::params::{self, OpenAiRequest, PromptInput};
use super::prompt::{self, ChatInput};
use super::reasoning::{self, ReasoningSplitter, Split, split_all};
use super::structured::{self, Wanted};
use super::tools::{self, Delta, Tools};
use super::{AppState, Loaded};
use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ember_toolcall::Think;
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

/// Which OpenAI object a response is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// The fields every chunk of one response repeats.
#[derive(Debug, Clone)]
struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(kind: Kind, loaded: &Loaded) -> Self {
        let prefix = match kind {
            Kind::Chat => "chatcmpl-",
            Kind::Text => "cmpl-",
        };
        Meta {
            kind,
            id: generation::random_id(prefix),
            created: generation::unix_now(),
            model: loaded.model_id.clone(),
        }
    }

    /// One streamed chunk: `delta` (chat) or `text` (completions).
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id,
            "object": match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Text => "text_completion",
            },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    body: JsonBody<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let req = body.0;
    let loaded = state.model()?;
    prompt::check_model(loaded, req.model.as_deref())?;
    req.check_n()?;
    let messages = req
        .messages
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("`messages` is required"))?;
    if messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty"));
    }
    let tools = Tools::from_request(
        loaded,
        req.tools.as_ref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    let wanted = wanted(&req)?;
    if tools.active() && wanted != Wanted::Free {
        return Err(ApiError::bad_request(
            "`tools` and a structured `response_format` together are not supported: give one",
        ));
    }
    let mut vars = req.chat_template_kwargs.clone().unwrap_or_default();
    let messages = tools.prepare(&params::normalize_messages(messages)?, &mut vars)?;
    let input = ChatInput {
        tokenizer: loaded.tokenizer.clone(),
        template: loaded.template.clone(),
        messages,
        vars,
    };
    let prompt = prompt::blocking(move || prompt::chat_prompt(&input)).await?;
    let n_ctx = loaded.engine.config().n_ctx;
    prompt::check_fits(prompt.ids.len(), n_ctx)?;
    let mut gen_params = req
        .knobs
        .generate_params(req.requested_max(), prompt.ids.len(), n_ctx)?;
    gen_params.constraint = if tools.active() {
        tools.constraint(loaded, prompt.think(loaded)).await?
    } else {
        structured::compile(loaded, wanted, prompt.think(loaded)).await?
    };
    let running = generation::submit(&state, loaded, &ctx, prompt.ids, gen_params, None)?;
    let split = (loaded.thinks() && req.split_reasoning()).then_some(prompt.opens_think);
    let meta = Meta::new(Kind::Chat, loaded);
    let tools = tools.active().then_some(tools);
    if req.stream.unwrap_or(false) {
        Ok(sse(running, meta, split, req.include_usage(), tools))
    } else {
        respond_whole(running, meta, split, tools).await
    }
}

/// `POST /v1/completions`: a raw prompt (text or token ids), no template.
pub(super) async fn completions(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    body: JsonBody<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let req = body.0;
    let loaded = state.model()?;
    prompt::check_model(loaded, req.model.as_deref())?;
    req.check_n()?;
    let ids = match params::parse_prompt(req.prompt.as_ref())? {
        PromptInput::Tokens(ids) => {
            prompt::check_ids(&loaded.tokenizer, &ids)?;
            ids
        }
        PromptInput::Text(text) => {
            let tok = loaded.tokenizer.clone();
            prompt::blocking(move || Ok(prompt::text_prompt(&tok, &text).ids)).await?
        }
    };
    let n_ctx = loaded.engine.config().n_ctx;
    prompt::check_fits(ids.len(), n_ctx)?;
    let mut gen_params = req
        .knobs
        .generate_params(req.requested_max(), ids.len(), n_ctx)?;
    gen_params.constraint = structured::compile(loaded, wanted(&req)?, Think::None).await?;
    let running = generation::submit(&state, loaded, &ctx, ids, gen_params, None)?;
    let meta = Meta::new(Kind::Text, loaded);
    if req.stream.unwrap_or(false) {
        Ok(sse(running, meta, None, req.include_usage(), None))
    } else {
        respond_whole(running, meta, None, None).await
    }
}

/// The answer's shape the request asks for (checked before any work: a bad one is a 400).
fn wanted(req: &OpenAiRequest) -> Result<Wanted, ApiError> {
    Wanted::from_openai(
        req.response_format.as_ref(),
        req.json_schema.as_ref(),
        req.grammar.as_ref(),
    )
}

/// `GET /v1/models`: the one model served.
pub(super) async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let l = state.model()?;
    let created = generation::unix_now().saturating_sub(state.started.elapsed().as_secs());
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{
            "id": l.model_id,
            "object": "model",
            "created": created,
            "owned_by": "ember",
            "meta": {
                "aliases": l.aliases,
                "family": l.family,
                "quantization": l.quant,
                "n_params": l.n_params,
                "size": l.model_bytes,
                "n_ctx": l.engine.config().n_ctx,
                "n_vocab": l.tokenizer.n_vocab(),
            },
        }],
    }))
    .into_response())
}

/// The non-streaming answer: waits for the end. If the client leaves meanwhile, hyper drops this
/// future, and with it the generation (cancelled in the engine).
async fn respond_whole(
    mut running: Running,
    meta: Meta,
    split: Option<bool>,
    tools: Option<Tools>,
) -> Result<Response, ApiError> {
    let (finished, mut finish) = running.collect().await?;
    let text = &finished.generation.text;
    let choice = match meta.kind {
        Kind::Chat => {
            let mut message = json!({"role": "assistant"});
            let content = match split {
                Some(opened) => {
                    let s = split_all(text, opened);
                    if !s.reasoning.is_empty() {
                        message["reasoning_content"] = s.reasoning.into();
                    }
                    s.content
                }
                None => text.clone(),
            };
            match tools.as_ref().map(|t| tools::parse_whole(t, &content)) {
                Some(p) if !p.calls.is_empty() => {
                    message["content"] = if p.content.trim().is_empty() {
                        Value::Null
                    } else {
                        p.content.into()
                    };
                    message["tool_calls"] = p.calls.iter().map(|c| c.to_openai()).collect();
                    if finish == "stop" {
                        finish = "tool_calls";
                    }
                }
                Some(p) => message["content"] = p.content.into(),
                None => message["content"] = content.into(),
            }
            json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish})
        }
        Kind::Text => {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        }
    };
    let body = json!({
        "id": meta.id,
        "object": match meta.kind {
            Kind::Chat => "chat.completion",
            Kind::Text => "text_completion",
        },
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": usage_json(running.prompt_tokens, &finished),
        "timings": timings_json(&finished),
    });
    drop(running); // logs the request
    let mut resp = axum::Json(body).into_response();
    resp.extensions_mut().insert(Logged);
    Ok(resp)
}

/// The SSE state: the generation, the reasoning splitter and where the stream is.
struct SseState {
    running: Running,
    meta: Meta,
    splitter: Option<ReasoningSplitter>,
    /// The tool-call parser, when the request has tools: content goes through it.
    parser: Option<ember_toolcall::StreamParser>,
    /// A call was streamed (the finish reason becomes `tool_calls`).
    called: bool,
    include_usage: bool,
    sent_role: bool,
    done: bool,
}

impl SseState {
    fn data(v: &Value) -> SseEvent {
        SseEvent::default().data(v.to_string())
    }

    /// Chunks for a piece of text (split into reasoning and content for a reasoning model; the
    /// content through the tool-call parser when the request has tools).
    fn text_chunks(&mut self, split: Split, out: &mut Vec<SseEvent>) {
        if !split.reasoning.is_empty() {
            let delta = json!({"reasoning_content": split.reasoning});
            out.push(Self::data(&self.meta.chunk(delta, None)));
        }
        if let Some(p) = &mut self.parser {
            let events = p.push(&split.content);
            self.tool_chunks(events, out);
            return;
        }
        if !split.content.is_empty() {
            let delta = match self.meta.kind {
                Kind::Chat => json!({"content": split.content}),
                Kind::Text => split.content.into(),
            };
            out.push(Self::data(&self.meta.chunk(delta, None)));
        }
    }

    /// Chunks for the tool-call parser's events: content, or OpenAI's `delta.tool_calls` (index,
    /// id and name first, then argument fragments).
    fn tool_chunks(&mut self, events: Vec<ember_toolcall::Event>, out: &mut Vec<SseEvent>) {
        for ev in events {
            let delta = match tools::openai_delta(ev) {
                Delta::Content(t) if t.is_empty() => continue,
                Delta::Content(t) => json!({"content": t}),
                Delta::Call(calls) => {
                    self.called = true;
                    json!({"tool_calls": calls})
                }
            };
            out.push(Self::data(&self.meta.chunk(delta, None)));
        }
    }

    /// The next events to send; `None` once the stream is over.
    async fn next_batch(&mut self) -> Option<Vec<SseEvent>> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        if self.meta.kind == Kind::Chat && !self.sent_role {
            // Sent before any token so the client sees the answer start during a long prefill.
            self.sent_role = true;
            let delta = json!({"role": "assistant", "content": null});
            out.push(Self::data(&self.meta.chunk(delta, None)));
            return Some(out);
        }
        match self.running.next().await {
            Some(Step::Delta(d)) => {
                let split = reasoning::push_opt(&mut self.splitter, d);
                self.text_chunks(split, &mut out);
            }
            Some(Step::Done { finished, finish }) => {
                if let Some(s) = &mut self.splitter {
                    let tail = s.finish();
                    self.text_chunks(tail, &mut out);
                }
                if let Some(mut p) = self.parser.take() {
                    let events = p.end();
                    self.tool_chunks(events, &mut out);
                }
                let finish = if self.called && finish == "stop" {
                    "tool_calls"
                } else {
                    finish
                };
                let empty = match self.meta.kind {
                    Kind::Chat => json!({}),
                    Kind::Text => json!(""),
                };
                let mut last = self.meta.chunk(empty, Some(finish));
                last["timings"] = timings_json(&finished);
                out.push(Self::data(&last));
                if self.include_usage {
                    let mut usage = self.meta.chunk(Value::Null, None);
                    usage["choices"] = json!([]);
                    usage["usage"] = usage_json(self.running.prompt_tokens, &finished);
                    out.push(Self::data(&usage));
                }
                out.push(SseEvent::default().data("[DONE]"));
                self.done = true;
            }
            Some(Step::Failed(e)) => {
                out.push(Self::data(&e.body()));
                self.done = true;
            }
            None => self.done = true,
        }
        Some(out)
    }
}

/// The streaming answer. The body stream owns the generation: when the client disconnects,
/// hyper drops the body, which drops the engine's event stream and cancels the request.
fn sse(
    running: Running,
    meta: Meta,
    split: Option<bool>,
    include_usage: bool,
    tools: Option<Tools>,
) -> Response {
    let state = SseState {
        running,
        meta,
        splitter: split.map(ReasoningSplitter::new),
        parser: tools.as_ref().map(Tools::parser),
        called: false,
        include_usage,
        sent_role: false,
        done: false,
    };
    let events = stream::unfold(state, |mut st| async move {
        let batch = st.next_batch().await?;
        Some((batch, st))
    })
    .flat_map(|batch| stream::iter(batch.into_iter().map(Ok::<_, Infallible>)));
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.extensions_mut().insert(Logged);
    resp
}
