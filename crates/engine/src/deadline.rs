//! A command's CPU deadline: a watcher thread reads the process's CPU time and, once the
//! deadline is used up, ticks the engine's epoch, which makes the guest trap at its next check
//! (the engine's code checks the epoch only when the deadline setting asked for it).
//!
//! CPU time, not wall time: a command waiting on its input or the network uses none, and a
//! deadline is about what a runaway guest costs the node. The process's CPU time counts every
//! thread of the cell (the guest's, the runtime's worker, a blocking host call's); what the
//! cell used before the guest started (loading, linking; under runc, runc's own start) is not
//! the guest's and is left out.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::{Engine, Error, Result};

/// How often, at most, the watcher reads the CPU time: the deadline is met to about this.
const MAX_POLL: Duration = Duration::from_millis(20);

/// Ends the watcher when dropped.
pub(crate) struct Watching(#[allow(dead_code)] Sender<()>);

/// Starts the thread that interrupts `engine`'s stores once this process has used `deadline`
/// of CPU time.
pub(crate) fn watch_cpu_time(engine: Engine, deadline: Duration) -> Result<Watching> {
    // Read once here, so that a clock that cannot be read fails the start, not the deadline.
    let before = process_cpu_time().map_err(|e| {
        Error::Engine(format!(
            "the CPU deadline cannot be kept: the process's CPU time cannot be read ({e})"
        ))
    })?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("cpu-deadline".into())
        .spawn(move || loop {
            // It was read once: a later failure is the kernel's, and stopping is the safe side.
            let used = process_cpu_time().map_or(deadline, |now| now.saturating_sub(before));
            if used >= deadline {
                engine.interrupt();
                return;
            }
            // Several threads may use CPU time at once: the watcher looks again after half of
            // what is left, at least every `MAX_POLL`, so the deadline is overshot by at most
            // that much per busy thread.
            let wait = ((deadline - used) / 2).clamp(Duration::from_millis(1), MAX_POLL);
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })
        .map_err(|e| Error::io("start the CPU deadline's watcher", e))?;
    Ok(Watching(stop))
}

fn process_cpu_time() -> nix::Result<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    Ok(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
}
