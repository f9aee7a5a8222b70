//! Fuzz target: a model's output and a chat request's `tools` / `tool_choice` / `messages` are
//! outside input to ember-toolcall. Parsing any text as any family's output (whole, and streamed
//! in pieces split at points derived from the input) must return Ok or Err without panicking or
//! hanging, and the streamed result must equal the whole one; the reasoning splitter likewise.
//! If the input is JSON, it is also fed to `parse_tools`, `parse_tool_choice`, `prepare_messages`,
//! the grammar builders and the response-format readers (as a request object with `tools`,
//! `tool_choice` and `messages` fields, and as each of those alone).
#![no_main]

use ember_toolcall::{
    Event, Family, ReasoningSplitter, ResponseFormat, StreamParser, Tool, ToolChoice, ToolError,
    parse, parse_tool_choice, parse_tools, prepare_messages, response_format_grammar, tool_grammar,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::sync::OnceLock;

const FAMILIES: [Family; 6] = [
    Family::Hermes,
    Family::Llama3 { python_tag: false },
    Family::Llama3 { python_tag: true },
    Family::DeepSeekR1,
    Family::DeepSeekV3,
    Family::Generic,
];

fn fixed_tools() -> &'static [Tool] {
    static T: OnceLock<Vec<Tool>> = OnceLock::new();
    T.get_or_init(|| {
        parse_tools(&json!([
            {"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "special_function"}},
        ]))
        .expect("fixed tools parse")
    })
}

/// Split points from a hash of the input: 1 to 8 pieces at char boundaries.
fn pieces(text: &str) -> Vec<&str> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut out = Vec::new();
    let mut rest = text;
    for _ in 0..7 {
        if rest.is_empty() {
            break;
        }
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut n = (h >> 33) as usize % (rest.len() + 1);
        while !rest.is_char_boundary(n) {
            n += 1;
        }
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out.push(rest);
    out
}

/// Content and calls without ids (ids differ between parser instances).
type Plain = (String, Vec<(String, Value)>);

/// Errors compare by kind and call index (the reason may be worded after what was seen so far).
fn strip(r: Result<ember_toolcall::Parsed, ToolError>) -> Result<Plain, (bool, usize)> {
    r.map(|p| {
        (
            p.content,
            p.calls.into_iter().map(|c| (c.name, c.arguments)).collect(),
        )
    })
    .map_err(|e| match e {
        ToolError::MalformedCall { index, .. } => (true, index),
        ToolError::TruncatedCall { index } => (false, index),
        other => panic!("unexpected parse error {other}"),
    })
}

fn check_parse(family: &Family, tools: &[Tool], choice: &ToolChoice, text: &str) {
    let whole = strip(parse(family, tools, choice, text));
    let mut p = StreamParser::new(family, tools, choice);
    let mut content = String::new();
    for piece in pieces(text) {
        for e in p.push(piece) {
            if let Event::Content(c) = e {
                content.push_str(&c);
            }
        }
    }
    let streamed = p.finish();
    if let Ok(parsed) = &streamed {
        for e in &parsed.tail {
            if let Event::Content(c) = e {
                content.push_str(c);
            }
        }
        assert_eq!(content, parsed.content, "content events add up");
        assert!(parsed.calls.iter().all(|c| c.arguments.is_object()));
    }
    assert_eq!(strip(streamed), whole, "{family:?} streamed != whole");
}

fn check_reasoning(text: &str) {
    for opened in [false, true] {
        let mut whole = ReasoningSplitter::new(opened);
        let mut a = whole.push(text);
        let f = whole.finish();
        a.reasoning += &f.reasoning;
        a.content += &f.content;
        let mut split = ReasoningSplitter::new(opened);
        let (mut r, mut c) = (String::new(), String::new());
        for piece in pieces(text) {
            let o = split.push(piece);
            r += &o.reasoning;
            c += &o.content;
        }
        let f = split.finish();
        assert_eq!((r + &f.reasoning, c + &f.content), (a.reasoning, a.content));
    }
}

fn check_request(v: &Value) {
    let tools_v = v.get("tools").unwrap_or(v);
    let tools = parse_tools(tools_v).unwrap_or_default();
    let choice = parse_tool_choice(v.get("tool_choice").or(Some(v)), &tools).unwrap_or_default();
    let messages: &[Value] = match v.get("messages").or(Some(v)) {
        Some(Value::Array(a)) => a,
        _ => &[],
    };
    for family in &FAMILIES {
        if let Ok(p) = prepare_messages(family, messages, &tools, &choice) {
            assert!(
                p.messages
                    .iter()
                    .all(|m| m.get("role").is_some_and(Value::is_string))
            );
        }
        let _ = tool_grammar(family, &tools, &choice);
    }
    for rf in [
        ResponseFormat::from_openai(Some(v)),
        ResponseFormat::from_ollama(Some(v)),
        ResponseFormat::from_json_schema(Some(v)),
    ]
    .into_iter()
    .flatten()
    {
        let _ = response_format_grammar(&rf);
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tools = fixed_tools();
    for family in &FAMILIES {
        for choice in [ToolChoice::Auto, ToolChoice::Required] {
            check_parse(family, tools, &choice, &text);
        }
    }
    check_reasoning(&text);
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check_request(&v);
    }
});
