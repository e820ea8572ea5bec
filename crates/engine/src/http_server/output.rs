//! The guest's stdout and stderr while it serves: many requests write at once, so each request's
//! stream keeps what it writes until a line ends and then writes its whole lines at once, under
//! the process's lock of that stream. Two requests' output never meets within a line, and
//! `kubectl logs` shows lines as the handler wrote them.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A line longer than this is written out in pieces rather than held without bound.
const MAX_PENDING: usize = 64 << 10;

/// Which of the cell's own streams a guest stream writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// fd 1, the container's stdout.
    Stdout,
    /// fd 2, the container's stderr.
    Stderr,
}

impl Target {
    fn write_all(self, bytes: &[u8]) {
        // Nothing to tell the guest if the container's log is gone; its request goes on.
        let _ = match self {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Target::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    }
}

/// The `StdoutStream` of one request's store.
#[derive(Debug, Clone, Copy)]
pub struct LineOutput(pub Target);

impl IsTerminal for LineOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LineOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineStream::new(self.0))
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineStream::new(self.0))
    }
}

/// Holds a partial line until it ends (or the stream is dropped).
pub struct LineStream {
    target: Target,
    pending: Vec<u8>,
}

impl LineStream {
    /// An empty stream writing to `target`.
    pub fn new(target: Target) -> LineStream {
        LineStream {
            target,
            pending: Vec::new(),
        }
    }

    /// Takes `bytes`; writes every line they complete, in one write.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') {
            self.target.write_all(&self.pending[..=end]);
            self.pending.drain(..=end);
        }
        if self.pending.len() > MAX_PENDING {
            self.target.write_all(&self.pending);
            self.pending.clear();
        }
    }
}

impl Drop for LineStream {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            self.target.write_all(&self.pending);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LineStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    /// A partial line waits for its end: flushing it would let another request's output into
    /// the middle of it.
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_PENDING)
    }
}

impl AsyncWrite for LineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
