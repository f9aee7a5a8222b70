//! The local cache directory.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::HubError;
use crate::manifest::Manifest;

/// The cache root; model files live in `<root>/models/<manifest.file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    /// A cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache `scripts/fetch_model.py` uses: `$EMBER_CACHE_DIR`, else `$XDG_CACHE_HOME/ember`,
    /// else `$HOME/.cache/ember` (empty variables count as unset).
    pub fn from_env() -> Result<Self, HubError> {
        Self::resolve(|name| env::var_os(name), env::home_dir())
    }

    fn resolve(
        var: impl Fn(&str) -> Option<OsString>,
        home: Option<PathBuf>,
    ) -> Result<Self, HubError> {
        let var = |name| var(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("EMBER_CACHE_DIR") {
            return Ok(Self::new(dir));
        }
        let base = match var("XDG_CACHE_HOME") {
            Some(xdg) => PathBuf::from(xdg),
            None => home
                .filter(|h| !h.as_os_str().is_empty())
                .ok_or(HubError::NoCacheDir)?
                .join(".cache"),
        };
        Ok(Self::new(base.join("ember")))
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/models`, where model files are kept.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Where `manifest`'s file is (or will be) in the cache. Whether it is there and verified is
    /// [`crate::fetch`]'s business.
    pub fn model_path(&self, manifest: &Manifest) -> PathBuf {
        self.models_dir().join(&manifest.file)
    }
}

/// `path` with `suffix` appended to its file name (`m.gguf` -> `m.gguf.download`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)], home: Option<&str>) -> Result<CacheDir, HubError> {
        CacheDir::resolve(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            },
            home.map(PathBuf::from),
        )
    }

    #[test]
    fn same_rule_as_the_script() {
        let all = [("EMBER_CACHE_DIR", "/e"), ("XDG_CACHE_HOME", "/x")];
        assert_eq!(resolve(&all, Some("/h")).unwrap().root(), Path::new("/e"));
        let xdg = [("EMBER_CACHE_DIR", ""), ("XDG_CACHE_HOME", "/x")];
        assert_eq!(
            resolve(&xdg, Some("/h")).unwrap().root(),
            Path::new("/x/ember")
        );
        let empty = [("XDG_CACHE_HOME", "")];
        assert_eq!(
            resolve(&empty, Some("/h")).unwrap().root(),
            Path::new("/h/.cache/ember")
        );
        assert!(matches!(resolve(&[], None), Err(HubError::NoCacheDir)));
        assert!(matches!(resolve(&[], Some("")), Err(HubError::NoCacheDir)));
    }

    #[test]
    fn model_path_is_under_models() {
        let m = crate::Registry::builtin().unwrap().default_model().clone();
        let cache = CacheDir::new("/c");
        assert_eq!(
            cache.model_path(&m),
            Path::new("/c/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
    }

    #[test]
    fn sibling_appends_to_the_file_name() {
        assert_eq!(
            sibling(Path::new("/c/models/m.gguf"), ".download"),
            Path::new("/c/models/m.gguf.download")
        );
    }
}
