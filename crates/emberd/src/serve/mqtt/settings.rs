//! The MQTT front's settings: the `[mqtt]` table of the config file, the `--mqtt-*` flags, and
//! their resolution (broker URL, node name, TLS files, limits) into [`MqttSettings`].

use crate::serve::admission::ByteSize;
use crate::serve::config::Secret;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `[mqtt]` table; every key optional so that flags can be layered over it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://[user[:password]@]host[:port]` (1883) or `mqtts://…` (8883, TLS).
    pub url: Option<String>,
    /// This daemon's name in topics (`ember/<node>/…`); default: the host name.
    pub node: Option<String>,
    /// Shared-subscription group: also take fleet requests from `$share/<group>/ember/request`.
    pub group: Option<String>,
    /// MQTT client id; default `emberd-<node>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (trimmed).
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) for `mqtts://`; default: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and key, for brokers that require client certificates.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Largest request payload accepted; bigger ones get a `too_large` error reply.
    pub max_payload: Option<ByteSize>,
    /// Publish Home Assistant MQTT discovery messages.
    pub discovery: Option<bool>,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: Option<String>,
    /// Keep-alive interval, seconds.
    pub keep_alive: Option<u64>,
    /// Seconds the broker keeps this daemon's session (subscriptions, queued requests) while
    /// it is away.
    pub session_expiry: Option<u64>,
}

impl MqttConfig {
    /// Rebases relative paths on the config file's folder.
    pub fn rebase(&mut self, base: &Path) {
        for p in [
            &mut self.password_file,
            &mut self.ca_file,
            &mut self.client_cert,
            &mut self.client_key,
        ] {
            if let Some(q) = p.as_mut().filter(|q| q.is_relative()) {
                *q = base.join(&*q);
            }
        }
    }
}

