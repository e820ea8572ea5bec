//! The zygote: a small single-threaded process, forked from the shim daemon before the daemon
//! starts any thread, that forks the cells.
//!
//! Why: executing the shim binary again for every cell costs the kernel's exec, the dynamic
//! loader's relocations and its CPU feature probes (which trap to the hypervisor in a VM) and
//! Rust's start-up; a fork of a small process costs a fraction of that (docs/performance.md),
//! and the cell's pages stay shared with the zygote. The
//! daemon itself cannot fork a cell: it is multi-threaded, and the child of a threaded process
//! may only call async-signal-safe functions until it executes something, while a cell runs
//! wasmtime. The zygote has one thread, so its children are ordinary processes.
//!
//! How:
//! - [`start`] forks the zygote from the daemon (`crate::daemon`) before its first thread. The
//!   zygote clears its environment, moves to `/`, keeps only its socket (a `SOCK_SEQPACKET`
//!   pair with the daemon) and `/dev/null` as fds 0-2, names itself `<shim binary> zygote
//!   <daemon's -id>`, and dies with the daemon (`PR_SET_PDEATHSIG`). It runs the host's CPU
//!   feature detection once (`wasmcell_engine::detect_cpu_features`), so its cells inherit the
//!   results instead of each trapping to the hypervisor on `cpuid` again.
//! - [`Zygote::spawn_cell`] sends the cell's id and its five protocol fds (`SCM_RIGHTS`); the
//!   zygote forks, the child puts the fds at the numbers the cell protocol fixes, names itself
//!   `<shim binary> cell <id>` (its `/proc/PID/cmdline`, which `shim delete` and the tests check,
//!   as an executed cell would be named) and runs `wasmcell_cell::main`. The zygote answers with
//!   the pid.
//! - The cells are the zygote's children, so the zygote reaps them and sends each exit to the
//!   daemon, which hands it to the exit monitor as its reaper (`crate::host::reaper`) would. If
//!   the zygote dies, its cells are re-parented to the daemon (a subreaper) and reaped there.
//! - If the zygote cannot be started or stops answering, cells are executed instead
//!   (`Cell::spawn` falls back), and the shim log says why.
//!
//! The price: the cells of one shim share the zygote's address-space layout (the randomized
//! bases of the stack, heap and shared libraries), as Android's apps share their zygote's.
//! A guest cannot read addresses, and the binary's own code is at a fixed address anyway (it
//! is linked without PIE); the README weighs this.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::unistd::{ForkResult, Pid};
use wasmcell_cell::{CONTROL_FD, PROGRAM_FD, STATUS_FD};

use super::CELL_ARG;
use crate::error::{Error, Result};
use crate::host::proctitle::Cmdline;
use crate::sync::lock;

/// The fds a request carries, in this order: the cell's stdout, stderr, control (read end),
/// status (write end) and program. They become fds 1, 2, [`CONTROL_FD`], [`STATUS_FD`] and
/// [`PROGRAM_FD`] of the cell.
pub const CELL_FDS: usize = 5;
const TARGETS: [RawFd; CELL_FDS] = [1, 2, CONTROL_FD, STATUS_FD, PROGRAM_FD];
/// The zygote's own fds are moved at least this high, above every number a cell uses.
const HIGH_FD: RawFd = 64;
/// How long the daemon waits for the zygote to answer before executing the cell instead.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request or reply: a container id (at most a few hundred bytes) and a little text.
const MAX_MESSAGE: usize = 4096;
/// Set (to anything) in the shim's environment, the daemon starts no zygote and executes every
/// cell: for comparing the two, and a way out should forking ever misbehave somewhere.
pub const DISABLE_ENV: &str = "WASMCELL_NO_ZYGOTE";
/// The argument a zygote's `/proc/PID/cmdline` shows after the binary.
const ZYGOTE_ARG: &str = "zygote";

/// The daemon's handle on its zygote.
pub struct Zygote {
    pid: Pid,
    socket: OwnedFd,
    /// One request at a time: a request and its reply are a pair.
    replies: Mutex<Receiver<std::result::Result<i32, String>>>,
}

/// The zygote of this daemon, or why there is none.
static ZYGOTE: OnceLock<std::result::Result<Zygote, String>> = OnceLock::new();

/// Forks the zygote, named after the daemon's `-id` (the container containerd started the shim
/// for). Must be called while the process has a single thread; does nothing if called twice. A
/// failure is kept and reported by [`get`].
pub fn start(daemon_id: &str) {
    ZYGOTE.get_or_init(|| fork_zygote(daemon_id).map_err(|e| e.to_string()));
}

/// The zygote, if [`start`] made one. Why it could not is logged (once) here, since the log is
/// set up only after [`start`].
pub fn get() -> Option<&'static Zygote> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match ZYGOTE.get() {
        Some(Ok(z)) => Some(z),
        Some(Err(e)) => {
            WARNED.call_once(|| log::warn!("no zygote ({e}); cells are executed"));
            None
        }
        None => None,
    }
}

