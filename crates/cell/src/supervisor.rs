//! The PID namespace: a cell whose spec names a `pid` namespace forks once, and the guest runs
//! in the child.
//!
//! A PID namespace, created (`unshare`) or joined by path (`setns`), applies to the children of
//! the caller only, so the cell enters it and forks while it is still single-threaded, before it
//! loads anything. The child carries on with the cell's work (protocol, compiling, lock-down,
//! the guest); in a namespace of its own it is that namespace's init, as a runc container's
//! process is. The parent stays the process the shim knows (its pid is the task's pid) and
//! becomes a supervisor that does three things only:
//!
//! - it forwards the signals the shim sends (a namespace's init ignores signals it has no
//!   handler for, even from outside, except SIGKILL and SIGSTOP);
//! - it waits for the child and ends the same way: the same exit status, or killed by the same
//!   signal, so the shim reports exactly what the guest did (and an OOM kill stays a 137);
//! - if it is killed itself, the child dies with it (`PR_SET_PDEATHSIG`);
//! - when the child was killed by SIGKILL, it reads the cgroup's OOM kill count and, if the
//!   OOM killer did it, says so on the status pipe before it ends: it is still in the cgroup
//!   then, so the cgroup still exists, where systemd's driver removes it the moment the last
//!   process leaves, before the shim could read it. For that it keeps itself out of the OOM
//!   killer's reach (`oom_score_adj` -1000, where the host lets it lower its score): with
//!   `memory.oom.group` set, as the kubelet sets it on cgroup v2, the kernel kills every other
//!   process of the cgroup at once, and the supervisor, spared, reports the kill and then ends
//!   the namespace, so the container still ends as a whole.
//!
//! Before waiting it closes every fd but those two, drops every capability but `CAP_KILL` (to
//! signal a child that may run under another uid), sets `no_new_privs` and installs a seccomp
//! filter that allows waiting, signals, reading the count, writing the report and exiting only.
//!
//! The child, when it is its namespace's init, gets handlers that turn the terminating signals
//! into an exit with status 128 + signal, the status the shim would report for a kill by that
//! signal.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::protocol::{OOM_KILLED, OOM_KILLS_FD, REPORT_FD, STATUS_FD};
use crate::sys;

/// Signals whose default action ends a process and that a user sends (`ctr task kill -s`);
/// the child exits on them when it is init. (SIGPIPE is not here: Rust ignores it, so a write
/// to a closed pipe fails instead.)
const TERMINATING: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGABRT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGPWR,
];

/// Signals the supervisor passes on besides the [`TERMINATING`] ones (the shim, or a user
/// through `ctr task kill`, may send them too).
const ALSO_FORWARDED: [Signal; 3] = [Signal::SIGCONT, Signal::SIGTSTP, Signal::SIGWINCH];

/// The child's pid, for the forwarding handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

extern "C" fn exit_on(signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe; the guest is being killed, nothing is to be flushed.
    unsafe { libc::_exit(128 + signal) }
}

fn handle(signals: &[Signal], handler: extern "C" fn(libc::c_int)) -> Result<(), String> {
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in signals {
        // SAFETY: both handlers only make async-signal-safe calls.
        unsafe { sigaction(*s, &action) }.map_err(|e| format!("handle {s}: {e}"))?;
    }
    Ok(())
}

/// Forks. Returns in the child, which runs the guest; the parent supervises it and never
/// returns. `init`: the child is the init of a new namespace. `oom_kills`: the cgroup file
/// that counts OOM kills, for the report.
pub fn fork_into_namespace(init: bool, oom_kills: Option<File>) -> Result<(), String> {
    // SAFETY: the cell is single-threaded here (nothing has been loaded yet), so the child's
    // copy of the address space is consistent.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork into the PID namespace: {e}"))? {
        nix::unistd::ForkResult::Parent { child } => supervise(child, oom_kills),
        nix::unistd::ForkResult::Child => {
            drop(oom_kills);
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|e| format!("set the parent-death signal: {e}"))?;
            // Were the supervisor killed before the line above (no `getppid` check can tell: the
            // parent is outside the namespace, its pid reads 0), this child would still end: the
            // shim, seeing the cell's pid exit, closes the control pipe (EOF before the start
            // byte ends the cell) and removes the cgroup, killing what is in it.
            if init {
                exit_on_terminating_signals()?;
            }
            Ok(())
        }
    }
}

/// Makes the terminating signals end this process with status 128 + signal (for a process that
/// is its PID namespace's init, which would otherwise ignore them).
pub fn exit_on_terminating_signals() -> Result<(), String> {
    handle(&TERMINATING, exit_on)
}

/// The write end of the drain pipe of a cell that serves (-1: none).
static DRAIN_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether a drain has been asked for already.
static DRAINING: AtomicBool = AtomicBool::new(false);

