//! `emberd serve` configuration: the TOML file (`packaging/ember.toml.example` documents every
//! key), the same keys as command-line flags, and their resolution into [`Settings`].
//!
//! Precedence, field by field: flags > config file > board profile (`boards/*.toml`) > built-in
//! defaults — the layering of llama.cpp's server (flags over env) and of systemd units (drop-ins
//! over the unit). [`resolve`] is pure (the environment is a parameter) so every rule is
//! unit-tested; [`settings`] is the one call that reads the file, the board and the environment.

use crate::backend::Backend;
use crate::serve::boards::{self, Board, Choice};
use crate::serve::mqtt::{self, MqttConfig, MqttSettings};
use crate::serve::socket::AllowList;
// The value types of config keys, defined next to their users, re-exported as config types.
pub use crate::serve::admission::{ByteSize, human_bytes};
pub use crate::serve::socket::{GroupSpec, SocketMode};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Every key of the config file; every field optional so that flags can be layered over it.
/// `emberd serve`'s flags build one of these too (see `serve/mod.rs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// A GGUF path, or a registry name from `models/*.toml` (see [`ModelSpec::parse`]).
    pub model: Option<String>,
    /// The model id served to clients (`/v1/models`); default: registry name or file stem.
    pub model_name: Option<String>,
    /// A Jinja chat template replacing the model's own.
    pub template_file: Option<PathBuf>,
    /// The Unix socket path; default see [`default_socket_path`].
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket (octal in TOML, `0o660`, or a string `"0660"`).
    pub socket_mode: Option<SocketMode>,
    /// Group that owns the socket: a name or a gid.
    pub socket_group: Option<GroupSpec>,
    /// Peer uids allowed to talk to the socket (empty with `allow_gids` empty: anyone who can open it).
    pub allow_uids: Option<Vec<u32>>,
    /// Peer primary gids allowed (SO_PEERCRED carries only the primary group).
    pub allow_gids: Option<Vec<u32>>,
    /// A TCP listener, e.g. `"127.0.0.1:11434"`; off when unset.
    pub tcp_listen: Option<SocketAddr>,
    /// Bearer key required on the Unix socket.
    pub api_key: Option<String>,
    /// A file holding `api_key` (trimmed), so the secret need not sit in the config.
    pub api_key_file: Option<PathBuf>,
    /// Bearer key required on the TCP listener.
    pub tcp_api_key: Option<String>,
    /// A file holding `tcp_api_key` (trimmed).
    pub tcp_api_key_file: Option<PathBuf>,
    /// Compute threads; default: the board's, else one per physical core.
    pub threads: Option<usize>,
    /// A board profile name, a path to a board TOML, or `"auto"` (the default).
    pub board: Option<String>,
    /// A folder of user board TOMLs, searched before the built-in profiles.
    pub boards_dir: Option<PathBuf>,
    /// Memory ember may use: weights + KV cache + scratch (`"1.5GiB"`, `"800MB"` or bytes).
    pub memory_budget: Option<ByteSize>,
    /// Context length per slot (tokens).
    pub ctx_size: Option<usize>,
    /// Sequences decoded in parallel.
    pub slots: Option<usize>,
    /// Requests that may wait for a slot before new ones get 503.
    pub queue: Option<usize>,
    /// Prompt tokens per prefill step.
    pub prefill_chunk: Option<usize>,
    /// Seconds a request may take in total.
    pub request_timeout: Option<u64>,
    /// `"flex"` (CPU) or `"wgpu"` (GPU).
    #[serde(default, deserialize_with = "de_backend")]
    pub backend: Option<Backend>,
    /// Keep routed experts on the CPU while the rest runs on the GPU (`--cpu-moe`).
    pub cpu_moe: Option<bool>,
    /// KV cache element type: `"f16"` (default) or `"f32"`.
    pub kv_dtype: Option<KvDtype>,
    /// `"text"` or `"json"` log lines.
    pub log_format: Option<LogFormat>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub grace_period: Option<u64>,
    /// Largest request body accepted.
    pub max_body_bytes: Option<ByteSize>,
    /// The MQTT front (`[mqtt]` table); off without a broker URL.
    pub mqtt: Option<MqttConfig>,
}

