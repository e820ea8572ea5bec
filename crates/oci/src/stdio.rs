//! The task's stdio as containerd hands it to the shim.
//!
//! containerd passes each of stdin/stdout/stderr as a path (usually a FIFO that the client, for
//! example `ctr`, reads), as `file:///path` (`ctr run --log-uri file://…`) or as
//! `binary:///path?k=v` (a logging binary: `ctr run --log-uri binary://…`, `nerdctl run -d`).
//!
//! The cell writes straight into what is opened here, so every byte is in the FIFO (or file, or
//! logger pipe) before the cell's exit is even seen: nothing sits in a shim-side copy loop.
//! Output FIFOs are opened read-write, which never blocks on a missing reader and never fails
//! with `EPIPE` when a detached client goes away, as containerd's own shims do.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where an output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// Discarded (`/dev/null`).
    Null,
    /// A FIFO or plain path.
    Path(PathBuf),
    /// `file:///path`: appended to a file.
    File(PathBuf),
    /// `binary:///path?k=v`: a logging binary that reads fds 3 and 4.
    Binary(BinaryLogger),
}

/// A `binary://` logger: the program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryLogger {
    /// Absolute path of the logging program.
    pub path: PathBuf,
    /// Arguments from the URI's query: `k=v` becomes `k v`, in order.
    pub args: Vec<String>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one output URI as containerd passes it.
pub fn parse_output(what: &'static str, uri: &str) -> Result<OutputTarget> {
    let err = |reason: &str| Error::Stdio {
        what,
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    if uri.is_empty() {
        return Ok(OutputTarget::Null);
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        let path = percent_decode(rest.split('?').next().unwrap_or_default());
        if !path.starts_with('/') {
            return Err(err("a file:// log URI needs an absolute path"));
        }
        return Ok(OutputTarget::File(PathBuf::from(path)));
    }
    if let Some(rest) = uri.strip_prefix("binary://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = percent_decode(path);
        if !path.starts_with('/') {
            return Err(err("a binary:// log URI needs an absolute path"));
        }
        let mut args = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            args.push(percent_decode(k));
            if !v.is_empty() {
                args.push(percent_decode(v));
            }
        }
        return Ok(OutputTarget::Binary(BinaryLogger {
            path: PathBuf::from(path),
            args,
        }));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(err(&format!(
            "unknown scheme {scheme:?} (supported: a FIFO path, file://, binary://)"
        )));
    }
    Ok(OutputTarget::Path(PathBuf::from(uri)))
}

/// Opens a plain output path: a FIFO read-write (never blocks, never `EPIPE`), anything else
/// for appending.
pub fn open_output_path(what: &'static str, path: &Path) -> Result<File> {
    let is_fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut opts = OpenOptions::new();
    if is_fifo {
        opts.read(true).write(true);
    } else {
        opts.append(true).create(true).mode(0o640);
    }
    opts.open(path).map_err(|e| Error::Stdio {
        what,
        uri: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Opens a `file://` log target for appending, creating it (and its directory) if needed.
pub fn open_log_file(what: &'static str, path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Stdio {
            what,
            uri: path.display().to_string(),
            reason: format!("create directory: {e}"),
        })?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::Stdio {
            what,
            uri: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Opens a stdin FIFO without blocking and returns the read end of a pipe that carries what the
/// client writes, with end of file exactly when the client closes its end.
///
/// A FIFO read end sees a false end of file while no writer has connected yet, and a blocking
/// open waits forever for a client that never writes stdin (`ctr run` without `-i` still
/// passes a FIFO). `poll` tells the two apart: it reports `POLLHUP` only after a writer has
/// come and gone. A small relay thread moves the bytes; it ends with the stream.
pub fn stdin_relay(fifo: &Path) -> Result<File> {
    let (relay, read_end) = StdinRelay::open(fifo)?;
    relay.start()?;
    Ok(read_end)
}

fn stdin_error(fifo: &Path, e: std::io::Error) -> Error {
    Error::Stdio {
        what: "stdin",
        uri: fifo.display().to_string(),
        reason: e.to_string(),
    }
}

/// A stdin relay opened but not started: the cell opens the FIFO while it can still see the
/// host's paths and starts the thread only after it has locked itself down, so that the thread
/// runs under the same capabilities and seccomp filter (both are per thread).
pub struct StdinRelay {
    fifo: String,
    source: File,
    sink: File,
}

impl StdinRelay {
    /// Opens `fifo` without blocking and a pipe; returns the relay and the pipe's read end.
    pub fn open(fifo: &Path) -> Result<(StdinRelay, File)> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| stdin_error(fifo, e.into()))?;
        Ok((
            StdinRelay::towards(fifo, File::from(write_end))?,
            File::from(read_end),
        ))
    }

    /// Opens `fifo` without blocking, to relay it into `sink` (a terminal's master side, say).
    /// The relay ends when the client closes the FIFO or `sink` reports an error or a hang-up
    /// (the pipe's reader, or the terminal's last user, is gone).
    pub fn towards(fifo: &Path, sink: File) -> Result<StdinRelay> {
        let source = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .map_err(|e| stdin_error(fifo, e))?;
        Ok(StdinRelay {
            fifo: fifo.display().to_string(),
            source,
            sink,
        })
    }

    /// Starts the relay thread.
    pub fn start(self) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::{Read, Write};
        use std::os::fd::AsFd;

        let StdinRelay {
            fifo,
            mut source,
            mut sink,
        } = self;
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    // The sink reports POLLERR once the program (the pipe's reader) is gone, a
                    // terminal's master POLLHUP once its slave side is closed everywhere.
                    let mut fds = [
                        PollFd::new(source.as_fd(), PollFlags::POLLIN),
                        PollFd::new(sink.as_fd(), PollFlags::empty()),
                    ];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) => {}
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => return,
                    }
                    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                        return;
                    }
                    match source.read(&mut buf) {
                        Ok(0) if revents.contains(PollFlags::POLLHUP) => return,
                        // No writer has connected yet: keep waiting.
                        Ok(0) => std::thread::sleep(std::time::Duration::from_millis(5)),
                        Ok(n) => {
                            if sink.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
            .map(drop)
            .map_err(|e| Error::Stdio {
                what: "stdin",
                uri: fifo,
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert_eq!(parse_output("stdout", "").ok(), Some(OutputTarget::Null));
        assert_eq!(
            parse_output("stdout", "/run/x/stdout").ok(),
            Some(OutputTarget::Path("/run/x/stdout".into()))
        );
        assert_eq!(
            parse_output("stdout", "file:///var/log/a%20b.log").ok(),
            Some(OutputTarget::File("/var/log/a b.log".into()))
        );
        assert_eq!(
            parse_output("stdout", "binary:///usr/bin/logger?id=x&dir=%2Ftmp&flag").ok(),
            Some(OutputTarget::Binary(BinaryLogger {
                path: "/usr/bin/logger".into(),
                args: vec![
                    "id".into(),
                    "x".into(),
                    "dir".into(),
                    "/tmp".into(),
                    "flag".into()
                ],
            }))
        );
        assert!(parse_output("stdout", "file://relative").is_err());
        let e = parse_output("stderr", "ftp://x").expect_err("scheme");
        assert!(e.to_string().contains("unknown scheme \"ftp\""), "{e}");
    }

    #[test]
    fn decodes_percent_edge_cases() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }
}
