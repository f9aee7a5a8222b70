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

/// A tiny model of `tests/data/models` by file stem.
pub fn model_path(stem: &str) -> PathBuf {
    data_dir().join("models").join(format!("{stem}.gguf"))
}

/// llama.cpp's greedy records (`greedy.jsonl`) for a tiny model, one JSON value per line.
///
/// # Panics
/// When the file is missing or a line is not JSON: the fixtures are part of the repository.
pub fn reference(stem: &str) -> Vec<serde_json::Value> {
    let p = data_dir().join("reference").join(stem).join("greedy.jsonl");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
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

/// A loopback TCP port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The `mosquitto` broker binary: on `PATH`, else `/usr/sbin/mosquitto` (Debian installs it
/// there, outside a normal user's `PATH`).
pub fn mosquitto_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Whether the MQTT tests can run: `true` when a `mosquitto` binary exists. Without one they
/// print `SKIP …` and pass, unless `EMBER_TEST_MQTT=1` demands them (then this panics).
pub fn mqtt_available(test: &str) -> bool {
    if mosquitto_bin().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("EMBER_TEST_MQTT").is_none_or(|v| v != "1"),
        "{test}: EMBER_TEST_MQTT=1 but no mosquitto binary on PATH (apt install mosquitto)"
    );
    eprintln!("SKIP {test}: mosquitto is not installed (apt install mosquitto mosquitto-clients)");
    false
}

/// A real `mosquitto` broker on a loopback port, for the MQTT tests: anonymous access, a
/// persistent store in `dir` saved every second (so sessions and subscriptions survive a
/// SIGKILL and restart), every log line in `dir/mosquitto.log` (printed when a test panics).
/// Killed on drop.
#[derive(Debug)]
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
    child: Option<std::process::Child>,
}

impl Broker {
    /// Starts a broker on a free port, with its config, store and log in `dir` (which must
    /// exist and outlive the broker); returns once it accepts TCP connections.
    pub fn start(dir: &Path) -> Broker {
        Broker::start_with(dir, "allow_anonymous true\n")
    }

    /// [`Broker::start`] with `listener` lines (TLS files, authentication) in place of
    /// `allow_anonymous true`.
    pub fn start_with(dir: &Path, listener: &str) -> Broker {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // `user root`: when started as root, mosquitto 2 would otherwise drop to the `mosquitto`
        // user, who cannot write the store or the log in a private temporary folder. It is
        // ignored when not started as root.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 {listener}\
                 user root\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 autosave_interval 1\n\
                 log_dest file {dir}/mosquitto.log\n\
                 log_type all\n\
                 log_timestamp_format %H:%M:%S\n",
                dir = dir.display()
            ),
        )
        .expect("write mosquitto.conf");
        let mut b = Broker {
            port,
            dir: dir.to_owned(),
            conf,
            child: None,
        };
        b.restart();
        b
    }

    /// The persistent store (`mosquitto.db`), rewritten at every autosave.
    pub fn store(&self) -> PathBuf {
        self.dir.join("mosquitto.db")
    }

    /// Waits until the broker has saved its store after `t` (it autosaves every second), so that
    /// what it held at `t` (sessions, subscriptions) survives a [`Broker::kill`].
    pub fn wait_saved_after(&self, t: std::time::SystemTime) {
        let t0 = std::time::Instant::now();
        while std::fs::metadata(self.store())
            .and_then(|m| m.modified())
            .is_ok_and(|m| m <= t + std::time::Duration::from_millis(100))
            || !self.store().exists()
        {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "mosquitto did not save its store:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The broker's log so far (and what it wrote to stderr before opening its log file).
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        read("mosquitto.stderr") + &read("mosquitto.log")
    }

    /// Kills the broker with SIGKILL (no clean shutdown, no final save of its store) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker (again) on the same port with the same config and store; returns once it
    /// accepts TCP connections. A running one is killed first.
    pub fn restart(&mut self) {
        self.kill();
        let bin = mosquitto_bin().expect("mosquitto is installed");
        let t0 = std::time::Instant::now();
        loop {
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&self.conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.dir.join("mosquitto.stderr"))
                        .expect("open mosquitto.stderr"),
                )
                .spawn()
                .expect("spawn mosquitto");
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Some(status) = child.try_wait().expect("wait mosquitto") {
                    // Exited: the port may still be held (by a previous instance's socket, or
                    // by another process that took the free port). Retry for a while.
                    assert!(
                        t0.elapsed() < std::time::Duration::from_secs(10),
                        "mosquitto exited ({status}) on port {}:\n{}",
                        self.port,
                        self.log()
                    );
                    break;
                }
                assert!(
                    t0.elapsed() < std::time::Duration::from_secs(20),
                    "mosquitto did not listen on port {}:\n{}",
                    self.port,
                    self.log()
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- mosquitto log (port {}; QoS 0 publishes, pings and saves left out) ----\n{}",
                self.port,
                quiet_log(&self.log())
            );
        }
    }
}

/// A mosquitto log without its noisiest lines (QoS 0 publishes, i.e. stream chunks; pings;
/// autosaves), so that a failing test's output stays readable.
fn quiet_log(log: &str) -> String {
    let mut out = String::new();
    let mut left_out = 0;
    for l in log.lines() {
        let noisy = (l.contains(" PUBLISH ") && l.contains(", q0,"))
            || l.contains("PINGREQ")
            || l.contains("PINGRESP")
            || l.contains("Saving in-memory database");
        if noisy {
            left_out += 1;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out + &format!("({left_out} lines left out)\n")
}
