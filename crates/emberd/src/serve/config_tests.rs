//! Tests of `config.rs`: parsing, precedence, key files, defaults.
use super::*;

fn board() -> Board {
    boards::find("rpi5", None).expect("rpi5")
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<ServeConfig> {
    Ok(toml::from_str(text)?)
}

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../../../packaging/ember.toml.example");
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|r| r.contains(" = ") || r.starts_with('['))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    parse(text).expect("example as shipped");
    let all = parse(&uncommented).expect("example with every key uncommented");
    assert_eq!(all.socket_mode, Some(SocketMode(0o660)));
    assert_eq!(all.memory_budget, Some(ByteSize(3 << 30)));
    let mqtt = all.mqtt.expect("[mqtt] table");
    assert_eq!(mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
    assert_eq!(mqtt.max_payload, Some(ByteSize(256 << 10)));
}

#[test]
fn values_take_their_written_forms() {
    let c = parse(
        "socket_mode = 0o640\nsocket_group = \"ember\"\nmemory_budget = \"1.5GiB\"\n\
         max_body_bytes = 4096\nbackend = \"WGPU\"\nkv_dtype = \"f32\"\ntcp_listen = \"127.0.0.1:11434\"",
    )
    .expect("parse");
    assert_eq!(c.socket_mode, Some(SocketMode(0o640)));
    assert_eq!(c.socket_group, Some(GroupSpec::Name("ember".into())));
    assert_eq!(c.memory_budget, Some(ByteSize(3 << 29)));
    assert_eq!(c.max_body_bytes, Some(ByteSize(4096)));
    assert_eq!(c.backend, Some(Backend::Wgpu));
    assert_eq!(c.kv_dtype, Some(KvDtype::F32));
    let c = parse("socket_mode = \"0660\"\nsocket_group = 990").expect("parse");
    assert_eq!(c.socket_mode, Some(SocketMode(0o660)));
    assert_eq!(c.socket_group, Some(GroupSpec::Gid(990)));
    assert_eq!("800MB".parse(), Ok(ByteSize(800_000_000)));
    assert_eq!("2g".parse(), Ok(ByteSize(2 << 30)));
    assert!("1.5 parsecs".parse::<ByteSize>().is_err());
    assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    assert_eq!(human_bytes(512), "512 B");
}

#[test]
fn errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ember.toml");
    for (text, key) in [
        ("modle = \"x\"", "modle"),
        ("slots = \"two\"", "slots"),
        ("memory_budget = \"lots\"", "memory_budget"),
        ("socket_mode = 0o7777", "socket_mode"),
        ("backend = \"cuda\"", "backend"),
        ("tcp_listen = \"localhost\"", "tcp_listen"),
    ] {
        std::fs::write(&path, text).expect("write");
        let msg = format!("{:#}", load(&path).expect_err(text));
        assert!(
            msg.contains("ember.toml") && msg.contains(key),
            "{text}: {msg}"
        );
    }
    let msg = format!(
        "{:#}",
        load(&dir.path().join("missing.toml")).expect_err("missing")
    );
    assert!(
        msg.contains("cannot read config") && msg.contains("missing.toml"),
        "{msg}"
    );
}

#[test]
fn relative_paths_in_a_file_are_relative_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ember.toml");
    std::fs::write(
        &path,
        "model = \"models/m.gguf\"\napi_key_file = \"key\"\nboard = \"rpi5\"\n\
         [mqtt]\nurl = \"mqtts://h\"\nca_file = \"ca.pem\"",
    )
    .expect("write");
    let c = load(&path).expect("load");
    assert_eq!(
        c.mqtt.as_ref().and_then(|m| m.ca_file.clone()),
        Some(dir.path().join("ca.pem"))
    );
    assert_eq!(
        c.model,
        Some(
            dir.path()
                .join("models/m.gguf")
                .to_string_lossy()
                .into_owned()
        )
    );
    assert_eq!(c.api_key_file, Some(dir.path().join("key")));
    assert_eq!(
        c.board.as_deref(),
        Some("rpi5"),
        "a board name is not a path"
    );
}

