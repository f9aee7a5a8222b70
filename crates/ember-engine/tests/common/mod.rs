//! Helpers shared by the engine's integration tests: fixture paths and model loading.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different subset

use ember_gguf::GgufFile;
use ember_model::Model;
use ember_tokenizer::Tokenizer;
use std::sync::Arc;

/// A path under the repository's `tests/data`.
pub fn data(p: &str) -> String {
    format!("{}/../../tests/data/{p}", env!("CARGO_MANIFEST_DIR"))
}

/// A model on the CPU backend and its tokenizer.
pub fn load(path: &str) -> (Model, Arc<Tokenizer>) {
    let file = GgufFile::open(path).unwrap();
    let model = Model::load(&file, &burn::tensor::Device::flex()).unwrap();
    (
        model,
        Arc::new(Tokenizer::from_gguf(file.metadata()).unwrap()),
    )
}
