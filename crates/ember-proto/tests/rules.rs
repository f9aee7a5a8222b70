//! Content types, topics, request validation and error reporting.

mod common;

use ember_proto::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_POSTCARD, DecodeError, EncodeError, Encoding, ErrorCode,
    MAX_ID_LEN, fixed, valid_publish_topic,
};

#[test]
fn content_types() {
    let ok = |ct: Option<&str>| Encoding::from_content_type(ct);
    assert_eq!(ok(None), Ok(Encoding::Json));
    assert_eq!(ok(Some("")), Ok(Encoding::Json));
    assert_eq!(ok(Some("   ")), Ok(Encoding::Json));
    for json in [
        "application/json",
        "Application/JSON",
        " application/json ",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "text/json",
        "TEXT/JSON ;x=y",
    ] {
        assert_eq!(ok(Some(json)), Ok(Encoding::Json), "{json:?}");
    }
    for postcard in [
        "application/x-postcard",
        "APPLICATION/X-POSTCARD",
        "  application/x-postcard ; v=1",
    ] {
        assert_eq!(ok(Some(postcard)), Ok(Encoding::Postcard), "{postcard:?}");
    }
    for bad in [
        "text/plain",
        "application/jsonx",
        "application/postcard",
        "application/cbor",
        "json",
        ";charset=utf-8",
        "application / json",
    ] {
        let err = ok(Some(bad)).expect_err(bad);
        assert_eq!(err, DecodeError::UnsupportedContentType);
        assert_eq!(err.code(), ErrorCode::UnsupportedContentType);
    }
    assert_eq!(Encoding::Json.content_type(), CONTENT_TYPE_JSON);
    assert_eq!(Encoding::Postcard.content_type(), CONTENT_TYPE_POSTCARD);
    assert_eq!(CONTENT_TYPE_JSON, "application/json");
    assert_eq!(CONTENT_TYPE_POSTCARD, "application/x-postcard");
    for enc in [Encoding::Json, Encoding::Postcard] {
        assert_eq!(ok(Some(enc.content_type())), Ok(enc));
    }
}

#[test]
fn publish_topics() {
    for good in [
        "a",
        "hub/replies/42",
        "/leading",
        "trailing/",
        "a//b",
        "ünï/cødé",
        "x$y",
    ] {
        assert!(valid_publish_topic(good), "{good:?}");
    }
    let long_ok = "a".repeat(65535);
    assert!(valid_publish_topic(&long_ok));
    let too_long = "a".repeat(65536);
    for bad in [
        "",
        "a/+/b",
        "+",
        "a/#",
        "#",
        "a\0b",
        "$SYS/broker",
        "$share/g/t",
        "$",
        too_long.as_str(),
    ] {
        assert!(!valid_publish_topic(bad), "{:?}", &bad[..bad.len().min(20)]);
    }
}