#[test]
fn flags_override_the_file_which_overrides_the_board() {
    let file = parse("ctx_size = 1024\nslots = 3\nmodel = \"qwen2.5-0.5b-instruct-q4_k_m\"")
        .expect("parse");
    let flags = ServeConfig {
        ctx_size: Some(512),
        ..ServeConfig::default()
    };
    let s = resolve(&flags, Some(&file), &board(), &no_env).expect("resolve");
    assert_eq!(s.ctx_size, 512, "flag");
    assert_eq!(s.slots, 3, "file");
    assert_eq!(s.kv_dtype, KvDtype::F16, "board");
    assert_eq!(s.memory_budget, board().memory_budget, "board");
    assert_eq!(
        s.model,
        ModelSpec::Registry("qwen2.5-0.5b-instruct-q4_k_m".into())
    );
    assert_eq!(s.model_name, "qwen2.5-0.5b-instruct-q4_k_m");
    assert_eq!(s.queue, defaults::QUEUE, "built-in");
    assert_eq!(s.socket.mode, 0o660);
    assert_eq!(s.grace_period, Duration::from_secs(30));
    assert!(s.tcp.is_none() && s.socket.api_key.is_none() && s.warnings.is_empty());

    let s = resolve(&ServeConfig::default(), None, &board(), &no_env).expect("defaults");
    assert_eq!(s.model, ModelSpec::Registry(board().default_model));
    assert_eq!(s.ctx_size, board().max_ctx);
    let flags = ServeConfig {
        model: Some("/srv/models/Qwen2.5-1.5B.Q4_K_M.gguf".into()),
        ..ServeConfig::default()
    };
    let s = resolve(&flags, None, &board(), &no_env).expect("path");
    assert_eq!(s.model_name, "Qwen2.5-1.5B.Q4_K_M");
}

#[test]
fn the_default_socket_follows_systemd_then_xdg() {
    let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| "/run/user/1000".to_owned());
    assert_eq!(
        default_socket_path(&env),
        Path::new("/run/user/1000/ember/emberd.sock")
    );
    let env = |k: &str| match k {
        "RUNTIME_DIRECTORY" => Some("/run/ember:/run/other".to_owned()),
        _ => Some("/run/user/0".to_owned()),
    };
    assert_eq!(
        default_socket_path(&env),
        Path::new("/run/ember/emberd.sock")
    );
    assert_eq!(
        default_socket_path(&no_env),
        Path::new("/run/ember/emberd.sock")
    );
}

#[test]
fn keys_come_inline_or_from_files_and_tcp_needs_one_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, "  s3cret\n").expect("write");
    let file = ServeConfig {
        api_key_file: Some(key.clone()),
        tcp_listen: Some("0.0.0.0:11434".parse().expect("addr")),
        tcp_api_key: Some("tcp-key".into()),
        ..ServeConfig::default()
    };
    let s = resolve(&ServeConfig::default(), Some(&file), &board(), &no_env).expect("keys");
    assert_eq!(
        s.socket.api_key.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    let (_, tcp_key) = s.tcp.as_ref().expect("tcp");
    assert!(tcp_key.as_ref().is_some_and(|k| k.expose() == "tcp-key"));
    assert!(!format!("{s:?}").contains("s3cret"), "Debug hides secrets");

    let open = ServeConfig {
        tcp_api_key: None,
        ..file.clone()
    };
    let err = resolve(&ServeConfig::default(), Some(&open), &board(), &no_env).expect_err("open");
    assert!(format!("{err:#}").contains("tcp_api_key"), "{err:#}");
    let local = ServeConfig {
        tcp_listen: Some("127.0.0.1:11434".parse().expect("addr")),
        ..open
    };
    let s = resolve(&ServeConfig::default(), Some(&local), &board(), &no_env).expect("loopback");
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);

    let both = ServeConfig {
        api_key: Some("x".into()),
        ..file
    };
    let err = resolve(&ServeConfig::default(), Some(&both), &board(), &no_env).expect_err("both");
    assert!(format!("{err:#}").contains("not both"), "{err:#}");
    std::fs::write(&key, "\n").expect("write");
    let flags = ServeConfig {
        api_key_file: Some(key),
        ..ServeConfig::default()
    };
    let err = resolve(&flags, None, &board(), &no_env).expect_err("empty key");
    assert!(format!("{err:#}").contains("api_key is empty"), "{err:#}");
}

#[test]
fn zero_counts_are_refused() {
    let flags = ServeConfig {
        slots: Some(0),
        ..ServeConfig::default()
    };
    let err = resolve(&flags, None, &board(), &no_env).expect_err("slots 0");
    assert!(
        format!("{err:#}").contains("slots must be at least 1"),
        "{err:#}"
    );
}
