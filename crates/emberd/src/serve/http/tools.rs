//! Tool calls on the HTTP routes: a request's `tools` / `tool_choice` and its tool-call history go
//! through `ember-toolcall` (the formats: template family, message preparation, the grammar that
//! forces a valid call, the output parser) and the engine's constrained sampler. Every call that
//! reaches a client parses, names a declared tool and has its arguments constrained by the tool's
//! schema; the call markup never reaches `content`.

use super::Loaded;
use super::error::ApiError;
use super::structured;
use ember_engine::constraint::{Constraint, GrammarSpec};
use ember_toolcall::{
    Event, Family, GrammarOptions, Parsed, StreamParser, Think, Tool, ToolCall, ToolChoice,
    detect_family, parse_tool_choice, parse_tools, prepare_messages, tool_grammar_with,
};
use serde_json::{Map, Value, json};

/// The tool side of one chat request.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    family: Family,
    tools: Vec<Tool>,
    choice: ToolChoice,
    /// Most calls per answer (`parallel_tool_calls: false` → 1).
    max_calls: Option<usize>,
}

fn bad(e: ember_toolcall::ToolError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// The model's template family (the built-in ChatML fallback is generic).
fn family(loaded: &Loaded) -> Family {
    loaded
        .template
        .as_ref()
        .map_or(Family::Generic, |t| detect_family(t.source()))
}

impl Tools {
    /// `tools`, `tool_choice` and `parallel_tool_calls` of a request (Ollama sends neither of the
    /// last two: auto, any number).
    pub fn from_request(
        loaded: &Loaded,
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        parallel: Option<bool>,
    ) -> Result<Self, ApiError> {
        let tools = parse_tools(tools.unwrap_or(&Value::Null)).map_err(bad)?;
        let choice = if tools.is_empty() {
            match tool_choice {
                // llama-server: a choice that needs tools without any is the client's mistake.
                Some(Value::String(s)) if s == "required" => {
                    return Err(ApiError::bad_request(
                        "tool_choice \"required\" needs at least one tool in `tools`",
                    ));
                }
                Some(Value::Object(_)) => parse_tool_choice(tool_choice, &tools).map_err(bad)?,
                _ => ToolChoice::None,
            }
        } else {
            parse_tool_choice(tool_choice, &tools).map_err(bad)?
        };
        Ok(Tools {
            family: family(loaded),
            tools,
            choice,
            max_calls: (parallel == Some(false)).then_some(1),
        })
    }

    /// Whether calls may be generated at all.
    pub fn active(&self) -> bool {
        !self.tools.is_empty() && self.choice != ToolChoice::None
    }

    /// The messages (already normalized) as the template must see them, and the template
    /// variables: `tools` for templates that render them.
    pub fn prepare(
        &self,
        messages: &[Value],
        vars: &mut Map<String, Value>,
    ) -> Result<Vec<Value>, ApiError> {
        let history = messages.iter().any(|m| {
            m.get("role").and_then(Value::as_str) == Some("tool") || m.get("tool_calls").is_some()
        });
        if !self.active() && !history {
            return Ok(messages.to_vec());
        }
        let p = prepare_messages(&self.family, messages, &self.tools, &self.choice).map_err(bad)?;
        if let Some(t) = p.template_tools {
            vars.insert("tools".into(), t);
        }
        Ok(p.messages)
    }

    /// The grammar that forces valid calls, compiled for the model (None when calls are off).
    pub async fn constraint(
        &self,
        loaded: &Loaded,
        think: Think,
    ) -> Result<Option<Constraint>, ApiError> {
        if !self.active() {
            return Ok(None);
        }
        let mut opts = GrammarOptions::for_family(&self.family);
        opts.max_calls = self.max_calls;
        opts.think = think;
        // Markup that is a control token in this vocabulary is referenced as that token (the list
        // is the factory's, found once per model).
        let factory = structured::factory(loaded).await?;
        opts.special_tokens = factory.control_tokens().to_vec();
        let Some(g) = tool_grammar_with(&self.family, &self.tools, &self.choice, &opts) else {
            return Ok(None);
        };
        let spec = GrammarSpec {
            lark: g.lark,
            triggers: g.triggers,
            triggers_at_start: g.triggers_at_start,
        };
        structured::compile_with(factory, spec).await.map(Some)
    }

    /// A streaming parser of the answer (everything is content when calls are off).
    pub fn parser(&self) -> StreamParser {
        StreamParser::new(&self.family, &self.tools, &self.choice)
    }
}

/// A whole answer's text → content and calls. An answer cut inside a call (or malformed, which
/// the grammar prevents) keeps its text as content and no calls.
pub(crate) fn parse_whole(tools: &Tools, text: &str) -> Parsed {
    let mut p = tools.parser();
    p.push(text);
    p.finish().unwrap_or_else(|_| Parsed {
        content: text.to_owned(),
        calls: Vec::new(),
        tail: Vec::new(),
    })
}

/// OpenAI's `delta.tool_calls` for one parser event, or the content text.
pub(crate) enum Delta {
    Content(String),
    Call(Value),
}

pub(crate) fn openai_delta(ev: Event) -> Delta {
    match ev {
        Event::Content(t) => Delta::Content(t),
        Event::CallStart { index, id, name } => Delta::Call(json!([{
            "index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}
        }])),
        Event::CallArgs { index, fragment } => Delta::Call(json!([{
            "index": index, "function": {"arguments": fragment}
        }])),
    }
}

/// Ollama's `message.tool_calls` entries.
pub(crate) fn ollama_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}})
        })
        .collect()
}
