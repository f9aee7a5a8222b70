//! Helpers shared by the model tests: fixture paths and the list of reference models.
#![allow(dead_code)] // each test file uses a different subset

use serde_json::Value;

/// A path under `tests/data`.
pub fn data(p: &str) -> String {
    format!("{}/../../tests/data/{p}", env!("CARGO_MANIFEST_DIR"))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The folder of the project's shared reference data: `EMBER_SHARED_DIR`, else `../shared` beside
/// the checkout (as in CI). A user's clone has none; `EMBER_SHARED_DIR=/nonexistent` runs the suite
/// as such a clone does.
pub fn shared_dir() -> std::path::PathBuf {
    std::env::var_os("EMBER_SHARED_DIR").map_or_else(
        || format!("{}/../../../shared", env!("CARGO_MANIFEST_DIR")).into(),
        Into::into,
    )
}

/// (path, reference stem) of every model with reference data: the repository's copies, then those
/// in [`shared_dir`]`/models` unless `EMBER_TEST_SHARED_MODELS=0` (emulated runs, where each model
/// costs a minute).
pub fn models() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut dirs = vec![data("models")];
    if std::env::var("EMBER_TEST_SHARED_MODELS").as_deref() != Ok("0") {
        dirs.push(shared_dir().join("models").to_string_lossy().into_owned());
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for p in paths {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            if !out.iter().any(|(_, s)| *s == stem) {
                out.push((p.to_str().unwrap().to_owned(), stem));
            }
        }
    }
    match std::env::var("EMBER_SMOLLM2") {
        Ok(p) => out.push((p, "smollm2-135m-instruct-q4_1".to_owned())),
        Err(_) => eprintln!("SKIP smollm2: EMBER_SMOLLM2 not set (scripts/test.sh sets it)"),
    }
    out
}

/// The last-row logits of `a` and of `b`, run as one batch, each sequence on a fresh cache of
/// `n_ctx` positions.
pub fn last_logits_batched(
    m: &ember_model::Model,
    a: &[u32],
    b: &[u32],
    n_ctx: usize,
) -> [Vec<f32>; 2] {
    use ember_model::SeqInput;
    let (mut ca, mut cb) = (m.new_cache(n_ctx), m.new_cache(n_ctx));
    let out = m
        .forward_batch(
            &mut [
                SeqInput {
                    tokens: a,
                    cache: &mut ca,
                },
                SeqInput {
                    tokens: b,
                    cache: &mut cb,
                },
            ],
            false,
        )
        .unwrap();
    let out: Vec<Vec<f32>> = out
        .into_iter()
        .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
        .collect();
    out.try_into().expect("one result per sequence")
}
