//! `prepare_messages` per family: history in OpenAI and Ollama shapes, ids and result matching,
//! the generic rewriting and the injected tool prompts. (Rendering through the real templates is
//! in tests/templates.rs.)
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;
use crate::parse_tools;

fn tools() -> Vec<Tool> {
    parse_tools(&json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]))
    .unwrap()
}

/// An OpenAI conversation: a call with a string `arguments` and an id, and its result.
fn openai_history() -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}]}),
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}"}),
        json!({"role": "assistant", "content": "3 degrees."}),
        json!({"role": "user", "content": "And Bergen and Paris?"}),
    ]
}

/// An Ollama conversation: two calls with object arguments and no ids, results without ids.
fn ollama_history() -> Vec<Value> {
    vec![
        json!({"role": "user", "content": "Weather in Bergen and Paris?"}),
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Bergen"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
        json!({"role": "tool", "content": "rain"}),
        json!({"role": "tool", "content": "sun"}),
    ]
}

#[test]
fn hermes_gets_object_arguments_and_linked_results() {
    let p = prepare_messages(
        &Family::Hermes,
        &openai_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(p.template_tools, Some(json!([tools()[0].to_openai()])));
    assert_eq!(
        p.messages[1],
        json!({"role": "user", "content": "Weather\nin Oslo?"})
    );
    assert_eq!(
        p.messages[2],
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]})
    );
    assert_eq!(
        p.messages[3],
        json!({"role": "tool", "content": "{\"temp\": 3}", "tool_call_id": "call_1", "name": "get_weather"})
    );
    assert_eq!(p.messages.len(), 6);
}

#[test]
fn ollama_history_gets_stable_ids_matched_by_position() {
    let a = prepare_messages(
        &Family::Hermes,
        &ollama_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    let b = prepare_messages(
        &Family::Hermes,
        &ollama_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(a, b, "the same history prepares the same way every turn");
    let calls = a.messages[1]["tool_calls"].as_array().unwrap();
    let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|i| i.starts_with("call_")) && ids[0] != ids[1]);
    assert_eq!(a.messages[2]["tool_call_id"], json!(ids[0]));
    assert_eq!(a.messages[3]["tool_call_id"], json!(ids[1]));
    assert_eq!(a.messages[3]["name"], json!("get_weather"));
}

#[test]
fn llama3_gets_one_call_per_message() {
    let p = prepare_messages(
        &Family::Llama3 { python_tag: false },
        &ollama_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    let roles: Vec<&str> = p
        .messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "assistant", "tool", "tool"]);
    assert_eq!(
        p.messages[1]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Bergen"})
    );
    assert_eq!(
        p.messages[2]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Paris"})
    );
    assert!(p.template_tools.is_some());
}

#[test]
fn deepseek_r1_gets_string_arguments_and_null_content() {
    let p = prepare_messages(
        &Family::DeepSeekR1,
        &openai_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(p.messages[2]["content"], Value::Null);
    assert_eq!(
        p.messages[2]["tool_calls"][0]["function"]["arguments"],
        json!("{\"city\":\"Oslo\"}")
    );
    assert!(p.template_tools.is_some());
}

#[test]
fn deepseek_v3_gets_the_tool_list_in_the_system_message() {
    let p = prepare_messages(
        &Family::DeepSeekV3,
        &openai_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(p.template_tools, None);
    let sys = p.messages[0]["content"].as_str().unwrap();
    assert!(sys.starts_with("Be brief.\n\n## Tools\n"), "{sys}");
    assert!(sys.contains("### get_weather\nDescription: Current weather\n"));
    assert!(sys.contains("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments<｜tool▁call▁end｜>{{additional_tool_calls}}<｜tool▁calls▁end｜>"));
    assert_eq!(
        p.messages[2]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Oslo"})
    );
}

#[test]
fn generic_rewrites_calls_and_results_as_text() {
    let p = prepare_messages(
        &Family::Generic,
        &ollama_history(),
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(p.template_tools, None);
    let roles: Vec<&str> = p
        .messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    let sys = p.messages[0]["content"].as_str().unwrap();
    assert!(
        sys.contains(
            "{\"name\":\"get_weather\",\"description\":\"Current weather\",\"parameters\":"
        ),
        "{sys}"
    );
    assert!(sys.contains("{\"response\":\"<your reply>\"}"));
    assert_eq!(
        p.messages[2]["content"],
        json!(
            "{\"tool_calls\":[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Bergen\"}},{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}]}"
        )
    );
    assert_eq!(
        p.messages[3]["content"],
        json!(
            "{\"tool_response\":{\"name\":\"get_weather\",\"content\":\"rain\"}}\n{\"tool_response\":{\"name\":\"get_weather\",\"content\":\"sun\"}}"
        )
    );
    // Every content is a string: a template that only concatenates never fails.
    assert!(
        p.messages
            .iter()
            .all(|m| m["content"].is_string() && m.get("tool_calls").is_none())
    );

    let p = prepare_messages(
        &Family::Generic,
        &openai_history(),
        &tools(),
        &ToolChoice::Required,
    )
    .unwrap();
    assert!(
        p.messages[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Be brief.\n\n# Tools\n")
    );
    assert!(
        p.messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("You must call a tool")
    );
    assert_eq!(
        p.messages[2]["content"],
        json!("{\"tool_call\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}}")
    );
    assert_eq!(
        p.messages[3]["content"],
        json!("{\"tool_response\":{\"name\":\"get_weather\",\"content\":{\"temp\":3}}}")
    );
    // Plain answers are wrapped too, so the history shows the format the model must use.
    assert_eq!(
        p.messages[4]["content"],
        json!("{\"response\":\"3 degrees.\"}")
    );
}

#[test]
fn choice_none_gives_no_tools() {
    for f in [Family::Hermes, Family::DeepSeekV3, Family::Generic] {
        let p = prepare_messages(&f, &openai_history(), &tools(), &ToolChoice::None).unwrap();
        assert_eq!(p.template_tools, None);
        assert_eq!(p.messages[0]["content"], json!("Be brief."), "{f:?}");
    }
    // Generic still rewrites the history it cannot render, but leaves plain answers alone.
    let p = prepare_messages(
        &Family::Generic,
        &openai_history(),
        &tools(),
        &ToolChoice::None,
    )
    .unwrap();
    assert_eq!(p.messages[4]["content"], json!("3 degrees."));
    assert!(
        p.messages[2]["content"]
            .as_str()
            .unwrap()
            .starts_with("{\"tool_call\"")
    );
}

#[test]
fn refuses_bad_messages() {
    let bad = |m: Value| {
        prepare_messages(&Family::Hermes, &[m], &tools(), &ToolChoice::Auto).unwrap_err()
    };
    for m in [
        json!("hi"),
        json!({"content": "x"}),
        json!({"role": "user", "content": 3}),
        json!({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
        json!({"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]}),
        json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}),
        json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}),
        json!({"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f"}}]}),
        json!({"role": "assistant", "tool_calls": {}}),
        json!({"role": "tool", "content": "x", "tool_call_id": 5}),
    ] {
        assert!(
            matches!(bad(m.clone()), ToolError::BadMessage { index: 0, .. }),
            "{m}"
        );
    }
    // Tool results may carry JSON values; developer is system.
    let p = prepare_messages(
        &Family::Hermes,
        &[
            json!({"role": "developer", "content": "d"}),
            json!({"role": "tool", "content": {"a": 1}}),
        ],
        &tools(),
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(p.messages[0]["role"], json!("system"));
    assert_eq!(p.messages[1]["content"], json!("{\"a\":1}"));
}