extern "C" fn drain_on(signal: libc::c_int) {
    if DRAINING.swap(true, Ordering::SeqCst) {
        // A second SIGTERM (or SIGINT): stop waiting for the requests in flight.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) }
    }
    let byte = 1u8;
    // SAFETY: write is async-signal-safe; the fd stays open for the life of the process and
    // the pipe is non-blocking, so a full pipe (a drain already pending) loses nothing.
    unsafe {
        libc::write(
            DRAIN_FD.load(Ordering::SeqCst),
            (&byte as *const u8).cast(),
            1,
        )
    };
}

/// Makes the first SIGTERM or SIGINT start a drain of a serving cell instead of ending it, and
/// a second one end it (128 + signal). The returned pipe end becomes readable at the first.
/// The other terminating signals keep their effect.
pub fn drain_on_terminating_signals() -> Result<OwnedFd, String> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| format!("make the drain pipe: {e}"))?;
    DRAIN_FD.store(write.into_raw_fd(), Ordering::SeqCst);
    handle(&[Signal::SIGTERM, Signal::SIGINT], drain_on)?;
    Ok(read)
}

/// The supervisor: see the module documentation.
fn supervise(child: Pid, oom_kills: Option<File>) -> ! {
    CHILD.store(child.as_raw(), Ordering::Relaxed);
    // Failing to set up forwarding or the lock-down must not leave a guest unsupervised.
    // (It has no fd left to report why: the child's failure to start says enough.)
    let reporting = oom_kills.is_some();
    if reporting {
        // A host that forbids lowering it (an unprivileged or restricted one) leaves the
        // supervisor to die with the group; the shim then reads the count itself at exit.
        let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    }
    if handle(&TERMINATING, forward)
        .and_then(|()| handle(&ALSO_FORWARDED, forward))
        .and_then(|()| lock_down(oom_kills))
        .is_err()
    {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        // SAFETY: leave without unwinding through state shared with the child.
        unsafe { libc::_exit(125) }
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                // SAFETY: as above.
                unsafe { libc::_exit(code) }
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                if signal == Signal::SIGKILL && reporting {
                    report_oom_kill();
                }
                die_by(signal)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // SAFETY: as above.
                unsafe { libc::_exit(125) }
            }
        }
    }
}

/// Writes [`OOM_KILLED`] on the status pipe if the cgroup counts an OOM kill.
fn report_oom_kill() {
    let mut text = [0u8; 512];
    // SAFETY: reads into a buffer of the length given.
    let n = unsafe { libc::pread(OOM_KILLS_FD, text.as_mut_ptr().cast(), text.len(), 0) };
    let Ok(n) = usize::try_from(n) else { return };
    let text = String::from_utf8_lossy(&text[..n]);
    if wasmcell_cgroup::parse_oom_kills(&text) > 0 {
        let line = format!("{}\n", OOM_KILLED);
        // SAFETY: writes the bytes of a live buffer. SIGPIPE is ignored: a shim that has gone
        // away makes this fail, not kill the supervisor.
        unsafe { libc::write(REPORT_FD, line.as_ptr().cast(), line.len()) };
    }
}

/// Closes every fd (but the OOM kill count and the status pipe, moved to [`OOM_KILLS_FD`] and
/// [`REPORT_FD`], when there is a count to report), keeps `CAP_KILL` only, no core dumps,
/// `no_new_privs`, seccomp.
fn lock_down(oom_kills: Option<File>) -> Result<(), String> {
    match oom_kills {
        Some(file) => {
            let fd = file.into_raw_fd();
            // SAFETY: dup2 onto the low fds, which the supervisor does not use otherwise (its
            // stdio is the guest's); the originals are closed below.
            let moved = unsafe {
                libc::dup2(fd, OOM_KILLS_FD) == OOM_KILLS_FD
                    && libc::dup2(STATUS_FD, REPORT_FD) == REPORT_FD
            };
            if !moved {
                return Err(format!(
                    "keep the OOM report fds: {}",
                    std::io::Error::last_os_error()
                ));
            }
            sys::close_fds_from(REPORT_FD + 1);
            let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
            // SAFETY: ignoring a signal.
            unsafe { sigaction(Signal::SIGPIPE, &ignore) }
                .map_err(|e| format!("ignore SIGPIPE: {e}"))?;
        }
        None => sys::close_fds_from(0),
    }
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("no core dumps: {e}"))?;
    const CAP_KILL: u32 = 5;
    let kill = CAP_KILL;
    for cap in 0..=crate::capabilities::last_cap() {
        if cap != kill {
            sys::drop_bounding(cap).map_err(|e| format!("drop capability {cap}: {e}"))?;
        }
    }
    sys::capset(1 << kill, 1 << kill, 0).map_err(|e| format!("set capabilities: {e}"))?;
    sys::set_ambient(&[]).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    crate::seccomp::install_supervisor()
}

/// Ends this process by `signal`, as the child ended.
fn die_by(signal: Signal) -> ! {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restoring the default action.
    let _ = unsafe { sigaction(signal, &default) };
    let mut set = SigSet::empty();
    set.add(signal);
    let _ = set.thread_unblock();
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
    // A signal whose default action does not end a process (or that was stopped by the
    // filter): report the shim's usual encoding of a kill.
    // SAFETY: as in `supervise`.
    unsafe { libc::_exit(128 + signal as i32) }
}
