//! ember-toolcall: everything about tool calls that is *format*, kept apart from the engine and
//! the HTTP/MQTT front so it can be tested and fuzzed on its own.
//!
//! A hub sends a chat with `tools` (OpenAI or Ollama shape). The daemon then:
//!
//! 1. [`detect_family`] on the chat template's source (as llama.cpp's
//!    `common_chat_templates_apply_jinja` does): which call syntax the model was trained on;
//! 2. [`parse_tools`] and [`parse_tool_choice`] on the request;
//! 3. [`prepare_messages`]: the messages and `tools` value to render the template with (history
//!    normalised; for templates without tool support, tools described in the system prompt);
//! 4. [`tool_grammar`]: the llguidance Lark grammar the sampler applies so that a call, once
//!    started (or from the first token, for `required`), is well formed and matches the tool's
//!    schema; [`response_format_grammar`] does the same for structured output;
//! 5. [`StreamParser`]: turns the generated text back into content and [`ToolCall`]s, streaming;
//!    [`ReasoningSplitter`] first separates a reasoning model's `<think>` block.
//!
//! Nothing here panics or loops on outside input (the parsers are fuzzed); bad input is a
//! [`ToolError`].
//!
//! The families and their syntax follow llama.cpp's `common/chat.cpp` (handlers),
//! `common/chat-parser.cpp` (parsers) and `tests/test-chat.cpp` (cases); the grammars use
//! llguidance's Lark dialect (`docs/syntax.md` in guidance-ai/llguidance).
#![forbid(unsafe_code)]

mod error;
mod grammar;
mod ids;
mod json;
mod parse;
mod prepare;
mod prompts;
mod reasoning;
mod response_format;
mod tools;

pub use error::ToolError;
pub use grammar::{Grammar, GrammarOptions, Think, tool_grammar, tool_grammar_with};
pub use ids::{new_call_id, stable_call_id};
pub use parse::{Event, Parsed, StreamParser, parse};
pub use prepare::{Prepared, prepare_messages};
pub use reasoning::{ReasoningSplitter, Split, prompt_opens_think};
pub use response_format::{ResponseFormat, response_format_grammar, response_format_grammar_with};
pub use tools::{
    MAX_NAME_LEN, MAX_TOOLS, Tool, ToolCall, ToolChoice, parse_tool_choice, parse_tools,
    valid_tool_name, validate_call,
};

/// A tool-aware chat template for DeepSeek-R1 distills, whose stock template (in their GGUF files)
/// has no tool section: select it with `emberd serve --template-file
/// crates/ember-toolcall/templates/deepseek-r1-tools.jinja` (this is that file's text). It keeps
/// the stock prompt format and adds the tool list, the call format (R1's
/// `<｜tool▁calls▁begin｜>` form) and tool results; prompts end with `<｜Assistant｜><think>\n`
/// like the stock template's.
pub const DEEPSEEK_R1_TOOL_TEMPLATE: &str = include_str!("../templates/deepseek-r1-tools.jinja");

/// The call syntax a model was trained on, from its chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Hermes 2/3 Pro, Qwen 2.5 (and Qwen 3): `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`.
    Hermes,
    /// Llama 3.1 / 3.2 / 3.3: a bare `{"name": ..., "parameters": ...}` object; `python_tag`: the
    /// template knows `<|python_tag|>` (3.1's built-in tools).
    Llama3 {
        /// The template mentions `<|python_tag|>`.
        python_tag: bool,
    },
    /// DeepSeek-R1 (and its distills): `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>`.
    DeepSeekR1,
    /// DeepSeek-V3.1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜><｜tool▁calls▁end｜>`.
    DeepSeekV3,
    /// Any other template (e.g. SmolLM2's ChatML without tool support): tools are described in the
    /// system prompt and the model answers with one JSON object.
    Generic,
}

