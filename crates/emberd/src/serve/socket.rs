//! The Unix socket: binding it safely (stale sockets replaced, live daemons and regular files
//! never touched, mode and group set before anyone can connect), removing it at shutdown, and
//! admitting peers by their kernel-reported credentials (`SO_PEERCRED`, unix(7)).
//!
//! The socket is bound under a temporary name in the target folder, given its mode and group,
//! then renamed into place: there is no moment at which the final path accepts connections with
//! the default (umask) permissions — the pattern of systemd's `socket_address_listen` and of
//! Docker's `sockets.NewUnixSocket`, which chmod after bind and so leave that window open.
//! The config types for the socket's mode ([`SocketMode`]) and group ([`GroupSpec`]) live here.

use crate::serve::config::int_or_str;
use anyhow::{Context, Result, bail};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use serde::{Deserialize, Deserializer};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

/// `sun_path` holds 108 bytes including the terminating NUL (unix(7)).
const SUN_PATH_MAX: usize = 107;

/// How long a probe of an existing socket may take before the socket is taken as live.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOMEM…):
/// retrying at once would spin; a second lets connections close and descriptors free up.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Removes the socket file when dropped — only if the path still holds the inode we bound, so a
/// successor daemon's socket is never deleted by a predecessor shutting down late. It holds a
/// duplicate of the listening descriptor: while the guard lives the inode cannot be freed, so
/// its number cannot be reused by a successor's socket and mistaken for ours. Drop it when
/// shutdown begins: new clients then get "no such file" at once, while accepted connections
/// drain undisturbed.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
    _listening: OwnedFd,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("cannot remove socket {}: {e}", self.path.display());
                }
            }
            _ => tracing::debug!(
                "socket {} is no longer ours; left alone",
                self.path.display()
            ),
        }
    }
}

/// Binds a Unix socket at `path` with permission bits `mode` and, when given, group `group`.
/// Must be called inside a tokio runtime. A missing parent folder is created (0750). An existing
/// socket nobody listens on is replaced; one that answers is a running daemon and an error, as
/// is any other kind of file at `path`.
pub async fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<(UnixListener, SocketGuard)> {
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = parent.join(format!(".emberd.{}.tmp", std::process::id()));
    for p in [path, tmp.as_path()] {
        if p.as_os_str().len() > SUN_PATH_MAX {
            bail!(
                "socket path {} is {} bytes; Unix sockets allow {SUN_PATH_MAX}: choose a shorter path",
                p.display(),
                p.as_os_str().len()
            );
        }
    }
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .with_context(|| format!("cannot create socket folder {}", parent.display()))?;
    }

    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot inspect {shown}: {e}"),
        Ok(m) if !m.file_type().is_socket() => {
            bail!(
                "{shown} exists and is not a socket; refusing to replace it (remove it or choose another socket path)"
            )
        }
        Ok(_) => match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!("removing stale socket {shown} (nothing listens on it)");
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove stale socket {shown}"))?;
            }
            Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => {
                bail!("cannot check whether a daemon listens on {shown}: {e}")
            }
            // Connected, a full backlog (EAGAIN) or no answer: someone is listening.
            _ => bail!(
                "another daemon is listening on {shown}; stop it first or choose another socket path"
            ),
        },
    }

    // A leftover temporary socket can only be ours from an earlier run with the same pid.
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&tmp);
    }
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("cannot bind socket {}", tmp.display()))?;
    let setup = (|| -> Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set mode {mode:#o} on {shown}"))?;
        if let Some(gid) = group {
            chown_group(&tmp, gid).with_context(|| {
                format!("cannot give {shown} to group {gid} (is the daemon's user a member of it?)")
            })?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move the socket to {shown}"))
    })();
    if let Err(e) = setup {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("cannot stat {shown}"))?;
    let listening = listener
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("cannot duplicate the descriptor of {shown}"))?;
    let guard = SocketGuard {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        _listening: listening,
    };
    tracing::info!("listening on {shown} (mode {mode:#o})");
    Ok((listener, guard))
}

