//! Embeds the repository's `models/*.toml` manifests: writes `$OUT_DIR/manifests.rs`, a list of
//! `(file name, include_str!(..))` pairs in file-name order. Adding or removing a manifest reruns
//! this script (cargo watches the directory as well as each file).
#![allow(
    clippy::print_stdout,
    reason = "cargo reads build-script instructions from stdout"
)]

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::{env, fs};

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let models = manifest_dir.join("../../models");
    println!("cargo:rerun-if-changed={}", models.display());

    let mut files = Vec::new();
    let entries = fs::read_dir(&models)
        .map_err(|e| format!("cannot list model manifests in {}: {e}", models.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();

    let mut out = String::from(
        "/// The manifests of `models/`, embedded at compile time: (file name, TOML text).\n\
         pub(crate) const BUILTIN: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("manifest name is not UTF-8: {}", path.display()))?;
        let abs = fs::canonicalize(path)?;
        let abs = abs
            .to_str()
            .ok_or_else(|| format!("manifest path is not UTF-8: {}", abs.display()))?;
        // `{:?}` writes a valid Rust string literal (quotes and escapes included).
        writeln!(out, "    ({name:?}, include_str!({abs:?})),")?;
    }
    out.push_str("];\n");

    fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("manifests.rs"),
        out,
    )?;
    Ok(())
}
