//! Routing the exits of processes to the tasks (and binary loggers) they belong to.
//!
//! An exit can arrive before its pid is registered (a process that dies at once); it is kept as
//! *unclaimed* and matched when the pid is registered, so no exit is lost. Only an exit reaped
//! after the Create that registers the pid began can be that process's: pids are reused, and
//! an older exit of the same number (a helper the shim reaped as subreaper) would end a new
//! task before it started.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::topics::{TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC};

use super::events::timestamp;
use super::{Task, Tasks};
use crate::error::{Error, Result};
use crate::sync::{lock, wait_timeout};

/// How long an exit waits for the output of a process's terminal to be copied out (the
/// process has exited; only another process still holding the terminal keeps it open).
pub(super) const CONSOLE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a task's exit waits for the exits of the execs killed with it.
const EXECS_EXIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an exit waits for the task's binary logger to drain and exit.
const LOGGER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an exit looks whether the binary logger has read everything.
const LOGGER_DRAIN_POLL: Duration = Duration::from_millis(2);
/// How many exits of unknown pids are remembered.
const UNCLAIMED_EXITS: usize = 1024;

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

/// Starts the thread that hands each exit of `exits` to the registry, for as long as it lives.
pub(super) fn route(tasks: Weak<Tasks>, mut exits: Box<dyn ExitSource>) -> Result<()> {
    std::thread::Builder::new()
        .name("exits".into())
        .spawn(move || {
            while let Some((pid, code)) = exits.next_exit() {
                match tasks.upgrade() {
                    Some(t) => t.on_exit(pid, code),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| Error::io("start the exit thread", e))
}

/// Whose a registered pid is.
pub(super) enum Owner {
    /// The process whose exit is the task's.
    Task(String),
    /// The task's binary logger.
    Logger(String),
    /// An exec process, and its task: its exit is reported even after the task's Delete.
    Exec(Arc<Task>, Arc<super::exec::Exec>),
}

/// Registered pids, and exits nobody has claimed yet.
#[derive(Default)]
pub(super) struct Pids {
    owners: HashMap<i32, Owner>,
    /// Exits of pids nobody has registered yet: pid, status, when it was reaped.
    unclaimed: VecDeque<(i32, i32, Instant)>,
}

impl Pids {
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

impl Tasks {
    /// Registers `pid`, a process started after `began`; returns its exit status if it has
    /// already exited. An unclaimed exit of the same pid from before `began` was another
    /// process's, and is dropped.
    pub(super) fn register(&self, pid: i32, owner: Owner, began: Instant) -> Option<i32> {
        let mut pids = lock(&self.pids);
        let code = pids.take_exit(pid, began);
        if code.is_none() {
            pids.owners.insert(pid, owner);
        }
        code
    }

    fn on_exit(&self, pid: i32, code: i32) {
        let owner = {
            let mut pids = lock(&self.pids);
            match pids.owners.remove(&pid) {
                Some(o) => o,
                None => {
                    pids.keep_exit(pid, code, Instant::now());
                    return;
                }
            }
        };
        match owner {
            Owner::Task(id) => {
                if let Ok(task) = self.get(&id) {
                    self.task_exited(task, code);
                }
            }
            Owner::Logger(id) => {
                if let Ok(task) = self.get(&id) {
                    task.logger_exited();
                }
            }
            Owner::Exec(task, exec) => self.exec_exited(&task, &exec, code),
        }
    }

    /// Records a task's exit once the execs killed with it have exited and its output has been
    /// drained (by its binary logger, from its terminal), then sends TaskOOM (when the OOM
    /// killer ended it) and TaskExit.
    pub(super) fn task_exited(&self, task: Arc<Task>, code: i32) {
        let execs = self.kill_execs(&task);
        let events = Arc::clone(&self.events);
        // The execs' exits come through this same thread: never wait for them on it.
        let drain = (task.logger_pid.is_some() && !*lock(&task.logger_gone))
            || task.backend.console().is_some()
            || !execs.is_empty();
        // Read at once: with systemd's driver, systemd removes the scope's cgroup (and its
        // `memory.events`) as soon as it is empty.
        let oom_killed = task.backend.oom_killed();
        let finish = move || {
            super::exec::wait_exited(&execs, EXECS_EXIT_TIMEOUT);
            if let Some(console) = task.backend.console() {
                console.drain(CONSOLE_DRAIN_TIMEOUT);
            }
            task.wait_logger();
            let mut st = lock(&task.state);
            let now = SystemTime::now();
            if st.exited(code as u32, now) {
                if oom_killed {
                    log::info!("task {}: killed by the OOM killer", task.id);
                    let mut ev = TaskOOM::new();
                    ev.container_id = task.id.clone();
                    events.send(TASK_OOM_EVENT_TOPIC, Box::new(ev));
                }
                log::info!("task {} exited with status {code}", task.id);
                let mut ev = TaskExit::new();
                ev.container_id = task.id.clone();
                ev.id = task.id.clone();
                ev.pid = task.pid;
                ev.exit_status = code as u32;
                ev.exited_at = Some(timestamp(now)).into();
                events.send(TASK_EXIT_EVENT_TOPIC, Box::new(ev));
            }
            task.changed.notify_all();
        };
        finish_exit(drain, finish);
    }
}

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

impl Task {
    pub(super) fn logger_exited(&self) {
        *lock(&self.logger_gone) = true;
        // With its reader gone, a writer must see EPIPE again, not a pipe that fills up.
        lock(&self.logger_pipes).clear();
        self.logger_changed.notify_all();
    }

    /// Waits (bounded) until the binary logger has read all the output: its pipes are empty,
    /// or it has exited. Some loggers (nerdctl's) exit only once they see the task's exit
    /// from containerd, so waiting for the exit alone would hold TaskExit up to the bound.
    fn wait_logger(&self) {
        if self.logger_pid.is_none() {
            return;
        }
        let deadline = Instant::now() + LOGGER_DRAIN_TIMEOUT;
        let mut gone = lock(&self.logger_gone);
        loop {
            let drained = lock(&self.logger_pipes)
                .iter()
                .all(|p| crate::host::process::unread_bytes(p.as_fd()).map_or(true, |n| n == 0));
            let now = Instant::now();
            if *gone || drained || now >= deadline {
                return;
            }
            let wait = LOGGER_DRAIN_POLL.min(deadline - now);
            gone = wait_timeout(&self.logger_changed, gone, wait).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_reaped_before_a_create_began_is_not_its_process() {
        let mut pids = Pids::default();
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
