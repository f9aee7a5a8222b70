//! HTTP errors of the API: one [`ApiError`] type that every handler returns, rendered in
//! OpenAI's shape (`{"error":{"message","type","code"}}`, as llama-server's `tools/server` does)
//! or, wrapped in [`OllamaError`], in Ollama's (`{"error":"..."}`). Also the JSON body extractor
//! [`JsonBody`], which replaces axum's plain-text rejections with these JSON errors.

use super::metrics::Outcome;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ember_engine::service::{EngineError, EngineStats, SubmitError};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Marks a response whose request was already logged and counted by the generation guard, so the
/// outer middleware does not log it a second time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Logged;

/// An error answer: status, OpenAI error `type`, message and what it counts as in the metrics.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (503 busy).
    pub retry_after: Option<u64>,
    pub outcome: Outcome,
    /// Already logged by the generation guard.
    pub logged: bool,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        let outcome = match status.as_u16() {
            401 => Outcome::Unauthorized,
            400..=499 => Outcome::BadRequest,
            _ => Outcome::Error,
        };
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            outcome,
            logged: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid or missing API key (send `Authorization: Bearer <key>`)",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method not allowed on this route",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body larger than {limit} bytes"),
        )
    }

    /// 503 while the model loads or the daemon drains.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            message,
        );
        e.outcome = Outcome::Unavailable;
        e
    }

    pub fn loading() -> Self {
        Self::unavailable("the model is loading")
    }

    /// 503 with `Retry-After`: the engine's queue is full.
    pub fn busy(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", message);
        e.retry_after = Some(retry_after);
        e.outcome = Outcome::Busy;
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// A refusal at submission; `stats` sizes the `Retry-After` of a busy answer.
    pub fn from_submit(e: &SubmitError, stats: &EngineStats) -> Self {
        match e {
            SubmitError::Busy { .. } => Self::busy(e.to_string(), retry_after(stats)),
            SubmitError::ShuttingDown => Self::unavailable(e.to_string()),
            SubmitError::PromptTooLong { .. }
            | SubmitError::EmptyPrompt
            | SubmitError::BadParams(_) => Self::bad_request(e.to_string()),
        }
    }

    /// A failure after the request was accepted.
    pub fn from_engine(e: &EngineError) -> Self {
        match e {
            EngineError::DeadlineExpired => {
                let mut err = Self::busy(
                    "the request's deadline passed while it waited for a slot",
                    1,
                );
                err.outcome = Outcome::Timeout;
                err
            }
            EngineError::ShuttingDown => Self::unavailable(e.to_string()),
            EngineError::Failed(_) => Self::internal(e.to_string()),
        }
    }

    /// OpenAI's error object (also sent as the data of an SSE error event).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.status.as_u16(),
        }})
    }

    fn respond(&self, body: serde_json::Value) -> Response {
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(self.outcome);
        if self.logged {
            resp.extensions_mut().insert(Logged);
        }
        resp
    }
}

/// Seconds a refused client should wait: about one more second per queued request per slot,
/// 1 to 5 (a request on these boards takes seconds; longer would make clients give up).
pub(super) fn retry_after(stats: &EngineStats) -> u64 {
    let per_slot = stats.queued / stats.slots.max(1);
    (1 + per_slot as u64).clamp(1, 5)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(self.body())
    }
}

/// The same error in Ollama's shape: `{"error": "message"}`.
#[derive(Debug, Clone)]
pub(crate) struct OllamaError(pub ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        self.0.respond(json!({"error": self.0.message}))
    }
}

/// A JSON request body: like `axum::Json`, but any content type is accepted (curl's `-d` sends
/// form encoding) and every failure is an [`ApiError`]: 413 over the body limit, 400 for
/// malformed JSON or wrong field types, with serde's message (it names the position).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a request body, errors worded for the client.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The body limit in force, put in the request extensions so the 413 message can name it.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimit(pub usize);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stats(queued: usize, slots: usize) -> EngineStats {
        EngineStats {
            queued,
            active: slots,
            slots,
            queue_capacity: 8,
            n_ctx: 2048,
            prompt_tokens: 0,
            generated_tokens: 0,
        }
    }

    #[test]
    fn submit_errors_map_to_statuses() {
        let s = stats(0, 1);
        let cases = [
            (
                SubmitError::Busy {
                    queued: 8,
                    capacity: 8,
                },
                503,
                Outcome::Busy,
            ),
            (SubmitError::ShuttingDown, 503, Outcome::Unavailable),
            (
                SubmitError::PromptTooLong {
                    prompt: 9,
                    n_ctx: 8,
                },
                400,
                Outcome::BadRequest,
            ),
            (SubmitError::EmptyPrompt, 400, Outcome::BadRequest),
            (
                SubmitError::BadParams("top_p".into()),
                400,
                Outcome::BadRequest,
            ),
        ];
        for (e, status, outcome) in cases {
            let api = ApiError::from_submit(&e, &s);
            assert_eq!(api.status.as_u16(), status, "{e}");
            assert_eq!(api.outcome, outcome, "{e}");
        }
        let busy = ApiError::from_submit(
            &SubmitError::Busy {
                queued: 8,
                capacity: 8,
            },
            &s,
        );
        let resp = busy.into_response();
        assert!(resp.headers().get(header::RETRY_AFTER).is_some());
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        assert_eq!(
            ApiError::from_engine(&EngineError::DeadlineExpired).outcome,
            Outcome::Timeout
        );
        assert_eq!(
            ApiError::from_engine(&EngineError::ShuttingDown)
                .status
                .as_u16(),
            503
        );
        assert_eq!(
            ApiError::from_engine(&EngineError::Failed("x".into()))
                .status
                .as_u16(),
            500
        );
    }

    #[test]
    fn retry_after_grows_with_the_queue_and_is_capped() {
        assert_eq!(retry_after(&stats(0, 1)), 1);
        assert_eq!(retry_after(&stats(2, 1)), 3);
        assert_eq!(retry_after(&stats(4, 2)), 3);
        assert_eq!(retry_after(&stats(100, 1)), 5);
        assert_eq!(retry_after(&stats(3, 0)), 4);
    }

    #[test]
    fn json_errors_are_400() {
        assert_eq!(
            parse_json::<serde_json::Value>(b"").unwrap_err().status,
            400
        );
        assert_eq!(
            parse_json::<serde_json::Value>(b"{").unwrap_err().status,
            400
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let e = parse_json::<T>(br#"{"a":"x"}"#).unwrap_err();
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }
}
