//! The task core: each task's state machine, the registry of the shim's tasks, the routing of
//! exits to them, and the events containerd sees, in order. One file per Task RPC.
//!
//! The core reaches the host only through three seams it is given, so that unit tests can drive
//! it with fakes: [`Launch`] makes a task's process and [`crate::backend::Backend`] acts on it;
//! [`ExitSource`] tells which processes ended; [`EventSender`] delivers the events.
//!
//! Ordering of events is kept by taking a task's state lock around every transition and sending
//! the event while holding it: Start sends TaskStart before the exit path (which needs the same
//! lock) can send TaskExit, and `TaskState::exited` refuses a second exit.

mod close_io;
mod connect;
mod create;
mod delete;
pub mod events;
mod exec;
mod exits;
mod kill;
mod pause;
mod pids;
mod resize_pty;
mod shutdown;
mod start;
mod state;
mod stats;
mod update;
mod wait;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use containerd_shim::protos::events::task::TaskIO;
use wasmcell_task::TaskState;

use crate::backend::{Backend, Launch};
use crate::error::{Error, Result};
use crate::sync::lock;
use events::EventSender;
pub use exits::ExitSource;
use exits::Pids;

/// One task (container) of this shim.
pub struct Task {
    id: String,
    bundle: PathBuf,
    pid: u32,
    backend: Box<dyn Backend>,
    io: TaskIO,
    rootfs: Option<PathBuf>,
    logger_pid: Option<i32>,
    state: Mutex<TaskState>,
    changed: Condvar,
    logger_gone: Mutex<bool>,
    logger_changed: Condvar,
    /// The read ends of the binary logger's pipes while the logger lives: FIONREAD on them
    /// tells when it has read everything.
    logger_pipes: Mutex<Vec<OwnedFd>>,
    /// Its exec processes, by exec id, until each is deleted.
    execs: Mutex<HashMap<String, Arc<exec::Exec>>>,
    /// Exec ids whose Exec is under way.
    creating_execs: Mutex<HashSet<String>>,
}

/// The tasks of one shim.
pub struct Tasks {
    launcher: Box<dyn Launch>,
    events: Arc<dyn EventSender>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    /// Ids whose Create is under way (see [`Reservation`]).
    creating: Mutex<HashSet<String>>,
    pids: Mutex<Pids>,
    on_idle: Box<dyn Fn() + Send + Sync>,
}

impl Tasks {
    /// The registry, with its seams; starts the thread that routes the exits of `exits` to
    /// tasks. `on_idle` is called when Shutdown finds no task left.
    pub fn new(
        launcher: Box<dyn Launch>,
        events: Arc<dyn EventSender>,
        exits: Box<dyn ExitSource>,
        on_idle: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<Tasks>> {
        let tasks = Arc::new(Tasks {
            launcher,
            events,
            tasks: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            pids: Mutex::new(Pids::default()),
            on_idle,
        });
        exits::route(Arc::downgrade(&tasks), exits)?;
        Ok(tasks)
    }

    fn get(&self, id: &str) -> Result<Arc<Task>> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id} not found")))
    }

    /// Reserves `id` for a Create, or answers AlreadyExists when a task of that id exists or
    /// is being created.
    fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
        let mut creating = lock(&self.creating);
        if creating.contains(id) || lock(&self.tasks).contains_key(id) {
            return Err(Error::AlreadyExists(format!("task {id} already exists")));
        }
        creating.insert(id.to_owned());
        Ok(Reservation {
            tasks: self,
            id: id.to_owned(),
        })
    }
}

/// An id whose Create is under way, from its first check to the task's entry in the registry
/// (or Create's failure): a second Create of the same id meanwhile answers AlreadyExists
/// instead of building a second cell and cgroup that the first one's would orphan.
struct Reservation<'a> {
    tasks: &'a Tasks,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.tasks.creating).remove(&self.id);
    }
}
