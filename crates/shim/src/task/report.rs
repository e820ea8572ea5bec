//! How an exit is reported: the process has ended; its events go out once its output is out.

use std::time::Duration;

/// How long an exit waits for the output of a process's terminal to be copied out (the
/// process has exited; only another process still holding the terminal keeps it open).
pub(super) const CONSOLE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `finish`, which records an exit and sends its events: at once, or, when it first waits
/// (for output to drain, for other exits), on a thread of its own, since the exits of every
/// process come through one thread, which must not wait.
pub(super) fn finish_exit(waits: bool, finish: impl FnOnce() + Send + 'static) {
    if !waits {
        return finish();
    }
    if let Err(e) = std::thread::Builder::new()
        .name("drain".into())
        .spawn(finish)
    {
        log::error!("start a thread to report an exit: {e}");
    }
}
