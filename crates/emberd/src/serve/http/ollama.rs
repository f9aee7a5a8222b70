//! Ollama-compatible routes, following Ollama's `docs/api.md` and `api/types.go`, for clients of
//! the `ollama` Python library such as Home Assistant's Ollama integration (`list`, `show`,
//! `chat` with streaming): `POST /api/chat`, `POST /api/generate`, `GET /api/tags`,
//! `POST /api/show`, `GET /api/ps`, `GET /api/version`, `GET|HEAD /`.
//!
//! Streaming (the default, as in Ollama) is NDJSON: one object per line, `done: false` with the
//! new text, then one `done: true` with `done_reason` and durations in nanoseconds. Errors are
//! `{"error": "..."}`, also as a line of a stream that already started. A reasoning model's think
//! block goes to `thinking` (left out when the request says `think: false`).

use super::error::{ApiError, JsonBody, Logged, OllamaError};
use super::generation::{self, RequestCtx, Running, Step};
use super::params::{self, OllamaOptions};
use super::prompt::{self, ChatInput, Prompt};
use super::reasoning::{self, ReasoningSplitter, Split, split_all};
use super::structured::{self, Wanted};
use super::tools::{self, Tools};
use super::{AppState, Loaded};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The version `/api/version` reports. Clients compare it against the Ollama release that
/// introduced a feature; 0.9.0 is the first with `think` (reasoning in `message.thinking`),
/// which this server supports. The Python client itself never reads it.
const OLLAMA_VERSION: &str = "0.9.0";

/// `POST /api/chat` and `POST /api/generate` (the fields of both).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct OllamaRequest {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    prompt: Option<String>,
    system: Option<String>,
    raw: Option<bool>,
    stream: Option<bool>,
    options: Option<OllamaOptions>,
    /// `true`/`false`, or a level (`"high"`) for models that have levels: any level means on.
    think: Option<Value>,
    images: Option<Vec<Value>>,
    /// `"json"` or a JSON schema: the answer is constrained to it.
    format: Option<Value>,
    /// Tools the model may call (`/api/chat`; Ollama has no `tool_choice`: auto).
    tools: Option<Value>,
}

impl OllamaRequest {
    /// `think` as Ollama reads it: a bool, or a level (`"low"`, `"medium"`, `"high"`); anything
    /// else is refused rather than taken as "on".
    fn check_think(&self) -> Result<(), ApiError> {
        match &self.think {
            None | Some(Value::Null | Value::Bool(_)) => Ok(()),
            Some(Value::String(s)) if ["low", "medium", "high"].contains(&s.as_str()) => Ok(()),
            Some(v) => Err(ApiError::bad_request(format!(
                "invalid think value {v}: expected true, false, \"low\", \"medium\" or \"high\""
            ))),
        }
    }

    fn think(&self) -> Option<bool> {
        match &self.think {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => Some(true),
        }
    }
}

/// `{"model": ...}` of `/api/show` (older clients send `name`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

/// `POST /api/chat`.
pub(super) async fn chat(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    body: Result<JsonBody<OllamaRequest>, ApiError>,
) -> Result<Response, OllamaError> {
    let req = body?.0;
    req.check_think()?;
    let loaded = state.model()?;
    prompt::check_model(loaded, req.model.as_deref())?;
    let messages = req.messages.as_deref().unwrap_or_default();
    if messages.is_empty() {
        // Ollama answers an empty chat by (just) loading the model.
        return Ok(load_reply(Kind::Chat, &model_name(loaded, &req)));
    }
    let mut vars = Map::new();
    if let Some(t) = req.think() {
        // Templates with a thinking switch (Qwen3) read `enable_thinking`.
        vars.insert("enable_thinking".into(), t.into());
    }
    let tools = Tools::from_request(loaded, req.tools.as_ref(), None, None)?;
    let input = ChatInput {
        tokenizer: loaded.tokenizer.clone(),
        template: loaded.template.clone(),
        messages: tools.prepare(&params::normalize_messages(messages)?, &mut vars)?,
        vars,
    };
    let p = prompt::blocking(move || prompt::chat_prompt(&input)).await?;
    run(&state, loaded, &ctx, req, p, Kind::Chat, tools).await
}

