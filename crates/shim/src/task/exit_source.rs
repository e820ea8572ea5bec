//! Where the exits of the shim's children come from, and the thread that hands them on.

use crate::error::{Error, Result};

/// Where the exits of the shim's children come from: pid and status (`128 + signal` for a
/// process killed by a signal), in the order they were reaped; `None` once there are no more.
pub trait ExitSource: Send {
    /// The next exit, waiting for it.
    fn next_exit(&mut self) -> Option<(i32, i32)>;
}

impl ExitSource for crate::host::process::ExitWatch {
    fn next_exit(&mut self) -> Option<(i32, i32)> {
        self.next()
    }
}

/// Starts the thread that hands each exit of `exits` to `on_exit` (pid, status), until it
/// returns false (the registry it hands them to is gone).
pub(super) fn route(
    mut exits: Box<dyn ExitSource>,
    mut on_exit: impl FnMut(i32, i32) -> bool + Send + 'static,
) -> Result<()> {
    std::thread::Builder::new()
        .name("exits".into())
        .spawn(move || {
            while let Some((pid, code)) = exits.next_exit() {
                if !on_exit(pid, code) {
                    break;
                }
            }
        })
        .map(drop)
        .map_err(|e| Error::io("start the exit thread", e))
}
