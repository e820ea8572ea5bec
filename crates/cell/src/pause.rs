//! The pause role: a cell that holds a pod's namespaces, in place of the pod's pause container.
//!
//! CRI starts every pod with a sandbox container whose only job is to exist: the pod's IPC and
//! UTS namespaces (and its PID namespace, when the pod shares one) live as long as its process,
//! the other containers join them through `/proc/<its pid>/ns`, and as the init of the pod's
//! PID namespace it reaps the orphans there. Under runc that costs a `runc create` and a
//! `runc start` per pod. A cell does the same with no program at all: it builds the boundary
//! the sandbox's spec asks for (namespaces, hostname, sysctls, cgroup, the pause image's rootfs
//! read-only, user, capabilities, `no_new_privs`), reports, and after the start byte waits
//! here, under a seccomp filter that allows waiting for signals, reaping and exiting only
//! (`crate::seccomp::install_pause`).
//!
//! Like the pause program, it ends with status 0 on SIGINT or SIGTERM and ignores every other
//! signal but SIGKILL.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::protocol::CELL_FAILURE;

/// Holds until SIGINT or SIGTERM; the exit status (0), or the cell's failure status if the
/// filter cannot be installed.
pub fn hold() -> Result<i32, i32> {
    let all = SigSet::all();
    // Every signal waits in the queue for `wait` below: none is handled asynchronously and none
    // has its default action (as the init of a PID namespace, most would be ignored anyway).
    if nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None).is_err() {
        return Err(CELL_FAILURE);
    }
    if let Err(message) = crate::seccomp::install_pause() {
        // Its stderr is the container's log: say why the sandbox did not hold.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "wasmcell pause: {message}");
        return Err(CELL_FAILURE);
    }
    loop {
        match all.wait() {
            Ok(Signal::SIGINT | Signal::SIGTERM) => return Ok(0),
            Ok(Signal::SIGCHLD) => reap_all(),
            Ok(_) | Err(_) => {}
        }
    }
}

/// Reaps every child that has ended (orphans of the PID namespace re-parented to its init).
fn reap_all() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
