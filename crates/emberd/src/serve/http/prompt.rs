//! From a request to prompt token ids: model-name matching, chat-template rendering and
//! tokenization. Chat prompts are built exactly as `emberd run --chat` builds them (cmd/run.rs):
//! the template renders with `add_generation_prompt` and the model's BOS/EOS texts, the result is
//! tokenized with special tokens parsed, and BOS is added only where the template did not write it.
//! Completion prompts are tokenized like llama-server's `/completion` (BOS as the model asks,
//! special tokens parsed).
//!
//! Rendering and tokenizing a body of up to the body limit is CPU work of up to a second on a
//! board, so handlers run these functions on the blocking pool.

use super::Loaded;
use super::error::ApiError;
use super::reasoning;
use ember_tokenizer::Tokenizer;
use ember_tokenizer::template::{ChatTemplate, TemplateError};
use ember_toolcall::Think;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// A prompt ready to submit.
#[derive(Debug, Clone)]
pub(crate) struct Prompt {
    pub ids: Vec<u32>,
    /// The rendered prompt leaves the model inside a `<think>` block.
    pub opens_think: bool,
    /// No reasoning before the answer: the request switched thinking off (`enable_thinking:
    /// false`, Ollama's `think: false`), or the prompt ends with a closed `</think>` (DeepSeek
    /// V3.1 and Qwen 3 with thinking off render an empty block).
    pub thinking_off: bool,
}

impl Prompt {
    /// How a constrained answer may reason before its constrained part: inside the block the
    /// prompt opened; not at all when thinking is off or the model never thinks; else an optional
    /// leading `<think>…</think>` (as `ember_toolcall::GrammarOptions::for_prompt` decides).
    pub fn think(&self, loaded: &Loaded) -> Think {
        if self.opens_think {
            Think::Open
        } else if self.thinking_off || !loaded.thinks() {
            Think::None
        } else {
            Think::Optional
        }
    }
}

/// Whether `requested` names the loaded model: absent or empty (any model), its id or an alias,
/// ASCII case-insensitively, with Ollama's `:tag` tolerated (`name:latest` for `name`, and
/// `name` for an alias `name:latest`).
pub(crate) fn model_matches(loaded: &Loaded, requested: Option<&str>) -> bool {
    names_match(&loaded.model_id, &loaded.aliases, requested)
}

fn names_match(model_id: &str, aliases: &[String], requested: Option<&str>) -> bool {
    let Some(r) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return true;
    };
    let base = |s: &str| -> String {
        match s.rsplit_once(':') {
            Some((b, tag)) if !tag.contains('/') => b.to_owned(),
            _ => s.to_owned(),
        }
    };
    std::iter::once(model_id)
        .chain(aliases.iter().map(String::as_str))
        .any(|c| {
            c.eq_ignore_ascii_case(r)
                || base(r).eq_ignore_ascii_case(c)
                || (c.ends_with(":latest") && base(c).eq_ignore_ascii_case(r))
        })
}

/// 404 unless `requested` names the loaded model.
pub(crate) fn check_model(loaded: &Loaded, requested: Option<&str>) -> Result<(), ApiError> {
    if model_matches(loaded, requested) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "model {:?} not found; this server runs {:?}",
            requested.unwrap_or_default(),
            loaded.model_id
        )))
    }
}

/// What a chat prompt needs, owned so it can move to the blocking pool.
#[derive(Debug, Clone)]
pub(crate) struct ChatInput {
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<Arc<ChatTemplate>>,
    /// Normalized messages (see `params::normalize_messages`).
    pub messages: Vec<Value>,
    /// Extra template variables (`chat_template_kwargs`, Ollama's `think` as `enable_thinking`).
    pub vars: Map<String, Value>,
}

