//! Postcard wire format: golden bytes (encode and decode), the version byte, truncated and garbage
//! input, and byte identity of the fixed and owned forms.

mod common;

use common::*;
use ember_proto::{DecodeError, EncodeError, ErrorCode, WIRE_VERSION, fixed};

// ---------------------------------------------------------------------------------------------
// Fixed forms (no allocator needed)

#[test]
fn fixed_request_golden_bytes() {
    let mut buf = [0u8; 256];
    let bytes = fixed::encode_request(&fixed_request(), &mut buf).expect("fits");
    assert_eq!(bytes, REQUEST_BYTES);
    let decoded: fixed::Request<'_, 2> = fixed::decode_request(REQUEST_BYTES).expect("decodes");
    assert_eq!(decoded, fixed_request());
}

#[test]
fn fixed_tool_request_golden_bytes() {
    let mut buf = [0u8; 256];
    let bytes = fixed::encode_request(&fixed_tool_request(), &mut buf).expect("fits");
    assert_eq!(bytes, TOOL_REQUEST_BYTES);
    let decoded: fixed::Request<'_, 3> =
        fixed::decode_request(TOOL_REQUEST_BYTES).expect("decodes");
    assert_eq!(decoded, fixed_tool_request());
}

#[test]
fn fixed_response_golden_bytes() {
    for (resp, golden) in [
        (fixed_chunk(), CHUNK_BYTES),
        (fixed_final(), FINAL_BYTES),
        (fixed_tool_final(), TOOL_FINAL_BYTES),
        (fixed_error(), ERROR_BYTES),
    ] {
        let mut buf = [0u8; 128];
        let bytes = fixed::encode_response(&resp, &mut buf).expect("fits");
        assert_eq!(bytes, golden, "{resp:?}");
        assert_eq!(fixed::decode_response(golden).expect("decodes"), resp);
    }
}

#[test]
fn fixed_decode_borrows_from_input() {
    let resp = fixed::decode_response(CHUNK_BYTES).expect("decodes");
    let fixed::Response::Chunk(chunk) = resp else {
        panic!("not a chunk: {resp:?}")
    };
    let range = CHUNK_BYTES.as_ptr_range();
    assert!(
        range.contains(&chunk.delta.as_ptr()),
        "delta is not borrowed"
    );
    assert_eq!(resp.id(), Some("r1"));
}