/// `chown(path, -1, gid)`: the group only.
fn chown_group(path: &Path, gid: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; uid -1 leaves the
    // owner unchanged (chown(2)).
    let rc = unsafe { libc::chown(c.as_ptr(), libc::uid_t::MAX, gid) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The gid of a group given by name or number (names through `getgrnam_r`, so NSS sources such
/// as LDAP are honoured).
pub fn resolve_group(spec: &GroupSpec) -> Result<u32> {
    let name = match spec {
        GroupSpec::Gid(g) => return Ok(*g),
        GroupSpec::Name(n) => n,
    };
    let c = CString::new(name.as_str()).with_context(|| format!("socket_group {name:?}"))?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `group` is plain old data; all-zero (null pointers) is a valid value.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `c` is NUL-terminated, `buf` is writable
        // for `buf.len()` bytes, `grp` and `result` are live locals.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            bail!(
                "cannot look up socket_group {name:?}: {}",
                io::Error::from_raw_os_error(rc)
            );
        }
        if result.is_null() {
            bail!("socket_group {name:?}: no such group");
        }
        return Ok(grp.gr_gid);
    }
}

/// Who is on the other end of a connection (SO_PEERCRED: the credentials at `connect` time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    /// This process's own credentials.
    pub fn current() -> Peer {
        // SAFETY: getuid/getgid have no preconditions and cannot fail (getuid(2)).
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Peer {
            uid,
            gid,
            pid: i32::try_from(std::process::id()).ok(),
        }
    }
}

/// Peers allowed on the socket: a uid in `uids` or a primary gid in `gids`. Both empty: anyone
/// who can open the socket (its mode and group are then the access control). SO_PEERCRED
/// carries only the primary group; to admit a group's members by supplementary membership, make
/// it the `socket_group` with mode 0660 instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl AllowList {
    /// Whether every peer is allowed.
    pub fn is_open(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Whether `peer` is allowed.
    pub fn permits(&self, peer: &Peer) -> bool {
        self.is_open() || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }
}

/// A Unix listener for `axum::serve` that hands over only connections from allowed peers;
/// others are closed before a byte is read. Handlers see the peer through
/// `router.into_make_service_with_connect_info::<Peer>()` and an `ConnectInfo<Peer>` extractor
/// (or `Option<Extension<ConnectInfo<Peer>>>` in a router shared with the TCP listener).
#[derive(Debug)]
pub struct PeerCheckedListener {
    inner: UnixListener,
    allow: AllowList,
}

impl PeerCheckedListener {
    pub fn new(inner: UnixListener, allow: AllowList) -> Self {
        PeerCheckedListener { inner, allow }
    }
}

impl Listener for PeerCheckedListener {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (UnixStream, Peer) {
        loop {
            let stream = match self.inner.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!("accept on the Unix socket failed: {e}; retrying in 1 s");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                },
                Err(e) => {
                    tracing::warn!(
                        "cannot read the peer's credentials: {e}; closing the connection"
                    );
                    continue;
                }
            };
            tracing::debug!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "connection");
            if self.allow.permits(&peer) {
                return (stream, peer);
            }
            tracing::warn!(
                uid = peer.uid,
                gid = peer.gid,
                pid = ?peer.pid,
                "peer not on the allow list (allow_uids/allow_gids); connection closed"
            );
        }
    }

    /// The listening end's identity: this process's credentials.
    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer::current())
    }
}

impl Connected<IncomingStream<'_, PeerCheckedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PeerCheckedListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Errors that concern one connection only (as hyper and axum classify them): accept again now.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Socket permission bits: TOML `0o660` (an integer) or a string of octal digits (`"0660"`,
/// `"660"`, `"0o660"`); flags take the string forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl FromStr for SocketMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim().trim_start_matches("0o");
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(SocketMode)
            .ok_or_else(|| format!("socket mode {s:?} is not octal permission bits like 0660"))
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_str(d, "permission bits (0o660 or \"0660\")", |n| {
            u32::try_from(n)
                .ok()
                .filter(|m| *m <= 0o777)
                .map(SocketMode)
                .ok_or_else(|| format!("socket mode {n:#o} is not within 0o777"))
        })
    }
}

/// A group by name or gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSpec {
    Name(String),
    Gid(u32),
}

impl FromStr for GroupSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("group is empty".into());
        }
        Ok(s.parse()
            .map_or_else(|_| GroupSpec::Name(s.to_owned()), GroupSpec::Gid))
    }
}

