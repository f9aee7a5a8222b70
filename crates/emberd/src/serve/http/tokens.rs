//! llama-server's `POST /tokenize` and `POST /detokenize` (`server.cpp` `handle_tokenize`,
//! `handle_detokenize`): `{"content", "add_special", "parse_special", "with_pieces"}` →
//! `{"tokens": [...]}`, and `{"tokens": [...]}` → `{"content"}`.

use super::AppState;
use super::error::{ApiError, JsonBody};
use super::prompt;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TokenizeRequest {
    content: String,
    /// Add BOS/EOS as the model asks (llama-server's default: no).
    add_special: bool,
    /// Special-token text becomes special tokens (llama-server's default: yes).
    parse_special: Option<bool>,
    /// Each token as `{"id", "piece"}`; the piece is a string, or its bytes when they are not
    /// valid UTF-8 alone.
    with_pieces: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct DetokenizeRequest {
    tokens: Vec<u32>,
}

pub(super) async fn tokenize(
    State(state): State<AppState>,
    body: JsonBody<TokenizeRequest>,
) -> Result<Response, ApiError> {
    let req = body.0;
    let tok = state.model()?.tokenizer.clone();
    let tokens = prompt::blocking(move || {
        let ids = tok.encode(
            &req.content,
            req.add_special,
            req.parse_special.unwrap_or(true),
        );
        Ok(if req.with_pieces {
            ids.iter()
                .map(|&id| {
                    let piece = tok.token_to_piece(id, true).unwrap_or_default();
                    let piece = match std::str::from_utf8(&piece) {
                        Ok(s) => Value::from(s),
                        Err(_) => Value::from(piece.to_vec()),
                    };
                    json!({"id": id, "piece": piece})
                })
                .collect::<Vec<_>>()
        } else {
            ids.into_iter().map(Value::from).collect()
        })
    })
    .await?;
    Ok(axum::Json(json!({"tokens": tokens})).into_response())
}

pub(super) async fn detokenize(
    State(state): State<AppState>,
    body: JsonBody<DetokenizeRequest>,
) -> Result<Response, ApiError> {
    let req = body.0;
    let tok = state.model()?.tokenizer.clone();
    prompt::check_ids(&tok, &req.tokens)?;
    let content = prompt::blocking(move || {
        tok.decode(&req.tokens, true)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await?;
    Ok(axum::Json(json!({"content": content})).into_response())
}
