//! Fuzz target: a chat template (from a GGUF file or --template-file) and a render request (from
//! stdin, HTTP or MQTT) are outside input. Compiling and rendering must return Ok or Err, never
//! panic. Input: template source, a NUL byte, then the request JSON.
#![no_main]

use ember_tokenizer::template::{ChatTemplate, RenderRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (src, req) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"[..]),
    };
    let (Ok(src), Ok(req)) = (std::str::from_utf8(src), serde_json::from_slice::<RenderRequest>(req)) else {
        return;
    };
    if let Ok(t) = ChatTemplate::new(src) {
        let _ = t.render(&req);
    }
});
