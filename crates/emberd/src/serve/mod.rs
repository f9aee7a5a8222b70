//! `emberd serve`: the daemon. Resolves the settings (flags > config file > board profile >
//! defaults), refuses a model + context that exceeds the memory budget before touching the
//! socket, binds the Unix socket (and the optional TCP listener), loads the model while `/health`
//! answers 503, runs the engine thread, and on SIGTERM/SIGINT stops accepting, lets in-flight
//! requests finish within the grace period (then cancels them), removes the socket and exits 0.
//! The skeleton follows mini-redis (`run(listener, shutdown)`, graceful drain) and llama-server's
//! start-up order (listen first, 503 while loading).

pub mod admission;
pub mod boards;
pub mod config;
pub mod http;
pub mod mqtt;
pub mod notify;
pub mod socket;

use crate::backend::{self, Backend};
use crate::model;
use anyhow::{Context, Result, bail};
use clap::Args;
use config::{
    ByteSize, GroupSpec, KvDtype, LogFormat, ModelSpec, ServeConfig, Settings, SocketMode,
};
use ember_engine::service::{EngineConfig, EngineHandle, EngineThread};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `emberd serve` flags. Each one overrides the config file's key of the same name (with `_`).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML config file (see packaging/ember.toml.example).
    #[arg(long)]
    config: Option<PathBuf>,
    /// GGUF model file, or a model name from the registry (models/*.toml).
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// The model id served to clients (default: the registry name or the file's stem).
    #[arg(long)]
    model_name: Option<String>,
    /// Chat template file overriding the model's.
    #[arg(long)]
    template_file: Option<PathBuf>,
    /// Unix socket path (default: $XDG_RUNTIME_DIR/ember/emberd.sock, else /run/ember/emberd.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Socket permission bits, octal (default 0660).
    #[arg(long, value_parser = parse_mode)]
    socket_mode: Option<u32>,
    /// Group owning the socket (name or gid).
    #[arg(long)]
    socket_group: Option<GroupSpec>,
    /// Peer uid allowed on the socket (repeatable; default: anyone who can open it).
    #[arg(long = "allow-uid")]
    allow_uids: Vec<u32>,
    /// Peer gid allowed on the socket (repeatable).
    #[arg(long = "allow-gid")]
    allow_gids: Vec<u32>,
    /// Also serve on TCP at this address (off by default), e.g. 127.0.0.1:11434.
    #[arg(long)]
    listen_tcp: Option<SocketAddr>,
    /// Bearer key required on the Unix socket.
    #[arg(long)]
    api_key: Option<String>,
    /// File holding the Unix socket's key.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Bearer key required on the TCP listener.
    #[arg(long)]
    tcp_api_key: Option<String>,
    /// File holding the TCP listener's key.
    #[arg(long)]
    tcp_api_key_file: Option<PathBuf>,
    /// Compute threads (default: the board's, else one per physical core).
    #[arg(long)]
    threads: Option<usize>,
    /// Board profile: a name (rpi4, rpi5, jetson-orin-nano, x86-box, gpu-gateway), a TOML path,
    /// or auto (default).
    #[arg(long)]
    board: Option<String>,
    /// Folder of user board profiles, searched before the built-in ones.
    #[arg(long)]
    boards_dir: Option<PathBuf>,
    /// Memory ember may use (weights + KV cache + scratch), e.g. 1.5GiB.
    #[arg(long, value_parser = parse_bytes)]
    memory_budget: Option<u64>,
    /// Context per slot, in tokens.
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Sequences generated at once.
    #[arg(long)]
    slots: Option<usize>,
    /// Requests that may wait for a slot; more get 503 + Retry-After.
    #[arg(long)]
    queue: Option<usize>,
    /// Prompt tokens per prefill step (cancellation is checked between steps).
    #[arg(long)]
    prefill_chunk: Option<usize>,
    /// Seconds a request may take in all.
    #[arg(long)]
    request_timeout: Option<u64>,
    /// Compute backend.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Keep a mixture-of-experts model's routed experts on the CPU (mmap'd) and the rest on the
    /// GPU backend, like llama.cpp's --cpu-moe: for GPUs smaller than the model.
    #[arg(long)]
    cpu_moe: bool,
    /// KV cache element type.
    #[arg(long, value_enum)]
    kv_dtype: Option<KvDtype>,
    /// Log line format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long = "grace")]
    grace_period: Option<u64>,
    /// Largest request body, in bytes.
    #[arg(long, value_parser = parse_bytes)]
    max_body_bytes: Option<u64>,
    /// Do not reuse cached prompt prefixes.
    #[arg(long)]
    no_prefix_reuse: bool,
    /// MQTT broker: mqtt://[user[:password]@]HOST[:PORT] or mqtts://… (turns the MQTT front on).
    #[arg(long, help_heading = "MQTT")]
    mqtt_url: Option<String>,
    /// This daemon's name in MQTT topics (ember/<node>/…); default: the host name.
    #[arg(long, help_heading = "MQTT")]
    node: Option<String>,
    /// Also take fleet requests from the shared subscription $share/<group>/ember/request.
    #[arg(long, help_heading = "MQTT")]
    mqtt_group: Option<String>,
    /// MQTT client id (default emberd-<node>).
    #[arg(long, help_heading = "MQTT")]
    mqtt_client_id: Option<String>,
    /// MQTT user name.
    #[arg(long, help_heading = "MQTT")]
    mqtt_username: Option<String>,
    /// File holding the MQTT password.
    #[arg(long, help_heading = "MQTT")]
    mqtt_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) for mqtts:// (default: the system's).
    #[arg(long, help_heading = "MQTT")]
    mqtt_ca: Option<PathBuf>,
    /// PEM client certificate for mqtts://.
    #[arg(long, help_heading = "MQTT")]
    mqtt_client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, help_heading = "MQTT")]
    mqtt_client_key: Option<PathBuf>,
    /// Largest MQTT request payload (default 256KiB); bigger ones get a too_large reply.
    #[arg(long, value_parser = parse_bytes, help_heading = "MQTT")]
    mqtt_max_payload: Option<u64>,
    /// Publish Home Assistant MQTT discovery messages.
    #[arg(long, help_heading = "MQTT")]
    mqtt_discovery: bool,
    /// Home Assistant's discovery prefix (default homeassistant).
    #[arg(long, help_heading = "MQTT")]
    mqtt_discovery_prefix: Option<String>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal mode like 0660"))
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>()
        .map(|b| b.0)
        .map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The flags as a config layer (unset flags are `None`).
    fn as_config(&self) -> ServeConfig {
        let nonempty = |v: &Vec<u32>| (!v.is_empty()).then(|| v.clone());
        ServeConfig {
            model: self.model.clone(),
            model_name: self.model_name.clone(),
            template_file: self.template_file.clone(),
            socket: self.socket.clone(),
            socket_mode: self.socket_mode.map(SocketMode),
            socket_group: self.socket_group.clone(),
            allow_uids: nonempty(&self.allow_uids),
            allow_gids: nonempty(&self.allow_gids),
            tcp_listen: self.listen_tcp,
            api_key: self.api_key.clone(),
            api_key_file: self.api_key_file.clone(),
            tcp_api_key: self.tcp_api_key.clone(),
            tcp_api_key_file: self.tcp_api_key_file.clone(),
            threads: self.threads,
            board: self.board.clone(),
            boards_dir: self.boards_dir.clone(),
            memory_budget: self.memory_budget.map(ByteSize),
            ctx_size: self.ctx_size,
            slots: self.slots,
            queue: self.queue,
            prefill_chunk: self.prefill_chunk,
            request_timeout: self.request_timeout,
            backend: self.backend,
            cpu_moe: self.cpu_moe.then_some(true),
            kv_dtype: self.kv_dtype,
            log_format: self.log_format,
            grace_period: self.grace_period,
            max_body_bytes: self.max_body_bytes.map(ByteSize),
            mqtt: Some(mqtt::MqttConfig {
                url: self.mqtt_url.clone(),
                node: self.node.clone(),
                group: self.mqtt_group.clone(),
                client_id: self.mqtt_client_id.clone(),
                username: self.mqtt_username.clone(),
                password: None,
                password_file: self.mqtt_password_file.clone(),
                ca_file: self.mqtt_ca.clone(),
                client_cert: self.mqtt_client_cert.clone(),
                client_key: self.mqtt_client_key.clone(),
                max_payload: self.mqtt_max_payload.map(ByteSize),
                discovery: self.mqtt_discovery.then_some(true),
                discovery_prefix: self.mqtt_discovery_prefix.clone(),
                keep_alive: None,
                session_expiry: None,
            }),
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs) -> Result<()> {
    // Logging before anything else, in the format the settings ask for: resolve first, log after.
    let resolved = config::settings(&args.as_config(), args.config.as_deref());
    let format = match &resolved {
        Ok((s, _)) => s.log_format,
        Err(_) => LogFormat::Text,
    };
    crate::init_tracing("info", format == LogFormat::Json);
    let (settings, choice) = resolved?;
    tracing::info!("{}", choice.summary);
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    if let Some(m) = &settings.mqtt {
        mqtt::check(m)?;
    }
    let threads = backend::init_threads(settings.threads)?;
    let device = backend::device(settings.backend)?;
    if settings.kv_dtype == KvDtype::F32 && settings.backend == Backend::Flex {
        bail!(
            "kv_dtype f32 is not available on the CPU backend (its KV cache is f16, as llama.cpp's)"
        );
    }

    // The model file and the memory admission come before the socket: a daemon that cannot run
    // this model must not take the socket from one that can.
    let path = match &settings.model {
        ModelSpec::Path(p) => p.clone(),
        ModelSpec::Registry(name) => match crate::fetch::registry_model(Some(name)) {
            Ok(p) => p,
            // The board's suggestion may not be fetchable (not pinned yet); the registry's
            // default always is. A model the user named is never swapped.
            Err(e) if *name == choice.board.default_model => {
                tracing::warn!("{e:#}; using the registry's default model instead");
                crate::fetch::registry_model(None)?
            }
            Err(e) => return Err(e),
        },
    };
    let file = model::open(&path)?;
    let cfg = ember_model::ModelConfig::from_gguf(file.metadata())
        .with_context(|| format!("{}", path.display()))?;
    let n_ctx = settings.ctx_size.min(cfg.n_ctx_train.max(2));
    if n_ctx < settings.ctx_size {
        tracing::info!(
            "ctx_size {} is over the model's training context; using {n_ctx}",
            settings.ctx_size
        );
    }
    let estimate = admission::estimate(
        &file,
        &cfg,
        admission::Shape {
            n_ctx,
            slots: settings.slots,
            kv_dtype: settings.kv_dtype,
            prefill_chunk: settings.prefill_chunk,
        },
    );
    admission::admit(&estimate, settings.memory_budget)
        .map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    tracing::info!(
        "memory: {estimate} within the budget of {}",
        config::human_bytes(settings.memory_budget)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("emberd-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let load = LoadJob {
        file,
        path,
        device,
        settings: settings.clone(),
        n_ctx,
        prefix_reuse: !args.no_prefix_reuse,
    };
    let result = rt.block_on(serve(settings, load, threads));
    // The engine thread and the pool do not hold the runtime; nothing else to wait for.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// What the loader thread needs.
struct LoadJob {
    file: ember_gguf::GgufFile,
    path: PathBuf,
    device: burn::tensor::Device,
    settings: Settings,
    n_ctx: usize,
    prefix_reuse: bool,
}

impl LoadJob {
    /// Loads the weights, tokenizer and template, and starts the engine thread.
    fn run(self) -> Result<(http::Loaded, EngineThread)> {
        let t0 = Instant::now();
        let s = &self.settings;
        let what = self.path.display().to_string();
        let tok = Arc::new(model::tokenizer(&self.file)?);
        let template = match model::chat_template(Some(&self.file), s.template_file.as_deref()) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) if s.template_file.is_some() => return Err(e),
            Err(e) => {
                tracing::warn!("{e:#}: chat routes fall back to ChatML, as llama-server does");
                None
            }
        };
        let m = backend::load_model(&self.file, &self.device, s.backend, s.cpu_moe, &what)?;
        let info = ModelInfo::of(&self.file, &self.path);
        let (engine, thread) = ember_engine::service::spawn(
            m,
            Arc::clone(&tok),
            EngineConfig {
                slots: s.slots,
                n_ctx: self.n_ctx,
                queue: s.queue,
                prefill_chunk: s.prefill_chunk,
                prefix_reuse: self.prefix_reuse,
            },
        )?;
        tracing::info!(
            "loaded {what} in {:.1} s: {} slot(s) of {} tokens, queue {}",
            t0.elapsed().as_secs_f64(),
            s.slots,
            self.n_ctx,
            s.queue
        );
        let reasoning = template
            .as_ref()
            .is_some_and(|t| t.source().contains("<think>"));
        Ok((
            http::Loaded {
                engine,
                tokenizer: tok,
                template,
                model_id: s.model_name.clone(),
                aliases: Vec::new(),
                model_path: self.path,
                model_bytes: info.bytes,
                family: info.family,
                quant: info.quant,
                n_params: info.n_params,
                reasoning,
                constraints: OnceLock::new(),
            },
            thread,
        ))
    }
}

async fn serve(settings: Settings, load: LoadJob, threads: usize) -> Result<()> {
    let s = &settings;
    let group = s
        .socket
        .group
        .as_ref()
        .map(socket::resolve_group)
        .transpose()?;
    let (unix, guard) = socket::bind_unix(&s.socket.path, s.socket.mode, group).await?;
    let tcp = match &s.tcp {
        Some((addr, _)) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let state = http::AppState {
        loaded: Arc::new(OnceLock::new()),
        metrics: Arc::new(http::Metrics::new()),
        limits: http::Limits {
            max_body_bytes: s.max_body_bytes,
            request_timeout: Some(s.request_timeout),
        },
        started: Instant::now(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let key = |k: &Option<config::Secret>| k.as_ref().map(|k| k.expose().to_owned());
    let unix_app = http::router(state.clone(), key(&s.socket.api_key));
    let unix_server = tokio::spawn(
        axum::serve(
            socket::PeerCheckedListener::new(unix, s.socket.allow.clone()),
            unix_app.into_make_service_with_connect_info::<socket::Peer>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future(),
    );
    let tcp_server = tcp.map(|l| {
        let app = http::router(state.clone(), s.tcp.as_ref().and_then(|(_, k)| key(k)));
        if let Ok(a) = l.local_addr() {
            tracing::info!("listening on tcp {a}");
        }
        tokio::spawn(
            axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        )
    });

    // Load while the listeners answer 503 on /health; a signal during loading stops it all.
    notify::status(&format!("loading {}", load.path.display()));
    // Loading a large model from an SD card can outlast systemd's start timeout.
    notify::extend_timeout(Duration::from_secs(300));
    let mut loading = tokio::task::spawn_blocking(move || load.run());
    let mut signals = Signals::new()?;
    let (engine, thread): (EngineHandle, EngineThread) = tokio::select! {
        r = &mut loading => {
            let (loaded, thread) = r.context("the loader panicked")??;
            let engine = loaded.engine.clone();
            let _ = state.loaded.set(loaded);
            (engine, thread)
        }
        sig = signals.recv() => {
            tracing::info!("{sig} while loading: exiting");
            let _ = stop_tx.send(true);
            drop(guard);
            return Ok(());
        }
    };
    // MQTT starts once the model is in: `online` means requests will be answered.
    let mqtt = match settings.mqtt.clone() {
        Some(m) => Some(mqtt::MqttFront::start(m, state.clone())?),
        None => None,
    };
    notify::ready();
    notify::status(&format!("serving {}", settings.model_name));
    let probe = engine.clone();
    notify::spawn_watchdog(move || probe.is_alive());
    tracing::info!("ready ({threads} compute threads)");

    let sig = signals.recv().await;
    tracing::info!(
        "{sig}: draining (grace {} s)",
        settings.grace_period.as_secs()
    );
    notify::stopping();
    engine.close();
    let _ = stop_tx.send(true);
    // The socket file goes now: new clients get "no such file" at once instead of queueing.
    drop(guard);
    let mqtt_drained = mqtt.as_ref().map(mqtt::MqttFront::drained);
    let drain = async {
        let _ = unix_server.await;
        if let Some(t) = tcp_server {
            let _ = t.await;
        }
        if let Some(d) = mqtt_drained {
            d.await;
        }
    };
    tokio::pin!(drain);
    let in_time = tokio::select! {
        () = &mut drain => true,
        () = tokio::time::sleep(settings.grace_period) => false,
        sig = signals.recv() => {
            tracing::warn!("second {sig}: cancelling in-flight requests");
            false
        }
    };
    if !in_time {
        tracing::warn!("grace period over: cancelling in-flight requests");
        engine.cancel_all();
        // Cancelled streams end at once; give their connections a moment to write the end.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut drain).await;
    }
    if let Some(m) = mqtt {
        m.close().await;
    }
    drop(engine);
    drop(state);
    // The engine thread ends once it is closed and idle.
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// What `/v1/models` and `/api/tags` say about the model.
struct ModelInfo {
    bytes: u64,
    family: String,
    quant: String,
    n_params: u64,
}

impl ModelInfo {
    fn of(file: &ember_gguf::GgufFile, path: &std::path::Path) -> Self {
        let meta = file.metadata();
        let family = meta
            .opt("general.architecture", ember_gguf::Metadata::get_str)
            .ok()
            .flatten()
            .unwrap_or("unknown")
            .to_owned();
        // The quantization is the type holding most of the weight bytes (Q4_K_M files mix
        // Q4_K and Q6_K; the name of the mix is not stored reliably).
        let mut by_type: Vec<(ember_quant::GgmlType, u64)> = Vec::new();
        let mut n_params = 0u64;
        for t in file.tensors() {
            n_params = n_params.saturating_add(t.n_elements());
            let bytes = t.ggml_type().bytes_for(t.n_elements()).unwrap_or(0);
            match by_type.iter_mut().find(|(ty, _)| *ty == t.ggml_type()) {
                Some((_, b)) => *b += bytes,
                None => by_type.push((t.ggml_type(), bytes)),
            }
        }
        let quant = by_type
            .iter()
            .max_by_key(|(_, b)| *b)
            .map_or_else(|| "unknown".to_owned(), |(ty, _)| ty.name().to_owned());
        ModelInfo {
            bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
            family,
            quant,
            n_params,
        }
    }
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
