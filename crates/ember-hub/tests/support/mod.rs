//! A minimal HTTP/1.1 server on 127.0.0.1 for the fetch tests: fixed routes, `Range` support,
//! and a log of every request it received.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the server answers on a path.
#[derive(Debug, Clone)]
pub enum Route {
    /// 200 with the bytes, or 206/416 for a `Range: bytes=N-` request.
    File(Vec<u8>),
    /// 200 with the bytes, ignoring any `Range` header.
    IgnoresRange(Vec<u8>),
    /// The first time: headers for all the bytes but only the first `at`, then the connection
    /// closes. Afterwards: [`Route::File`].
    CutOnce { body: Vec<u8>, at: usize },
    /// 302 to another path on this server.
    Redirect(String),
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub user_agent: Option<String>,
    pub accept: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, Route>,
    log: Vec<Request>,
}

/// The server; it runs until the test process ends.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                // A client that misbehaves only fails its own test.
                let _ = stream.map(|s| handle(s, &shared));
            }
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), route);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }
}

/// A URL on which nothing listens.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/m.gguf", listener.local_addr().unwrap())
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let range = headers.get("range").cloned();

    let mut state = state.lock().unwrap();
    let route = state.routes.get(&path).cloned();
    let (status, extra, body, send) = respond(route.as_ref(), range.as_deref());
    if let Some(Route::CutOnce { body, .. }) = &route {
        let body = body.clone();
        state.routes.insert(path.clone(), Route::File(body));
    }
    state.log.push(Request {
        path,
        range,
        user_agent: headers.get("user-agent").cloned(),
        accept: headers.get("accept").cloned(),
        status,
    });
    drop(state);

    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )?;
    out.write_all(&body[..send])?;
    out.flush()
}

/// (status, extra header lines, body, how many body bytes to really send).
fn respond(route: Option<&Route>, range: Option<&str>) -> (u16, String, Vec<u8>, usize) {
    let whole = |status, body: &[u8]| (status, String::new(), body.to_vec(), body.len());
    match route {
        None => whole(404, b"not found"),
        Some(Route::Redirect(to)) => (302, format!("Location: {to}\r\n"), Vec::new(), 0),
        Some(Route::IgnoresRange(body)) => whole(200, body),
        Some(Route::CutOnce { body, at }) => (200, String::new(), body.clone(), *at),
        Some(Route::File(body)) => {
            let from = range
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            match from {
                None => whole(200, body),
                Some(from) if from >= body.len() => (
                    416,
                    format!("Content-Range: bytes */{}\r\n", body.len()),
                    Vec::new(),
                    0,
                ),
                Some(from) => {
                    let rest = body[from..].to_vec();
                    let n = rest.len();
                    let header = format!(
                        "Content-Range: bytes {from}-{}/{}\r\n",
                        body.len() - 1,
                        body.len()
                    );
                    (206, header, rest, n)
                }
            }
        }
    }
}
