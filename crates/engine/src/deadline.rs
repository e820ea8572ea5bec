//! A command's CPU deadline: a watcher thread reads the process's CPU time and, once the
//! deadline is used up, ticks the engine's epoch, which makes the guest trap at its next check
//! (the engine's code checks the epoch only when the deadline setting asked for it).
//!
//! CPU time, not wall time: a command waiting on its input or the network uses none, and a
//! deadline is about what a runaway guest costs the node. The process's CPU time counts the
//! guest's thread and the runtime's worker both.

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
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("cpu-deadline".into())
        .spawn(move || loop {
            let used = match process_cpu_time() {
                Ok(used) => used,
                Err(e) => {
                    log::error!("read the process's CPU time: {e}; the guest is stopped");
                    engine.interrupt();
                    return;
                }
            };
            if used >= deadline {
                engine.interrupt();
                return;
            }
            // At most two threads use CPU time: half of what is left is never too long a wait.
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
