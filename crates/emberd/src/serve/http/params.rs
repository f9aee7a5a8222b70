//! Request bodies of the OpenAI and Ollama routes and their mapping to the engine's
//! [`GenerateParams`]. Field names and conventions follow llama-server (`tools/server`,
//! `params_from_json_cmpl`) and Ollama's `api/types.go` `Options`; unknown fields are ignored.
//! Absent sampling fields take llama.cpp's defaults on both APIs, so one model answers alike
//! whichever API asks.
//!
//! Polymorphic fields (`stop`, `logit_bias`, `seed`, `prompt`, message `content`) arrive as JSON
//! values and are converted here, so a wrong shape gets a message naming the field instead of
//! serde's "did not match any variant".

use super::error::ApiError;
use ember_engine::generate::GenerateParams;
use ember_engine::sampler::SamplingParams;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Most stop strings a request may give, and their longest length (bytes): the stop matcher
/// checks each at every token.
const MAX_STOPS: usize = 16;
const MAX_STOP_LEN: usize = 1024;

/// The sampling knobs both APIs share (OpenAI/llama-server names; Ollama's `options` use the
/// same ones).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct Knobs {
    pub temperature: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<Value>,
    pub stop: Option<Value>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<Value>,
}

impl Knobs {
    /// The sampler's parameters: llama.cpp defaults overridden by what the request set. Range
    /// checks are the sampler's (`SubmitError::BadParams` → 400).
    pub fn sampling(&self) -> Result<SamplingParams, ApiError> {
        let d = SamplingParams::default();
        Ok(SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            penalty_last_n: self.repeat_last_n.unwrap_or(d.penalty_last_n),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: parse_seed(self.seed.as_ref())?,
            logit_bias: parse_logit_bias(self.logit_bias.as_ref())?,
            ..d
        })
    }

    /// Sampling, stop strings and the token budget together.
    pub fn generate_params(
        &self,
        requested_max: Option<i64>,
        prompt_len: usize,
        n_ctx: usize,
    ) -> Result<GenerateParams, ApiError> {
        Ok(GenerateParams {
            max_tokens: max_tokens(requested_max, prompt_len, n_ctx),
            sampling: self.sampling()?,
            stop: parse_stop(self.stop.as_ref())?,
            logits_top: 0,
            constraint: None,
        })
    }
}

/// `POST /v1/chat/completions` and `POST /v1/completions`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct OpenAiRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Value>>,
    pub prompt: Option<Value>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    /// llama-server's name.
    pub n_predict: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    /// llama-server's per-request override: `"none"` leaves `<think>` blocks in `content`.
    pub reasoning_format: Option<String>,
    /// Structured output (`structured::Wanted::from_openai`): OpenAI's, and llama-server's two.
    pub response_format: Option<Value>,
    pub json_schema: Option<Value>,
    pub grammar: Option<Value>,
    /// Tool calls (`tools::Tools`).
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    /// `false`: at most one call per answer (the grammar allows one).
    pub parallel_tool_calls: Option<bool>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub knobs: Knobs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StreamOptions {
    pub include_usage: Option<bool>,
}

impl OpenAiRequest {
    /// OpenAI's newest name first, then the older one, then llama-server's.
    pub fn requested_max(&self) -> Option<i64> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .or(self.n_predict)
    }

    /// Only one choice per request: the engine generates one sequence per request.
    pub fn check_n(&self) -> Result<(), ApiError> {
        match self.n {
            None | Some(1) => Ok(()),
            Some(n) => Err(ApiError::bad_request(format!(
                "n = {n} is not supported: only one choice per request (n = 1)"
            ))),
        }
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Whether `<think>` blocks are split out (the default for a reasoning model).
    pub fn split_reasoning(&self) -> bool {
        self.reasoning_format.as_deref() != Some("none")
    }
}

/// Ollama's `options` object (`api/types.go`); `num_ctx` and the rest are accepted and ignored:
/// the context is the daemon's.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct OllamaOptions {
    pub num_predict: Option<i64>,
    #[serde(flatten)]
    pub knobs: Knobs,
}

/// The token budget: `requested` (negative: unlimited, as llama-server's `-1` and Ollama's
/// `-1`/`-2`), never past the end of the context.
pub(crate) fn max_tokens(requested: Option<i64>, prompt_len: usize, n_ctx: usize) -> usize {
    let room = n_ctx.saturating_sub(prompt_len);
    match requested {
        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX).min(room),
        _ => room,
    }
}