/// `POST /api/generate`: `prompt` (and `system`) through the chat template, or as is with `raw`.
pub(super) async fn generate(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    body: Result<JsonBody<OllamaRequest>, ApiError>,
) -> Result<Response, OllamaError> {
    let req = body?.0;
    req.check_think()?;
    let loaded = state.model()?;
    prompt::check_model(loaded, req.model.as_deref())?;
    if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::bad_request("images are not supported by this model").into());
    }
    let text = req.prompt.clone().unwrap_or_default();
    if text.is_empty() {
        return Ok(load_reply(Kind::Generate, &model_name(loaded, &req)));
    }
    let p = if req.raw.unwrap_or(false) {
        let tok = loaded.tokenizer.clone();
        prompt::blocking(move || Ok(prompt::text_prompt(&tok, &text))).await?
    } else {
        let mut messages = Vec::new();
        if let Some(s) = req.system.as_deref().filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": text}));
        let mut vars = Map::new();
        if let Some(t) = req.think() {
            vars.insert("enable_thinking".into(), t.into());
        }
        let input = ChatInput {
            tokenizer: loaded.tokenizer.clone(),
            template: loaded.template.clone(),
            messages,
            vars,
        };
        prompt::blocking(move || prompt::chat_prompt(&input)).await?
    };
    let tools = Tools::from_request(loaded, None, None, None)?;
    run(&state, loaded, &ctx, req, p, Kind::Generate, tools).await
}

/// Submits and answers, streamed (default) or whole.
async fn run(
    state: &AppState,
    loaded: &Loaded,
    ctx: &RequestCtx,
    req: OllamaRequest,
    p: Prompt,
    kind: Kind,
    tools: Tools,
) -> Result<Response, OllamaError> {
    let n_ctx = loaded.engine.config().n_ctx;
    prompt::check_fits(p.ids.len(), n_ctx)?;
    let options = req.options.as_ref();
    let mut gen_params = match options {
        Some(o) => o.knobs.generate_params(o.num_predict, p.ids.len(), n_ctx)?,
        None => params::Knobs::default().generate_params(None, p.ids.len(), n_ctx)?,
    };
    let wanted = Wanted::from_ollama(req.format.as_ref())?;
    gen_params.constraint = if tools.active() {
        if wanted != Wanted::Free {
            return Err(ApiError::bad_request(
                "`tools` and `format` together are not supported: give one",
            )
            .into());
        }
        tools.constraint(loaded, p.think(loaded)).await?
    } else {
        structured::compile(loaded, wanted, p.think(loaded)).await?
    };
    let running = generation::submit(state, loaded, ctx, p.ids, gen_params, None)?;
    let st = NdState {
        running,
        kind,
        model: model_name(loaded, &req),
        started: ctx.started,
        splitter: loaded
            .thinks()
            .then(|| ReasoningSplitter::new(p.opens_think)),
        opens_think: p.opens_think,
        show_thinking: req.think() != Some(false),
        parser: tools.active().then(|| tools.parser()),
        tools: tools.active().then_some(tools),
        done: false,
    };
    if req.stream.unwrap_or(true) {
        Ok(ndjson(st))
    } else {
        whole(st).await
    }
}

/// The name to echo: the client's (Ollama echoes it), else the served one with its tag.
fn model_name(loaded: &Loaded, req: &OllamaRequest) -> String {
    match req.model.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => tag_name(loaded),
    }
}

/// `name:tag` as Ollama lists models.
fn tag_name(loaded: &Loaded) -> String {
    if loaded.model_id.contains(':') {
        loaded.model_id.clone()
    } else {
        format!("{}:latest", loaded.model_id)
    }
}

