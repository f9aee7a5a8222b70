//! Streaming behaviour: partial openers held back, the end releasing them, all-content modes,
//! the reasoning splitter feeding the parser, and random markup that must parse the same in every
//! split.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::tests::{GENERIC, HERMES, LLAMA, R1, lcg, parse_all, splits, stream, tools};
use super::*;
use crate::ReasoningSplitter;

#[test]
fn deepseek_after_reasoning_split() {
    // R1's prompt opens <think>: the splitter takes the reasoning, the parser the rest.
    let text = "I need the time.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{\"city\": \"Tokyo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    for pieces in splits(text) {
        let mut s = ReasoningSplitter::new(true);
        let tools = tools();
        let mut p = StreamParser::new(&R1, &tools, &ToolChoice::Auto);
        let mut reasoning = String::new();
        for piece in &pieces {
            let o = s.push(piece);
            reasoning += &o.reasoning;
            p.push(&o.content);
        }
        let o = s.finish();
        reasoning += &o.reasoning;
        p.push(&o.content);
        let parsed = p.finish().unwrap();
        assert_eq!(reasoning, "I need the time.");
        assert_eq!(parsed.content, "");
        assert_eq!(parsed.calls.len(), 1);
        assert_eq!(parsed.calls[0].arguments, json!({"city": "Tokyo"}));
    }
}

#[test]
fn no_tools_or_choice_none_is_all_content() {
    let text =
        "<tool_call>{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}</tool_call>";
    assert_eq!(
        parse_all(&HERMES, &ToolChoice::None, text).unwrap(),
        (text.to_owned(), vec![])
    );
    let mut p = StreamParser::new(&HERMES, &[], &ToolChoice::Auto);
    assert_eq!(p.push(text), vec![Event::Content(text.into())]);
    assert_eq!(p.finish().unwrap().content, text);
}

#[test]
fn partial_openers_are_held_back() {
    let tools = tools();
    let mut p = StreamParser::new(&HERMES, &tools, &ToolChoice::Auto);
    assert_eq!(p.push("Hello <tool"), vec![Event::Content("Hello ".into())]);
    assert_eq!(p.push("_call>\n"), vec![]);
    assert_eq!(p.push("{\"name\": \"get_"), vec![]);
    let ev = p.push("time\", \"arguments\": {\"ci");
    assert!(
        matches!(&ev[..], [Event::CallStart { index: 0, name, .. }, Event::CallArgs { index: 0, fragment }]
        if name == "get_time" && fragment == "{\"ci"),
        "{ev:?}"
    );
    let ev = p.push("ty\": \"Oslo\"}}\n</tool_call>");
    assert_eq!(
        ev,
        vec![Event::CallArgs {
            index: 0,
            fragment: "ty\": \"Oslo\"}".into()
        }]
    );
    let parsed = p.finish().unwrap();
    assert_eq!(parsed.calls[0].arguments, json!({"city": "Oslo"}));
    assert!(parsed.tail.is_empty());

    // What the end releases comes back in `tail` (or from `end`).
    let mut p = StreamParser::new(&HERMES, &tools, &ToolChoice::Auto);
    assert_eq!(p.push("x <tool_c"), vec![Event::Content("x ".into())]);
    assert_eq!(p.end(), vec![Event::Content("<tool_c".into())]);
    assert!(p.push("ignored").is_empty());
    let parsed = p.finish().unwrap();
    assert_eq!(parsed.content, "x <tool_c");
    assert!(parsed.tail.is_empty());
}

#[test]
fn whole_output_helper() {
    let tools = tools();
    let p = parse(
        &HERMES,
        &tools,
        &ToolChoice::Required,
        "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>",
    )
    .unwrap();
    assert_eq!(p.calls.len(), 1);
    assert!(p.calls[0].id.starts_with("call_"));
    assert!(p.tail.is_empty());
}

/// Random texts built from each family's markup: every split gives the same message (errors
/// compared by kind and call index) and never panics.
#[test]
fn random_markup_soup_parses_the_same_in_any_split() {
    const BITS: &[&str] = &[
        "<tool_call>",
        "</tool_call>",
        "<function=get_time>",
        "</function>",
        "<|python_tag|>",
        "brave_search.call(query=\"q\")",
        "<think>",
        "</think>",
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁calls▁end｜>",
        "function",
        "get_time",
        "\n```json\n",
        "```",
        "{\"name\": \"get_time\", ",
        "\"arguments\": ",
        "\"parameters\": ",
        "{\"city\": \"Zürich\"}",
        "}",
        "{",
        "\"",
        "\\",
        "\\u00e9",
        ",",
        ";",
        " ",
        "\n",
        "text",
        "<",
        "{\"tool_call\": ",
        "{\"response\": \"hi",
        "{\"tool_calls\": [",
        "]",
    ];
    let kind = |r: Result<(String, Vec<(String, Value)>), ToolError>| match r {
        Ok(v) => Ok(v),
        Err(ToolError::MalformedCall { index, .. }) => Err((true, index)),
        Err(ToolError::TruncatedCall { index }) => Err((false, index)),
        Err(e) => panic!("{e}"),
    };
    let mut seed = 42u64;
    for _ in 0..600 {
        let n = 1 + lcg(&mut seed) % 10;
        let text: String = (0..n)
            .map(|_| BITS[lcg(&mut seed) as usize % BITS.len()])
            .collect();
        for f in [&HERMES, &LLAMA, &R1, &GENERIC] {
            let mut results = splits(&text)
                .into_iter()
                .map(|pieces| kind(stream(f, &ToolChoice::Auto, &pieces)));
            let first = results.next().unwrap();
            for r in results {
                assert_eq!(r, first, "{f:?} {text:?}");
            }
        }
    }
}
