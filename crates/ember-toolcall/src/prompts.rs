//! System-prompt texts that describe the tools to models whose template does not: the generic
//! JSON-wrapper format (the design of llama.cpp's `common_chat_params_init_generic`, which asks
//! for `tool_call` or `response`; the wording here is ember's), and DeepSeek-V3.1's tool section,
//! laid out the way V3.1's model card shows it (its official template leaves the tool list to the
//! system prompt). The grammar ([`crate::tool_grammar`]) enforces what these texts ask for.

use serde_json::{Value, json};

use crate::parse::deepseek_markers as ds;
use crate::{Tool, ToolChoice};

/// One tool as the generic prompt lists it.
fn tool_line(t: &Tool) -> String {
    let mut o = serde_json::Map::new();
    o.insert("name".into(), Value::String(t.name.clone()));
    if let Some(d) = &t.description {
        o.insert("description".into(), Value::String(d.clone()));
    }
    o.insert("parameters".into(), t.parameters.clone());
    Value::Object(o).to_string()
}

/// The generic format's tool section.
pub(crate) fn generic(tools: &[Tool], choice: &ToolChoice) -> String {
    let mut s = String::from(
        "# Tools\n\nYou can call the following tools (functions). Each line describes one tool as \
         JSON, with its parameters as a JSON schema:\n",
    );
    for t in tools {
        s.push_str(&tool_line(t));
        s.push('\n');
    }
    let call_form =
        json!({"tool_call": {"name": "<tool name>", "arguments": {"<parameter>": "<value>"}}});
    match choice {
        ToolChoice::Named(name) => {
            s.push_str(&format!(
                "\nYou must call the tool {name:?} now. Answer with exactly one JSON object and \
                 nothing else, in this form:\n{}\n",
                json!({"tool_call": {"name": name, "arguments": {"<parameter>": "<value>"}}})
            ));
        }
        ToolChoice::Required => {
            s.push_str(&format!(
                "\nYou must call a tool now. Answer with exactly one JSON object and nothing else, \
                 in this form:\n{call_form}\n"
            ));
        }
        ToolChoice::Auto | ToolChoice::None => {
            s.push_str(&format!(
                "\nAnswer with exactly one JSON object and nothing else, in one of two forms:\n\
                 - to call a tool: {call_form}\n\
                 - to reply to the user: {}\n\
                 Call a tool only when it is needed to fulfil the request.\n",
                json!({"response": "<your reply>"})
            ));
        }
    }
    s.push_str(&format!(
        "Results of tool calls come back as {}.",
        json!({"tool_response": {"name": "<tool name>", "content": "<result>"}})
    ));
    s
}

/// DeepSeek-V3.1's tool section (model card layout).
pub(crate) fn deepseek_v3(tools: &[Tool], choice: &ToolChoice) -> String {
    let mut s = String::from("## Tools\nYou have access to the following tools:\n");
    for t in tools {
        s.push_str(&format!("\n### {}\n", t.name));
        if let Some(d) = &t.description {
            s.push_str(&format!("Description: {d}\n"));
        }
        s.push_str(&format!("\nParameters: {}\n", t.parameters));
    }
    s.push_str(&format!(
        "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n\
         {}{}tool_call_name{}tool_call_arguments{}{{{{additional_tool_calls}}}}{}\n\n\
         Where:\n\
         - `tool_call_name` must be an exact match to one of the available tools\n\
         - `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n\
         - For multiple tool calls, chain them directly without separators or spaces",
        ds::CALLS_BEGIN,
        ds::CALL_BEGIN,
        ds::SEP,
        ds::CALL_END,
        ds::CALLS_END
    ));
    match choice {
        ToolChoice::Named(name) => s.push_str(&format!("\n\nCall the tool `{name}` now.")),
        ToolChoice::Required => s.push_str("\n\nCall one or more tools now."),
        ToolChoice::Auto | ToolChoice::None => {}
    }
    s
}
