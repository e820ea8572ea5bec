//! Starting child processes under the shim's reaper.
//!
//! The shim is a subreaper and its reaper thread (`super::reaper`) reaps every child
//! (`waitpid(-1)`) and broadcasts the exit through `containerd_shim::monitor`. So
//! `std::process::Child::wait` must never be used here: a child's exit is only ever learned from
//! a monitor subscription taken *before* the child is spawned (so the exit cannot be missed).
//!
//! This module also places extra fds at fixed numbers in a child (the cell's protocol fds, a
//! binary logger's fds 3/4/5).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use containerd_shim::monitor::ExitEvent;
use containerd_shim::monitor::{monitor_subscribe, Subject, Topic};

use crate::error::{Error, Result};

/// Lowest fd number used for staging extra fds, above every target number we use.
const STAGING_FD_MIN: RawFd = 64;

/// Arranges for `fds[i].0` to appear as fd `fds[i].1` in the child spawned from `cmd`.
///
/// The sources are first duplicated to numbers ≥ 64 (close-on-exec) so that no source can be
/// overwritten by an earlier `dup2` in the child; the returned guards must live until the
/// child has been spawned.
pub fn map_fds(cmd: &mut Command, fds: &[(&dyn AsFd, RawFd)]) -> Result<Vec<OwnedFd>> {
    let mut staged = Vec::with_capacity(fds.len());
    let mut plan = Vec::with_capacity(fds.len());
    for (src, target) in fds {
        let copy = nix::fcntl::fcntl(
            src.as_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(STAGING_FD_MIN),
        )
        .map_err(|e| Error::io("duplicate fd for a child", e))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
        plan.push((owned.as_raw_fd(), *target));
        staged.push(owned);
    }
    // SAFETY: the closure runs in the child between fork and exec and only calls dup2, which is
    // async-signal-safe; it allocates nothing and touches no lock. The staged fds it reads are
    // kept open by the caller until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            for (src, target) in &plan {
                if libc::dup2(*src, *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(staged)
}

/// A subscription to child exits, taken before spawning.
pub struct ExitWatch {
    sub: containerd_shim::monitor::Subscription,
}

impl ExitWatch {
    /// Subscribes to exits of all children.
    pub fn new() -> Result<ExitWatch> {
        Ok(ExitWatch {
            sub: monitor_subscribe(Topic::Pid).map_err(|e| Error::io("subscribe to exits", e))?,
        })
    }

    /// The next exit of any child: `(pid, status)`; `None` once the monitor is gone.
    pub fn next(&self) -> Option<(i32, i32)> {
        loop {
            match self.sub.rx.recv() {
                Ok(ExitEvent {
                    subject: Subject::Pid(pid),
                    exit_code,
                }) => return Some((pid, exit_code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for the exit status of `pid`, up to `timeout`.
    pub fn wait(&self, pid: i32, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.sub.rx.recv_timeout(left) {
                Ok(ExitEvent {
                    subject: Subject::Pid(p),
                    exit_code,
                }) if p == pid => return Some(exit_code),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }
}

/// How many bytes wait in the pipe whose read end is `fd` (`FIONREAD`): 0 once its reader has
/// read everything written so far.
pub fn unread_bytes(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`, alive for
    // the call; `fd` is a valid open descriptor for the call (BorrowedFd).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("create pipe", e))?;
    Ok((r.into(), w.into()))
}

/// Sends `bytes` with the files `fds` (`SCM_RIGHTS`) over the unix socket `socket`, without
/// SIGPIPE when the peer is gone: a cell request to the zygote, a compiled program to a cell
/// under runc.
pub fn send_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
    .map_err(std::io::Error::from)
}

/// Reaps one child that has ended, without waiting: its pid and exit status (`128 + signal` for
/// one a signal killed); `None` once no ended child is left.
pub fn reap_ended_child() -> Option<(i32, i32)> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Some((pid.as_raw(), code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                return Some((pid.as_raw(), 128 + signal as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return None,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("waitpid: {e}");
                return None;
            }
        }
    }
}

/// What a finished helper command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Exit status (`128 + signal` when killed).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Spawns `cmd` under an [`ExitWatch`].
///
/// When `exec` fails in the child, std reaps it with `waitpid` and *asserts* that succeeds; but
/// the shim's reaper may reap it first, and then std panics. So the program is checked
/// before forking (which also gives the clearer error), and a panic that still happens (the
/// file changed in between, or exec failed for another reason) is turned into an error.
pub fn spawn_watched(cmd: &mut Command) -> Result<(Child, ExitWatch)> {
    let program = std::path::PathBuf::from(cmd.get_program());
    check_executable(&program)?;
    let watch = ExitWatch::new()?;
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "exec failed (the child was reaped before std could collect it)",
            ))
        });
    let child = spawned.map_err(|e| Error::io(format!("run {}", program.display()), e))?;
    Ok((child, watch))
}

/// Checks that `program` (a path, or a name looked up in `PATH`) names an executable file.
fn check_executable(program: &std::path::Path) -> Result<()> {
    let candidates: Vec<std::path::PathBuf> = if program.components().count() > 1 {
        vec![program.to_owned()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let executable = candidates.iter().any(|c| {
        c.metadata().map(|m| m.is_file()).unwrap_or(false)
            && nix::unistd::access(c, nix::unistd::AccessFlags::X_OK).is_ok()
    });
    if executable {
        Ok(())
    } else {
        Err(Error::io(
            format!("run {}", program.display()),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no executable file of that name (checked the path, or each directory of PATH)",
            ),
        ))
    }
}

/// Runs a helper command to completion, capturing its output; the whole run, output included,
/// takes at most `timeout`, after which the command is killed.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let deadline = Instant::now() + timeout;
    let (mut child, watch) = spawn_watched(cmd)?;
    let pid = child.id() as i32;
    let kill = || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    };
    let late = || {
        Error::DeadlineExceeded(format!(
            "{:?} did not finish within {timeout:?}",
            cmd.get_program()
        ))
    };
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => match read_outputs(out.into(), err.into(), deadline) {
            Ok(both) => both,
            Err(Late) => {
                // Still running (its own exit not yet seen): it is ours to kill.
                if watch.wait(pid, Duration::ZERO).is_none() {
                    kill();
                }
                return Err(late());
            }
        },
        _ => (String::new(), String::new()),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let Some(status) = watch.wait(pid, left) else {
        kill();
        return Err(late());
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The deadline passed before a command's output ended.
#[derive(Debug, PartialEq)]
struct Late;

/// Reads `stdout` and `stderr` to their ends, both at once (a command blocked on a full stderr
/// pipe must not wait for its stdout to be read), until `deadline`.
fn read_outputs(
    stdout: OwnedFd,
    stderr: OwnedFd,
    deadline: Instant,
) -> std::result::Result<(String, String), Late> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pipes = [(Some(stdout), Vec::new()), (Some(stderr), Vec::new())];
    while pipes.iter().any(|(fd, _)| fd.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Late);
        }
        let open: Vec<usize> = (0..2).filter(|i| pipes[*i].0.is_some()).collect();
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .filter_map(|i| pipes[*i].0.as_ref())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Err(Late),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Err(Late),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(true)).collect();
        drop(fds);
        for (slot, ready) in open.into_iter().zip(ready) {
            if !ready {
                continue;
            }
            let (fd, buf) = &mut pipes[slot];
            let mut chunk = [0u8; 8192];
            let n = fd
                .as_ref()
                .map_or(Ok(0), |f| nix::unistd::read(f, &mut chunk));
            match n {
                Ok(0) | Err(_) => *fd = None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    let [(_, out), (_, err)] = pipes;
    Ok((
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script` with its stdout and stderr piped: the child and the pipes' read ends.
    fn sh(script: &str) -> (std::process::Child, OwnedFd, OwnedFd) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout").into();
        let err = child.stderr.take().expect("stderr").into();
        (child, out, err)
    }

    #[test]
    fn output_reading_ends_at_the_deadline_while_the_command_holds_its_pipes() {
        // A command that writes, then keeps its output open without ending.
        let (mut child, out, err) = sh("echo out; echo err >&2; exec sleep 30");
        let started = Instant::now();
        let r = read_outputs(out, err, started + Duration::from_millis(300));
        let took = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(r, Err(Late));
        assert!(took < Duration::from_secs(5), "{took:?}");

        let (mut child, out, err) = sh("echo out; echo err >&2");
        let r = read_outputs(out, err, Instant::now() + Duration::from_secs(30));
        let _ = child.wait();
        assert_eq!(r, Ok(("out\n".to_owned(), "err\n".to_owned())));
    }

    #[test]
    fn programs_are_checked_before_forking() {
        assert!(check_executable(std::path::Path::new("/bin/sh")).is_ok());
        assert!(
            check_executable(std::path::Path::new("sh")).is_ok(),
            "found in PATH"
        );
        let missing = check_executable(std::path::Path::new("/no/such/logger"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/no/such/logger"), "{missing}");
        assert!(
            check_executable(std::path::Path::new("/etc/passwd")).is_err(),
            "a file without the execute bit"
        );
        assert!(
            check_executable(std::path::Path::new("/tmp")).is_err(),
            "a directory"
        );
    }
}