impl Zygote {
    /// Has the zygote fork a cell for container `id` with `fds` (see [`CELL_FDS`]); its pid.
    pub fn spawn_cell(&self, id: &str, fds: [BorrowedFd<'_>; CELL_FDS]) -> Result<i32> {
        let replies = lock(&self.replies);
        // A reply that arrived after an earlier request gave up waiting is stale.
        while replies.try_recv().is_ok() {}
        crate::host::process::send_fds(self.socket.as_fd(), id.as_bytes(), &fds)
            .map_err(|e| Error::io("send a cell request to the zygote", e))?;
        match replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(Ok(pid)) => Ok(pid),
            Ok(Err(message)) => Err(Error::Internal(format!("zygote: {message}"))),
            Err(RecvTimeoutError::Timeout) => {
                // A zygote this slow is stuck; end it, so that it cannot fork this cell late
                // while the caller executes one on the same fds. What it sent before it died
                // is still read: a cell it did fork is used.
                let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
                loop {
                    match replies.recv_timeout(REPLY_TIMEOUT) {
                        Ok(Ok(pid)) => return Ok(pid),
                        Ok(Err(_)) => continue,
                        Err(_) => break,
                    }
                }
                Err(Error::Internal(format!(
                    "the zygote did not answer within {REPLY_TIMEOUT:?} and was killed"
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Internal("the zygote has exited".into()))
            }
        }
    }
}

fn fork_zygote(daemon_id: &str) -> std::io::Result<Zygote> {
    let (daemon_end, zygote_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let exe = std::env::current_exe()?;
    let exe = exe.to_string_lossy().into_owned();
    let daemon = nix::unistd::getpid();
    // SAFETY: the caller guarantees a single thread, so the child is a complete copy of a
    // consistent process and may run any code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(daemon_end);
            let code = match zygote_main(zygote_end, daemon, &exe, daemon_id) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends this process without running the daemon's exit handlers (which
            // belong to the daemon, not to this copy of it).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(zygote_end);
            let (tx, rx) = mpsc::channel();
            let reader = daemon_end.try_clone()?;
            std::thread::Builder::new()
                .name("zygote".into())
                .spawn(move || read_zygote(reader, tx))?;
            Ok(Zygote {
                pid: child,
                socket: daemon_end,
                replies: Mutex::new(rx),
            })
        }
    }
}

/// The daemon's reader of the zygote's messages: replies go to the waiting request, exits to
/// the exit monitor.
fn read_zygote(socket: OwnedFd, replies: Sender<std::result::Result<i32, String>>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match nix::unistd::read(&socket, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        match Message::parse(&buf[..n]) {
            Some(Message::Spawned(pid)) => {
                let _ = replies.send(Ok(pid));
            }
            Some(Message::Failed(message)) => {
                let _ = replies.send(Err(message));
            }
            Some(Message::Exited(pid, code)) => {
                let _ = containerd_shim::monitor::monitor_notify_by_pid(pid, code);
            }
            None => log::warn!(
                "unreadable message from the zygote: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
}

/// What the zygote tells the daemon.
#[derive(Debug, PartialEq)]
enum Message {
    /// `pid <pid>`: the requested cell runs.
    Spawned(i32),
    /// `err <message>`: it could not be forked.
    Failed(String),
    /// `exit <pid> <code>`: a cell ended; the code is its exit status, or 128 + the signal that
    /// killed it, as the daemon's reaper reports.
    Exited(i32, i32),
}

impl Message {
    fn encode(&self) -> String {
        match self {
            Message::Spawned(pid) => format!("pid {pid}"),
            Message::Failed(message) => format!("err {message}"),
            Message::Exited(pid, code) => format!("exit {pid} {code}"),
        }
    }

    fn parse(bytes: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (kind, rest) = text.split_once(' ')?;
        match kind {
            "pid" => rest.parse().ok().map(Message::Spawned),
            "err" => Some(Message::Failed(rest.to_owned())),
            "exit" => {
                let (pid, code) = rest.split_once(' ')?;
                Some(Message::Exited(pid.parse().ok()?, code.parse().ok()?))
            }
            _ => None,
        }
    }
}

/// The zygote's life: serve requests until the daemon closes its end.
fn zygote_main(socket: OwnedFd, daemon: Pid, exe: &str, daemon_id: &str) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != daemon {
        return Ok(()); // The daemon died before the line above took effect.
    }
    let socket = move_high(socket)?;
    // SIGCHLD arrives through a signalfd, so one poll waits for requests and exits alike.
    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    // Only SIGCHLD: the daemon forks the zygote with the signals it reads blocked as well.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&sigchld), None)?;
    let exits = move_high(crate::host::reaper::signalfd(&sigchld, true)?)?;
    // SAFETY: single-threaded; nothing else reads the environment concurrently.
    unsafe { libc::clearenv() };
    Cmdline::blank_environ()?;
    std::env::set_current_dir("/")?;
    let null = crate::host::streams::open_dev_null()?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    drop(null);
    // Everything else the daemon had (its listening socket above all) stays with the daemon.
    close_all_but(&[socket.as_raw_fd(), exits.as_raw_fd()]);
    let cmdline = Cmdline::of_this_process()?;
    cmdline.set(&cmdline.encode(&[exe, ZYGOTE_ARG, daemon_id])?);
    // Once here rather than in every cell.
    wasmcell_engine::detect_cpu_features();

    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (request, reaped) = {
            let mut polled = [
                PollFd::new(socket.as_fd(), PollFlags::POLLIN),
                PollFd::new(exits.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut polled, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
            (ready(&polled[0]), ready(&polled[1]))
        };
        if reaped {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            while nix::unistd::read(&exits, &mut info).is_ok_and(|n| n > 0) {}
            reap(&socket);
        }
        if request && !serve(&socket, &mut buf, exe, cmdline)? {
            return Ok(());
        }
    }
}

/// Reports every cell that has ended.
fn reap(socket: &OwnedFd) {
    while let Some((pid, code)) = crate::host::process::reap_ended_child() {
        let _ = send(socket, &Message::Exited(pid, code));
    }
}

/// Serves one request; `false` once the daemon has closed its end.
fn serve(socket: &OwnedFd, buf: &mut [u8], exe: &str, cmdline: Cmdline) -> std::io::Result<bool> {
    let mut space = nix::cmsg_space!([RawFd; CELL_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EINTR) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    let len = msg.bytes;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these fds in this process for us alone.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if len == 0 && fds.is_empty() {
        return Ok(false);
    }
    let id = String::from_utf8_lossy(&iov[0][..len]).into_owned();
    let reply = match (
        <[OwnedFd; CELL_FDS]>::try_from(fds),
        cmdline.encode(&[exe, CELL_ARG, &id]),
    ) {
        (Err(fds), _) => Message::Failed(format!(
            "a cell request carried {} fds, not {CELL_FDS}",
            fds.len()
        )),
        (_, Err(e)) => Message::Failed(e.to_string()),
        // SAFETY: this process has a single thread (see the module documentation).
        (Ok(fds), Ok(name)) => match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => become_cell(&fds, cmdline, &name),
            Ok(ForkResult::Parent { child }) => Message::Spawned(child.as_raw()),
            Err(e) => Message::Failed(format!("fork a cell: {e}")),
        },
    };
    send(socket, &reply)?;
    Ok(true)
}

fn send(socket: &OwnedFd, message: &Message) -> std::io::Result<()> {
    nix::sys::socket::send(
        socket.as_raw_fd(),
        message.encode().as_bytes(),
        MsgFlags::MSG_NOSIGNAL,
    )?;
    Ok(())
}

/// In the forked child: take the shape of an executed cell and run it. Never returns.
fn become_cell(fds: &[OwnedFd; CELL_FDS], cmdline: Cmdline, name: &[u8]) -> ! {
    let shaped = (|| -> std::io::Result<()> {
        // The zygote blocks SIGCHLD for its signalfd; an executed process would start with an
        // empty mask.
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        // First above every target, so that no dup2 below overwrites a source.
        let mut staged = Vec::with_capacity(CELL_FDS);
        for fd in fds {
            staged.push(nix::fcntl::fcntl(
                fd.as_fd(),
                nix::fcntl::FcntlArg::F_DUPFD(HIGH_FD + 32),
            )?);
        }
        for (src, target) in staged.iter().zip(TARGETS) {
            // SAFETY: `src` is a valid fd this process owns; `target` becomes a copy of it.
            if unsafe { libc::dup2(*src, target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })();
    if shaped.is_err() {
        // Its stdio is not in place, so there is nowhere to say why; the daemon reports that
        // the cell exited before reporting.
        // SAFETY: ends the child at once; nothing of the zygote's state needs flushing.
        unsafe { libc::_exit(125) }
    }
    cmdline.set(name);
    // The cell closes every fd above its protocol's (the copies above, the zygote's socket).
    wasmcell_cell::main()
}

/// Moves `fd` to a number ≥ [`HIGH_FD`] (close-on-exec).
fn move_high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let high = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// Closes every fd from 3 up except `keep`.
fn close_all_but(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from: RawFd = 3;
    for k in keep.into_iter().chain([RawFd::MAX]) {
        if k > from {
            // SAFETY: closes fds that no object of this (single-threaded) process still uses:
            // the daemon's, inherited by the fork.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    from as libc::c_uint,
                    (k - 1) as libc::c_uint,
                    0,
                )
            };
        }
        from = from.max(k.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Spawned(42),
            Message::Failed("fork a cell: EAGAIN".into()),
            Message::Exited(7, 137),
        ] {
            assert_eq!(Message::parse(m.encode().as_bytes()), Some(m));
        }
        assert_eq!(Message::parse(b"what 1"), None);
        assert_eq!(Message::parse(b"exit 1"), None);
        assert_eq!(Message::parse(b"pid x"), None);
    }
}