/// Built-in defaults.
pub mod defaults {
    /// 256 KiB: a long chat history is tens of KiB; MCUs send a few hundred bytes.
    pub const MAX_PAYLOAD: u64 = 256 << 10;
    pub const DISCOVERY_PREFIX: &str = "homeassistant";
    pub const KEEP_ALIVE_S: u64 = 30;
    /// Long enough to ride out a daemon restart or a broker failover.
    pub const SESSION_EXPIRY_S: u64 = 600;
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BrokerUrl {
    /// Parses `mqtt://`, `tcp://` (plain) or `mqtts://`, `ssl://` (TLS) URLs, with optional
    /// `user[:password]@` and `:port`; IPv6 hosts in brackets.
    pub fn parse(s: &str) -> Result<Self> {
        let (scheme, rest) = s
            .split_once("://")
            .with_context(|| format!("broker URL {s:?} needs a scheme: mqtt://host:port"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            other => bail!("broker URL {s:?}: unknown scheme {other:?} (mqtt:// or mqtts://)"),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            bail!("broker URL {s:?}: a path or query is not supported");
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(a.to_owned()), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .with_context(|| format!("broker URL {s:?}: unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            bail!("broker URL {s:?} has no host");
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("broker URL {s:?}: bad port {p:?}"))?,
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
            username,
            password,
        })
    }
}

/// TLS files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The MQTT front, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// `Some` for `mqtts://`.
    pub tls: Option<TlsFiles>,
    pub node: String,
    pub group: Option<String>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub max_payload: usize,
    /// The discovery prefix, when Home Assistant discovery is on.
    pub discovery: Option<String>,
    pub keep_alive: Duration,
    pub session_expiry: u32,
}

impl MqttSettings {
    /// `ember/<node>`.
    pub fn base(&self) -> String {
        format!("ember/{}", self.node)
    }
}

/// Resolves flags over file; `None` when no broker URL is set (the front is off).
pub fn resolve(
    flags: &MqttConfig,
    file: Option<&MqttConfig>,
    hostname: &dyn Fn() -> Option<String>,
) -> Result<Option<MqttSettings>> {
    let empty = MqttConfig::default();
    let file = file.unwrap_or(&empty);
    macro_rules! pick {
        ($f:ident) => {
            flags.$f.clone().or_else(|| file.$f.clone())
        };
    }
    let Some(url) = pick!(url) else {
        let set: Vec<&str> = [
            ("node", pick!(node).is_some()),
            ("group", pick!(group).is_some()),
            ("discovery", pick!(discovery).unwrap_or(false)),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        if !set.is_empty() {
            bail!(
                "mqtt {} set but no broker: add --mqtt-url mqtt://HOST:PORT (or url in [mqtt])",
                set.join(", ")
            );
        }
        return Ok(None);
    };
    let url = BrokerUrl::parse(&url)?;
    let node = match pick!(node) {
        Some(n) => {
            check_name("node", &n)?;
            n
        }
        None => {
            let h = hostname().unwrap_or_default();
            let n: String = h
                .chars()
                .map(|c| if name_char(c) { c } else { '-' })
                .collect();
            let n = n.trim_matches('-').to_owned();
            if n.is_empty() { "ember".to_owned() } else { n }
        }
    };
    let group = pick!(group);
    if let Some(g) = &group {
        check_name("group", g)?;
    }
    let client_id = pick!(client_id).unwrap_or_else(|| format!("emberd-{node}"));
    if client_id.is_empty() || client_id.len() > 128 {
        bail!("mqtt client_id must be 1 to 128 bytes");
    }
    let username = pick!(username).or(url.username);
    let inline = pick!(password).or(url.password);
    let password = match (inline, pick!(password_file)) {
        (Some(_), Some(_)) => bail!("give mqtt password or password_file, not both"),
        (Some(p), None) => Some(Secret::new(p)),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read mqtt password_file {}", f.display()))?;
            Some(Secret::new(text.trim().to_owned()))
        }
        (None, None) => None,
    };
    if password.is_some() && username.is_none() {
        bail!("an mqtt password needs a username");
    }
    let files = TlsFiles {
        ca: pick!(ca_file),
        client_cert: pick!(client_cert),
        client_key: pick!(client_key),
    };
    if files.client_cert.is_some() != files.client_key.is_some() {
        bail!("mqtt client_cert and client_key go together");
    }
    let tls = if url.tls {
        Some(files)
    } else {
        if files != TlsFiles::default() {
            bail!("mqtt TLS files are set but the broker URL is not mqtts://");
        }
        None
    };
    let max_payload = pick!(max_payload).map_or(defaults::MAX_PAYLOAD, |b| b.0);
    if max_payload == 0 {
        bail!("mqtt max_payload must be at least 1");
    }
    let max_payload = usize::try_from(max_payload.min(256 << 20)).unwrap_or(256 << 20);
    let discovery = pick!(discovery)
        .unwrap_or(false)
        .then(|| pick!(discovery_prefix).unwrap_or_else(|| defaults::DISCOVERY_PREFIX.to_owned()));
    if let Some(p) = &discovery
        && (p.is_empty() || !ember_proto::valid_publish_topic(p))
    {
        bail!("mqtt discovery_prefix {p:?} is not a valid topic");
    }
    let keep_alive = pick!(keep_alive).unwrap_or(defaults::KEEP_ALIVE_S);
    if !(5..=3600).contains(&keep_alive) {
        bail!("mqtt keep_alive must be 5 to 3600 seconds");
    }
    let session_expiry = pick!(session_expiry).unwrap_or(defaults::SESSION_EXPIRY_S);
    let session_expiry = u32::try_from(session_expiry).context("mqtt session_expiry too large")?;
    Ok(Some(MqttSettings {
        host: url.host,
        port: url.port,
        tls,
        node,
        group,
        client_id,
        username,
        password,
        max_payload,
        discovery,
        keep_alive: Duration::from_secs(keep_alive),
        session_expiry,
    }))
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Node and group names go into topics: letters, digits, `-` and `_` only.
fn check_name(key: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > 64 || !v.chars().all(name_char) {
        bail!("mqtt {key} {v:?} must be 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// This machine's host name (the default node name).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The rustls client configuration for `mqtts://`: ring's crypto (the provider ember's HTTPS
/// fetcher uses too), the CA file or the system's roots, an optional client certificate.
pub fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            let certs = read_certs(ca)?;
            if certs.is_empty() {
                bail!("mqtt ca_file {} holds no certificate", ca.display());
            }
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("mqtt ca_file {}", ca.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                bail!("no system CA certificates found for mqtts://; set mqtt ca_file");
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots);
    let config = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            if chain.is_empty() {
                bail!("mqtt client_cert {} holds no certificate", cert.display());
            }
            let pem = std::fs::read(key)
                .with_context(|| format!("cannot read mqtt client_key {}", key.display()))?;
            let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
                .with_context(|| format!("mqtt client_key {}", key.display()))?
                .with_context(|| format!("mqtt client_key {} holds no key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .context("mqtt client certificate")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> BrokerUrl {
        BrokerUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    #[test]
    fn broker_urls() {
        let u = url("mqtt://127.0.0.1:1884");
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 1884));
        let u = url("mqtts://broker.local");
        assert_eq!((u.tls, u.port), (true, 8883));
        assert_eq!(url("mqtt://hub").port, 1883);
        let u = url("mqtt://ha:s3cr:et@[::1]:1999/");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 1999);
        assert_eq!(u.username.as_deref(), Some("ha"));
        assert_eq!(u.password.as_deref(), Some("s3cr:et"));
        for bad in [
            "127.0.0.1:1883",
            "http://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://h/topic",
            "mqtt://[::1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    fn host() -> Option<String> {
        Some("Kitchen Hub.local".into())
    }

    #[test]
    fn resolution() {
        assert_eq!(
            resolve(&MqttConfig::default(), None, &host).ok(),
            Some(None)
        );
        let flags = MqttConfig {
            url: Some("mqtt://localhost".into()),
            ..Default::default()
        };
        let s = resolve(&flags, None, &host)
            .expect("resolves")
            .expect("mqtt on");
        assert_eq!(s.node, "Kitchen-Hub-local");
        assert_eq!(s.client_id, "emberd-Kitchen-Hub-local");
        assert_eq!(s.base(), "ember/Kitchen-Hub-local");
        assert_eq!(s.max_payload, defaults::MAX_PAYLOAD as usize);
        assert!(s.tls.is_none() && s.discovery.is_none());
        let file = MqttConfig {
            url: Some("mqtts://h".into()),
            node: Some("pi".into()),
            discovery: Some(true),
            ..Default::default()
        };
        let s = resolve(&MqttConfig::default(), Some(&file), &host)
            .expect("resolves")
            .expect("mqtt on");
        assert_eq!(s.node, "pi");
        assert_eq!(s.discovery.as_deref(), Some("homeassistant"));
        assert!(s.tls.is_some());
        // Flags win over the file.
        let flags = MqttConfig {
            node: Some("pi5".into()),
            ..Default::default()
        };
        let s = resolve(&flags, Some(&file), &host)
            .expect("resolves")
            .expect("mqtt on");
        assert_eq!(s.node, "pi5");
    }

    #[test]
    fn refusals() {
        let with = |f: MqttConfig| {
            resolve(
                &MqttConfig {
                    url: Some("mqtt://h".into()),
                    ..f
                },
                None,
                &host,
            )
        };
        assert!(
            with(MqttConfig {
                node: Some("a/b".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            with(MqttConfig {
                group: Some("g+".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            with(MqttConfig {
                password: Some("p".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            with(MqttConfig {
                ca_file: Some("/ca.pem".into()),
                ..Default::default()
            })
            .is_err()
        );
        let e = resolve(
            &MqttConfig {
                node: Some("pi".into()),
                ..Default::default()
            },
            None,
            &host,
        )
        .expect_err("node without url");
        assert!(format!("{e}").contains("--mqtt-url"), "{e}");
    }
}
