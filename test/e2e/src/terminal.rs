//! Driving a command through a terminal, as a user at a keyboard does: `ctr run -t`, `ctr task
//! exec -t`, `kubectl exec -it`. The command gets the slave side of a pseudo-terminal as its
//! controlling terminal (so that it sees window size changes, SIGWINCH); the test types into
//! the master and reads what the command shows.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running in a terminal of its own.
pub struct Terminal {
    master: File,
    child: Child,
    shown: Arc<Mutex<Vec<u8>>>,
}

/// Sets the window size of the terminal `fd` is a side of.
pub fn set_window(fd: &impl AsRawFd, cols: u16, rows: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The window size (columns, rows) of the terminal `fd` is a side of.
pub fn window(fd: &impl AsRawFd) -> std::io::Result<(u16, u16)> {
    // SAFETY: an all-zero `winsize` is a valid value (four integers).
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which points at one.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((size.ws_col, size.ws_row))
}

impl Terminal {
    /// Starts `cmd` in a new session whose controlling terminal is a new one of `cols` by
    /// `rows`; a thread collects everything it shows.
    pub fn spawn(mut cmd: Command, cols: u16, rows: u16) -> Terminal {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        set_window(&pty.master, cols, rows).expect("set the window size");
        let slave: OwnedFd = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the command in a terminal");
        // The command's copies are its own now.
        drop(cmd);
        let master = File::from(pty.master);
        let shown = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let into = Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the command and its children have closed the terminal.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            child,
            shown,
        }
    }

    /// Types `text`.
    pub fn type_in(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).expect("type");
    }

    /// Everything shown so far, without carriage returns: each of the two terminals on the
    /// way (the process's, and the user's that `ctr` writes to) turns "\n" into "\r\n".
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).replace('\r', "")
    }

    /// Waits until the terminal shows `text` after byte `from` of [`Terminal::shown`], at
    /// most `timeout`; where it ends, or what was shown when the time ran out.
    pub fn expect_after(
        &self,
        from: usize,
        text: &str,
        timeout: Duration,
    ) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let shown = self.shown();
            if let Some(at) = shown.get(from..).and_then(|tail| tail.find(text)) {
                return Ok(from + at + text.len());
            }
            if Instant::now() >= deadline {
                return Err(shown);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the terminal shows `text`, at most `timeout`.
    pub fn expect(&self, text: &str, timeout: Duration) -> Result<usize, String> {
        self.expect_after(0, text, timeout)
    }

    /// Changes the window size, as a user resizing their terminal window does: the command
    /// gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) {
        set_window(&self.master, cols, rows).expect("resize the terminal");
    }

    /// Waits for the command's exit status, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
