//! Fuzz target: the GGUF parser must return Ok or Err on any bytes, never panic, and every tensor
//! view of a file it accepts must lie inside the input; a vocabulary it carries must build a
//! tokenizer or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ember_gguf::GgufFile::from_bytes(data.to_vec()) {
        for t in file.tensors() {
            let bytes = file.tensor_data(t).expect("accepted tensor must be inside the file");
            assert_eq!(bytes.len() as u64, t.n_bytes());
        }
        for (_, v) in file.metadata().iter() {
            let _ = v.type_name();
        }
        // The vocabulary in an accepted file is outside input too.
        if let Ok(tok) = ember_tokenizer::Tokenizer::from_gguf(file.metadata()) {
            let ids = tok.encode("Hello, world! <|im_end|> 123", true, true);
            assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
            let _ = tok.decode(&ids, true);
        }
    }
});
