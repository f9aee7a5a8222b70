//! HTTP(S) GETs over ureq/rustls, and the resumable download into a `.part` file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::Duration;

use ureq::Agent;
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::error::{HubError, io_error};
use crate::progress::{self, Meter, Progress, Stage};

/// `User-Agent` of every request.
const USER_AGENT: &str = concat!("ember/", env!("CARGO_PKG_VERSION"));

/// An HTTP client; redirects are followed (up to 10).
pub(crate) struct Http {
    agent: Agent,
}

impl Http {
    pub(crate) fn new() -> Self {
        let config = Agent::config_builder()
            .user_agent(USER_AGENT)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stall, not a slow board: the limit is per read, not for the whole body.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .tls_config(TlsConfig::builder().root_certs(root_certs()).build())
            .build();
        Self {
            agent: config.into(),
        }
    }

    /// GETs `url` with an `Accept` header, from byte `from` on when given. Any status comes back
    /// as `Ok`.
    fn get(
        &self,
        url: &str,
        accept: &str,
        from: Option<u64>,
    ) -> Result<Response<ureq::Body>, HubError> {
        let mut request = self.agent.get(url).header("Accept", accept);
        if let Some(from) = from {
            request = request.header("Range", format!("bytes={from}-"));
        }
        request.call().map_err(|e| HubError::Http {
            url: url.to_owned(),
            message: e.to_string(),
        })
    }

    /// GETs `url` (asking for the media type `accept`) and returns its body as text (at most
    /// ureq's 10 MB text limit).
    pub(crate) fn get_text(&self, url: &str, accept: &str) -> Result<String, HubError> {
        tracing::info!("GET {url}");
        let mut response = self.get(url, accept, None)?;
        check_status(url, response.status().as_u16())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| HubError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            })
    }

    /// Downloads `url` into `part`, continuing a partial `part` left by an earlier attempt with a
    /// `Range` request, then renames it to `dest`. On a transport error `part` stays for the next
    /// attempt. `size_hint` is the progress total when the server gives no length.
    pub(crate) fn download(
        &self,
        url: &str,
        part: &Path,
        dest: &Path,
        label: &str,
        size_hint: Option<u64>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), HubError> {
        let mut have = match fs::metadata(part) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("stat", part)(e)),
        };
        if have > 0 {
            tracing::info!("GET {url} (resuming at {have} bytes)");
        } else {
            tracing::info!("GET {url}");
        }
        let mut response = self.get(url, "*/*", (have > 0).then_some(have))?;
        if response.status().as_u16() == 416 && have > 0 {
            // The partial file is not a prefix the server can continue (e.g. already complete
            // or longer than the file): start over.
            tracing::warn!("{url} cannot resume at {have} bytes; downloading from the start");
            remove_if_exists(part)?;
            have = 0;
            response = self.get(url, "*/*", None)?;
        }
        let status = response.status().as_u16();
        let length = response.body().content_length();
        // `expected`: the full size as the server states it, checked at the end.
        let (append, expected) = match status {
            206 if have > 0 => {
                let range = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == have => {
                        (true, total.or(length.map(|n| n + have)))
                    }
                    _ => {
                        // The server does not continue where the part ends: start over next time.
                        remove_if_exists(part)?;
                        return Err(HubError::BadResponse {
                            url: url.to_owned(),
                            message: format!("206 without a Content-Range starting at byte {have}"),
                        });
                    }
                }
            }
            _ => {
                check_status(url, status)?;
                have = 0;
                (false, length)
            }
        };

        let mut file = if append {
            OpenOptions::new().append(true).open(part)
        } else {
            File::create(part)
        }
        .map_err(io_error("create", part))?;
        let meter = Meter::start(
            progress,
            Stage::Downloading {
                source: label.to_owned(),
            },
            have,
            expected.or(size_hint),
        );
        let mut body = response.body_mut().as_reader();
        let done = progress::copy(
            &mut body,
            &mut file,
            meter,
            |e| HubError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            },
            io_error("write", part),
        )?;
        drop(file);
        if let Some(total) = expected
            && done != total
        {
            return Err(HubError::BadResponse {
                url: url.to_owned(),
                message: format!("the body ended at byte {done} of {total}"),
            });
        }
        fs::rename(part, dest).map_err(io_error("rename", part))
    }
}

/// Trusted roots: the system's store (the one curl, pip and Python use; `$SSL_CERT_FILE` and
/// `$SSL_CERT_DIR` are honoured, and a TLS-inspecting proxy's CA is found there), else Mozilla's
/// roots built into the binary (for boards without a CA bundle).
fn root_certs() -> RootCerts {
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::debug!("loading system root certificates: {error}");
    }
    if system.certs.is_empty() {
        tracing::debug!("no system root certificates; using Mozilla's");
        return RootCerts::WebPki;
    }
    RootCerts::from(
        system
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
    )
}

/// Errors for any status but 200.
fn check_status(url: &str, status: u16) -> Result<(), HubError> {
    if status == 200 {
        Ok(())
    } else {
        Err(HubError::HttpStatus {
            url: url.to_owned(),
            status,
        })
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) -> (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    Some((start.parse().ok()?, total))
}

/// Removes `path`; a file that is not there is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), HubError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn user_agent_names_ember_and_its_version() {
        assert_eq!(USER_AGENT, format!("ember/{}", env!("CARGO_PKG_VERSION")));
    }
}