/// `seed`: an unsigned integer; negative (llama-server's `-1`) or `null` means random.
pub(crate) fn parse_seed(v: Option<&Value>) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                Ok(None)
            } else {
                Err(ApiError::bad_request("`seed` must be an integer"))
            }
        }
        Some(_) => Err(ApiError::bad_request("`seed` must be an integer")),
    }
}

/// `stop`: a string or an array of strings (empty ones dropped).
pub(crate) fn parse_stop(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::bad_request("`stop` must be a string or an array of strings");
    let stops: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    if stops.len() > MAX_STOPS {
        return Err(ApiError::bad_request(format!(
            "`stop` has {} strings; at most {MAX_STOPS} are allowed",
            stops.len()
        )));
    }
    if stops.iter().any(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::bad_request(format!(
            "`stop` strings may be at most {MAX_STOP_LEN} bytes long"
        )));
    }
    Ok(stops)
}

/// `logit_bias`: OpenAI's map `{"<token id>": bias}`, or llama-server's array `[[id, bias], ...]`;
/// a bias of `false` bans the token (llama-server). Ids are checked against the vocabulary by the
/// sampler.
pub(crate) fn parse_logit_bias(v: Option<&Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    fn bias(v: &Value) -> Result<f32, ApiError> {
        match v {
            Value::Number(n) => n
                .as_f64()
                .map(|b| b as f32)
                .ok_or_else(|| ApiError::bad_request("`logit_bias` values must be numbers")),
            Value::Bool(false) => Ok(f32::NEG_INFINITY),
            _ => Err(ApiError::bad_request(
                "`logit_bias` values must be numbers (or false to ban a token)",
            )),
        }
    }
    let id_err =
        |k: &str| ApiError::bad_request(format!("`logit_bias` key {k:?} is not a token id"));
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| Ok((k.trim().parse::<u32>().map_err(|_| id_err(k))?, bias(v)?)))
            .collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([id, b]) => {
                    let id = id
                        .as_u64()
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| id_err(&id.to_string()))?;
                    Ok((id, bias(b)?))
                }
                _ => Err(ApiError::bad_request(
                    "`logit_bias` as an array must hold [token id, bias] pairs",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "`logit_bias` must be an object {\"<token id>\": bias}",
        )),
    }
}

/// A completion prompt: text, or token ids given directly.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// `prompt`: a string, an array of token ids, or a one-element array of either (OpenAI's batch
/// form; more than one prompt per request is refused).
pub(crate) fn parse_prompt(v: Option<&Value>) -> Result<PromptInput, ApiError> {
    let bad = || ApiError::bad_request("`prompt` must be a string or an array of token ids");
    match v {
        None | Some(Value::Null) => Err(ApiError::bad_request("`prompt` is required")),
        Some(Value::String(s)) => Ok(PromptInput::Text(s.clone())),
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_number) && !items.is_empty() {
                let ids = items
                    .iter()
                    .map(|i| {
                        i.as_u64()
                            .and_then(|i| u32::try_from(i).ok())
                            .ok_or_else(bad)
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(PromptInput::Tokens(ids));
            }
            match items.as_slice() {
                [one @ (Value::String(_) | Value::Array(_))] => parse_prompt(Some(one)),
                [] => Err(ApiError::bad_request("`prompt` is empty")),
                [_, _, ..] if items.iter().all(|i| i.is_string() || i.is_array()) => Err(
                    ApiError::bad_request("only one prompt per request is supported"),
                ),
                _ => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Checks the messages of a chat request and brings them to the form templates expect:
/// `{"role", "content": string}` (OpenAI's text parts joined with newlines, as llama-server does;
/// `developer` treated as `system`), keeping `name`. Images and audio are refused.
pub(crate) fn normalize_messages(messages: &[Value]) -> Result<Vec<Value>, ApiError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let obj = m
                .as_object()
                .ok_or_else(|| ApiError::bad_request(format!("messages[{i}] must be an object")))?;
            let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("messages[{i}].role must be a string"))
            })?;
            let role = if role == "developer" { "system" } else { role };
            let content = content_text(obj.get("content"))
                .map_err(|e| ApiError::bad_request(format!("messages[{i}].content: {e}")))?;
            if obj
                .get("images")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}]: images are not supported by this model"
                )));
            }
            let mut out = json!({"role": role, "content": content});
            if let Some(name) = obj.get("name").and_then(Value::as_str) {
                out["name"] = name.into();
            }
            // Tool-call history, checked and shaped for the template by `tools::Tools::prepare`.
            for key in ["tool_calls", "tool_call_id", "tool_name"] {
                if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                    out[key] = v.clone();
                }
            }
            Ok(out)
        })
        .collect()
}

