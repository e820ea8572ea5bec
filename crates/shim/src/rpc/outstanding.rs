//! A count of pieces of work handed off and not yet finished, which a daemon about to exit can
//! wait on for a bounded time: the events not yet delivered to containerd, the ttrpc requests
//! not yet answered.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sync::{lock, wait_timeout};

/// The count, and a condition signalled whenever it goes down.
#[derive(Default)]
pub struct Outstanding {
    count: Mutex<usize>,
    finished: Condvar,
}

impl Outstanding {
    fn count(&self) -> MutexGuard<'_, usize> {
        lock(&self.count)
    }

    /// One more piece of work handed off.
    pub fn add(&self) {
        *self.count() += 1;
    }

    /// One piece of work finished (or dropped).
    pub fn done(&self) {
        let mut n = self.count();
        *n = n.saturating_sub(1);
        self.finished.notify_all();
    }

    /// Waits until nothing is outstanding, at most `timeout`; how many pieces are still
    /// outstanding then (0 when all finished in time).
    pub fn wait_all(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut n = self.count();
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = wait_timeout(&self.finished, n, left).0;
        }
        *n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waits_for_the_work_outstanding_and_no_longer_than_told() {
        let work = Arc::new(Outstanding::default());
        assert_eq!(work.wait_all(Duration::ZERO), 0);
        work.add();
        work.add();
        assert_eq!(work.wait_all(Duration::from_millis(20)), 2);
        let finishing = Arc::clone(&work);
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            finishing.done();
            finishing.done();
        });
        assert_eq!(work.wait_all(Duration::from_secs(10)), 0);
        worker.join().expect("join");
        work.done();
        assert_eq!(work.wait_all(Duration::ZERO), 0, "never below zero");
    }
}
