//! Every grammar this crate emits, checked in llguidance itself (the released crate, 1.9): it
//! compiles, accepts the canonical outputs of its family (which the crate's own parser then reads
//! back as the expected calls), and rejects malformed ones. Texts are run token by token through
//! an `llguidance::Matcher` over a small byte-level vocabulary that also has each family's markup
//! as single tokens, as real vocabularies do; a second vocabulary marks some of them as special
//! (control) tokens.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ember_toolcall::{
    Family, Grammar, GrammarOptions, ResponseFormat, Think, Tool, ToolChoice, parse, parse_tools,
    response_format_grammar, response_format_grammar_with, tool_grammar, tool_grammar_with,
    validate_call,
};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie, TokenId};
use llguidance::{Matcher, ParserFactory};
use serde_json::json;

/// Markup that real vocabularies have as one token.
const MARKUP: &[&str] = &[
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "<|python_tag|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    "```json",
    "{\"",
    "\":",
];
const EOS: &str = "<|eot|>";

/// A vocabulary: the 256 bytes, the markup (special where `special` lists it), and EOS.
struct Vocab {
    env: TokEnv,
    special: Vec<(&'static str, TokenId)>,
}

impl Vocab {
    fn new(special: &[&'static str]) -> Self {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ids = Vec::new();
        for m in MARKUP.iter().copied().chain([EOS]) {
            let id = words.len() as TokenId;
            if special.contains(&m) || m == EOS {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(m.as_bytes());
                words.push(w);
                ids.push((m, id));
            } else {
                words.push(m.as_bytes().to_vec());
            }
        }
        let info = TokRxInfo::new(words.len() as u32, words.len() as u32 - 1);
        let trie = TokTrie::from(&info, &words);
        Vocab {
            env: Arc::new(ApproximateTokEnv::new(trie)),
            special: ids,
        }
    }

    /// Tokens of `text`: special markup as its token, the rest greedily.
    fn tokenize(&self, text: &str) -> Vec<TokenId> {
        let mut out = Vec::new();
        let mut rest = text;
        'outer: while !rest.is_empty() {
            for (i, _) in rest.char_indices() {
                if let Some((s, id)) = self.special.iter().find(|(s, _)| rest[i..].starts_with(s)) {
                    out.extend(self.env.tok_trie().greedy_tokenize(&rest.as_bytes()[..i]));
                    out.push(*id);
                    rest = &rest[i + s.len()..];
                    continue 'outer;
                }
            }
            out.extend(self.env.tok_trie().greedy_tokenize(rest.as_bytes()));
            break;
        }
        out
    }

    fn matcher(&self, g: &Grammar) -> Matcher {
        let mut factory = ParserFactory::new_simple(&self.env).unwrap();
        factory.quiet();
        let parser = factory.create_parser(TopLevelGrammar::from_lark(g.lark.clone()));
        let m = Matcher::new(parser);
        assert!(
            !m.is_error(),
            "grammar does not compile: {:?}\n{}",
            m.get_error(),
            g.lark
        );
        m
    }

    /// Whether every token of `text` is allowed in turn (and, with `complete`, EOS after them).
    fn run(&self, g: &Grammar, text: &str, complete: bool) -> bool {
        let mut m = self.matcher(g);
        for t in self.tokenize(text) {
            let mask = m.compute_mask_or_eos().unwrap();
            if !mask.is_allowed(t) || m.consume_token(t).is_err() {
                return false;
            }
        }
        !complete || m.is_stopped() || m.is_accepting().unwrap()
    }
}

fn tools() -> Vec<Tool> {
    parse_tools(&json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather {now} \"here\"",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {"tz": {"$ref": "#/$defs/tz"}}, "$defs": {"tz": {"enum": ["UTC", "CET"]}}}}},
        {"type": "function", "function": {"name": "HassTurnOn", "parameters": {
            "type": "object", "properties": {"name": {"type": "string"}, "domain": {"type": "array", "items": {"type": "string"}}},
            "not": {"required": ["x"]}}}},
    ]))
    .unwrap()
}

/// Checks `accept` texts complete and parse back, `reject` texts do not get through.
fn check(
    family: Family,
    choice: ToolChoice,
    opts: &GrammarOptions,
    vocab: &Vocab,
    accept: &[&str],
    reject: &[&str],
) {
    let tools = tools();
    let g = tool_grammar_with(&family, &tools, &choice, opts).unwrap();
    for text in accept {
        assert!(
            vocab.run(&g, text, true),
            "{family:?} {choice:?} should accept {text:?}\n{}",
            g.lark
        );
        // The crate's parser reads what the grammar lets through (after the reasoning block).
        let answer = match text.find("</think>") {
            Some(i) if opts.think != Think::None => &text[i + "</think>".len()..],
            _ => text,
        };
        let parsed =
            parse(&family, &tools, &choice, answer).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        for call in &parsed.calls {
            validate_call(call, &tools).unwrap();
        }
        if choice != ToolChoice::Auto {
            assert!(!parsed.calls.is_empty(), "{text:?}");
        }
    }
    for text in reject {
        assert!(
            !vocab.run(&g, text, true),
            "{family:?} {choice:?} should reject {text:?}\n{}",
            g.lark
        );
    }
}

const HERMES_CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
const HERMES_CALL2: &str =
    "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>";

#[test]
fn hermes_grammars() {
    let v = Vocab::new(&[]);
    let o = GrammarOptions::default();
    let two = format!("{HERMES_CALL}\n{HERMES_CALL2}");
    let after_text = format!("Let me check.\n{HERMES_CALL}");
    let ha = "<tool_call>{\"name\": \"HassTurnOn\", \"arguments\": {\"name\": \"kitchen light\", \"domain\": [\"light\"]}}</tool_call>\n";
    check(
        Family::Hermes,
        ToolChoice::Auto,
        &o,
        &v,
        &[
            "",
            "Hello, world!\nWhat's up? {\"a\": 1} <tool",
            HERMES_CALL,
            &two,
            &after_text,
            ha,
        ],
        &[
            "<tool_call>\n{\"name\": \"nope\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Oslo\"}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"PST\"}}\n</tool_call>",
            "<tool_call> tags are",
            &format!("{HERMES_CALL} bye"),
            &format!(
                "<tool_call>{}{{\"name\": \"get_time\", \"arguments\": {{}}}}</tool_call>",
                " ".repeat(40)
            ),
            &format!(
                "<tool_call>{{\"name\": \"get_time\", \"arguments\": {{{}}}}}</tool_call>",
                "\n".repeat(40)
            ),
        ],
    );
    check(
        Family::Hermes,
        ToolChoice::Required,
        &o,
        &v,
        &[HERMES_CALL, &two],
        &["Hello", &after_text, ""],
    );
    check(
        Family::Hermes,
        ToolChoice::Named("get_time".into()),
        &o,
        &v,
        &[HERMES_CALL2],
        &[HERMES_CALL, &two],
    );
}

#[test]
fn llama3_grammars() {
    let v = Vocab::new(&["<|python_tag|>"]);
    let call = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}";
    for python_tag in [false, true] {
        let f = Family::Llama3 { python_tag };
        let o = GrammarOptions::default();
        check(
            f,
            ToolChoice::Auto,
            &o,
            &v,
            &["", "Hello {world}", call, &format!("\n{call}")],
            &[
                "{\"foo\": 1}",
                "{\"name\": \"get_weather\", \"parameters\": {}}",
                &format!("{call} bye"),
            ],
        );
        check(
            f,
            ToolChoice::Required,
            &o,
            &v,
            &[call],
            &["Hello", &format!("{call}\n{call}")],
        );
    }
    // With <|python_tag|> declared special, calls may come after it.
    let f = Family::Llama3 { python_tag: true };
    let o = GrammarOptions {
        special_tokens: vec!["<|python_tag|>".into()],
        ..Default::default()
    };
    let tagged = format!("<|python_tag|>{call}");
    check(
        f,
        ToolChoice::Auto,
        &o,
        &v,
        &[call, &tagged, "Hi"],
        &["<|python_tag|>Hi"],
    );
    let g = tool_grammar_with(&f, &tools(), &ToolChoice::Auto, &o).unwrap();
    assert_eq!(g.triggers, ["{", "<|python_tag|>"]);
    assert!(g.triggers_at_start);
}

#[test]
fn deepseek_grammars() {
    let v = Vocab::new(&[]);
    let r1 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Oslo\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let r1_two = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Oslo\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    // R1's defaults: the prompt opened <think>.
    let o = GrammarOptions::for_family(&Family::DeepSeekR1);
    assert_eq!(o.think, Think::Open);
    let thought = |s: &str| format!("I should check the weather.\n</think>\n\n{s}");
    check(
        Family::DeepSeekR1,
        ToolChoice::Auto,
        &o,
        &v,
        &[
            &thought(r1),
            &thought(r1_two),
            &thought("It is sunny."),
            &thought(""),
            "</think>Hi",
        ],
        &[
            "It is sunny.",
            &thought("<｜tool▁calls▁begin｜>get_weather<｜tool▁sep｜>{}"),
            &thought(&format!("{r1} bye")),
        ],
    );
    check(
        Family::DeepSeekR1,
        ToolChoice::Required,
        &o,
        &v,
        &[&thought(r1), &thought(r1_two)],
        &[&thought("It is sunny."), r1],
    );
    let v3 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let v3_two = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"tz\": \"UTC\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let o = GrammarOptions::for_family(&Family::DeepSeekV3);
    check(
        Family::DeepSeekV3,
        ToolChoice::Auto,
        &o,
        &v,
        &[v3, v3_two, "Sunny.", &format!("Checking.{v3}")],
        &[r1],
    );
    check(
        Family::DeepSeekV3,
        ToolChoice::Named("get_weather".into()),
        &o,
        &v,
        &[v3],
        &[v3_two, "Sunny."],
    );
    // V3.1 in thinking mode.
    let o = GrammarOptions {
        think: Think::Open,
        ..Default::default()
    };
    check(
        Family::DeepSeekV3,
        ToolChoice::Required,
        &o,
        &v,
        &[&format!("hmm</think>{v3}")],
        &[v3],
    );
}

#[test]
fn generic_grammars() {
    let v = Vocab::new(&[]);
    let o = GrammarOptions::default();
    let call = "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 2}}}";
    let resp = "{\"response\": \"Hello, \\\"world\\\"!\\n\"}";
    check(
        Family::Generic,
        ToolChoice::Auto,
        &o,
        &v,
        &[call, resp, "\n{\"response\": \"\"}\n"],
        &[
            "Hello",
            "{\"response\": 3}",
            "{\"foo\": 1}",
            &format!("{call} bye"),
            "",
            "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"days\": 2}}}",
        ],
    );
    check(
        Family::Generic,
        ToolChoice::Required,
        &o,
        &v,
        &[call],
        &[resp],
    );
    let g = tool_grammar(&Family::Generic, &tools(), &ToolChoice::Auto).unwrap();
    assert!(g.triggers.is_empty(), "the generic grammar is strict");
}

#[test]
fn special_markup_and_optional_thinking() {
    // <tool_call>, </tool_call> and </think> as control tokens (the grammar must name them).
    let specials = ["<tool_call>", "</tool_call>", "</think>", "<think>"];
    let v = Vocab::new(&specials);
    for think in [Think::None, Think::Open, Think::Optional] {
        let o = GrammarOptions {
            special_tokens: specials.iter().map(|s| s.to_string()).collect(),
            think,
            max_calls: None,
        };
        let pre = match think {
            Think::None => "",
            Think::Open => "thinking\n</think>\n",
            Think::Optional => "<think>thinking</think>\n",
        };
        check(
            Family::Hermes,
            ToolChoice::Auto,
            &o,
            &v,
            &[
                &format!("{pre}{HERMES_CALL}"),
                &format!("{pre}Text first.{HERMES_CALL}"),
                &format!("{pre}Just text."),
            ],
            &[&format!("{pre}<tool_call>oops")],
        );
        check(
            Family::Hermes,
            ToolChoice::Required,
            &o,
            &v,
            &[&format!("{pre}{HERMES_CALL}")],
            &[&format!("{pre}Just text.")],
        );
    }
    // DeepSeek markup as control tokens.
    let ds = [
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁calls▁end｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁sep｜>",
    ];
    let o = GrammarOptions {
        special_tokens: ds.iter().map(|s| s.to_string()).collect(),
        think: Think::None,
        max_calls: None,
    };
    let v3 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    check(
        Family::DeepSeekV3,
        ToolChoice::Auto,
        &o,
        &Vocab::new(&ds),
        &[v3, &format!("Checking. {v3}"), "Sunny."],
        &["<｜tool▁calls▁begin｜>Sunny."],
    );
    // Optional thinking may also be skipped.
    let o = GrammarOptions {
        think: Think::Optional,
        ..Default::default()
    };
    check(
        Family::Hermes,
        ToolChoice::Required,
        &o,
        &Vocab::new(&[]),
        &[HERMES_CALL, &format!("<think>x</think>{HERMES_CALL}")],
        &["x</think>"],
    );
}

/// The contract of lazy grammars: text with no trigger is always accepted so far, so an engine
/// may generate it unconstrained and replay it into the matcher at the first trigger.
#[test]
fn lazy_grammars_accept_any_trigger_free_prefix() {
    let v = Vocab::new(&[]);
    let alphabet = [
        "a",
        " ",
        "\n",
        "<",
        ">",
        "{",
        "}",
        "\"",
        "tool",
        "_call",
        "｜",
        "▁",
        "é",
        "</think>",
        "<tool",
        "<｜tool▁calls",
    ];
    for family in [
        Family::Hermes,
        Family::Llama3 { python_tag: false },
        Family::DeepSeekV3,
    ] {
        let g = tool_grammar(&family, &tools(), &ToolChoice::Auto).unwrap();
        assert!(!g.triggers.is_empty());
        let mut seed = 7u64;
        for _ in 0..300 {
            let mut text = String::new();
            for _ in 0..(seed % 12) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            seed = seed.wrapping_add(1);
            let fired = if g.triggers_at_start {
                g.triggers
                    .iter()
                    .any(|t| text.trim_start().starts_with(t.as_str()))
            } else {
                g.triggers.iter().any(|t| text.contains(t.as_str()))
            };
            if !fired {
                assert!(
                    v.run(&g, &text, false),
                    "{family:?}: trigger-free {text:?} refused"
                );
            }
        }
    }
}

#[test]
fn response_formats() {
    let v = Vocab::new(&[]);
    let g = response_format_grammar(&ResponseFormat::JsonObject)
        .unwrap()
        .unwrap();
    assert!(v.run(&g, "{\"a\": [1, {\"b\": null}]}", true));
    assert!(v.run(&g, "{}", true));
    // One layout, nothing around it: a babbling model cannot pad with blanks.
    assert!(!v.run(&g, "\n{}\n", true));
    assert!(!v.run(&g, "{\"a\":1}", true));
    assert!(!v.run(&g, "[1]", true));
    assert!(!v.run(&g, "Sure: {}", true));
    let fmt = ResponseFormat::from_openai(Some(&json!({"type": "json_schema", "json_schema": {"name": "p", "strict": true,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"], "additionalProperties": false}}})))
    .unwrap();
    let g = response_format_grammar(&fmt).unwrap().unwrap();
    assert!(v.run(&g, "{\"name\": \"Ada\", \"age\": 36}", true));
    assert!(!v.run(&g, "{\"name\": \"Ada\"}", true));
    assert!(!v.run(&g, "{\"name\": \"Ada\", \"age\": \"36\"}", true));
    let fmt = ResponseFormat::from_ollama(Some(&json!("json"))).unwrap();
    let o = GrammarOptions {
        think: Think::Open,
        ..Default::default()
    };
    let g = response_format_grammar_with(&fmt, &o).unwrap().unwrap();
    assert!(v.run(&g, "Let me see.</think>\n{\"ok\": true}", true));
    assert!(!v.run(&g, "{\"ok\": true}", true));
}

#[test]
fn no_grammar_without_tools_or_with_choice_none() {
    assert_eq!(
        tool_grammar(&Family::Hermes, &tools(), &ToolChoice::None),
        None
    );
    assert_eq!(tool_grammar(&Family::Hermes, &[], &ToolChoice::Auto), None);
}