fn load_reply(kind: Kind, model: &str) -> Response {
    let mut v = json!({"model": model, "created_at": rfc3339(SystemTime::now()), "done": true,
                       "done_reason": "load"});
    match kind {
        Kind::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
        Kind::Generate => v["response"] = "".into(),
    }
    axum::Json(v).into_response()
}

/// A streamed or whole Ollama answer in the making.
struct NdState {
    running: Running,
    kind: Kind,
    model: String,
    started: Instant,
    splitter: Option<ReasoningSplitter>,
    /// The prompt opened a think block (for the whole-answer split).
    opens_think: bool,
    show_thinking: bool,
    /// The tool-call parser (streaming), when the request has tools.
    parser: Option<ember_toolcall::StreamParser>,
    tools: Option<Tools>,
    done: bool,
}

impl NdState {
    /// Content through the tool-call parser (calls are held and sent whole at the end, as Ollama
    /// sends each call in one chunk).
    fn content(&mut self, mut split: Split) -> Split {
        if let Some(p) = &mut self.parser {
            split.content = p
                .push(&split.content)
                .into_iter()
                .filter_map(|ev| match ev {
                    ember_toolcall::Event::Content(t) => Some(t),
                    _ => None,
                })
                .collect();
        }
        split
    }

    /// The chunk of calls at the end of a streamed answer, and the content the parser still held.
    fn calls_chunk(&mut self) -> (String, Option<Value>) {
        let Some(p) = self.parser.take() else {
            return (String::new(), None);
        };
        match p.finish() {
            Ok(parsed) => {
                let held: String = parsed
                    .tail
                    .into_iter()
                    .filter_map(|ev| match ev {
                        ember_toolcall::Event::Content(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                if parsed.calls.is_empty() {
                    return (held, None);
                }
                let mut v = self.object(Split::default(), false);
                v["message"]["tool_calls"] = tools::ollama_calls(&parsed.calls);
                (held, Some(v))
            }
            Err(_) => (String::new(), None),
        }
    }
    /// One object carrying text (and thinking).
    fn object(&self, split: Split, done: bool) -> Value {
        let mut v = json!({"model": self.model, "created_at": rfc3339(SystemTime::now())});
        let thinking =
            (self.show_thinking && !split.reasoning.is_empty()).then_some(split.reasoning);
        match self.kind {
            Kind::Chat => {
                let mut m = json!({"role": "assistant", "content": split.content});
                if let Some(t) = thinking {
                    m["thinking"] = t.into();
                }
                v["message"] = m;
            }
            Kind::Generate => {
                v["response"] = split.content.into();
                if let Some(t) = thinking {
                    v["thinking"] = t.into();
                }
            }
        }
        v["done"] = done.into();
        v
    }

    /// Adds the final fields (durations in nanoseconds).
    fn finish_fields(&self, v: &mut Value, f: &ember_engine::service::Finished, reason: &str) {
        let ns = |ms: f64| (ms * 1e6).max(0.0) as u64;
        let t = &f.generation.timings;
        v["done_reason"] = reason.into();
        v["total_duration"] = (self.started.elapsed().as_nanos() as u64).into();
        v["load_duration"] = 0.into();
        v["prompt_eval_count"] = t.prompt_n.into();
        v["prompt_eval_duration"] = ns(t.prompt_ms).into();
        v["eval_count"] = f.generation.tokens.len().into();
        v["eval_duration"] = ns(t.predicted_ms).into();
    }

    fn line(v: &Value) -> Bytes {
        let mut s = v.to_string();
        s.push('\n');
        Bytes::from(s)
    }

    async fn next_lines(&mut self) -> Option<Vec<Bytes>> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        match self.running.next().await {
            Some(Step::Delta(d)) => {
                let split = reasoning::push_opt(&mut self.splitter, d);
                let split = self.content(split);
                if !split.content.is_empty() || (self.show_thinking && !split.reasoning.is_empty())
                {
                    out.push(Self::line(&self.object(split, false)));
                }
            }
            Some(Step::Done { finished, finish }) => {
                let tail = self
                    .splitter
                    .as_mut()
                    .map(ReasoningSplitter::finish)
                    .unwrap_or_default();
                let mut tail = self.content(tail);
                let (held, calls) = self.calls_chunk();
                tail.content.push_str(&held);
                if !tail.content.is_empty() || (self.show_thinking && !tail.reasoning.is_empty()) {
                    out.push(Self::line(&self.object(tail, false)));
                }
                if let Some(c) = calls {
                    out.push(Self::line(&c));
                }
                let mut last = self.object(Split::default(), true);
                self.finish_fields(&mut last, &finished, finish);
                out.push(Self::line(&last));
                self.done = true;
            }
            Some(Step::Failed(e)) => {
                out.push(Self::line(&json!({"error": e.message})));
                self.done = true;
            }
            None => self.done = true,
        }
        Some(out)
    }
}

/// The streamed answer: the body owns the generation, so a client that disconnects cancels it.
fn ndjson(st: NdState) -> Response {
    let lines = stream::unfold(st, |mut st| async move {
        let batch = st.next_lines().await?;
        Some((batch, st))
    })
    .flat_map(|batch| stream::iter(batch.into_iter().map(Ok::<_, Infallible>)));
    let mut resp = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response();
    resp.extensions_mut().insert(Logged);
    resp
}

/// The whole answer (`stream: false`).
async fn whole(mut st: NdState) -> Result<Response, OllamaError> {
    let (finished, finish) = st.running.collect().await?;
    let text = &finished.generation.text;
    let split = if st.splitter.is_some() {
        split_all(text, st.opens_think)
    } else {
        Split {
            reasoning: String::new(),
            content: text.clone(),
        }
    };
    let parsed = st
        .tools
        .as_ref()
        .map(|t| tools::parse_whole(t, &split.content));
    let calls = match parsed {
        Some(p) => {
            let calls = p.calls;
            let split = Split {
                reasoning: split.reasoning,
                content: p.content,
            };
            (split, calls)
        }
        None => (split, Vec::new()),
    };
    let mut v = st.object(calls.0, true);
    if !calls.1.is_empty() {
        v["message"]["tool_calls"] = tools::ollama_calls(&calls.1);
    }
    st.finish_fields(&mut v, &finished, finish);
    drop(st); // logs the request
    let mut resp = axum::Json(v).into_response();
    resp.extensions_mut().insert(Logged);
    Ok(resp)
}

/// `GET /api/tags`: the served model.
pub(super) async fn tags(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let l = state.model()?;
    Ok(axum::Json(json!({"models": [model_entry(l, &state)]})).into_response())
}

/// `GET /api/ps`: the served model is always loaded (no keep-alive unloading); empty while it
/// loads.
pub(super) async fn ps(State(state): State<AppState>) -> Response {
    let models: Vec<Value> = state
        .loaded
        .get()
        .map(|l| {
            let mut e = model_entry(l, &state);
            // Never unloaded: a far-future expiry, as Ollama reports for `keep_alive: -1`.
            e["expires_at"] = "2318-01-01T00:00:00Z".into();
            e["size_vram"] = 0.into();
            e["context_length"] = l.engine.config().n_ctx.into();
            e
        })
        .into_iter()
        .collect();
    axum::Json(json!({"models": models})).into_response()
}

/// `POST /api/show`: details, template and capabilities.
pub(super) async fn show(
    State(state): State<AppState>,
    body: Result<JsonBody<ShowRequest>, ApiError>,
) -> Result<Response, OllamaError> {
    let req = body?.0;
    let l = state.model()?;
    let name = req.model.as_deref().or(req.name.as_deref());
    if name.is_none_or(|n| n.trim().is_empty()) {
        return Err(ApiError::bad_request("model is required").into());
    }
    prompt::check_model(l, name)?;
    let mut capabilities = vec!["completion"];
    if l.thinks() {
        capabilities.push("thinking");
    }
    let mut info = Map::new();
    info.insert("general.architecture".into(), l.family.clone().into());
    info.insert("general.parameter_count".into(), l.n_params.into());
    info.insert("general.file_type".into(), l.quant.clone().into());
    info.insert(
        format!("{}.context_length", l.family),
        l.engine.config().n_ctx.into(),
    );
    Ok(axum::Json(json!({
        "license": "",
        "modelfile": format!("# served by ember\nFROM {}\n", l.model_path.display()),
        "parameters": "",
        "template": l.template.as_ref().map(|t| t.source()).unwrap_or_default(),
        "details": details(l),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": modified_at(l, &state),
    }))
    .into_response())
}

/// `GET /api/version`.
pub(super) async fn version() -> Response {
    axum::Json(json!({"version": OLLAMA_VERSION})).into_response()
}

/// `GET /` (and `HEAD /`): what Ollama answers, the text clients probe for.
pub(super) async fn root() -> &'static str {
    "Ollama is running"
}

fn details(l: &Loaded) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": l.family,
        "families": [l.family],
        "parameter_size": parameter_size(l.n_params),
        "quantization_level": l.quant,
    })
}

