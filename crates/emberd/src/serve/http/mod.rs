//! The HTTP API of `emberd serve`: one axum [`Router`] per listener (Unix socket, optional TCP).
//!
//! - OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) in the
//!   shapes llama-server's `tools/server` returns, SSE streaming included ([`openai`]);
//! - Ollama-compatible routes (`/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/ps`,
//!   `/api/version`, `GET /`) for clients such as Home Assistant's Ollama integration ([`ollama`]);
//! - llama-server's `/tokenize`, `/detokenize` and `/health`; Prometheus `/metrics`.
//!
//! Every failure is a JSON error with the right status ([`error`]); nothing a client sends can
//! panic the daemon. One middleware gives each request an id (`X-Request-Id`), logs it (target
//! `emberd::request`) and counts it; generation requests are logged by their own guard at their
//! end ([`generation`]), so a stream is logged once, with its token counts and timings.

pub(crate) mod error;
pub(crate) mod generation;
pub mod metrics;
mod ollama;
mod openai;
pub(crate) mod params;
pub(crate) mod prompt;
pub(crate) mod reasoning;
pub(crate) mod structured;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_engine;
#[cfg(test)]
mod tests_ollama;
#[cfg(test)]
mod tests_structured;
#[cfg(test)]
mod tests_tools;
mod tokens;
pub(crate) mod tools;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ember_engine::service::EngineHandle;
use ember_tokenizer::Tokenizer;
use ember_tokenizer::template::ChatTemplate;
use error::{ApiError, BodyLimit, Logged};
use generation::RequestCtx;
pub use metrics::Metrics;
use metrics::Outcome;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The model being served, set once loading finished.
#[derive(Debug)]
pub struct Loaded {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<Arc<ChatTemplate>>,
    /// The name clients use, e.g. `smollm2-135m-instruct-q4_1`.
    pub model_id: String,
    /// Further names accepted in `model` (Ollama `name:tag` forms are matched too).
    pub aliases: Vec<String>,
    pub model_path: PathBuf,
    pub model_bytes: u64,
    /// The architecture (`llama`, `qwen2`).
    pub family: String,
    /// The file type, e.g. `Q4_1`.
    pub quant: String,
    pub n_params: u64,
    /// The model reasons in `<think>` blocks (DeepSeek-R1 distills). Also assumed when the chat
    /// template writes `<think>`.
    pub reasoning: bool,
    /// The grammar factory for constrained decoding, built on the first request that needs it
    /// (`structured::compile`); the error text if it cannot be built for this vocabulary.
    pub constraints: OnceLock<Result<ember_engine::constraint::ConstraintFactory, String>>,
}

impl Loaded {
    /// Whether outputs are split into reasoning and answer.
    pub(crate) fn thinks(&self) -> bool {
        self.reasoning
            || self
                .template
                .as_ref()
                .is_some_and(|t| reasoning::template_thinks(t.source()))
    }
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Deadline of each generation request, from its arrival.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            request_timeout: None,
        }
    }
}

/// What every handler sees; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Empty while the model loads (generation routes answer 503, `/health` says `loading`).
    pub loaded: Arc<OnceLock<Loaded>>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub started: Instant,
}

impl AppState {
    /// The loaded model, or 503 while loading.
    pub(crate) fn model(&self) -> Result<&Loaded, ApiError> {
        self.loaded.get().ok_or_else(ApiError::loading)
    }
}

/// The API on one listener. With `api_key`, every route but `GET /health` needs
/// `Authorization: Bearer <key>`.
pub fn router(state: AppState, api_key: Option<String>) -> Router {
    let limit = state.limits.max_body_bytes;
    let key: Arc<Option<String>> = Arc::new(api_key.filter(|k| !k.is_empty()));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/models", get(openai::models))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route("/", get(ollama::root))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(key, auth))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Outermost middleware: request id, context for the handlers, the response's `X-Request-Id`,
/// and the log line and metrics of every request not logged by a generation guard.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let id = request_id(req.headers());
    let peer = peer_of(&req);
    let method = req.method().clone();
    let ctx = RequestCtx {
        id: id.clone(),
        route: route.clone(),
        peer: peer.clone(),
        started,
    };
    req.extensions_mut().insert(ctx);
    req.extensions_mut()
        .insert(BodyLimit(state.limits.max_body_bytes));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if resp.extensions().get::<Logged>().is_none() {
        let status = resp.status();
        let outcome = resp
            .extensions()
            .get::<Outcome>()
            .copied()
            .unwrap_or_else(|| outcome_of(status));
        let secs = started.elapsed().as_secs_f64();
        state.metrics.record_request(&route, outcome, secs);
        let peer = peer.as_deref().unwrap_or("-");
        let ms = format_args!("{:.1}", secs * 1e3);
        // Probes and scrapes come every few seconds: logged at debug so they do not drown the
        // requests that matter.
        if route == "/health" || route == "/metrics" {
            tracing::debug!(target: "emberd::request", %id, %method, %route, status = status.as_u16(), outcome = %outcome.as_str(), total_ms = %ms, %peer, "request");
        } else {
            tracing::info!(target: "emberd::request", %id, %method, %route, status = status.as_u16(), outcome = %outcome.as_str(), total_ms = %ms, %peer, "request");
        }
    }
    resp
}

/// The client, for the log, when the listener was served with connect info
/// (`into_make_service_with_connect_info::<socket::Peer>()` on the Unix socket,
/// `::<SocketAddr>()` on TCP).
fn peer_of(req: &Request) -> Option<String> {
    let ext = req.extensions();
    if let Some(ConnectInfo(p)) = ext.get::<ConnectInfo<super::socket::Peer>>() {
        return Some(match p.pid {
            Some(pid) => format!("uid={} pid={pid}", p.uid),
            None => format!("uid={}", p.uid),
        });
    }
    ext.get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(a)| a.to_string())
}

fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=399 => Outcome::Ok,
        401 => Outcome::Unauthorized,
        503 => Outcome::Unavailable,
        400..=499 => Outcome::BadRequest,
        _ => Outcome::Error,
    }
}

/// The client's `X-Request-Id` when it is short and printable (so logs can be joined with the
/// client's), else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| generation::random_id("req-"), str::to_owned)
}

/// `Authorization: Bearer <key>` on every route but `GET /health` (probes carry no secrets).
async fn auth(State(key): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    let Some(key) = key.as_ref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        Some(token) if ct_eq(token.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = ApiError::unauthorized().into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// Compares in time independent of where the inputs differ (only the length shows).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// llama-server's shape: 503 `loading` until the model is ready.
async fn health(State(state): State<AppState>) -> Response {
    if state.loaded.get().is_some() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response()
    } else {
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "loading"})),
        )
            .into_response();
        resp.extensions_mut().insert(Outcome::Unavailable);
        resp
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    if let Some(l) = state.loaded.get() {
        state.metrics.observe_engine(&l.engine.stats());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
