//! Prepared messages rendered through the real chat templates (the repository's reference copies
//! of the templates in the test GGUF files, SmolLM2's, and the R1 tool template this crate
//! ships) with ember's own renderer: a conversation with tools, calls and results must render
//! without error in each family, and show the calls and results in the family's syntax.
#![allow(clippy::unwrap_used)]

use ember_tokenizer::template::{ChatTemplate, RenderRequest};
use ember_toolcall::{
    DEEPSEEK_R1_TOOL_TEMPLATE, Family, ToolChoice, detect_family, parse_tools, prepare_messages,
    template_renders_tools,
};
use serde_json::{Value, json};

const REF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/reference/vocab/templates/"
);

fn reference(name: &str) -> String {
    std::fs::read_to_string(format!("{REF}{name}")).unwrap()
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// System, user, a call (OpenAI shape), its result, an answer, and a new question.
fn history() -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "Weather in Oslo?"}),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}"}),
        json!({"role": "assistant", "content": "3 degrees."}),
        json!({"role": "user", "content": "And in Bergen and Paris?"}),
        // Ollama shape: two calls, no ids, results matched by position.
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Bergen"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
        json!({"role": "tool", "content": "rain"}),
        json!({"role": "tool", "content": "sun"}),
    ]
}

fn render(src: &str, family: Family, choice: ToolChoice, messages: Vec<Value>) -> String {
    assert_eq!(detect_family(src), family);
    let tools = parse_tools(&tools()).unwrap();
    let p = prepare_messages(&family, &messages, &tools, &choice).unwrap();
    let mut req = RenderRequest::new(p.messages)
        .with_generation_prompt(true)
        .with_special_tokens("<BOS>", "<EOS>");
    req.tools = p.template_tools.map(|t| t.as_array().unwrap().clone());
    ChatTemplate::new(src)
        .unwrap()
        .render(&req)
        .unwrap_or_else(|e| panic!("{family:?}: {e}"))
}

fn has(out: &str, parts: &[&str]) {
    for p in parts {
        assert!(out.contains(p), "missing {p:?} in:\n{out}");
    }
}

#[test]
fn qwen25() {
    let out = render(
        &reference("Qwen-Qwen2.5-7B-Instruct.jinja"),
        Family::Hermes,
        ToolChoice::Auto,
        history(),
    );
    has(
        &out,
        &[
            "\"name\": \"get_weather\", \"description\": \"Current weather\"",
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>",
            "<|im_start|>user\n<tool_response>\n{\"temp\": 3}\n</tool_response><|im_end|>",
            "<tool_response>\nrain\n</tool_response>\n<tool_response>\nsun\n</tool_response>",
        ],
    );
    assert!(out.ends_with("<|im_start|>assistant\n"));
}

#[test]
fn llama31_and_32() {
    for (name, python_tag) in [
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", true),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", false),
    ] {
        let out = render(
            &reference(name),
            Family::Llama3 { python_tag },
            ToolChoice::Auto,
            history(),
        );
        has(
            &out,
            &[
                "Environment: ipython",
                "\"name\": \"get_weather\"",
                "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}<|eot_id|>",
                // Two calls became two messages (the template refuses more than one per message).
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Bergen\"}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
                "<|start_header_id|>ipython<|end_header_id|>\n\n",
            ],
        );
    }
}

#[test]
fn deepseek_r1_stock_and_shipped_templates() {
    for name in [
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "llama-cpp-deepseek-r1.jinja",
    ] {
        let out = render(
            &reference(name),
            Family::DeepSeekR1,
            ToolChoice::Auto,
            history(),
        );
        has(
            &out,
            &["<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"],
        );
    }
    let out = render(
        DEEPSEEK_R1_TOOL_TEMPLATE,
        Family::DeepSeekR1,
        ToolChoice::Auto,
        history(),
    );
    let want = "<BOS>Be brief.\n\n## Tools\nYou can call the following functions. Each is described as JSON, with its parameters as a JSON schema:\n\
        {\"name\": \"get_weather\", \"description\": \"Current weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}\n\
        \nTo call functions, answer with exactly this format, one <｜tool▁call▁begin｜>...<｜tool▁call▁end｜> per call:\n\
        <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>FUNCTION_NAME\n```json\n{\"parameter\": \"value\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n\
        Results of the calls come back to you as tool outputs.\
        <｜User｜>Weather in Oslo?\
        <｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Oslo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>\
        <｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{\"temp\": 3}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>\
        <｜Assistant｜>3 degrees.<｜end▁of▁sentence｜>\
        <｜User｜>And in Bergen and Paris?\
        <｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Bergen\"}\n```<｜tool▁call▁end｜>\n\
        <｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>\
        <｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>rain<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>sun<｜tool▁output▁end｜><｜tool▁outputs▁end｜>\
        <｜Assistant｜><think>\n";
    assert_eq!(out, want);
    assert!(template_renders_tools(DEEPSEEK_R1_TOOL_TEMPLATE));

    // Without tools the shipped template renders what the stock one does.
    let chat = vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "Hi"}),
        json!({"role": "assistant", "content": "<think>hm</think>Hello!"}),
        json!({"role": "user", "content": "Bye"}),
    ];
    let stock = render(
        &reference("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
        Family::DeepSeekR1,
        ToolChoice::None,
        chat.clone(),
    );
    let ours = render(
        DEEPSEEK_R1_TOOL_TEMPLATE,
        Family::DeepSeekR1,
        ToolChoice::None,
        chat,
    );
    assert_eq!(ours, stock);
}

#[test]
fn deepseek_v31() {
    let out = render(
        &reference("deepseek-ai-DeepSeek-V3.1.jinja"),
        Family::DeepSeekV3,
        ToolChoice::Auto,
        history(),
    );
    has(
        &out,
        &[
            "<BOS>Be brief.\n\n## Tools\nYou have access to the following tools:\n\n### get_weather\n",
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
            "<｜tool▁output▁begin｜>{\"temp\": 3}<｜tool▁output▁end｜>",
            "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Bergen\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜>",
        ],
    );
}

#[test]
fn smollm2_generic() {
    let src = include_str!("data/smollm2-135m-instruct.jinja");
    for choice in [ToolChoice::Auto, ToolChoice::Required, ToolChoice::None] {
        let out = render(src, Family::Generic, choice.clone(), history());
        has(
            &out,
            &[
                "<|im_start|>assistant\n{\"tool_call\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}}<|im_end|>",
                "<|im_start|>user\n{\"tool_response\":{\"name\":\"get_weather\",\"content\":{\"temp\":3}}}<|im_end|>",
            ],
        );
        assert_eq!(out.contains("# Tools"), choice != ToolChoice::None);
        assert!(out.ends_with("<|im_start|>assistant\n"));
    }
    // No system message: one is created (the template's default one is then not added).
    let out = render(
        src,
        Family::Generic,
        ToolChoice::Auto,
        vec![json!({"role": "user", "content": "Hi"})],
    );
    assert!(out.starts_with("<|im_start|>system\n# Tools\n"), "{out}");
    assert!(!out.contains("SmolLM"));
}
