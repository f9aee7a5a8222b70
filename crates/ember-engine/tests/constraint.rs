//! Constrained decoding against real models. The tiny random-weight models babble: whatever they
//! would write, a constrained run must still produce text the grammar accepts and finish inside
//! `max_tokens` for a bounded schema — that is what proves the mask is real. Also: a grammar
//! llguidance refuses is an error with its reason; a run cut by `max_tokens` inside the value says
//! `Length`; a lazy grammar leaves text free until its trigger; batched slots each keep their own
//! grammar state.
#![allow(clippy::unwrap_used)]

mod common;

use common::{data, load};
use ember_engine::constraint::{ConstraintError, ConstraintFactory, GrammarSpec};
use ember_engine::generate::{FinishReason, GenerateParams, Generation, generate};
use ember_engine::sampler::SamplingParams;
use ember_engine::service::{EngineConfig, Event, Request, spawn};
use ember_model::Model;
use ember_tokenizer::Tokenizer;
use ember_toolcall::{ResponseFormat, response_format_grammar};
use serde_json::{Value, json};
use std::sync::Arc;

/// Tiny models of two vocabularies (Qwen2 BPE, Llama 3 BPE), and SmolLM2 when fetched.
fn model_paths() -> Vec<String> {
    let mut v = vec![
        data("models/tiny-qwen2-tied-q4_k_m.gguf"),
        data("models/tiny-llama-q2_k.gguf"),
    ];
    if let Ok(p) = std::env::var("EMBER_SMOLLM2") {
        v.push(p);
    }
    v
}

/// A bounded schema: every value has a length or range limit, so a valid answer is short.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "entity": {"type": "string", "enum": ["light.kitchen", "light.hall", "switch.fan"]},
            "state": {"type": "boolean"},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 255},
            "note": {"type": "string", "maxLength": 12}
        },
        "required": ["entity", "state", "brightness", "note"],
        "additionalProperties": false
    })
}

/// The schema's rules, checked by hand on a parsed answer.
fn validates(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    for k in &keys {
        if !["entity", "state", "brightness", "note"].contains(k) {
            return Err(format!("extra key {k}"));
        }
    }
    let e = o["entity"].as_str().ok_or("entity")?;
    if !["light.kitchen", "light.hall", "switch.fan"].contains(&e) {
        return Err(format!("entity {e}"));
    }
    o["state"].as_bool().ok_or("state")?;
    let b = o["brightness"].as_i64().ok_or("brightness")?;
    if !(0..=255).contains(&b) {
        return Err(format!("brightness {b}"));
    }
    let n = o["note"].as_str().ok_or("note")?;
    if n.chars().count() > 12 {
        return Err(format!("note {n:?}"));
    }
    Ok(())
}

fn schema_spec() -> GrammarSpec {
    let g = response_format_grammar(&ResponseFormat::JsonSchema {
        name: None,
        schema: schema(),
        strict: true,
    })
    .unwrap()
    .unwrap();
    GrammarSpec {
        lark: g.lark,
        triggers: g.triggers,
        triggers_at_start: g.triggers_at_start,
    }
}

fn params(max_tokens: usize, temperature: f32, seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        logits_top: 0,
        constraint: None,
    }
}

