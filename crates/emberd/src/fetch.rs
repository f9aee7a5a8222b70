//! The default model for commands run without `--model`: found in the cache or fetched into it
//! (ember-hub checks its sha256 either way), with a progress bar on stderr while it downloads.

use anyhow::{Context, Result};
use ember_hub::{CacheDir, FetchOptions, Progress, Registry, Stage};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Path of the verified default model.
pub fn default_model() -> Result<PathBuf> {
    registry_model(None)
}

/// Path of the verified model `name` of the registry (`models/*.toml`), or of the default one.
pub fn registry_model(name: Option<&str>) -> Result<PathBuf> {
    let registry = Registry::builtin()?;
    let manifest = match name {
        Some(n) => registry.require(n)?,
        None => registry.default_model(),
    };
    let cache = CacheDir::from_env()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| {
        let what = match &p.stage {
            Stage::Verifying { .. } => "verifying".to_owned(),
            Stage::Downloading { source } => format!("downloading {source}"),
            Stage::Extracting { member } => format!("extracting {member}"),
            _ => "fetching".to_owned(),
        };
        bar.set_message(format!("{}: {what}", manifest.name));
        bar.set_length(p.total.unwrap_or(0));
        bar.set_position(p.done);
    };
    let path = ember_hub::fetch(manifest, &cache, &FetchOptions::default(), &mut on_progress)
        .with_context(|| format!("model {}", manifest.name));
    bar.finish_and_clear();
    let path = path?;
    tracing::info!("model {} at {}", manifest.name, path.display());
    Ok(path)
}
