//! Parser tests: the cases of llama.cpp's tests/test-chat.cpp for each family (content around
//! calls, several calls, blank variants, key aliases, python_tag, R1/V3.1 forms, malformed and
//! truncated calls), each checked whole, one character at a time and in random splits, with the
//! streamed events checked against the final message. Streaming behaviour: `tests_stream.rs`.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;
use crate::parse_tools;

pub(super) fn tools() -> Vec<Tool> {
    parse_tools(&json!([
        {"type": "function", "function": {"name": "special_function", "parameters": {
            "type": "object", "properties": {"arg1": {"type": "integer"}}, "required": ["arg1"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "python", "parameters": {
            "type": "object", "properties": {"code": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "brave_search", "parameters": {
            "type": "object", "properties": {"query": {"type": "string"}}}}},
    ]))
    .unwrap()
}

pub(super) const HERMES: Family = Family::Hermes;
pub(super) const LLAMA: Family = Family::Llama3 { python_tag: true };
pub(super) const R1: Family = Family::DeepSeekR1;
pub(super) const V3: Family = Family::DeepSeekV3;
pub(super) const GENERIC: Family = Family::Generic;

/// A small deterministic generator for split points.
pub(super) fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// Splits `text` at char boundaries: all at once, per char, and in random pieces.
pub(super) fn splits(text: &str) -> Vec<Vec<String>> {
    let mut out = vec![
        vec![text.to_owned()],
        text.chars().map(String::from).collect(),
    ];
    for s in 1..6u64 {
        let mut seed = s;
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut n = (lcg(&mut seed) % 7) as usize;
            while n < rest.len() && !rest.is_char_boundary(n) {
                n += 1;
            }
            let n = n.min(rest.len());
            pieces.push(rest[..n].to_owned());
            rest = &rest[n..];
        }
        out.push(pieces);
    }
    out
}

/// Streams `pieces`, checks the events against the result, returns the result without ids.
pub(super) fn stream(
    family: &Family,
    choice: &ToolChoice,
    pieces: &[String],
) -> Result<(String, Vec<(String, Value)>), ToolError> {
    let tools = tools();
    let mut p = StreamParser::new(family, &tools, choice);
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(p.push(piece));
    }
    let parsed = p.finish()?;
    events.extend(parsed.tail.iter().cloned());
    let mut content = String::new();
    let mut starts: Vec<(usize, String, String)> = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for e in events {
        match e {
            Event::Content(c) => content.push_str(&c),
            Event::CallStart { index, id, name } => {
                assert_eq!(index, starts.len(), "calls start in order");
                starts.push((index, id, name));
                args.push(String::new());
            }
            Event::CallArgs { index, fragment } => {
                assert_eq!(index + 1, starts.len(), "fragments belong to the open call");
                args[index].push_str(&fragment);
            }
        }
    }
    assert_eq!(
        content, parsed.content,
        "content events add up to the content"
    );
    assert_eq!(starts.len(), parsed.calls.len());
    for ((i, id, name), call) in starts.iter().zip(&parsed.calls) {
        assert_eq!((id, name), (&call.id, &call.name));
        let streamed: Value = serde_json::from_str(&args[*i]).unwrap();
        assert_eq!(
            streamed, call.arguments,
            "fragments add up to the arguments"
        );
        assert!(call.arguments.is_object());
    }
    Ok((
        parsed.content,
        parsed
            .calls
            .into_iter()
            .map(|c| (c.name, c.arguments))
            .collect(),
    ))
}

/// Parses `text` whole and in many splits; all must agree; returns the common result.
pub(super) fn parse_all(
    family: &Family,
    choice: &ToolChoice,
    text: &str,
) -> Result<(String, Vec<(String, Value)>), ToolError> {
    let mut results = splits(text)
        .into_iter()
        .map(|pieces| stream(family, choice, &pieces));
    let first = results.next().unwrap();
    for (i, r) in results.enumerate() {
        assert_eq!(r, first, "split #{i} of {text:?} disagrees");
    }
    first
}

fn ok(family: &Family, text: &str, content: &str, calls: &[(&str, Value)]) {
    let got =
        parse_all(family, &ToolChoice::Auto, text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let want: Vec<(String, Value)> = calls
        .iter()
        .map(|(n, a)| ((*n).to_owned(), a.clone()))
        .collect();
    assert_eq!(got, (content.to_owned(), want), "{text:?}");
}

fn malformed(family: &Family, text: &str) {
    match parse_all(family, &ToolChoice::Auto, text) {
        Err(ToolError::MalformedCall { .. }) => {}
        other => panic!("{text:?}: expected a malformed call, got {other:?}"),
    }
}

fn truncated(family: &Family, text: &str) {
    match parse_all(family, &ToolChoice::Auto, text) {
        Err(ToolError::TruncatedCall { .. }) => {}
        other => panic!("{text:?}: expected a truncated call, got {other:?}"),
    }
}

#[test]
fn hermes() {
    let f = &HERMES;
    let a1 = json!({"arg1": 1});
    ok(
        f,
        "Hello, world!\nWhat's up?",
        "Hello, world!\nWhat's up?",
        &[],
    );
    ok(
        f,
        "<tool_call>\n{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}\n</tool_call>",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"name\":\"special_function\",\"arguments\":{\"arg1\":1}}</tool_call>",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>\n  {\n    \"name\" : \"special_function\" ,\n    \"arguments\" : { \"arg1\" : 1 }\n  }\n</tool_call>\n",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "Hello, world!\nWhat's up?<tool_call>\n{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}\n</tool_call>",
        "Hello, world!\nWhat's up?",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "",
        &[
            ("get_time", json!({"city": "Paris"})),
            ("get_weather", json!({"city": "Paris"})),
        ],
    );
    // Stringified arguments, `parameters`, extra keys, key order.
    ok(
        f,
        "<tool_call>{\"name\": \"special_function\", \"arguments\": \"{\\\"arg1\\\": 1}\"}</tool_call>",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"arguments\": {\"arg1\": 1}, \"id\": \"x\", \"name\": \"special_function\"}</tool_call>",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}</tool_call>",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"name\": \"get_time\"}</tool_call>",
        "",
        &[("get_time", json!({}))],
    );
    // The <function=...> form, a missing closing tag, content after the calls.
    ok(
        f,
        "<function=special_function>{\"arg1\": 1}</function>",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}</tool_call>\n\nDone.",
        "Done.",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "<tool_call>{\"name\": \"get_time\", \"arguments\": {\"city\": \"Zürich 🌧\"}}</tool_call>",
        "",
        &[("get_time", json!({"city": "Zürich 🌧"}))],
    );
    // Not calls: prose about the tag, partial openers, unknown forms.
    ok(f, "Use <tool_call> tags.", "Use <tool_call> tags.", &[]);
    ok(f, "Hello <tool_c", "Hello <tool_c", &[]);
    ok(f, "a <function=x y> b", "a <function=x y> b", &[]);
    ok(f, "<tool_call>", "<tool_call>", &[]);
    malformed(
        f,
        "<tool_call>{\"name\": \"special_function\", \"arguments\": {\"arg1\": }}</tool_call>",
    );
    malformed(f, "<tool_call>{\"arguments\": {}}</tool_call>");
    malformed(
        f,
        "<tool_call>{\"name\": \"special_function\", \"arguments\": [1]}</tool_call>",
    );
    malformed(
        f,
        "<tool_call>{\"name\": \"bad name\", \"arguments\": {}}</tool_call>",
    );
    malformed(f, "<tool_call>{\"name\": 3}</tool_call>");
    truncated(
        f,
        "<tool_call>{\"name\": \"special_function\", \"arguments\": {\"arg1\"",
    );
    truncated(f, "<tool_call>\n{\"na");
}

#[test]
fn llama3() {
    let f = &LLAMA;
    let a1 = json!({"arg1": 1});
    ok(
        f,
        "Hello, world!\nWhat's up?",
        "Hello, world!\nWhat's up?",
        &[],
    );
    ok(
        f,
        "{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "\n  {\"type\": \"function\", \"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "{\"name\": \"get_time\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "",
        &[
            ("get_time", json!({"city": "Paris"})),
            ("get_weather", json!({"city": "Paris"})),
        ],
    );
    ok(
        f,
        "{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}\nDone",
        "Done",
        &[("special_function", a1.clone())],
    );
    // Calls only count at the start; other objects are content.
    ok(
        f,
        "Hello {\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        "Hello {\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        &[],
    );
    ok(f, "{\"foo\": 1}", "{\"foo\": 1}", &[]);
    ok(f, "  {1}", "  {1}", &[]);
    ok(f, "{", "{", &[]);
    // <|python_tag|>: JSON or a built-in call.
    ok(
        f,
        "<|python_tag|>{\"name\": \"python\", \"parameters\": {\"code\": \"print('hey')\"}}",
        "",
        &[("python", json!({"code": "print('hey')"}))],
    );
    ok(
        f,
        "<|python_tag|>brave_search.call(query=\"weather, today\")",
        "",
        &[("brave_search", json!({"query": "weather, today"}))],
    );
    ok(
        f,
        "Let me look.<|python_tag|>brave_search.call(query=\"x\", n=3)",
        "Let me look.",
        &[("brave_search", json!({"query": "x", "n": 3}))],
    );
    malformed(f, "<|python_tag|>brave_search(query=\"x\")");
    malformed(
        f,
        "{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1]}",
    );
    truncated(
        f,
        "{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1",
    );
    truncated(f, "<|python_tag|>brave_search.call(query=\"x\"");
}

#[test]
fn deepseek() {
    let a1 = json!({"arg1": 1});
    let r1_call = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```json\n{\"arg1\": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let v3_call = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Tokyo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    for f in [&R1, &V3] {
        ok(
            f,
            "Hello, world!\nWhat's up?",
            "Hello, world!\nWhat's up?",
            &[],
        );
        ok(f, r1_call, "", &[("special_function", a1.clone())]);
        ok(f, v3_call, "", &[("get_time", json!({"city": "Tokyo"}))]);
        ok(
            f,
            &format!("I'm\nthinking\n\n{r1_call}"),
            "I'm\nthinking\n\n",
            &[("special_function", a1.clone())],
        );
        ok(
            f,
            "CONTENT<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "CONTENT",
            &[
                ("get_time", json!({"city": "Paris"})),
                ("get_weather", json!({"city": "Paris"})),
            ],
        );
        ok(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[
                ("get_time", json!({"city": "Paris"})),
                ("get_weather", json!({"city": "Paris"})),
            ],
        );
        // Variants R1 distills produce.
        ok(
            f,
            "<｜tool▁calls｜>function<｜tool▁sep｜>special_function\n```json\n{\"arg1\": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("special_function", a1.clone())],
        );
        ok(
            f,
            "<｜tool_calls_begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```\n{\"arg1\": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("special_function", a1.clone())],
        );
        ok(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("get_time", json!({}))],
        );
        ok(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{\n}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("get_time", json!({}))],
        );
        ok(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "",
            &[("get_time", json!({}))],
        );
        ok(
            f,
            "<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Oslo\"}<｜tool▁call▁end｜>",
            "",
            &[("get_time", json!({"city": "Oslo"}))],
        );
        ok(
            f,
            &format!("{v3_call}\n\nDone"),
            "Done",
            &[("get_time", json!({"city": "Tokyo"}))],
        );
        ok(f, "a <｜tool▁call", "a <｜tool▁call", &[]);
        // A call missing its end markers at the end of the output is kept.
        ok(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Oslo\"}",
            "",
            &[("get_time", json!({"city": "Oslo"}))],
        );
        malformed(f, "<｜tool▁calls▁begin｜>garbage");
        malformed(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get time<｜tool▁sep｜>{}<｜tool▁call▁end｜>",
        );
        malformed(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": }<｜tool▁call▁end｜>",
        );
        truncated(
            f,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"To",
        );
        truncated(f, "<｜tool▁calls▁begin｜>");
    }
}

#[test]
fn generic() {
    let f = &GENERIC;
    let a1 = json!({"arg1": 1});
    ok(
        f,
        "{\"tool_call\": {\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}}",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "\n {\"tool_call\":{\"name\":\"special_function\",\"arguments\":{\"arg1\":1}}} \n",
        "",
        &[("special_function", a1.clone())],
    );
    ok(
        f,
        "{\"response\": \"Hello, world!\\nWhat's up?\"}",
        "Hello, world!\nWhat's up?",
        &[],
    );
    ok(
        f,
        "{\"response\": \"caf\\u00e9 \\\"q\\\" \\ud83d\\ude00\"}",
        "café \"q\" 😀",
        &[],
    );
    ok(f, "{\"response\": {\"a\": [1, 2]}}", "{\"a\":[1,2]}", &[]);
    ok(
        f,
        "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}",
        "",
        &[
            ("get_time", json!({"city": "Paris"})),
            ("get_weather", json!({"city": "Paris"})),
        ],
    );
    // Not the wrapper: all content.
    ok(f, "Hello, world!", "Hello, world!", &[]);
    ok(f, "{\"foo\": 1}", "{\"foo\": 1}", &[]);
    ok(f, "  {}", "  {}", &[]);
    ok(f, "{\"respo", "{\"respo", &[]);
    // A response cut by the token limit is the answer so far; a cut call is an error.
    ok(f, "{\"response\": \"Hel", "Hel", &[]);
    ok(f, "{\"response\": \"Hi\"} and more", "Hiand more", &[]);
    truncated(
        f,
        "{\"tool_call\": {\"name\": \"special_function\", \"arguments\": {\"arg1\"",
    );
    malformed(
        f,
        "{\"tool_call\": {\"name\": \"special_function\", \"arguments\": 3}}",
    );
    malformed(f, "{\"tool_call\": [1]}");
}
