//! Structured output on the HTTP routes: OpenAI's `response_format` (`json_object`, `json_schema`),
//! llama-server's `json_schema` and `grammar` fields, Ollama's `format` (`"json"` or a schema), read
//! into one engine constraint. The grammar text comes from `ember-toolcall` (formats) and is compiled
//! by the engine's llguidance factory, built once per model on first use. A schema or grammar that
//! llguidance refuses is a 400 with its reason — never a silent fallback to free text.

use super::Loaded;
use super::error::ApiError;
use super::prompt;
use ember_engine::constraint::{Constraint, ConstraintFactory, GrammarSpec};
use ember_toolcall::{GrammarOptions, ResponseFormat, Think, response_format_grammar_with};
use serde_json::Value;
use std::sync::Arc;

/// What shape a request asks its answer to have.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Wanted {
    /// Free text.
    #[default]
    Free,
    /// JSON (any object, or valid against a schema).
    Format(ResponseFormat),
    /// llama-server's `grammar`: llguidance's Lark dialect (which also reads GBNF-style rules).
    Grammar(String),
}

impl Wanted {
    /// OpenAI / llama-server fields; more than one of them at once is refused (which would win is
    /// not obvious, and llama-server refuses it too).
    pub fn from_openai(
        response_format: Option<&Value>,
        json_schema: Option<&Value>,
        grammar: Option<&Value>,
    ) -> Result<Self, ApiError> {
        let bad = |e: ember_toolcall::ToolError| ApiError::bad_request(e.to_string());
        let rf = ResponseFormat::from_openai(response_format).map_err(bad)?;
        let js = ResponseFormat::from_json_schema(json_schema).map_err(bad)?;
        let gr = match grammar {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) if g.trim().is_empty() => None,
            Some(Value::String(g)) => Some(g.clone()),
            Some(_) => return Err(ApiError::bad_request("`grammar` must be a string")),
        };
        let given = [
            rf != ResponseFormat::Text,
            js != ResponseFormat::Text,
            gr.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ApiError::bad_request(
                "give at most one of `response_format`, `json_schema` and `grammar`",
            ));
        }
        Ok(match (rf, js, gr) {
            (_, _, Some(g)) => Wanted::Grammar(g),
            (ResponseFormat::Text, ResponseFormat::Text, None) => Wanted::Free,
            (ResponseFormat::Text, js, None) => Wanted::Format(js),
            (rf, _, None) => Wanted::Format(rf),
        })
    }

    /// Ollama's `format`.
    pub fn from_ollama(format: Option<&Value>) -> Result<Self, ApiError> {
        match ResponseFormat::from_ollama(format)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
        {
            ResponseFormat::Text => Ok(Wanted::Free),
            f => Ok(Wanted::Format(f)),
        }
    }
}

/// The compiled constraint for `wanted` (None for free text). `think`: how the answer may reason
/// before its constrained part ([`super::prompt::Prompt::think`]).
pub(crate) async fn compile(
    loaded: &Loaded,
    wanted: Wanted,
    think: Think,
) -> Result<Option<Constraint>, ApiError> {
    let spec = match wanted {
        Wanted::Free => return Ok(None),
        Wanted::Grammar(lark) => GrammarSpec {
            lark,
            ..GrammarSpec::default()
        },
        Wanted::Format(f) => {
            let opts = GrammarOptions {
                think,
                ..GrammarOptions::default()
            };
            match response_format_grammar_with(&f, &opts)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
            {
                Some(g) => GrammarSpec {
                    lark: g.lark,
                    triggers: g.triggers,
                    triggers_at_start: g.triggers_at_start,
                },
                None => return Ok(None),
            }
        }
    };
    compile_spec(loaded, spec).await.map(Some)
}

/// Compiles a grammar for the model; a grammar llguidance refuses is a 400 with its reason.
pub(crate) async fn compile_spec(
    loaded: &Loaded,
    spec: GrammarSpec,
) -> Result<Constraint, ApiError> {
    compile_with(factory(loaded).await?, spec).await
}

/// [`compile_spec`] with the model's factory in hand.
pub(crate) async fn compile_with(
    factory: ConstraintFactory,
    spec: GrammarSpec,
) -> Result<Constraint, ApiError> {
    // Compiling a large schema is CPU work: off the async threads.
    prompt::blocking(move || {
        factory
            .compile(&spec)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await
}

/// The model's grammar factory, built on the first constrained request (a token trie over the whole
/// vocabulary: tens of milliseconds on a board, so not paid by models that never need it).
pub(crate) async fn factory(loaded: &Loaded) -> Result<ConstraintFactory, ApiError> {
    if let Some(f) = loaded.constraints.get() {
        return f.clone().map_err(ApiError::internal);
    }
    let tok = Arc::clone(&loaded.tokenizer);
    let built = prompt::blocking(move || {
        let n = tok.n_vocab();
        Ok(ConstraintFactory::new(&tok, n).map_err(|e| e.to_string()))
    })
    .await?;
    // Two first requests may race: either result is the same; the first stored wins.
    let _ = loaded.constraints.set(built);
    loaded
        .constraints
        .get()
        .cloned()
        .unwrap_or_else(|| Err("grammar factory missing".into()))
        .map_err(ApiError::internal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_front() {
        let w =
            |rf: Value, js: Value, g: Value| Wanted::from_openai(Some(&rf), Some(&js), Some(&g));
        assert_eq!(
            w(Value::Null, Value::Null, Value::Null).unwrap(),
            Wanted::Free
        );
        assert_eq!(
            w(json!({"type": "text"}), Value::Null, json!("")).unwrap(),
            Wanted::Free
        );
        assert_eq!(
            w(json!({"type": "json_object"}), Value::Null, Value::Null).unwrap(),
            Wanted::Format(ResponseFormat::JsonObject)
        );
        assert!(matches!(
            w(Value::Null, json!({"type": "object"}), Value::Null).unwrap(),
            Wanted::Format(ResponseFormat::JsonSchema { .. })
        ));
        assert_eq!(
            w(Value::Null, Value::Null, json!("start: \"a\"")).unwrap(),
            Wanted::Grammar("start: \"a\"".into())
        );
        for (rf, js, g) in [
            (json!({"type": "yaml"}), Value::Null, Value::Null),
            (
                json!({"type": "json_object"}),
                json!({"type": "object"}),
                Value::Null,
            ),
            (
                Value::Null,
                json!({"type": "object"}),
                json!("start: \"a\""),
            ),
            (Value::Null, Value::Null, json!(3)),
            (Value::Null, json!([1]), Value::Null),
        ] {
            assert_eq!(w(rf, js, g).unwrap_err().status, 400);
        }
        assert_eq!(Wanted::from_ollama(None).unwrap(), Wanted::Free);
        assert_eq!(
            Wanted::from_ollama(Some(&json!("json"))).unwrap(),
            Wanted::Format(ResponseFormat::JsonObject)
        );
        assert_eq!(
            Wanted::from_ollama(Some(&json!("xml"))).unwrap_err().status,
            400
        );
    }
}
