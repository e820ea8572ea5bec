//! What the cell under runc (`super::fallback`) said after its status line: how its guest
//! ended, read by a thread of the fallback until the pipe ends, waited for by the runc task
//! (`super::runc`) at its exit.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wasmcell_cell::AfterStatus;

use crate::sync::{lock, wait_timeout_while};

/// What the cell under runc said after its status line, once its status pipe has ended (the
/// cell has exited).
#[derive(Default)]
pub struct CellReport {
    after: Mutex<Option<AfterStatus>>,
    changed: Condvar,
}

/// How long an exit waits for the status pipe of the cell under runc to end: it ends with the
/// cell, whose exit is being handled.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

impl CellReport {
    pub(super) fn set(&self, after: AfterStatus) {
        *lock(&self.after) = Some(after);
        self.changed.notify_all();
    }

    /// What the cell said, waiting (bounded, once) for its status pipe to end.
    pub fn wait(&self) -> AfterStatus {
        let (mut after, _) =
            wait_timeout_while(&self.changed, lock(&self.after), REPORT_TIMEOUT, |a| {
                a.is_none()
            });
        // Past the bound the cell said nothing; a second look does not wait again.
        after.get_or_insert_with(AfterStatus::default).clone()
    }
}
