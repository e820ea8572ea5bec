//! The endpoint: a socket bound inside the pod's network namespace (a short-lived thread enters
//! it, binds, and ends; the socket stays in that namespace), and a thread that answers each
//! connection's `GET /metrics` with the pod's series, one connection at a time.
//!
//! Written here on the standard library rather than on an HTTP server crate: the shim has no
//! async runtime, a scrape is one small GET a few times a minute, and a thread that reads one
//! request head and writes one response is all it takes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a scraper may take to send its request, all of it, and to take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request head that is read.
const MAX_HEAD: usize = 8192;

/// A listening endpoint and its thread.
pub struct Endpoint {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    closing: Arc<AtomicBool>,
}

impl Endpoint {
    /// Binds `addr` in the network namespace of process `netns_pid` and starts answering
    /// with what `series` gives (OpenMetrics text).
    pub fn open(
        addr: SocketAddr,
        netns_pid: i32,
        series: impl Fn() -> String + Send + 'static,
    ) -> std::io::Result<Endpoint> {
        let netns = std::fs::File::open(format!("/proc/{netns_pid}/ns/net"))?;
        // A container in the host's network namespace (a hostNetwork pod, `--net-host`): the
        // shim would bind as root where the container could not itself.
        let host = std::fs::metadata("/proc/self/ns/net")?;
        let theirs = netns.metadata()?;
        use std::os::unix::fs::MetadataExt;
        if (host.dev(), host.ino()) == (theirs.dev(), theirs.ino()) && addr.port() < 1024 {
            return Err(std::io::Error::other(
                "the pod is in the host's network namespace, where a port below 1024 is \
                 refused (the container could not bind it itself)",
            ));
        }
        let listener = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                TcpListener::bind(addr)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the binding thread panicked")))
        })?;
        let listener = Arc::new(listener);
        let closing = Arc::new(AtomicBool::new(false));
        let (serving, stop) = (Arc::clone(&listener), Arc::clone(&closing));
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in serving.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    match stream {
                        Ok(stream) => answer(stream, &series),
                        // Out of fds or memory: a moment's rest rather than a spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })?;
        Ok(Endpoint {
            addr,
            listener,
            closing,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and closes the socket.
    pub fn close(self) {
        self.closing.store(true, Ordering::Release);
        // Wakes the thread from `accept`, which then sees `closing`.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// Answers one connection: the series for `GET /metrics`, 404 for another path, 405 for another
/// method.
fn answer(mut stream: TcpStream, series: &dyn Fn() -> String) {
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        // One deadline for the whole head: a client that sends a byte now and then cannot hold
        // the endpoint's only thread.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            series(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "see /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
