//! Locks that survive a panicked holder.
//!
//! A request that panics is answered with an error and the shim serves on (`crate::service`),
//! so a mutex it held must stay usable: every structure the shim locks is consistent between
//! statements, and the data is taken back from the poisoned lock.

use std::sync::{Condvar, LockResult, Mutex, MutexGuard, WaitTimeoutResult};
use std::time::Duration;

/// Locks `m`, taking the data back if a thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    recover(m.lock())
}

/// Waits on `changed` while `condition` holds.
pub fn wait_while<'a, T>(
    changed: &Condvar,
    guard: MutexGuard<'a, T>,
    condition: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    recover(changed.wait_while(guard, condition))
}

/// Waits on `changed` while `condition` holds, at most `timeout`.
pub fn wait_timeout_while<'a, T>(
    changed: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    condition: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    recover(changed.wait_timeout_while(guard, timeout, condition))
}

/// Waits on `changed` at most `timeout`.
pub fn wait_timeout<'a, T>(
    changed: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    recover(changed.wait_timeout(guard, timeout))
}

fn recover<G>(result: LockResult<G>) -> G {
    result.unwrap_or_else(|poisoned| poisoned.into_inner())
}
