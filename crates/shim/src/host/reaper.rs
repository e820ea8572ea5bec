//! Reaping the shim's children: one thread reads SIGCHLD (and SIGTERM and SIGINT, which it
//! ignores, as containerd's shims do) from a signalfd, reaps every child that ended and hands
//! its exit to `containerd_shim::monitor`, where `crate::host::process::ExitWatch` subscribers
//! learn it. The signals are blocked before the first thread exists, since a thread that left
//! SIGCHLD unblocked would take it from the signalfd.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Blocks the signals and starts the reaping thread (for `shim delete`, which has no zygote
/// to fork in between).
pub fn start() -> Result<(), String> {
    let set = block()?;
    reap_in_thread(&set)
}

/// Starts the thread that reaps, reading the signals of `set` (blocked by [`block`]).
pub fn reap_in_thread(set: &SigSet) -> Result<(), String> {
    let signals = signalfd(set, false).map_err(|e| format!("make a signalfd: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || reap_children(signals))
        .map(drop)
        .map_err(|e| format!("start the signal thread: {e}"))
}

/// Blocks SIGCHLD, SIGTERM and SIGINT in this thread, and so in every thread it starts (the
/// zygote sets its own mask; the children the daemon executes start with an empty one, as Rust's
/// `Command` sets it). Returns the set.
pub fn block() -> Result<SigSet, String> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(signal);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("block SIGCHLD, SIGTERM and SIGINT: {e}"))?;
    Ok(set)
}

/// A signalfd that receives the (blocked) signals of `set`; reads do not wait with
/// `nonblock`.
pub fn signalfd(set: &SigSet, nonblock: bool) -> std::io::Result<OwnedFd> {
    let flags = libc::SFD_CLOEXEC | if nonblock { libc::SFD_NONBLOCK } else { 0 };
    // SAFETY: creates a new fd from a valid signal set; checked below.
    let raw = unsafe { libc::signalfd(-1, set.as_ref(), flags) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Reads the signalfd for the process's whole life: every child that ended (the zygote, an
/// executed cell, runc, a cell the dead zygote left to this subreaper) goes to the exit
/// monitor with its exit status, or 128 + the signal that killed it.
fn reap_children(signals: OwnedFd) {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    loop {
        match nix::unistd::read(&signals, &mut info) {
            Ok(n) if n == info.len() => {}
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("read the signalfd (fd {}): {e}", signals.as_raw_fd());
                return;
            }
        }
        // SAFETY: the kernel wrote a whole `signalfd_siginfo` into `info`.
        let siginfo: libc::signalfd_siginfo =
            unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
        if siginfo.ssi_signo != libc::SIGCHLD as u32 {
            log::debug!(
                "received signal {}; the daemon ignores it",
                siginfo.ssi_signo
            );
            continue;
        }
        while let Some((pid, code)) = super::process::reap_ended_child() {
            if let Err(e) = containerd_shim::monitor::monitor_notify_by_pid(pid, code) {
                log::error!("hand the exit of {pid} to the exit monitor: {e}");
            }
        }
    }
}