/// Which [`Family`] a chat template belongs to, from markers in its source, checked in
/// llama.cpp's order (the more specific templates first):
///
/// * DeepSeek-V3.1: its `message['prefix'] ... and thinking` test, or `<｜tool▁sep｜>` with no
///   ```` ```json ```` fence anywhere (R1's calls are fenced);
/// * DeepSeek-R1: `<｜tool▁calls▁begin｜>` (the R1 distills' stock template has it in its history
///   rendering, and so does [`DEEPSEEK_R1_TOOL_TEMPLATE`]);
/// * Hermes: `<tool_call>`;
/// * Llama 3: `<|start_header_id|>` together with `ipython` (the tool-result role);
/// * anything else: Generic.
pub fn detect_family(template_source: &str) -> Family {
    let src = template_source;
    let has = |s: &str| src.contains(s);
    let deepseek_calls = has("<｜tool▁calls▁begin｜>") || has("<｜tool▁sep｜>");
    if has("message['prefix'] is defined and message['prefix'] and thinking")
        || (has("<｜tool▁sep｜>") && !has("```json"))
    {
        return Family::DeepSeekV3;
    }
    if deepseek_calls {
        return Family::DeepSeekR1;
    }
    if has("<tool_call>") {
        return Family::Hermes;
    }
    if has("<|start_header_id|>") && has("ipython") {
        return Family::Llama3 {
            python_tag: has("<|python_tag|>"),
        };
    }
    Family::Generic
}

/// Whether a template renders the request's `tools` at all (refers to the `tools` variable). The
/// stock DeepSeek-R1 distill template does not: with it the model never sees the tool list, so
/// the daemon should render tool requests with [`DEEPSEEK_R1_TOOL_TEMPLATE`] instead (or warn).
pub fn template_renders_tools(template_source: &str) -> bool {
    let b = template_source.as_bytes();
    template_source.match_indices("tools").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + 5).copied();
        let ident = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        !ident(before) && !ident(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN25: &str = include_str!(
        "../../../tests/data/reference/vocab/templates/Qwen-Qwen2.5-7B-Instruct.jinja"
    );
    const LLAMA31: &str = include_str!(
        "../../../tests/data/reference/vocab/templates/meta-llama-Llama-3.1-8B-Instruct.jinja"
    );
    const LLAMA32: &str = include_str!(
        "../../../tests/data/reference/vocab/templates/meta-llama-Llama-3.2-3B-Instruct.jinja"
    );
    const R1_QWEN: &str = include_str!(
        "../../../tests/data/reference/vocab/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
    );
    const R1_LLAMA: &str = include_str!(
        "../../../tests/data/reference/vocab/templates/deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"
    );
    const R1_LLAMA_CPP: &str =
        include_str!("../../../tests/data/reference/vocab/templates/llama-cpp-deepseek-r1.jinja");
    const V31: &str = include_str!(
        "../../../tests/data/reference/vocab/templates/deepseek-ai-DeepSeek-V3.1.jinja"
    );
    const SMOLLM2: &str = include_str!("../tests/data/smollm2-135m-instruct.jinja");

    #[test]
    fn detects_families_of_real_templates() {
        assert_eq!(detect_family(QWEN25), Family::Hermes);
        assert_eq!(detect_family(LLAMA31), Family::Llama3 { python_tag: true });
        assert_eq!(detect_family(LLAMA32), Family::Llama3 { python_tag: false });
        assert_eq!(detect_family(R1_QWEN), Family::DeepSeekR1);
        assert_eq!(detect_family(R1_LLAMA), Family::DeepSeekR1);
        assert_eq!(detect_family(R1_LLAMA_CPP), Family::DeepSeekR1);
        assert_eq!(detect_family(DEEPSEEK_R1_TOOL_TEMPLATE), Family::DeepSeekR1);
        assert_eq!(detect_family(V31), Family::DeepSeekV3);
        assert_eq!(detect_family(SMOLLM2), Family::Generic);
        assert_eq!(detect_family(""), Family::Generic);
        // Llama 3.0 had the headers but no tool role.
        assert_eq!(
            detect_family("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"),
            Family::Generic
        );
    }

    #[test]
    fn tells_templates_that_render_tools() {
        assert!(template_renders_tools(QWEN25));
        assert!(template_renders_tools(LLAMA32));
        assert!(template_renders_tools(R1_LLAMA_CPP));
        assert!(template_renders_tools(DEEPSEEK_R1_TOOL_TEMPLATE));
        assert!(!template_renders_tools(R1_QWEN));
        assert!(!template_renders_tools(V31));
        assert!(!template_renders_tools(SMOLLM2));
        assert!(!template_renders_tools("{{ custom_tools_x }}"));
    }
}
