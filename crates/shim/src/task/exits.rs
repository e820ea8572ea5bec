//! The exits of processes, handed to the tasks, execs and binary loggers they belong to
//! (`pid_table` keeps an exit that comes before its pid is registered).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::topics::{TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC};

use super::events::timestamp;
use super::exec::wait_exited;
use super::registry::{Owner, Task, Tasks};
use super::report::{finish_exit, CONSOLE_DRAIN_TIMEOUT};
use crate::sync::{lock, wait_timeout};

/// How long a task's exit waits for the exits of the execs killed with it.
const EXECS_EXIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an exit waits for the task's binary logger to drain and exit.
const LOGGER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an exit looks whether the binary logger has read everything.
const LOGGER_DRAIN_POLL: Duration = Duration::from_millis(2);

impl Tasks {
    /// Registers `pid`, a process started after `began`; returns its exit status if it has
    /// already exited. An unclaimed exit of the same pid from before `began` was another
    /// process's, and is dropped.
    pub(super) fn register(&self, pid: i32, owner: Owner, began: Instant) -> Option<i32> {
        lock(&self.pids).register(pid, owner, began)
    }

    /// Hands the exit of `pid` to its owner, or keeps it until the pid is registered.
    pub(super) fn on_exit(&self, pid: i32, code: i32) {
        let Some(owner) = lock(&self.pids).claim(pid, code) else {
            return;
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
        // Before TaskExit: the kubelet reads the termination message once it learns of the exit.
        task.backend.ended(code, oom_killed);
        let finish = move || {
            wait_exited(&execs, EXECS_EXIT_TIMEOUT);
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