impl<'de> Deserialize<'de> for GroupSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_str(d, "a group name or gid", |n| {
            u32::try_from(n)
                .map(GroupSpec::Gid)
                .map_err(|_| format!("{n} is not a gid"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http_get(path: &Path) -> io::Result<String> {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn binds_with_mode_and_group_creating_the_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/ember/emberd.sock");
        let me = Peer::current();
        let (_l, guard) = bind_unix(&path, 0o660, Some(me.gid)).await.expect("bind");
        let m = std::fs::symlink_metadata(&path).expect("stat");
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o777, 0o660);
        assert_eq!(m.gid(), me.gid);
        let parent = std::fs::metadata(path.parent().expect("parent")).expect("stat dir");
        assert_eq!(parent.mode() & 0o777, 0o750);
        assert_eq!(guard.path, path);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("ls")
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary socket left behind");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        assert!(path.exists(), "a dropped listener leaves its file");
        let (_live, _guard) = bind_unix(&path, 0o660, None).await.expect("stale replaced");

        let err = bind_unix(&path, 0o660, None).await.expect_err("live");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("another daemon is listening on") && msg.contains("s.sock"),
            "{msg}"
        );
        assert!(path.exists(), "the live socket is left alone");
    }

    #[tokio::test]
    async fn a_regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("emberd.sock");
        std::fs::write(&path, "precious").expect("write");
        let err = bind_unix(&path, 0o660, None)
            .await
            .expect_err("regular file");
        assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "precious");
    }

    #[tokio::test]
    async fn the_guard_removes_only_its_own_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.sock");
        let (l, guard) = bind_unix(&path, 0o600, None).await.expect("bind");
        drop((l, guard));
        assert!(!path.exists(), "removed on drop");

        let (l, guard) = bind_unix(&path, 0o600, None).await.expect("bind");
        drop(l);
        std::fs::remove_file(&path).expect("rm");
        let _other = std::os::unix::net::UnixListener::bind(&path).expect("successor");
        drop(guard);
        assert!(path.exists(), "a successor's socket is kept");
    }

    #[tokio::test]
    async fn an_overlong_path_is_a_clear_error() {
        let long = PathBuf::from(format!("/tmp/{}/emberd.sock", "d".repeat(120)));
        let err = bind_unix(&long, 0o660, None).await.expect_err("too long");
        assert!(
            format!("{err:#}").contains("Unix sockets allow 107"),
            "{err:#}"
        );
    }

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group(&GroupSpec::Gid(4242)).expect("gid"), 4242);
        assert_eq!(
            resolve_group(&GroupSpec::Name("root".into())).expect("root"),
            0
        );
        let err = resolve_group(&GroupSpec::Name("no-such-group-ember".into())).expect_err("none");
        assert!(format!("{err:#}").contains("no such group"), "{err:#}");
    }

    async fn serve(allow: AllowList) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sock");
        let (l, guard) = bind_unix(&path, 0o660, None).await.expect("bind");
        let app = Router::new().route(
            "/whoami",
            get(|ConnectInfo(p): ConnectInfo<Peer>| async move { format!("uid={}", p.uid) }),
        );
        let listener = PeerCheckedListener::new(l, allow);
        tokio::spawn(async move {
            let _guard = guard;
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await;
        });
        (dir, path)
    }

    #[tokio::test]
    async fn allowed_peers_are_served_with_their_credentials() {
        let me = Peer::current();
        let (_dir, path) = serve(AllowList {
            uids: vec![me.uid],
            gids: vec![],
        })
        .await;
        let answer = http_get(&path).await.expect("request");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&format!("uid={}", me.uid)), "{answer}");
    }

    #[tokio::test]
    async fn peers_not_on_the_list_are_closed_without_an_answer() {
        let me = Peer::current();
        let other = me.uid.wrapping_add(1);
        let (_dir, path) = serve(AllowList {
            uids: vec![other],
            gids: vec![me.gid.wrapping_add(1)],
        })
        .await;
        // The server closes the connection unread: EOF, or a reset if our request was in flight.
        // Twice: the listener keeps accepting after a refusal (a stuck one would time out here).
        for _ in 0..2 {
            let got = tokio::time::timeout(Duration::from_secs(10), http_get(&path)).await;
            match got.expect("closed promptly") {
                Ok(answer) => assert!(answer.is_empty(), "got an answer: {answer}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            }
        }
    }

    #[test]
    fn an_empty_allow_list_admits_everyone() {
        let p = Peer {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        assert!(AllowList::default().permits(&p));
        assert!(
            AllowList {
                uids: vec![],
                gids: vec![1000]
            }
            .permits(&p)
        );
        assert!(
            !AllowList {
                uids: vec![0],
                gids: vec![]
            }
            .permits(&p)
        );
    }
}