/// KV cache element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    F16,
    F32,
}

impl KvDtype {
    /// Bytes per stored element.
    pub fn bytes(self) -> u64 {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A GGUF file.
    Path(PathBuf),
    /// A name from the model registry (`models/*.toml`), fetched into the cache.
    Registry(String),
}

impl ModelSpec {
    /// A value with a `/` or ending in `.gguf` is a path (write `./m.gguf` to force one); anything
    /// else is a registry name. Syntactic on purpose: the meaning of a config must not depend on
    /// which files happen to exist in the working directory.
    pub fn parse(s: &str) -> Self {
        if s.contains('/') || s.to_ascii_lowercase().ends_with(".gguf") {
            ModelSpec::Path(PathBuf::from(s))
        } else {
            ModelSpec::Registry(s.to_owned())
        }
    }

    /// The default id served to clients.
    fn default_name(&self) -> String {
        match self {
            ModelSpec::Registry(n) => n.clone(),
            ModelSpec::Path(p) => p
                .file_stem()
                .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned()),
        }
    }
}

/// A secret (API key): its `Debug` never shows the value, so a logged `Settings` leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The key itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The Unix listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketSettings {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<GroupSpec>,
    pub allow: AllowList,
    pub api_key: Option<Secret>,
}

/// Everything `emberd serve` runs with, resolved: no `Option` where a default exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model: ModelSpec,
    pub model_name: String,
    pub template_file: Option<PathBuf>,
    pub socket: SocketSettings,
    /// The TCP listener and its key, when enabled.
    pub tcp: Option<(SocketAddr, Option<Secret>)>,
    /// `None`: one per physical core (`backend::init_threads(None)`).
    pub threads: Option<usize>,
    /// The board profile these settings were resolved against.
    pub board: String,
    pub memory_budget: u64,
    pub ctx_size: usize,
    pub slots: usize,
    pub queue: usize,
    pub prefill_chunk: usize,
    pub request_timeout: Duration,
    pub backend: Backend,
    pub cpu_moe: bool,
    pub kv_dtype: KvDtype,
    pub log_format: LogFormat,
    pub grace_period: Duration,
    pub max_body_bytes: usize,
    /// The MQTT front, when a broker is configured.
    pub mqtt: Option<MqttSettings>,
    /// Things allowed but probably unintended (world-connectable socket, keyless TCP); log them.
    pub warnings: Vec<String>,
}

/// Built-in defaults, for what neither flags, file nor board set.
pub mod defaults {
    /// Owner and group may connect; nobody else (the socket group is the access list).
    pub const SOCKET_MODE: u32 = 0o660;
    pub const QUEUE: usize = 16;
    /// Big enough to amortise a pass over the weights, small enough that its activations and
    /// attention scores stay a few MiB on a 1.5B model.
    pub const PREFILL_CHUNK: usize = 512;
    /// A Pi 4 decoding a 1.5B model at ~3 tokens/s needs minutes for a long answer.
    pub const REQUEST_TIMEOUT_S: u64 = 600;
    /// systemd's TimeoutStopSec in packaging/systemd/emberd.service is 45 s: keep this below.
    pub const GRACE_PERIOD_S: u64 = 30;
    /// 2 MiB: a long chat history is ~100 KiB of JSON; this only stops abuse.
    pub const MAX_BODY_BYTES: u64 = 2 << 20;
}

/// Reads a config file. Errors name the file and, for bad keys or values, the line and the key
/// (toml's messages). Relative paths inside are taken relative to the file's folder.
pub fn load(path: &Path) -> Result<ServeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut cfg: ServeConfig =
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let rebase = |p: &mut Option<PathBuf>| {
        if let Some(q) = p.as_mut().filter(|q| q.is_relative()) {
            *q = base.join(&*q);
        }
    };
    rebase(&mut cfg.template_file);
    rebase(&mut cfg.socket);
    rebase(&mut cfg.api_key_file);
    rebase(&mut cfg.tcp_api_key_file);
    rebase(&mut cfg.boards_dir);
    if let Some(m) = cfg.mqtt.as_mut() {
        m.rebase(base);
    }
    if let Some(m) = cfg.model.as_mut()
        && let ModelSpec::Path(p) = ModelSpec::parse(m)
        && p.is_relative()
    {
        *m = base.join(p).to_string_lossy().into_owned();
    }
    if let Some(b) = cfg.board.as_mut()
        && boards::is_path(b)
        && Path::new(b).is_relative()
    {
        *b = base.join(&*b).to_string_lossy().into_owned();
    }
    Ok(cfg)
}

