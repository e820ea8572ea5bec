//! Which registered process each pid is, and the exits of pids nobody has registered yet.
//!
//! An exit can arrive before its pid is registered (a process that dies at once); it is kept as
//! *unclaimed* and matched when the pid is registered, so no exit is lost. Only an exit reaped
//! after the Create that registers the pid began can be that process's: pids are reused, and
//! an older exit of the same number (a helper the shim reaped as subreaper) would end a new
//! task before it started.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// How many exits of unknown pids are remembered.
const UNCLAIMED_EXITS: usize = 1024;

/// Registered pids and their owners `O`, and exits nobody has claimed yet.
pub(super) struct PidTable<O> {
    owners: HashMap<i32, O>,
    /// Exits of pids nobody has registered yet: pid, status, when it was reaped.
    unclaimed: VecDeque<(i32, i32, Instant)>,
}

impl<O> Default for PidTable<O> {
    fn default() -> Self {
        PidTable {
            owners: HashMap::new(),
            unclaimed: VecDeque::new(),
        }
    }
}

impl<O> PidTable<O> {
    /// Registers `pid`, a process started after `began`, as `owner`'s; returns its exit status
    /// if it has already exited (then nothing is registered). An unclaimed exit of the same pid
    /// from before `began` was another process's, and is dropped.
    pub(super) fn register(&mut self, pid: i32, owner: O, began: Instant) -> Option<i32> {
        let code = self.take_exit(pid, began);
        if code.is_none() {
            self.owners.insert(pid, owner);
        }
        code
    }

    /// The owner of `pid`, which exited with `code`, no longer registered; `None`, keeping the
    /// exit for a later [`register`](Self::register), when nobody has registered it.
    pub(super) fn claim(&mut self, pid: i32, code: i32) -> Option<O> {
        let owner = self.owners.remove(&pid);
        if owner.is_none() {
            self.keep_exit(pid, code, Instant::now());
        }
        owner
    }

    /// Keeps the exit of a pid nobody has registered (yet).
    fn keep_exit(&mut self, pid: i32, code: i32, reaped: Instant) {
        self.unclaimed.push_back((pid, code, reaped));
        if self.unclaimed.len() > UNCLAIMED_EXITS {
            self.unclaimed.pop_front();
        }
    }

    /// How many exits are kept unclaimed.
    #[cfg(test)]
    pub(super) fn unclaimed_len(&self) -> usize {
        self.unclaimed.len()
    }

    /// The kept exit of `pid` if it was reaped after `began`; older exits of the same pid, a
    /// process before it with the same number, are dropped.
    fn take_exit(&mut self, pid: i32, began: Instant) -> Option<i32> {
        while let Some(i) = self.unclaimed.iter().position(|(p, _, _)| *p == pid) {
            let (_, code, reaped) = self.unclaimed.remove(i)?;
            if reaped >= began {
                return Some(code);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_exit_reaped_before_a_create_began_is_not_its_process() {
        let mut pids: PidTable<()> = PidTable::default();
        let long_ago = Instant::now();
        // A helper with pid 4242 exited and was reaped; later a Create began, and its cell
        // got the same pid.
        pids.keep_exit(4242, 0, long_ago);
        let began = long_ago + Duration::from_millis(10);
        assert_eq!(pids.take_exit(4242, began), None);
        assert!(pids.unclaimed.is_empty(), "the stale exit is dropped");
        // A cell that died at once, before its pid was registered, keeps its exit.
        pids.keep_exit(4242, 137, began + Duration::from_millis(1));
        assert_eq!(pids.take_exit(4242, began), Some(137));
    }
}
