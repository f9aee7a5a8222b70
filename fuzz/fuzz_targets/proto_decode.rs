//! Fuzz target: an MQTT payload is outside input. Decoding it as a request or a response, in JSON
//! or postcard, owned or fixed-capacity, must return Ok or Err and never panic; whatever decodes
//! must re-encode, and decoding that must give back an equal value (for postcard, the same bytes
//! again: equal up to NaN timings, which postcard carries bit for bit). A fixed form must agree
//! with the owned one on the same bytes.
#![no_main]

use ember_proto::{Encoding, Request, Response, fixed};
use libfuzzer_sys::fuzz_target;

/// Most messages the fixed request form holds here.
const M: usize = 8;

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::Json, Encoding::Postcard] {
        if let Ok(req) = ember_proto::decode_request(enc, data) {
            let bytes = ember_proto::encode_request(enc, &req).expect("a decoded request encodes");
            let again =
                ember_proto::decode_request(enc, &bytes).expect("a re-encoded request decodes");
            assert_eq!(again, req, "{enc:?} request round trip");
        }
        if let Ok(resp) = ember_proto::decode_response(enc, data) {
            let bytes =
                ember_proto::encode_response(enc, &resp).expect("a decoded response encodes");
            let again =
                ember_proto::decode_response(enc, &bytes).expect("a re-encoded response decodes");
            match enc {
                // JSON cannot carry NaN: values compare equal.
                Encoding::Json => assert_eq!(again, resp, "JSON response round trip"),
                Encoding::Postcard => {
                    let bytes2 = ember_proto::encode_response(enc, &again).expect("encodes");
                    assert_eq!(bytes2, bytes, "postcard response round trip");
                    if !has_nan(&resp) {
                        assert_eq!(again, resp, "postcard response round trip");
                    }
                }
            }
        }
    }

    let owned_req = ember_proto::decode_request(Encoding::Postcard, data);
    match fixed::decode_request::<M>(data) {
        Ok(req) => {
            let mut buf = vec![0u8; data.len()];
            let bytes = fixed::encode_request(&req, &mut buf).expect("fits in the input's size");
            let again = fixed::decode_request::<M>(bytes).expect("a re-encoded request decodes");
            assert_eq!(again, req, "fixed request round trip");
            // The owned form reads the same bytes as the same request.
            assert_eq!(owned_req.as_ref().ok(), Some(&Request::from(&req)));
        }
        // Only a capacity the owned form does not have, or wire version 1 (which only the owned
        // form reads), may make the fixed form refuse more.
        Err(_) => {
            if let Ok(r) = &owned_req {
                assert!(
                    r.v == 1
                        || r.messages.len() > M
                        || r.stop.len() > fixed::MAX_STOP
                        || r.tools.len() > fixed::MAX_TOOLS
                        || r.messages
                            .iter()
                            .any(|m| m.tool_calls.len() > fixed::MAX_TOOL_CALLS),
                    "{r:?}"
                );
            }
        }
    }

    let owned_resp = ember_proto::decode_response(Encoding::Postcard, data);
    match fixed::decode_response(data) {
        Ok(resp) => {
            let mut buf = vec![0u8; data.len()];
            let bytes = fixed::encode_response(&resp, &mut buf).expect("fits in the input's size");
            let again = fixed::decode_response(bytes).expect("a re-encoded response decodes");
            let mut buf2 = vec![0u8; data.len()];
            let bytes2 = fixed::encode_response(&again, &mut buf2).expect("encodes");
            assert_eq!(bytes2, bytes, "fixed response round trip");
            let owned = Response::from(&resp);
            if !has_nan(&owned) {
                assert_eq!(again, resp, "fixed response round trip");
                assert_eq!(owned_resp.as_ref().ok(), Some(&owned));
            }
        }
        // Version 1 (only the owned form reads it; the fixed form stops at the version byte),
        // or more calls than the fixed form holds.
        Err(e) if data.first() == Some(&1) => {
            assert_eq!(e, ember_proto::DecodeError::UnsupportedVersion(1));
        }
        // A list over the fixed form's capacity stops it where the owned form reads on (and
        // may fail later, differently).
        Err(e) if e.to_string().contains("more elements than a fixed form holds") => {}
        Err(e) => assert_eq!(owned_resp.err(), Some(e), "fixed and owned disagree"),
    }
});

fn has_nan(resp: &Response) -> bool {
    match resp {
        Response::Final(f) => {
            let t = &f.timings;
            t.queued_ms.is_nan() || t.prompt_ms.is_nan() || t.predicted_ms.is_nan()
        }
        _ => false,
    }
}