/// Renders and tokenizes a chat prompt, as `emberd run --chat` does.
pub(crate) fn chat_prompt(input: &ChatInput) -> Result<Prompt, ApiError> {
    let tok = &input.tokenizer;
    let tmpl = match &input.template {
        Some(t) => t.as_ref(),
        None => fallback_template()?,
    };
    let (rendered, ids) =
        crate::model::chat_prompt(tok, tmpl, input.messages.clone(), input.vars.clone(), false)
            .map_err(|e| match e {
                // The template refused the conversation (e.g. "roles must alternate"): the client's fault.
                TemplateError::Raised(_) => ApiError::bad_request(e.to_string()),
                _ => ApiError::internal(e.to_string()),
            })?;
    Ok(Prompt {
        ids,
        opens_think: reasoning::prompt_opens_think(&rendered),
        thinking_off: input.vars.get("enable_thinking") == Some(&Value::Bool(false))
            || rendered.trim_end().ends_with("</think>"),
    })
}

/// Tokenizes a raw completion prompt (BOS as the model asks, special-token text parsed).
pub(crate) fn text_prompt(tok: &Tokenizer, text: &str) -> Prompt {
    Prompt {
        ids: tok.encode(text, true, true),
        opens_think: false,
        thinking_off: false,
    }
}

/// Checks token ids a client gave against the vocabulary.
pub(crate) fn check_ids(tok: &Tokenizer, ids: &[u32]) -> Result<(), ApiError> {
    let n = tok.n_vocab();
    match ids.iter().find(|&&id| id as usize >= n) {
        Some(id) => Err(ApiError::bad_request(format!(
            "token id {id} is outside the vocabulary (size {n})"
        ))),
        None => Ok(()),
    }
}

/// A prompt that cannot leave room for one generated token is refused before queueing
/// (the engine would refuse it too; this says so in llama-server's words).
pub(crate) fn check_fits(prompt_len: usize, n_ctx: usize) -> Result<(), ApiError> {
    if prompt_len == 0 {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    if prompt_len >= n_ctx {
        return Err(ApiError::bad_request(format!(
            "the request exceeds the available context size: the prompt has {prompt_len} \
             tokens, the context holds {n_ctx}"
        )));
    }
    Ok(())
}

/// ChatML, what llama-server falls back to for a model without a template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + \
    message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\n' }}{% endif %}";

fn fallback_template() -> Result<&'static ChatTemplate, ApiError> {
    static T: OnceLock<Option<ChatTemplate>> = OnceLock::new();
    T.get_or_init(|| ChatTemplate::new(CHATML).ok())
        .as_ref()
        .ok_or_else(|| ApiError::internal("the built-in ChatML template does not compile"))
}

/// Runs CPU work (rendering, tokenizing) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("prompt preparation failed: {e}")))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_compiles_and_renders() {
        let t = fallback_template().unwrap();
        let req = ember_tokenizer::RenderRequest::new(vec![
            serde_json::json!({"role": "user", "content": "hi"}),
        ])
        .with_generation_prompt(true);
        assert_eq!(
            t.render(&req).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn model_names() {
        let id = "smollm2-135m-instruct-q4_1".to_owned();
        let aliases = vec!["smollm2".to_owned(), "tiny:latest".to_owned()];
        let m = |r: Option<&str>| names_match(&id, &aliases, r);
        assert!(m(None) && m(Some("")) && m(Some(" ")));
        assert!(m(Some("smollm2-135m-instruct-q4_1")));
        assert!(m(Some("SmolLM2-135M-Instruct-Q4_1")));
        assert!(m(Some("smollm2-135m-instruct-q4_1:latest")));
        assert!(m(Some("smollm2:latest")));
        assert!(m(Some("tiny")) && m(Some("tiny:latest")));
        assert!(!m(Some("llama3")) && !m(Some("smollm2-135m")) && !m(Some("tiny:7b")));
    }

    #[test]
    fn fits() {
        assert!(check_fits(3, 4).is_ok());
        assert_eq!(check_fits(4, 4).unwrap_err().status, 400);
        assert_eq!(check_fits(0, 4).unwrap_err().status, 400);
    }
}
