//! The task core's data: the shim's tasks and their exec processes, by id, and whose each
//! watched pid is. The RPCs (a file each) and the routing of exits act on these; this file
//! depends on none of them.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use containerd_shim::protos::events::task::TaskIO;

use crate::backend::{Backend, ExecBackend, Launch};
use crate::error::{Error, Result};
use crate::sync::lock;

use super::events::EventSender;
use super::exit_source::{self, ExitSource};
use super::lifecycle::TaskState;
use super::pid_table::PidTable;

/// One task (container) of this shim.
pub struct Task {
    pub(super) id: String,
    pub(super) bundle: PathBuf,
    pub(super) pid: u32,
    pub(super) backend: Box<dyn Backend>,
    pub(super) io: TaskIO,
    pub(super) rootfs: Option<PathBuf>,
    pub(super) logger_pid: Option<i32>,
    pub(super) state: Mutex<TaskState>,
    pub(super) changed: Condvar,
    pub(super) logger_gone: Mutex<bool>,
    pub(super) logger_changed: Condvar,
    /// The read ends of the binary logger's pipes while the logger lives: FIONREAD on them
    /// tells when it has read everything.
    pub(super) logger_pipes: Mutex<Vec<OwnedFd>>,
    /// Its exec processes, by exec id, until each is deleted.
    pub(super) execs: Mutex<HashMap<String, Arc<Exec>>>,
    /// Exec ids whose Exec is under way.
    pub(super) creating_execs: Mutex<HashSet<String>>,
}

/// The tasks of one shim.
pub struct Tasks {
    pub(super) launcher: Box<dyn Launch>,
    pub(super) events: Arc<dyn EventSender>,
    pub(super) tasks: Mutex<HashMap<String, Arc<Task>>>,
    /// Ids whose Create is under way (see [`Reservation`]).
    pub(super) creating: Mutex<HashSet<String>>,
    pub(super) pids: Mutex<PidTable<Owner>>,
    pub(super) on_idle: Box<dyn Fn() + Send + Sync>,
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
            pids: Mutex::new(PidTable::default()),
            on_idle,
        });
        let registry = Arc::downgrade(&tasks);
        exit_source::route(exits, move |pid, code| match registry.upgrade() {
            Some(tasks) => {
                tasks.on_exit(pid, code);
                true
            }
            None => false,
        })?;
        Ok(tasks)
    }

    pub(super) fn get(&self, id: &str) -> Result<Arc<Task>> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id} not found")))
    }

    /// Reserves `id` for a Create, or answers AlreadyExists when a task of that id exists or
    /// is being created.
    pub(super) fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
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
pub(super) struct Reservation<'a> {
    tasks: &'a Tasks,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.tasks.creating).remove(&self.id);
    }
}

/// One exec process of a task.
pub(super) struct Exec {
    pub(super) id: String,
    pub(super) backend: Box<dyn ExecBackend>,
    /// When Exec began making it: only an exit reaped after this can be its process's.
    pub(super) created: Instant,
    pub(super) stdin: String,
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// Its pid as containerd sees it once started (0 before), and the pid whose exit is its.
    pub(super) pid: Mutex<u32>,
    pub(super) watched: Mutex<i32>,
    pub(super) state: Mutex<TaskState>,
    pub(super) changed: Condvar,
}

/// Whose a registered pid is.
pub(super) enum Owner {
    /// The process whose exit is the task's.
    Task(String),
    /// The task's binary logger.
    Logger(String),
    /// An exec process, and its task: its exit is reported even after the task's Delete.
    Exec(Arc<Task>, Arc<Exec>),
}