fn content_text(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => return Err("a text part needs a string `text`".into()),
                    (Some(other), _) => {
                        return Err(format!("content parts of type {other:?} are not supported"));
                    }
                    (None, _) => return Err("each content part needs a `type`".into()),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err("must be a string or an array of content parts".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn budget() {
        assert_eq!(max_tokens(None, 10, 100), 90);
        assert_eq!(max_tokens(Some(-1), 10, 100), 90);
        assert_eq!(max_tokens(Some(-2), 10, 100), 90);
        assert_eq!(max_tokens(Some(5), 10, 100), 5);
        assert_eq!(max_tokens(Some(500), 10, 100), 90);
        assert_eq!(max_tokens(Some(0), 10, 100), 0);
        assert_eq!(max_tokens(Some(5), 200, 100), 0);
    }

    #[test]
    fn stop_forms() {
        assert!(parse_stop(None).unwrap().is_empty());
        assert!(parse_stop(Some(&Value::Null)).unwrap().is_empty());
        assert_eq!(parse_stop(Some(&json!("\n"))).unwrap(), vec!["\n"]);
        assert_eq!(
            parse_stop(Some(&json!(["a", "", "b"]))).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(parse_stop(Some(&json!(""))).unwrap(), Vec::<String>::new());
        assert_eq!(parse_stop(Some(&json!(3))).unwrap_err().status, 400);
        assert_eq!(parse_stop(Some(&json!(["a", 1]))).unwrap_err().status, 400);
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        assert_eq!(parse_stop(Some(&json!(many))).unwrap_err().status, 400);
        let long = "x".repeat(MAX_STOP_LEN + 1);
        assert_eq!(parse_stop(Some(&json!([long]))).unwrap_err().status, 400);
    }

    #[test]
    fn logit_bias_forms() {
        let mut m = parse_logit_bias(Some(&json!({"15": -100, "7": 2.5, " 3": false}))).unwrap();
        m.sort_by_key(|p| p.0);
        assert_eq!(m, vec![(3, f32::NEG_INFINITY), (7, 2.5), (15, -100.0)]);
        assert_eq!(
            parse_logit_bias(Some(&json!([[1, 0.5], [2, false]]))).unwrap(),
            vec![(1, 0.5), (2, f32::NEG_INFINITY)]
        );
        assert!(parse_logit_bias(Some(&json!({}))).unwrap().is_empty());
        for bad in [
            json!({"hello": 1}),
            json!({"-1": 1}),
            json!({"1": "x"}),
            json!({"1": true}),
            json!([[1]]),
            json!([[-1, 2]]),
            json!(5),
        ] {
            assert_eq!(
                parse_logit_bias(Some(&bad)).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn seed_forms() {
        assert_eq!(parse_seed(None).unwrap(), None);
        assert_eq!(parse_seed(Some(&json!(42))).unwrap(), Some(42));
        assert_eq!(parse_seed(Some(&json!(u64::MAX))).unwrap(), Some(u64::MAX));
        assert_eq!(parse_seed(Some(&json!(-1))).unwrap(), None);
        assert!(parse_seed(Some(&json!(1.5))).is_err());
        assert!(parse_seed(Some(&json!("1"))).is_err());
    }

    #[test]
    fn openai_request_maps_to_params() {
        let req: OpenAiRequest = serde_json::from_value(json!({
            "model": "m", "messages": [], "max_tokens": 7, "temperature": 0, "top_p": 0.5,
            "top_k": 3, "min_p": 0.1, "seed": 9, "stop": "END", "presence_penalty": 0.5,
            "frequency_penalty": 0.25, "repeat_penalty": 1.1, "logit_bias": {"2": -1},
            "stream": true, "stream_options": {"include_usage": true}, "n": 1,
            "unknown_field": {"ignored": true}
        }))
        .unwrap();
        req.check_n().unwrap();
        assert!(req.include_usage());
        let p = req
            .knobs
            .generate_params(req.requested_max(), 10, 100)
            .unwrap();
        assert_eq!(p.max_tokens, 7);
        assert_eq!(p.stop, vec!["END"]);
        let s = &p.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.min_p, s.seed),
            (0.0, 0.5, 3, 0.1, Some(9))
        );
        assert_eq!(
            (s.presence_penalty, s.frequency_penalty, s.repeat_penalty),
            (0.5, 0.25, 1.1)
        );
        assert_eq!(s.logit_bias, vec![(2, -1.0)]);
        assert_eq!(p.logits_top, 0);
    }

    #[test]
    fn openai_defaults_and_token_names() {
        let req: OpenAiRequest = serde_json::from_value(json!({"prompt": "x"})).unwrap();
        let p = req
            .knobs
            .generate_params(req.requested_max(), 4, 64)
            .unwrap();
        assert_eq!(p.max_tokens, 60);
        assert_eq!(p.sampling, SamplingParams::default());
        assert!(!req.include_usage());
        let req: OpenAiRequest =
            serde_json::from_value(json!({"max_completion_tokens": 3, "max_tokens": 9})).unwrap();
        assert_eq!(req.requested_max(), Some(3));
        let req: OpenAiRequest = serde_json::from_value(json!({"n_predict": -1})).unwrap();
        assert_eq!(req.requested_max(), Some(-1));
        let req: OpenAiRequest = serde_json::from_value(json!({"n": 2})).unwrap();
        assert_eq!(req.check_n().unwrap_err().status, 400);
        let req: OpenAiRequest =
            serde_json::from_value(json!({"temperature": null, "stop": null})).unwrap();
        assert_eq!(req.knobs.sampling().unwrap(), SamplingParams::default());
        assert!(serde_json::from_value::<OpenAiRequest>(json!({"temperature": "hot"})).is_err());
    }

    #[test]
    fn ollama_options_map_to_params() {
        let o: OllamaOptions = serde_json::from_value(json!({
            "temperature": 0.2, "top_k": 10, "top_p": 0.8, "min_p": 0.02, "seed": 3,
            "num_predict": -1, "stop": ["\n\n"], "repeat_penalty": 1.2, "repeat_last_n": 32,
            "presence_penalty": 0.1, "frequency_penalty": 0.2, "num_ctx": 8192, "mirostat": 0
        }))
        .unwrap();
        let p = o.knobs.generate_params(o.num_predict, 10, 50).unwrap();
        assert_eq!(p.max_tokens, 40);
        assert_eq!(p.stop, vec!["\n\n"]);
        let s = &p.sampling;
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p),
            (0.2, 10, 0.8, 0.02)
        );
        assert_eq!(
            (s.seed, s.repeat_penalty, s.penalty_last_n),
            (Some(3), 1.2, 32)
        );
        assert_eq!((s.presence_penalty, s.frequency_penalty), (0.1, 0.2));
        let o: OllamaOptions = serde_json::from_value(json!({"num_predict": 12})).unwrap();
        assert_eq!(
            o.knobs
                .generate_params(o.num_predict, 10, 50)
                .unwrap()
                .max_tokens,
            12
        );
    }

    #[test]
    fn prompt_forms() {
        assert_eq!(
            parse_prompt(Some(&json!("hi"))).unwrap(),
            PromptInput::Text("hi".into())
        );
        assert_eq!(
            parse_prompt(Some(&json!([1, 2]))).unwrap(),
            PromptInput::Tokens(vec![1, 2])
        );
        assert_eq!(
            parse_prompt(Some(&json!(["hi"]))).unwrap(),
            PromptInput::Text("hi".into())
        );
        assert_eq!(
            parse_prompt(Some(&json!([[5]]))).unwrap(),
            PromptInput::Tokens(vec![5])
        );
        for bad in [
            json!(null),
            json!([]),
            json!(["a", "b"]),
            json!([1, -2]),
            json!([1.5]),
            json!({}),
        ] {
            assert_eq!(parse_prompt(Some(&bad)).unwrap_err().status, 400, "{bad}");
        }
        assert!(parse_prompt(None).is_err());
    }

    #[test]
    fn messages_are_normalized() {
        let m = normalize_messages(&[
            json!({"role": "developer", "content": "be brief"}),
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "x"}),
            json!({"role": "assistant", "content": null, "tool_calls": []}),
            json!({"role": "tool", "content": "ok", "tool_call_id": "call_1", "extra": 1}),
        ])
        .unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(
            m[1],
            json!({"role": "user", "content": "a\nb", "name": "x"})
        );
        // Tool-call history stays for `tools::Tools::prepare`; other fields go.
        assert_eq!(
            m[2],
            json!({"role": "assistant", "content": "", "tool_calls": []})
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "content": "ok", "tool_call_id": "call_1"})
        );
        for bad in [
            json!("hi"),
            json!({"content": "x"}),
            json!({"role": 1, "content": "x"}),
            json!({"role": "user", "content": 5}),
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
            json!({"role": "user", "content": [{"text": "x"}]}),
            json!({"role": "user", "content": "x", "images": ["aGk="]}),
        ] {
            assert_eq!(
                normalize_messages(std::slice::from_ref(&bad))
                    .unwrap_err()
                    .status,
                400,
                "{bad}"
            );
        }
    }
}
