//! A process's terminal on the shim side (`process.terminal`: `ctr run -t`, `kubectl exec -it`).
//!
//! The process gets the slave side of a pseudo-terminal as its stdin, stdout and stderr; the
//! shim keeps the master, as containerd's runc shim keeps the one runc sends over its console
//! socket. A [`Console`] relays containerd's stdin FIFO into the master and everything the
//! process writes from the master to the stdout containerd named (a terminal has one output
//! stream), and sets the terminal's window size (ResizePty). A cell's terminal is made here
//! ([`open_pty`]); runc makes its containers' own and sends the master back.
//!
//! Unsafe code: the window-size ioctl, and taking ownership of the fd runc sends.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use wasmcell_oci::stdio::StdinRelay;

use crate::error::{Error, Result};
use crate::host::process::pipe;
use crate::sync::{lock, wait_timeout};

/// Where a terminal's traffic goes on containerd's side: the stdin FIFO to read (empty for
/// none) and the stdout to write, opened. A backend makes the terminal and [`attach`]es
/// this to its master.
///
/// [`attach`]: ConsoleIo::attach
pub struct ConsoleIo {
    /// containerd's stdin FIFO, or empty.
    pub stdin: String,
    /// Where the terminal's output goes.
    pub stdout: OwnedFd,
}

/// A new pseudo-terminal: its master and its slave side.
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None).map_err(|e| Error::io("open a terminal", e))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::io("open a terminal", e))?;
    }
    Ok((pty.master, pty.slave))
}

/// A terminal's master side, with its relays running.
pub struct Console {
    master: OwnedFd,
    /// Set once everything the process wrote has been copied out (its side is closed).
    copied: Arc<(Mutex<bool>, Condvar)>,
    /// Dropped to stop the output copy (Delete of a process whose terminal some other process
    /// still holds open).
    _stop: OwnedFd,
}

impl ConsoleIo {
    /// Starts relaying between `master` and containerd's stdio. The process must hold the
    /// slave side already: once no process does, the output copy ends.
    pub fn attach(self, master: OwnedFd) -> Result<Console> {
        let copied = Arc::new((Mutex::new(false), Condvar::new()));
        let (stop_r, stop_w) = pipe()?;
        if !self.stdin.is_empty() {
            let sink = File::from(dup(&master)?);
            StdinRelay::towards(Path::new(&self.stdin), sink)?.start()?;
        }
        let source = File::from(dup(&master)?);
        let sink = File::from(self.stdout);
        let done = Arc::clone(&copied);
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                copy_out(source, sink, stop_r);
                *lock(&done.0) = true;
                done.1.notify_all();
            })
            .map_err(|e| Error::io("start a terminal's output copy", e))?;
        Ok(Console {
            master,
            copied,
            _stop: stop_w.into(),
        })
    }
}

impl Console {
    /// Sets the terminal's window size (ResizePty); the kernel tells the terminal's
    /// foreground processes with SIGWINCH.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let size = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize`, which `size` is, from the pointer; the fd is
        // the master, open for as long as `self` lives.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc != 0 {
            return Err(Error::io(
                "set the terminal's window size",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Waits, at most `timeout`, until everything the process wrote to its terminal has been
    /// copied out: it has exited, and what it wrote last must reach the client before its exit.
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (done, changed) = &*self.copied;
        let mut copied = lock(done);
        while !*copied {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            copied = wait_timeout(changed, copied, deadline - now).0;
        }
    }
}

/// A unix socket runc sends the master of a terminal it made over (`--console-socket`), in a
/// directory of its own that only root may enter; both are removed when it is dropped.
pub struct ConsoleSocket {
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// A new socket, listening.
    pub fn bind() -> Result<ConsoleSocket> {
        let template = std::env::temp_dir().join("wasmcell-console-XXXXXX");
        // mkdtemp makes the directory with mode 0700.
        let dir = nix::unistd::mkdtemp(&template)
            .map_err(|e| Error::io("make a directory for a console socket", e))?;
        let listener = UnixListener::bind(dir.join("socket")).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        });
        match listener {
            Ok(listener) => Ok(ConsoleSocket { dir, listener }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(Error::io("listen on a console socket", e))
            }
        }
    }

    /// Its path, for runc's `--console-socket`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// The master runc sent, read once runc has returned: runc sends it before it returns,
    /// and the connection and the fd wait in the socket.
    pub fn receive(&self) -> Result<OwnedFd> {
        let (stream, _) = self.listener.accept().map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                Error::Runc("runc returned without sending the terminal it made".into())
            }
            _ => Error::io("accept runc on the console socket", e),
        })?;
        // runc sends the terminal's name with it.
        let mut name = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::io("receive the terminal from runc", e))?;
        let mut fds = Vec::new();
        for cmsg in msg
            .cmsgs()
            .map_err(|e| Error::io("receive the terminal from runc", e))?
        {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these fds in this process for us alone.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(master), None) => Ok(master),
            (None, _) => Err(Error::Runc("runc sent no terminal".into())),
            (Some(_), Some(_)) => Err(Error::Runc("runc sent more than one fd".into())),
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone()
        .map_err(|e| Error::io("duplicate a terminal's master", e))
}

/// Copies the terminal's output until its slave side is closed everywhere (the master then
/// reads EIO), the client's stdout is gone, or `stop` is closed.
fn copy_out(mut master: File, mut sink: File, stop: File) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        match master.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if sink.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: no process holds the slave side any more.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_copied_until_the_slave_closes_and_resize_sets_the_window() {
        let (master, slave) = open_pty().unwrap();
        let (out_r, out_w) = pipe().unwrap();
        let console = ConsoleIo {
            stdin: String::new(),
            stdout: out_w.into(),
        }
        .attach(master)
        .unwrap();
        console.resize(132, 43).unwrap();
        // SAFETY: an all-zero `winsize` is a valid value (four integers).
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which points at one.
            unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_col, size.ws_row), (132, 43));
        let mut slave = File::from(slave);
        slave.write_all(b"hello\n").unwrap();
        drop(slave);
        console.drain(Duration::from_secs(5));
        assert!(*lock(&console.copied.0), "the copy ended with the slave");
        let mut out = String::new();
        { out_r }.read_to_string(&mut out).unwrap();
        // The terminal's line discipline turns "\n" into "\r\n", as on any terminal.
        assert_eq!(out, "hello\r\n");
    }
}
