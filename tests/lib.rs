//! Shared helpers for ember's end-to-end tests: where the fixtures are, and running the real
//! `emberd` binary the way other programs call it (stdin in, stdout/stderr/exit code out).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `tests/data` in the repository.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The default real model (SmolLM2-135M-Instruct Q4_1), when fetched: `EMBER_SMOLLM2`, else the
/// default cache path of `scripts/fetch_model.py`. `scripts/test.sh` always sets the variable.
pub fn smollm2() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EMBER_SMOLLM2") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".cache/ember/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

/// Path of the `emberd` binary of this workspace, built on first use if cargo has not built it yet.
pub fn emberd() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("EMBERD_BIN") {
            return PathBuf::from(p);
        }
        // Test binaries live in <target>/<profile>/deps/; the binary in <target>/<profile>/.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir layout");
        let bin = profile_dir.join("emberd");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-q", "-p", "emberd"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p emberd failed");
        bin
    })
}

/// What a run of `emberd` produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    /// stdout as UTF-8 (panics in tests if it is not).
    pub fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
}

/// Runs `emberd ARGS` with `stdin` as its standard input.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_env(args, stdin, &[])
}

/// [`run`] with extra environment variables.
pub fn run_env(args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> Output {
    let mut child = Command::new(emberd())
        .args(args)
        .env_remove("EMBER_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn emberd");
    let mut input = child.stdin.take().expect("stdin");
    // Ignore a broken pipe: emberd may fail before reading its input.
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().expect("wait emberd");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