fn run(m: &Model, tok: &Tokenizer, prompt: &str, p: &GenerateParams) -> Generation {
    let ids = tok.encode(prompt, tok.add_bos(), false);
    let mut cache = m.new_cache(ids.len() + p.max_tokens + 1);
    generate(m, tok, &mut cache, &ids, p, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
}

#[test]
fn schema_constrained_output_is_valid_json_on_babbling_models() {
    for path in model_paths() {
        let (m, tok) = load(&path);
        let factory = ConstraintFactory::new(&tok, m.config().n_vocab).unwrap();
        let c = factory.compile(&schema_spec()).unwrap();
        // Unconstrained, the tiny models do not write this JSON (the mask is what makes it valid).
        let free = run(&m, &tok, "Turn on the kitchen light.", &params(60, 0.0, 1));
        assert!(
            serde_json::from_str::<Value>(&free.text).map_or(true, |v| validates(&v).is_err()),
            "{path}: the free run already validates: {:?}",
            free.text
        );
        for (temp, seed) in [(0.0, 0), (1.0, 7), (1.5, 42)] {
            let mut p = params(120, temp, seed);
            p.constraint = Some(c.clone());
            let g = run(&m, &tok, "Turn on the kitchen light.", &p);
            let v: Value = serde_json::from_str(g.text.trim())
                .unwrap_or_else(|e| panic!("{path} t={temp}: not JSON ({e}): {:?}", g.text));
            validates(&v).unwrap_or_else(|e| panic!("{path} t={temp}: {e}: {:?}", g.text));
            assert_eq!(g.finish_reason, FinishReason::Stop, "{path}: {:?}", g.text);
            assert!(g.tokens.len() < 120, "{path}");
            eprintln!("{path} t={temp}: {} tokens: {}", g.tokens.len(), g.text);
        }
    }
}

#[test]
fn a_cut_inside_the_value_says_length() {
    let (m, tok) = load(&model_paths()[0]);
    let factory = ConstraintFactory::new(&tok, m.config().n_vocab).unwrap();
    let mut p = params(3, 0.0, 0);
    p.constraint = Some(factory.compile(&schema_spec()).unwrap());
    let g = run(&m, &tok, "Turn on the light.", &p);
    assert_eq!(g.tokens.len(), 3);
    assert_eq!(g.finish_reason, FinishReason::Length, "{:?}", g.text);
}

#[test]
fn a_grammar_llguidance_refuses_is_an_error_with_its_reason() {
    let (m, tok) = load(&model_paths()[0]);
    let factory = ConstraintFactory::new(&tok, m.config().n_vocab).unwrap();
    for lark in [
        "start: undefined_rule",
        "start: /[/",
        "not a grammar at all ::=",
    ] {
        let e = factory
            .compile(&GrammarSpec {
                lark: lark.into(),
                ..GrammarSpec::default()
            })
            .unwrap_err();
        let ConstraintError::Invalid(reason) = &e else {
            panic!("{e:?}")
        };
        assert!(!reason.is_empty(), "{lark}");
    }
}

#[test]
fn a_regex_grammar_and_a_lazy_trigger() {
    let (m, tok) = load(&model_paths()[0]);
    let factory = ConstraintFactory::new(&tok, m.config().n_vocab).unwrap();
    let mut p = params(40, 1.0, 3);
    p.constraint = Some(
        factory
            .compile(&GrammarSpec {
                lark: r#"start: /(yes|no), [0-9]{1,3}!/"#.into(),
                ..GrammarSpec::default()
            })
            .unwrap(),
    );
    let g = run(&m, &tok, "Answer:", &p);
    let re_ok = {
        let t = g.text.as_str();
        let (word, rest) = t.split_once(", ").unwrap_or(("", ""));
        (word == "yes" || word == "no")
            && rest.ends_with('!')
            && (1..=3).contains(&(rest.len() - 1))
            && rest[..rest.len() - 1].bytes().all(|b| b.is_ascii_digit())
    };
    assert!(re_ok, "{:?}", g.text);
    assert_eq!(g.finish_reason, FinishReason::Stop);

    // Lazy: free text until the trigger `##`; a free run of this model writes no `##`, so the
    // constrained run equals the unconstrained one token for token.
    let free = run(&m, &tok, "Answer:", &params(24, 0.0, 0));
    assert!(!free.text.contains("##"), "{:?}", free.text);
    let mut p = params(24, 0.0, 0);
    p.constraint = Some(
        factory
            .compile(&GrammarSpec {
                lark: "start: /([^#]|#[^#])*/ \"##\" /[0-9]{2}/".into(),
                triggers: vec!["##".into()],
                triggers_at_start: false,
            })
            .unwrap(),
    );
    let lazy = run(&m, &tok, "Answer:", &p);
    assert_eq!(lazy.tokens, free.tokens);
}

#[test]
fn batched_slots_keep_their_own_grammar_state() {
    let (m, tok) = load(&model_paths()[0]);
    let factory = ConstraintFactory::new(&tok, m.config().n_vocab).unwrap();
    let c = factory.compile(&schema_spec()).unwrap();
    let (engine, thread) = spawn(
        m,
        Arc::clone(&tok),
        EngineConfig {
            slots: 3,
            n_ctx: 256,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut streams = Vec::new();
    for i in 0..3u64 {
        let mut p = params(120, 1.0, 100 + i);
        // The middle one is free: constrained and free sequences share the batch.
        if i != 1 {
            p.constraint = Some(c.clone());
        }
        let prompt = tok.encode("Switch the fan.", tok.add_bos(), false);
        streams.push(
            engine
                .submit(Request {
                    prompt,
                    params: p,
                    deadline: None,
                    start_by: None,
                })
                .unwrap(),
        );
    }
    for (i, mut s) in streams.into_iter().enumerate() {
        let mut text = String::new();
        while let Some(ev) = s.blocking_recv() {
            match ev {
                Event::Token(t) => text.push_str(&t.delta),
                Event::Done(_) => break,
                Event::Error(e) => panic!("{e}"),
            }
        }
        if i != 1 {
            let v: Value =
                serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
            validates(&v).unwrap();
        }
    }
    engine.close();
    assert!(thread.join());
}