fn model_entry(l: &Loaded, state: &AppState) -> Value {
    let name = tag_name(l);
    json!({
        "name": name,
        "model": name,
        "modified_at": modified_at(l, state),
        "size": l.model_bytes,
        "digest": digest(l),
        "details": details(l),
    })
}

/// The file's modification time, else the daemon's start.
fn modified_at(l: &Loaded, state: &AppState) -> String {
    let t = std::fs::metadata(&l.model_path)
        .and_then(|m| m.modified())
        .ok()
        .or_else(|| SystemTime::now().checked_sub(state.started.elapsed()))
        .unwrap_or(UNIX_EPOCH);
    rfc3339(t)
}

/// A stable 64-hex-digit id of the served file (name, path, size). Not a content hash: hashing
/// a GB-sized file per `list` call is too slow on a board, and clients only compare digests.
fn digest(l: &Loaded) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    (0u8..4)
        .map(|i| {
            // `DefaultHasher::new()` has fixed keys: the same input gives the same id.
            let mut h = DefaultHasher::new();
            (i, &l.model_id, &l.model_path, l.model_bytes).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Ollama's `parameter_size`: `135M`, `1.5B`.
fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{:.0}K", n / 1e3)
    }
}

/// RFC 3339 UTC with microseconds (`2024-05-01T12:00:00.123456Z`), as Ollama's `created_at`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_208_000_123_456); // leap day 2024
        assert_eq!(rfc3339(t), "2024-02-29T12:00:00.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_399); // 2100-02-28 23:59:59
        assert_eq!(rfc3339(t), "2100-02-28T23:59:59.000000Z");
    }

    #[test]
    fn sizes() {
        assert_eq!(parameter_size(134_515_008), "135M");
        assert_eq!(parameter_size(1_543_714_304), "1.5B");
        assert_eq!(parameter_size(1_000), "1K");
    }

    #[test]
    fn think_values() {
        let r = |v: Value| serde_json::from_value::<OllamaRequest>(v).unwrap().think();
        assert_eq!(r(json!({})), None);
        assert_eq!(r(json!({"think": true})), Some(true));
        assert_eq!(r(json!({"think": false})), Some(false));
        assert_eq!(r(json!({"think": "high"})), Some(true));
        let c = |v: Value| {
            serde_json::from_value::<OllamaRequest>(v)
                .unwrap()
                .check_think()
        };
        for ok in [json!({}), json!({"think": false}), json!({"think": "low"})] {
            assert!(c(ok.clone()).is_ok(), "{ok}");
        }
        for bad in [
            json!({"think": 1}),
            json!({"think": "max"}),
            json!({"think": []}),
        ] {
            assert_eq!(c(bad.clone()).unwrap_err().status, 400, "{bad}");
        }
    }
}