fn fixed_invalid(req: &fixed::Request<'_, 2>) -> String {
    match req.validate() {
        Err(DecodeError::Invalid(d)) => d.to_string(),
        other => panic!("{req:?}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn fixed_validate() {
    let ok = common::fixed_request();
    assert_eq!(ok.validate(), Ok(()));

    let mut r = ok.clone();
    r.messages.clear();
    assert!(fixed_invalid(&r).contains("needs `prompt`"));
    r.prompt = Some("");
    assert_eq!(r.validate(), Ok(()), "an empty prompt is still a prompt");

    let mut r = ok.clone();
    r.prompt = Some("x");
    assert!(fixed_invalid(&r).contains("not both"));

    for role in ["system", "user", "assistant", "tool"] {
        let mut r = ok.clone();
        r.messages[0].role = role;
        assert_eq!(r.validate(), Ok(()), "{role}");
    }
    for role in ["", "User", "developer", "function"] {
        let mut r = ok.clone();
        r.messages[0].role = role;
        assert!(fixed_invalid(&r).contains("role"), "{role}");
    }

    let mut r = ok.clone();
    r.reply_to = Some("replies/#");
    assert!(fixed_invalid(&r).contains("reply_to"));
    r.reply_to = None;
    assert_eq!(r.validate(), Ok(()));

    let long_id = "i".repeat(MAX_ID_LEN);
    let too_long_id = "i".repeat(MAX_ID_LEN + 1);
    let mut r = ok.clone();
    r.id = Some(&long_id);
    assert_eq!(r.validate(), Ok(()));
    r.id = Some(&too_long_id);
    assert!(fixed_invalid(&r).contains("`id`"));

    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut r = ok.clone();
        r.temperature = Some(bad);
        assert_eq!(fixed_invalid(&r), "`temperature` must be finite");
        let mut r = ok.clone();
        r.frequency_penalty = Some(bad);
        assert_eq!(fixed_invalid(&r), "`frequency_penalty` must be finite");
    }
    // Ranges are the daemon's business.
    let mut r = ok.clone();
    r.temperature = Some(-3.0);
    r.top_p = Some(7.0);
    assert_eq!(r.validate(), Ok(()));

    let mut r = ok;
    r.v = 3;
    assert_eq!(r.validate(), Err(DecodeError::UnsupportedVersion(3)));
}

#[cfg(feature = "alloc")]
#[test]
fn owned_validate_matches_fixed() {
    use ember_proto::{Message, Request};
    let ok = common::owned::request();
    assert_eq!(ok.validate(), Ok(()));
    let cases: [fn(&mut Request); 9] = [
        |r: &mut Request| r.messages.clear(),
        |r: &mut Request| r.prompt = Some("x".into()),
        |r: &mut Request| r.messages.push(Message::new("bot", "x")),
        |r: &mut Request| r.reply_to = Some(String::new()),
        |r: &mut Request| r.reply_to = Some("$share/a/b".into()),
        |r: &mut Request| r.id = Some("x".repeat(257)),
        |r: &mut Request| r.min_p = Some(f32::NAN),
        |r: &mut Request| r.repeat_penalty = Some(f32::INFINITY),
        |r: &mut Request| r.presence_penalty = Some(f32::NEG_INFINITY),
    ];
    for (i, change) in cases.iter().enumerate() {
        let mut r = ok.clone();
        change(&mut r);
        let err = r.validate().expect_err("invalid");
        assert!(matches!(err, DecodeError::Invalid(_)), "{i}: {err:?}");
        assert_eq!(err.code(), ErrorCode::BadRequest);
        // decode_request validates too.
        let bytes = ember_proto::encode_request(Encoding::Postcard, &r).expect("encodes");
        assert_eq!(
            ember_proto::decode_request(Encoding::Postcard, &bytes),
            Err(err),
            "{i}"
        );
    }
    assert_eq!(Request::default().v, 2);
}

#[test]
fn error_display() {
    assert_eq!(
        DecodeError::UnsupportedContentType.to_string(),
        "unsupported content type (expected application/json or application/x-postcard)"
    );
    assert_eq!(
        DecodeError::UnsupportedVersion(3).to_string(),
        "unsupported wire version 3 (this build speaks version 2)"
    );
    let err = fixed::decode_response(&[2]).expect_err("truncated");
    assert_eq!(
        err.to_string(),
        "malformed message: postcard: truncated, the input ends inside the message"
    );
    assert_eq!(
        EncodeError::BufferTooSmall.to_string(),
        "output buffer too small for the message"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().starts_with("malformed"));
    let boxed: Box<dyn std::error::Error> = Box::new(EncodeError::NonFiniteFloat("top_p"));
    assert!(boxed.to_string().contains("top_p"));
}

#[cfg(not(feature = "std"))]
#[test]
fn json_needs_std() {
    #[cfg(feature = "alloc")]
    {
        assert_eq!(
            ember_proto::decode_request(Encoding::Json, b"{}"),
            Err(DecodeError::UnsupportedContentType)
        );
        assert_eq!(
            ember_proto::decode_response(Encoding::Json, b"{}"),
            Err(DecodeError::UnsupportedContentType)
        );
        assert_eq!(
            ember_proto::encode_request(Encoding::Json, &common::owned::request()),
            Err(EncodeError::UnsupportedEncoding)
        );
        assert_eq!(
            ember_proto::encode_response(Encoding::Json, &common::owned::chunk()),
            Err(EncodeError::UnsupportedEncoding)
        );
    }
}
