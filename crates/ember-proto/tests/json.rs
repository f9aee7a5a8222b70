//! The JSON encoding: exact reply text, round trips, the OpenAI request variants, versions.
#![cfg(feature = "std")]

mod common;

use common::owned;
use ember_proto::{
    Chunk, DecodeError, EncodeError, Encoding, ErrorCode, ErrorReply, Final, FinishReason, Message,
    Request, Response, ResponseFormat, Timings, ToolChoice, Usage, decode_request, decode_response,
    encode_request, encode_response,
};

fn json(resp: &Response) -> String {
    String::from_utf8(encode_response(Encoding::Json, resp).expect("encodes")).expect("UTF-8")
}

fn parse(body: &str) -> Result<Request, DecodeError> {
    decode_request(Encoding::Json, body.as_bytes())
}

fn parse_ok(body: &str) -> Request {
    parse(body).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn assert_invalid(body: &str) -> String {
    match parse(body) {
        Err(DecodeError::Invalid(d)) => d.to_string(),
        other => panic!("{body}: expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Replies: exact text

#[test]
fn chunk_json_text() {
    assert_eq!(json(&owned::chunk()), r#"{"id":"r1","seq":3,"delta":"Hé"}"#);
    let bare = Response::Chunk(Chunk {
        id: None,
        seq: 0,
        delta: "Hel".into(),
        reasoning: None,
    });
    assert_eq!(json(&bare), r#"{"seq":0,"delta":"Hel"}"#);
    let thinking = Response::Chunk(Chunk {
        id: None,
        seq: 1,
        delta: String::new(),
        reasoning: Some("hmm".into()),
    });
    assert_eq!(json(&thinking), r#"{"seq":1,"delta":"","reasoning":"hmm"}"#);
}

#[test]
fn final_json_text() {
    assert_eq!(
        json(&owned::final_()),
        concat!(
            r#"{"text":"ok","reasoning":"hm","finish_reason":"length","#,
            r#""usage":{"prompt_tokens":10,"completion_tokens":200,"total_tokens":210,"cached_tokens":0},"#,
            r#""timings":{"queued_ms":1.5,"prompt_n":10,"prompt_ms":2.0,"predicted_n":200,"predicted_ms":1000.0,"#,
            r#""prompt_per_second":5000.0,"predicted_per_second":200.0}}"#
        )
    );
    let minimal = Response::Final(Final {
        id: Some("a".into()),
        text: "Hello".into(),
        reasoning: None,
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: Usage::default(),
        timings: Timings::default(),
    });
    assert_eq!(
        json(&minimal),
        concat!(
            r#"{"id":"a","text":"Hello","finish_reason":"stop","#,
            r#""usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0,"cached_tokens":0},"#,
            r#""timings":{"queued_ms":0.0,"prompt_n":0,"prompt_ms":0.0,"predicted_n":0,"predicted_ms":0.0,"#,
            r#""prompt_per_second":0.0,"predicted_per_second":0.0}}"#
        )
    );
}

#[test]
fn tool_final_json_text() {
    // OpenAI's shape: `arguments` a string of JSON.
    assert_eq!(
        json(&owned::tool_final()),
        concat!(
            r#"{"text":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"on","arguments":"{}"}}],"#,
            r#""finish_reason":"tool_calls","#,
            r#""usage":{"prompt_tokens":10,"completion_tokens":200,"total_tokens":210,"cached_tokens":0},"#,
            r#""timings":{"queued_ms":1.5,"prompt_n":10,"prompt_ms":2.0,"predicted_n":200,"predicted_ms":1000.0,"#,
            r#""prompt_per_second":5000.0,"predicted_per_second":200.0}}"#
        )
    );
    let bytes = encode_response(Encoding::Json, &owned::tool_final()).expect("encodes");
    assert_eq!(
        decode_response(Encoding::Json, &bytes).expect("decodes"),
        owned::tool_final()
    );
}

#[test]
fn error_json_text() {
    assert_eq!(
        json(&owned::error()),
        r#"{"id":"r1","error":{"code":"busy","message":"full"}}"#
    );
    let bare = Response::Error(ErrorReply {
        id: None,
        code: ErrorCode::PromptTooLong,
        message: "too long".into(),
    });
    assert_eq!(
        json(&bare),
        r#"{"error":{"code":"prompt_too_long","message":"too long"}}"#
    );
}

#[test]
fn error_codes_are_snake_case() {
    let names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "bad_request",
            "unsupported_version",
            "unsupported_content_type",
            "too_large",
            "busy",
            "prompt_too_long",
            "model_not_found",
            "expired",
            "shutting_down",
            "internal"
        ]
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        // The derived serde names agree with as_str.
        assert_eq!(
            serde_json::to_value(code).expect("serializes"),
            serde_json::Value::String(code.as_str().into())
        );
    }
    assert_eq!(ErrorCode::parse("nope"), None);
}

#[test]
fn responses_round_trip() {
    for (name, resp, _) in owned::responses() {
        let bytes = encode_response(Encoding::Json, &resp).expect("encodes");
        assert_eq!(
            decode_response(Encoding::Json, &bytes).expect("decodes"),
            resp,
            "{name}"
        );
    }
}

#[test]
fn response_decoding_by_keys() {
    let decode = |s: &str| decode_response(Encoding::Json, s.as_bytes());
    assert!(matches!(
        decode(r#"{"error":{"code":"expired","message":"late"},"v":1}"#),
        Ok(Response::Error(ErrorReply {
            code: ErrorCode::Expired,
            ..
        }))
    ));
    // per-second figures and unknown keys are ignored.
    let final_ = decode(
        r#"{"text":"x","finish_reason":"stop","extra":true,
            "usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"cached_tokens":0},
            "timings":{"queued_ms":0,"prompt_n":1,"prompt_ms":1.25,"predicted_n":2,"predicted_ms":3,
                       "prompt_per_second":12345,"predicted_per_second":1}}"#,
    )
    .expect("decodes");
    let Response::Final(f) = final_ else {
        panic!("{final_:?}")
    };
    assert_eq!(f.timings.prompt_ms, 1.25);
    assert_eq!(f.usage.total_tokens, 3);
    assert!(matches!(
        decode(r#"{"seq":2,"delta":"a"}"#),
        Ok(Response::Chunk(Chunk { seq: 2, .. }))
    ));
    for bad in [
        r#"{}"#,
        r#"{"seq":1}"#,
        r#"{"delta":"a"}"#,
        r#"{"seq":-1,"delta":"a"}"#,
        r#"{"error":{"code":"teapot","message":"x"}}"#,
        r#"{"error":"busy"}"#,
        r#"{"text":"x","finish_reason":"eos","usage":{},"timings":{}}"#,
        r#"{"text":"x","finish_reason":"stop","usage":{},"timings":{}}"#,
    ] {
        assert!(
            matches!(decode(bad), Err(DecodeError::Invalid(_))),
            "{bad}: {:?}",
            decode(bad)
        );
    }
    assert!(matches!(decode("[1]"), Err(DecodeError::Malformed(_))));
    assert_eq!(
        decode(r#"{"v":3,"seq":0,"delta":""}"#),
        Err(DecodeError::UnsupportedVersion(3))
    );
}

#[test]
fn json_cannot_carry_nan() {
    let mut resp = owned::final_();
    if let Response::Final(f) = &mut resp {
        f.timings.predicted_ms = f32::INFINITY;
    }
    assert_eq!(
        encode_response(Encoding::Json, &resp),
        Err(EncodeError::NonFiniteFloat("timings.predicted_ms"))
    );
    let mut req = owned::request();
    req.top_p = Some(f32::NAN);
    assert_eq!(
        encode_request(Encoding::Json, &req),
        Err(EncodeError::NonFiniteFloat("top_p"))
    );
}

// ---------------------------------------------------------------------------------------------
// Requests

#[test]
fn request_round_trips() {
    let req = owned::request();
    let bytes = encode_request(Encoding::Json, &req).expect("encodes");
    assert_eq!(
        std::str::from_utf8(&bytes).expect("UTF-8"),
        r#"{"id":"r1","reply_to":"hub/r","messages":[{"role":"user","content":"hi"}],"max_tokens":300,"temperature":0.5,"top_k":-2,"seed":42,"stop":["\n"],"stream":true,"reasoning_format":"none"}"#
    );
    assert_eq!(decode_request(Encoding::Json, &bytes), Ok(req));

    let full = Request {
        model: Some("qwen".into()),
        prompt: Some("Once".into()),
        max_tokens: Some(7),
        temperature: Some(0.7),
        top_k: Some(40),
        top_p: Some(0.95),
        min_p: Some(0.05),
        seed: Some(u64::MAX),
        stop: vec!["a".into(), "b".into()],
        repeat_penalty: Some(1.1),
        presence_penalty: Some(-0.5),
        frequency_penalty: Some(0.25),
        ..Request::default()
    };
    for enc in [Encoding::Json, Encoding::Postcard] {
        let bytes = encode_request(enc, &full).expect("encodes");
        assert_eq!(decode_request(enc, &bytes), Ok(full.clone()), "{enc:?}");
    }
}

#[test]
fn openai_chat_body() {
    let req = parse_ok(
        r#"{
            "model": "gpt-4o", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type":"text","text":"Hello, "},{"type":"text","text":"world"}]},
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "tool", "content": "42", "tool_call_id": "x"}
            ],
            "max_completion_tokens": 64, "temperature": 0.2, "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "logprobs": null,
            "stop": "\n\n", "seed": -1, "user": "someone", "response_format": {"type": "text"}
        }"#,
    );
    assert_eq!(
        req,
        Request {
            model: Some("gpt-4o".into()),
            messages: vec![
                Message::new("system", "Be brief."),
                Message::new("user", "Hello, world"),
                Message::new("assistant", ""),
                Message {
                    tool_call_id: Some("x".into()),
                    ..Message::new("tool", "42")
                },
            ],
            max_tokens: Some(64),
            temperature: Some(0.2),
            stream: true,
            stop: vec!["\n\n".into()],
            seed: None,
            ..Request::default()
        }
    );
}

#[test]
fn request_field_variants() {
    let base = r#""messages":[{"role":"user","content":"x"}]"#;
    let with = |extra: &str| parse_ok(&format!("{{{base},{extra}}}"));
    assert_eq!(with(r#""max_tokens":5"#).max_tokens, Some(5));
    assert_eq!(with(r#""max_completion_tokens":6"#).max_tokens, Some(6));
    assert_eq!(with(r#""n_predict":7"#).max_tokens, Some(7));
    assert_eq!(with(r#""n_predict":-1"#).max_tokens, None);
    assert_eq!(
        with(r#""max_tokens":4294967295"#).max_tokens,
        Some(u32::MAX)
    );
    assert_eq!(with(r#""max_tokens":null"#).max_tokens, None);
    assert_eq!(with(r#""stop":["a","b"]"#).stop, ["a", "b"]);
    assert_eq!(with(r#""stop":"a""#).stop, ["a"]);
    assert_eq!(with(r#""stop":null"#).stop, Vec::<String>::new());
    assert_eq!(with(r#""seed":0"#).seed, Some(0));
    assert_eq!(with(r#""seed":18446744073709551615"#).seed, Some(u64::MAX));
    assert_eq!(with(r#""seed":-1"#).seed, None);
    assert_eq!(with(r#""top_k":-1"#).top_k, Some(-1));
    assert_eq!(with(r#""temperature":1"#).temperature, Some(1.0));
    assert!(!with(r#""stream":false"#).stream);
    assert!(!parse_ok(&format!("{{{base}}}")).stream);
    assert_eq!(with(r#""v":1"#).v, 1);
    assert_eq!(
        with(r#""reasoning_format":"none""#)
            .reasoning_format
            .as_deref(),
        Some("none")
    );
    let prompt = parse_ok(r#"{"prompt":"Once upon","n_predict":16}"#);
    assert_eq!(prompt.prompt.as_deref(), Some("Once upon"));
    assert!(prompt.messages.is_empty());
}

#[test]
fn request_invalid_values() {
    let base = r#""messages":[{"role":"user","content":"x"}]"#;
    for extra in [
        r#""max_tokens":-1"#,
        r#""max_tokens":4294967296"#,
        r#""max_tokens":1.5"#,
        r#""max_tokens":"10""#,
        r#""n_predict":-2"#,
        r#""seed":-2"#,
        r#""seed":1.5"#,
        r#""top_k":2147483648"#,
        r#""temperature":"hot""#,
        r#""temperature":1e39"#,
        r#""stop":[1]"#,
        r#""stop":{}"#,
        r#""stream":"yes""#,
        r#""model":3"#,
        r#""prompt":"also""#,
        r#""reply_to":"a/+/b""#,
        r#""reply_to":"$SYS/x""#,
        r#""id":7"#,
    ] {
        assert_invalid(&format!("{{{base},{extra}}}"));
    }
    for body in [
        r#"{}"#,
        r#"{"messages":[]}"#,
        r#"{"messages":null,"prompt":null}"#,
        r#"{"messages":{}}"#,
        r#"{"messages":["hi"]}"#,
        r#"{"messages":[{"content":"hi"}]}"#,
        r#"{"messages":[{"role":"developer","content":"hi"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
        r#"{"messages":[{"role":"user","content":42}]}"#,
    ] {
        assert_invalid(body);
    }
    let msg = assert_invalid(r#"{"prompt":"x","max_tokens":-5}"#);
    assert!(msg.contains("max_tokens"), "{msg}");
    let msg = assert_invalid(r#"{"messages":[{"role":"user","content":[{"type":"image"}]}]}"#);
    assert!(msg.contains("messages[0].content"), "{msg}");
}

#[test]
fn request_versions_and_malformed() {
    assert_eq!(
        parse(r#"{"v":3,"prompt":"x"}"#),
        Err(DecodeError::UnsupportedVersion(3))
    );
    assert_eq!(parse_ok(r#"{"v":2,"prompt":"x"}"#).v, 2);
    // The version is checked before anything else.
    assert_eq!(
        parse(r#"{"v":0,"messages":"garbage"}"#),
        Err(DecodeError::UnsupportedVersion(0))
    );
    assert_eq!(parse_ok(r#"{"v":null,"prompt":"x"}"#).v, 2);
    assert!(matches!(
        parse(r#"{"v":"1","prompt":"x"}"#),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        parse(r#"{"v":256,"prompt":"x"}"#),
        Err(DecodeError::Invalid(_))
    ));

    let err = parse("{\n  \"prompt\": \"x\",\n}").expect_err("trailing comma");
    let DecodeError::Malformed(detail) = &err else {
        panic!("{err:?}")
    };
    assert!(detail.as_str().contains("line 3 column 1"), "{detail}");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    for body in [
        "",
        "null",
        "[]",
        "\"prompt\"",
        "{\"prompt\":\"x\"} x",
        "\u{FEFF}{}",
    ] {
        assert!(
            matches!(parse(body), Err(DecodeError::Malformed(_))),
            "{body:?}: {:?}",
            parse(body)
        );
    }
}

#[test]
fn json_request_v_emitted_only_when_not_default() {
    let req = Request {
        v: 9,
        prompt: Some("x".into()),
        ..Request::default()
    };
    let bytes = encode_request(Encoding::Json, &req).expect("encodes");
    assert_eq!(bytes, br#"{"v":9,"prompt":"x","stream":false}"#);
    assert_eq!(
        decode_request(Encoding::Json, &bytes),
        Err(DecodeError::UnsupportedVersion(9))
    );
}

#[test]
fn other_dialects_of_structured_output_are_refused_by_name() {
    for field in [
        r#""json_schema": {"type": "object"}"#,
        r#""grammar": "start: \"a\"""#,
        r#""format": "json""#,
    ] {
        let msg = assert_invalid(&format!(r#"{{"prompt": "hi", {field}}}"#));
        let key = field.split('"').nth(1).expect("a quoted key");
        assert!(msg.contains(key), "{field}: {msg}");
        assert!(msg.contains("response_format"), "{field}: {msg}");
    }
    // `null` is absent, as for every field.
    parse_ok(r#"{"prompt": "hi", "format": null, "response_format": null}"#);
}

#[test]
fn tool_fields_in_openai_and_ollama_shapes() {
    let req = parse_ok(
        r#"{"messages":[
            {"role":"user","content":"on?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"on","arguments":"{}"}}]},
            {"role":"tool","content":"ok","tool_call_id":"c1"}],
          "tools":[{"type":"function","function":{"name":"on","description":"x","parameters":{}}}],
          "tool_choice":{"type":"function","function":{"name":"on"}},
          "parallel_tool_calls":false,
          "response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{}}}}"#,
    );
    assert_eq!(req, owned::tool_request());
    // And back: the JSON encoding reads as the same request.
    let bytes = encode_request(Encoding::Json, &req).expect("encodes");
    assert_eq!(decode_request(Encoding::Json, &bytes), Ok(req));

    // Ollama's history: arguments an object, no call id.
    let req = parse_ok(
        r#"{"messages":[{"role":"assistant","content":"","tool_calls":[
            {"function":{"name":"HassTurnOn","arguments":{"name":"lamp"}}}]}],
          "tool_choice":"required","response_format":{"type":"json_object"}}"#,
    );
    let call = &req.messages[0].tool_calls[0];
    assert_eq!(call.id, "");
    assert_eq!(call.name, "HassTurnOn");
    assert_eq!(call.arguments, r#"{"name":"lamp"}"#);
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    for (choice, want) in [("auto", ToolChoice::Auto), ("none", ToolChoice::None)] {
        let r = parse_ok(&format!(r#"{{"prompt":"x","tool_choice":"{choice}"}}"#));
        assert_eq!(r.tool_choice, Some(want));
    }
    // llama-server's json_object with a schema; `text` is free text.
    let r = parse_ok(
        r#"{"prompt":"x","response_format":{"type":"json_object","schema":{"type":"string"}}}"#,
    );
    assert_eq!(
        r.response_format,
        Some(ResponseFormat::JsonSchema(r#"{"type":"string"}"#.into()))
    );
    let r = parse_ok(r#"{"prompt":"x","response_format":{"type":"text"}}"#);
    assert_eq!(r.response_format, None);
}

#[test]
fn bad_tool_fields_are_invalid_with_their_path() {
    let user = r#""messages":[{"role":"user","content":"x"}]"#;
    for (extra, path) in [
        (r#""tools":{}"#, "tools"),
        (r#""tools":[3]"#, "tools[0]"),
        (
            r#""tools":[{"type":"retrieval","function":{"name":"a"}}]"#,
            "tools[0].type",
        ),
        (r#""tools":[{"type":"function"}]"#, "tools[0].function"),
        (
            r#""tools":[{"function":{"description":"d"}}]"#,
            "tools[0].function.name",
        ),
        (
            r#""tools":[{"function":{"name":"a","parameters":"{}"}}]"#,
            "tools[0].function.parameters",
        ),
        (r#""tool_choice":"always""#, "tool_choice"),
        (r#""tool_choice":{"type":"function"}"#, "tool_choice"),
        (r#""parallel_tool_calls":"no""#, "parallel_tool_calls"),
        (r#""response_format":"json""#, "response_format"),
        (
            r#""response_format":{"type":"yaml"}"#,
            "response_format.type",
        ),
        (
            r#""response_format":{"type":"json_schema"}"#,
            "response_format.json_schema",
        ),
        (
            r#""response_format":{"type":"json_schema","json_schema":{"name":"a"}}"#,
            "response_format.json_schema.schema",
        ),
        (
            r#""response_format":{"type":"json_schema","json_schema":{"schema":[1]}}"#,
            "response_format.json_schema.schema",
        ),
    ] {
        let msg = assert_invalid(&format!("{{{user},{extra}}}"));
        assert!(msg.contains(&format!("`{path}`")), "{extra}: {msg}");
    }
    for (messages, path) in [
        (
            r#"[{"role":"assistant","tool_calls":{}}]"#,
            "messages[0].tool_calls",
        ),
        (
            r#"[{"role":"assistant","tool_calls":[{"id":"c"}]}]"#,
            "messages[0].tool_calls[0].function",
        ),
        (
            r#"[{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}]"#,
            "messages[0].tool_calls[0].function.name",
        ),
        (
            r#"[{"role":"assistant","tool_calls":[{"function":{"name":"a","arguments":[]}}]}]"#,
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"tool","content":"x","tool_call_id":5}]"#,
            "messages[0].tool_call_id",
        ),
        (
            r#"[{"role":"user","content":"x","tool_call_id":"c"}]"#,
            "tool_call_id",
        ),
        (
            r#"[{"role":"user","content":"x","tool_calls":[{"function":{"name":"a"}}]}]"#,
            "tool_calls",
        ),
    ] {
        let msg = assert_invalid(&format!(r#"{{"messages":{messages}}}"#));
        assert!(msg.contains(&format!("`{path}`")), "{messages}: {msg}");
    }
    // A version 1 request cannot carry them.
    let msg = assert_invalid(&format!(r#"{{"v":1,{user},"tool_choice":"auto"}}"#));
    assert!(msg.contains("wire version 2"), "{msg}");
}