#[test]
fn fixed_buffer_too_small() {
    let mut buf = [0u8; 16];
    assert_eq!(
        fixed::encode_request(&fixed_request(), &mut buf),
        Err(EncodeError::BufferTooSmall)
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        fixed::encode_response(&fixed_final(), &mut buf),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn fixed_capacity_exceeded_is_malformed() {
    // The sample has one message: a capacity of 0 cannot hold it.
    let err = fixed::decode_request::<0>(REQUEST_BYTES).expect_err("too many messages");
    assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::BadRequest);
}

#[test]
fn fixed_decode_validates() {
    let mut req: fixed::Request<'_, 2> = fixed_request();
    req.messages.clear();
    let mut buf = [0u8; 256];
    let bytes = fixed::encode_request(&req, &mut buf).expect("fits");
    assert!(matches!(
        fixed::decode_request::<2>(bytes),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn unsupported_version_is_read_first() {
    for golden in [REQUEST_BYTES, CHUNK_BYTES, FINAL_BYTES, ERROR_BYTES] {
        // The fixed forms read the current version only: version 1 too is refused.
        for v in [0u8, 1, 3, 0x80, 0xFF] {
            // Everything after the version byte is garbage: the version must be reported anyway.
            let bad = [v, 0xFF, 0xFF, 0xFF];
            assert_eq!(
                fixed::decode_response(&bad),
                Err(DecodeError::UnsupportedVersion(v))
            );
            assert_eq!(
                fixed::decode_request::<2>(&bad),
                Err(DecodeError::UnsupportedVersion(v))
            );
            let mut changed = golden.to_vec();
            changed[0] = v;
            let err = fixed::decode_response(&changed).expect_err("wrong version");
            assert_eq!(err, DecodeError::UnsupportedVersion(v));
            assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
        }
    }
    assert_eq!(WIRE_VERSION, 2);
}

#[test]
fn fixed_tool_capacity_exceeded_is_malformed() {
    // Three messages do not fit two; more calls than MAX_TOOL_CALLS do not fit a reply.
    let err = fixed::decode_request::<2>(TOOL_REQUEST_BYTES).expect_err("too many messages");
    assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    let mut many = TOOL_FINAL_BYTES[..5].to_vec();
    many.push(fixed::MAX_TOOL_CALLS as u8 + 1);
    for _ in 0..=fixed::MAX_TOOL_CALLS {
        many.extend_from_slice(&TOOL_FINAL_BYTES[6..15]);
    }
    many.extend_from_slice(&TOOL_FINAL_BYTES[15..]);
    let err = fixed::decode_response(&many).expect_err("too many calls");
    assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
}

#[test]
fn fixed_truncated_and_trailing_are_malformed() {
    for golden in [CHUNK_BYTES, FINAL_BYTES, ERROR_BYTES] {
        for n in 0..golden.len() {
            let err = fixed::decode_response(&golden[..n]).expect_err("truncated");
            assert!(matches!(err, DecodeError::Malformed(_)), "{n}: {err:?}");
        }
        let mut longer = golden.to_vec();
        longer.push(0);
        assert!(matches!(
            fixed::decode_response(&longer),
            Err(DecodeError::Malformed(_))
        ));
    }
    for n in 0..REQUEST_BYTES.len() {
        let err = fixed::decode_request::<2>(&REQUEST_BYTES[..n]).expect_err("truncated");
        assert!(matches!(err, DecodeError::Malformed(_)), "{n}: {err:?}");
    }
}

#[test]
fn bad_bytes_are_malformed() {
    let cases: &[(&[u8], &str)] = &[
        (&[0x02, 0x03], "response variant 3"),
        (&[0x02, 0x02, 0x00, 0x0A, 0x00], "error code 10"),
        (&[0x02, 0x00, 0x02], "Option tag 2"),
        (&[0x02, 0x00, 0x00, 0x00, 0x01, 0xFF, 0x00], "invalid UTF-8"),
        (
            &[0x02, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            "varint overflow",
        ),
        (
            &[0x02, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x7F],
            "huge length",
        ),
    ];
    for (bytes, what) in cases {
        let err = fixed::decode_response(bytes).expect_err(what);
        assert!(matches!(err, DecodeError::Malformed(_)), "{what}: {err:?}");
        assert!(
            err.to_string().starts_with("malformed message: postcard"),
            "{err}"
        );
    }
}

#[test]
fn fixed_garbage_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let mut bytes = rng.bytes(len);
        if let Some(b) = bytes.first_mut() {
            *b = WIRE_VERSION; // get past the version check most of the time
        }
        if i % 2 == 0 && bytes.len() > 1 {
            bytes[1] %= 3;
        }
        if let Ok(resp) = fixed::decode_response(&bytes) {
            let mut buf = [0u8; 128];
            let again = fixed::encode_response(&resp, &mut buf).expect("re-encodes");
            assert_eq!(fixed::decode_response(again).map(|r| r.id()), Ok(resp.id()));
        }
        if let Ok(req) = fixed::decode_request::<4>(&bytes) {
            let mut buf = [0u8; 128];
            let again = fixed::encode_request(&req, &mut buf).expect("re-encodes");
            assert_eq!(fixed::decode_request::<4>(again), Ok(req.clone()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Owned forms, and byte identity with the fixed ones

#[cfg(feature = "alloc")]
mod owned_forms {
    use super::*;
    use common::owned;
    use ember_proto::{
        Encoding, Request, Response, decode_request, decode_response, encode_request,
        encode_response, encode_response_as,
    };

    #[test]
    fn request_golden_bytes() {
        for (req, golden) in [
            (owned::request(), REQUEST_BYTES),
            (owned::tool_request(), TOOL_REQUEST_BYTES),
        ] {
            let bytes = encode_request(Encoding::Postcard, &req).expect("encodes");
            assert_eq!(bytes, golden);
            assert_eq!(
                decode_request(Encoding::Postcard, golden).expect("decodes"),
                req
            );
        }
    }

    /// A client built for wire version 1 keeps working: its requests are read (with `v` 1 and
    /// no tool fields) and answered in version 1, byte for byte what it expects.
    #[test]
    fn version_1_is_read_and_answered_in_kind() {
        let req = decode_request(Encoding::Postcard, V1_REQUEST_BYTES).expect("decodes");
        assert_eq!(
            req,
            Request {
                v: 1,
                ..owned::request()
            }
        );
        for ((name, resp, _), v1) in owned::responses()
            .into_iter()
            .filter(|(name, _, _)| *name != "tool final")
            .zip([V1_CHUNK_BYTES, V1_FINAL_BYTES, V1_ERROR_BYTES])
        {
            let bytes = encode_response_as(Encoding::Postcard, 1, &resp).expect("encodes");
            assert_eq!(bytes, v1, "{name}");
            assert_eq!(
                decode_response(Encoding::Postcard, v1).expect("decodes"),
                resp,
                "{name}"
            );
        }
        // Version 1 has no tool calls: such a reply cannot be written in it.
        assert!(encode_response_as(Encoding::Postcard, 1, &owned::tool_final()).is_err());
        // A version 1 request cannot carry version 2 fields.
        let mut r = owned::tool_request();
        r.v = 1;
        assert!(matches!(r.validate(), Err(DecodeError::Invalid(_))));
        // The fixed forms do not read version 1.
        assert_eq!(
            fixed::decode_request::<2>(V1_REQUEST_BYTES),
            Err(DecodeError::UnsupportedVersion(1))
        );
    }

    #[test]
    fn response_golden_bytes() {
        for (name, resp, golden) in owned::responses() {
            let bytes = encode_response(Encoding::Postcard, &resp).expect("encodes");
            assert_eq!(bytes, golden, "{name}");
            assert_eq!(
                decode_response(Encoding::Postcard, golden).expect("decodes"),
                resp,
                "{name}"
            );
        }
    }

    #[test]
    fn fixed_encoded_decodes_as_owned() {
        let mut buf = [0u8; 256];
        let bytes = fixed::encode_request(&fixed_request(), &mut buf).expect("fits");
        let req = decode_request(Encoding::Postcard, bytes).expect("decodes");
        assert_eq!(req, owned::request());
        assert_eq!(req, Request::from(&fixed_request()));
        let bytes = fixed::encode_request(&fixed_tool_request(), &mut buf).expect("fits");
        let req = decode_request(Encoding::Postcard, bytes).expect("decodes");
        assert_eq!(req, owned::tool_request());
        assert_eq!(req, Request::from(&fixed_tool_request()));

        for fixed_resp in [
            fixed_chunk(),
            fixed_final(),
            fixed_tool_final(),
            fixed_error(),
        ] {
            let mut buf = [0u8; 128];
            let bytes = fixed::encode_response(&fixed_resp, &mut buf).expect("fits");
            let resp = decode_response(Encoding::Postcard, bytes).expect("decodes");
            assert_eq!(resp, Response::from(&fixed_resp));
        }
    }

    #[test]
    fn owned_encoded_decodes_as_fixed() {
        let bytes = encode_request(Encoding::Postcard, &owned::request()).expect("encodes");
        let req: fixed::Request<'_, 2> = fixed::decode_request(&bytes).expect("decodes");
        assert_eq!(req, fixed_request());
        let mut buf = [0u8; 256];
        assert_eq!(
            fixed::encode_request(&req, &mut buf).expect("fits"),
            &bytes[..]
        );

        for ((_, resp, _), fixed_resp) in owned::responses().into_iter().zip([
            fixed_chunk(),
            fixed_final(),
            fixed_tool_final(),
            fixed_error(),
        ]) {
            let bytes = encode_response(Encoding::Postcard, &resp).expect("encodes");
            assert_eq!(fixed::decode_response(&bytes).expect("decodes"), fixed_resp);
        }
    }

    #[test]
    fn every_error_code_has_its_index() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            let resp = Response::Error(ember_proto::ErrorReply {
                id: None,
                code,
                message: String::new(),
            });
            let bytes = encode_response(Encoding::Postcard, &resp).expect("encodes");
            assert_eq!(bytes, [2, 2, 0, i as u8, 0], "{code:?}");
            assert_eq!(
                decode_response(Encoding::Postcard, &bytes).expect("decodes"),
                resp
            );
        }
    }

    #[test]
    fn owned_unsupported_version_truncation_and_trailing() {
        let mut bytes = REQUEST_BYTES.to_vec();
        bytes[0] = 3;
        assert_eq!(
            decode_request(Encoding::Postcard, &bytes),
            Err(DecodeError::UnsupportedVersion(3))
        );
        assert_eq!(
            decode_response(Encoding::Postcard, &[7]),
            Err(DecodeError::UnsupportedVersion(7))
        );
        for golden in [REQUEST_BYTES, TOOL_REQUEST_BYTES, V1_REQUEST_BYTES] {
            for n in 0..golden.len() {
                let err = decode_request(Encoding::Postcard, &golden[..n]).expect_err("cut");
                assert!(matches!(err, DecodeError::Malformed(_)), "{n}: {err:?}");
            }
        }
        for (name, _, golden) in owned::responses() {
            for n in 0..golden.len() {
                let err = decode_response(Encoding::Postcard, &golden[..n]).expect_err("cut");
                assert!(
                    matches!(err, DecodeError::Malformed(_)),
                    "{name} {n}: {err:?}"
                );
            }
        }
        let mut longer = REQUEST_BYTES.to_vec();
        longer.push(0);
        assert!(matches!(
            decode_request(Encoding::Postcard, &longer),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn owned_garbage_never_panics() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for _ in 0..20_000 {
            let len = (rng.next() % 96) as usize;
            let mut bytes = rng.bytes(len);
            if let Some(b) = bytes.first_mut() {
                // Both versions the owned forms read.
                *b = 1 + (*b & 1);
            }
            for enc in [Encoding::Postcard, Encoding::Json] {
                if let Ok(resp) = decode_response(enc, &bytes)
                    && let Ok(again) = encode_response(enc, &resp)
                {
                    let back = decode_response(enc, &again).expect("re-decodes");
                    assert_eq!(
                        encode_response(enc, &back).expect("re-encodes"),
                        again,
                        "{resp:?}"
                    );
                }
                if let Ok(req) = decode_request(enc, &bytes) {
                    let again = encode_request(enc, &req).expect("re-encodes");
                    assert_eq!(decode_request(enc, &again), Ok(req));
                }
            }
        }
    }

    #[test]
    fn postcard_keeps_what_json_cannot() {
        // NaN timings go through postcard unchanged (bit for bit).
        let mut resp = owned::final_();
        if let Response::Final(f) = &mut resp {
            f.timings.queued_ms = f32::NAN;
        }
        let bytes = encode_response(Encoding::Postcard, &resp).expect("encodes");
        let back = decode_response(Encoding::Postcard, &bytes).expect("decodes");
        assert_eq!(
            encode_response(Encoding::Postcard, &back).expect("encodes"),
            bytes
        );
    }
}