/// The whole resolution for `emberd serve`: reads `config_path` (if any), chooses the board
/// (auto-detecting from `/proc` unless named), reads key files, and resolves. The [`Choice`]'s
/// `summary` is the sentence to log at start.
pub fn settings(flags: &ServeConfig, config_path: Option<&Path>) -> Result<(Settings, Choice)> {
    let file = config_path.map(load).transpose()?;
    let file = file.as_ref();
    let board = flags
        .board
        .as_deref()
        .or(file.and_then(|f| f.board.as_deref()));
    let dir = flags
        .boards_dir
        .as_deref()
        .or(file.and_then(|f| f.boards_dir.as_deref()));
    let choice = boards::choose(board, dir)?;
    let env = |k: &str| std::env::var(k).ok();
    let settings = resolve(flags, file, &choice.board, &env)?;
    Ok((settings, choice))
}

/// Resolves flags over file over board over defaults. Reads only the key files named in the
/// config; everything else comes in through the parameters.
pub fn resolve(
    flags: &ServeConfig,
    file: Option<&ServeConfig>,
    board: &Board,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings> {
    let empty = ServeConfig::default();
    let file = file.unwrap_or(&empty);
    // `pick!(x)`: the flag, else the file's value.
    macro_rules! pick {
        ($f:ident) => {
            flags.$f.clone().or_else(|| file.$f.clone())
        };
    }
    let mut warnings = Vec::new();

    let model = pick!(model).map_or_else(
        || ModelSpec::Registry(board.default_model.clone()),
        |m| ModelSpec::parse(&m),
    );
    let model_name = pick!(model_name).unwrap_or_else(|| model.default_name());
    if model_name.trim().is_empty() {
        bail!("model_name is empty");
    }

    let mode = pick!(socket_mode).map_or(defaults::SOCKET_MODE, |m| m.0);
    if mode & 0o002 != 0 {
        warnings.push(format!(
            "socket_mode {mode:#o} lets every local user connect; 0660 with socket_group is the usual choice"
        ));
    }
    let allow = AllowList {
        uids: pick!(allow_uids).unwrap_or_default(),
        gids: pick!(allow_gids).unwrap_or_default(),
    };
    let api_key = secret(
        "api_key",
        flags.api_key.as_deref().or(file.api_key.as_deref()),
        flags
            .api_key_file
            .as_deref()
            .or(file.api_key_file.as_deref()),
    )?;
    let socket = SocketSettings {
        path: pick!(socket).unwrap_or_else(|| default_socket_path(env)),
        mode,
        group: pick!(socket_group),
        allow,
        api_key,
    };

    let tcp = match pick!(tcp_listen) {
        None => None,
        Some(addr) => {
            let key = secret(
                "tcp_api_key",
                flags.tcp_api_key.as_deref().or(file.tcp_api_key.as_deref()),
                flags
                    .tcp_api_key_file
                    .as_deref()
                    .or(file.tcp_api_key_file.as_deref()),
            )?;
            if key.is_none() {
                if !addr.ip().is_loopback() {
                    bail!(
                        "tcp_listen {addr} is reachable from other machines: set tcp_api_key or \
                         tcp_api_key_file, or listen on 127.0.0.1"
                    );
                }
                warnings.push(format!(
                    "tcp_listen {addr} has no tcp_api_key: every local user can use it, \
                     whatever the socket's mode and allow-list"
                ));
            }
            Some((addr, key))
        }
    };

    let threads = pick!(threads).or(board.threads);
    let memory_budget = pick!(memory_budget).map_or(board.memory_budget, |b| b.0);
    let ctx_size = pick!(ctx_size).unwrap_or(board.max_ctx);
    let slots = pick!(slots).unwrap_or(board.slots);
    let queue = pick!(queue).unwrap_or(defaults::QUEUE);
    let prefill_chunk = pick!(prefill_chunk).unwrap_or(defaults::PREFILL_CHUNK);
    let request_timeout = pick!(request_timeout).unwrap_or(defaults::REQUEST_TIMEOUT_S);
    let max_body = pick!(max_body_bytes).map_or(defaults::MAX_BODY_BYTES, |b| b.0);
    for (key, v) in [
        ("threads", threads.unwrap_or(1) as u64),
        ("memory_budget", memory_budget),
        ("ctx_size", ctx_size as u64),
        ("slots", slots as u64),
        ("queue", queue as u64),
        ("prefill_chunk", prefill_chunk as u64),
        ("request_timeout", request_timeout),
        ("max_body_bytes", max_body),
    ] {
        if v == 0 {
            bail!("{key} must be at least 1");
        }
    }
    let max_body_bytes = usize::try_from(max_body)
        .with_context(|| format!("max_body_bytes {max_body} is too large"))?;
    let no_mqtt = MqttConfig::default();
    let mqtt = mqtt::settings::resolve(
        flags.mqtt.as_ref().unwrap_or(&no_mqtt),
        file.mqtt.as_ref(),
        &mqtt::settings::hostname,
    )?;

    Ok(Settings {
        model,
        model_name,
        template_file: pick!(template_file),
        socket,
        tcp,
        threads,
        board: board.name.clone(),
        memory_budget,
        ctx_size,
        slots,
        queue,
        prefill_chunk,
        request_timeout: Duration::from_secs(request_timeout),
        backend: pick!(backend).unwrap_or(board.backend),
        cpu_moe: pick!(cpu_moe).unwrap_or(false),
        kv_dtype: pick!(kv_dtype).unwrap_or(board.kv_dtype),
        log_format: pick!(log_format).unwrap_or(LogFormat::Text),
        grace_period: Duration::from_secs(pick!(grace_period).unwrap_or(defaults::GRACE_PERIOD_S)),
        max_body_bytes,
        mqtt,
        warnings,
    })
}

/// `$RUNTIME_DIRECTORY/emberd.sock` under systemd (`RuntimeDirectory=ember` sets it to
/// `/run/ember`), else `$XDG_RUNTIME_DIR/ember/emberd.sock` for a user's daemon, else
/// `/run/ember/emberd.sock`. `bind_unix` creates a missing parent folder (0750).
pub fn default_socket_path(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(dir) = set("RUNTIME_DIRECTORY") {
        // Several RuntimeDirectory= entries arrive colon-separated; ours is the first.
        let first = dir.split(':').next().unwrap_or(&dir);
        return Path::new(first).join("emberd.sock");
    }
    match set("XDG_RUNTIME_DIR") {
        Some(dir) => Path::new(&dir).join("ember/emberd.sock"),
        None => PathBuf::from("/run/ember/emberd.sock"),
    }
}

/// A key given inline or in a file (not both); a file's content is trimmed and must not be empty.
fn secret(key: &str, inline: Option<&str>, file: Option<&Path>) -> Result<Option<Secret>> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => bail!("give {key} or {key}_file, not both"),
        (Some(k), None) => k.to_owned(),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {key}_file {}", p.display()))?;
            text.trim().to_owned()
        }
        (None, None) => return Ok(None),
    };
    if value.is_empty() {
        bail!("{key} is empty");
    }
    Ok(Some(Secret(value)))
}

fn de_backend<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Backend>, D::Error> {
    let s = String::deserialize(d)?;
    <Backend as clap::ValueEnum>::from_str(&s, true)
        .map(Some)
        .map_err(|_| {
            de::Error::custom(format!(
                "unknown backend {s:?}, expected \"flex\" or \"wgpu\""
            ))
        })
}

/// Deserializes a value written either as a TOML integer or as a string (`FromStr`), with an
/// error naming what was expected (serde's untagged enums only say "did not match any variant").
pub(crate) fn int_or_str<'de, D, T>(
    d: D,
    what: &'static str,
    from_int: fn(i64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct V<T>(&'static str, fn(i64) -> Result<T, String>);
    impl<T: FromStr<Err = String>> de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            (self.1)(n).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            let n = i64::try_from(n).map_err(|_| E::custom(format!("{n} is too large")))?;
            (self.1)(n).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            s.parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V(what, from_int))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
