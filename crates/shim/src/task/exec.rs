//! Exec processes: more processes in a running task's container (`ctr task exec`, CRI `Exec`
//! and `ExecSync`, exec probes). Each has its own id, stdio and state machine; Start, Kill,
//! Wait, State and Delete with its id act on it; its exit is a TaskExit that names it.
//!
//! The backend makes the process ([`crate::backend::Backend::exec`]): runc tasks (native
//! containers) run it with `runc exec`, cell tasks in a cell that joins the container's.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::api::{
    DeleteResponse, ExecProcessRequest, StateResponse, Status as ApiStatus, WaitResponse,
};
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted, TaskExit};
use containerd_shim::protos::topics::{
    TASK_EXEC_ADDED_EVENT_TOPIC, TASK_EXEC_STARTED_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC,
};

use super::events::timestamp;
use super::lifecycle::{Status, TaskState};
use super::registry::{Exec, Owner, Task, Tasks};
use super::report::{finish_exit, CONSOLE_DRAIN_TIMEOUT};
use crate::error::{Error, Result};
use crate::sync::{lock, wait_timeout_while, wait_while};

/// Waits, at most `timeout`, until `execs` have exited (their exits reported): a container's
/// exit is reported after those of the execs that die with it, as containerd's runc shim
/// reports them, so that a client that sees the container's exit has seen theirs.
pub(super) fn wait_exited(execs: &[Arc<Exec>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for exec in execs {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = wait_timeout_while(&exec.changed, lock(&exec.state), left, |s| s.is_alive());
    }
}

/// An exec id whose Exec is under way: a second Exec of it answers AlreadyExists.
struct ExecReservation<'a> {
    task: &'a Task,
    id: String,
}

impl Drop for ExecReservation<'_> {
    fn drop(&mut self) {
        lock(&self.task.creating_execs).remove(&self.id);
    }
}

impl Task {
    /// Reserves `exec_id` for an Exec, or answers AlreadyExists.
    fn reserve_exec(&self, exec_id: &str) -> Result<ExecReservation<'_>> {
        let execs = lock(&self.execs);
        let mut creating = lock(&self.creating_execs);
        if execs.contains_key(exec_id) || !creating.insert(exec_id.to_owned()) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} already exists in task {}",
                self.id
            )));
        }
        Ok(ExecReservation {
            task: self,
            id: exec_id.to_owned(),
        })
    }

    /// Its exec processes that have started and not exited.
    fn running_execs(&self) -> Vec<Arc<Exec>> {
        let execs: Vec<Arc<Exec>> = lock(&self.execs).values().cloned().collect();
        execs
            .into_iter()
            .filter(|e| lock(&e.state).status() == Status::Running)
            .collect()
    }

    fn exec_named(&self, exec_id: &str) -> Result<Arc<Exec>> {
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} not found in task {}", self.id)))
    }
}

impl Tasks {
    /// Exec: prepares an exec process; Start with its id runs it.
    pub fn exec(&self, req: ExecProcessRequest) -> Result<()> {
        let task = self.get(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(Error::InvalidArgument("exec id is empty".into()));
        }
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&req.spec.value).map_err(|e| {
                Error::InvalidArgument(format!("exec {}: its process spec: {e}", req.exec_id))
            })?;
        let status = lock(&task.state).status();
        if status != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "task {} is {status}: exec needs a running task",
                task.id
            )));
        }
        // The id is taken from here on; the exec is made without holding the registry, since
        // making a cell's compiles (other execs, exits and CloseIO must not wait for it).
        let _reservation = task.reserve_exec(&req.exec_id)?;
        let created = Instant::now();
        let io =
            self.launcher
                .exec_io(&task.id, &req.stdin, &req.stdout, &req.stderr, req.terminal)?;
        let backend = task.backend.exec(&req.exec_id, &process, io)?;
        // The exec joined the namespaces of the task's process as it found them: if the task
        // ended meanwhile, its pid may be another process's by now.
        let status = lock(&task.state).status();
        if status != Status::Running {
            backend.remove();
            return Err(Error::FailedPrecondition(format!(
                "task {} is {status}: it ended while exec {} was being made",
                task.id, req.exec_id
            )));
        }
        lock(&task.execs).insert(
            req.exec_id.clone(),
            Arc::new(Exec {
                id: req.exec_id.clone(),
                backend,
                created,
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                pid: Mutex::new(0),
                watched: Mutex::new(0),
                state: Mutex::new(TaskState::new(&req.exec_id)),
                changed: Condvar::new(),
            }),
        );
        let mut ev = TaskExecAdded::new();
        ev.container_id = task.id.clone();
        ev.exec_id = req.exec_id;
        self.events.send(TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(ev));
        Ok(())
    }

    /// Start of an exec process: runs it, sends TaskExecStarted before its exit can be sent.
    pub(super) fn start_exec(&self, task: &Arc<Task>, exec_id: &str) -> Result<u32> {
        let exec = task.exec_named(exec_id)?;
        let already_exited = {
            let mut st = lock(&exec.state);
            st.check_start()?;
            let started = exec.backend.start()?;
            st.started()?;
            *lock(&exec.pid) = started.pid as u32;
            *lock(&exec.watched) = started.watched;
            let mut ev = TaskExecStarted::new();
            ev.container_id = task.id.clone();
            ev.exec_id = exec.id.clone();
            ev.pid = started.pid as u32;
            self.events
                .send(TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(ev));
            let owner = Owner::Exec(Arc::clone(task), Arc::clone(&exec));
            self.register(started.watched, owner, exec.created)
        };
        if let Some(code) = already_exited {
            self.exec_exited(task, &exec, code);
        }
        let pid = *lock(&exec.pid);
        Ok(pid)
    }

    /// Records an exec process's exit and sends its TaskExit, once what it wrote to its
    /// terminal (if it has one) has been copied out.
    pub(super) fn exec_exited(&self, task: &Arc<Task>, exec: &Arc<Exec>, code: i32) {
        let events = Arc::clone(&self.events);
        let (task, exec) = (Arc::clone(task), Arc::clone(exec));
        let has_console = exec.backend.console().is_some();
        let finish = move || {
            if let Some(console) = exec.backend.console() {
                console.drain(CONSOLE_DRAIN_TIMEOUT);
            }
            let mut st = lock(&exec.state);
            let now = SystemTime::now();
            if st.exited(code as u32, now) {
                log::info!(
                    "task {}: exec {} exited with status {code}",
                    task.id,
                    exec.id
                );
                let mut ev = TaskExit::new();
                ev.container_id = task.id.clone();
                ev.id = exec.id.clone();
                ev.pid = *lock(&exec.pid);
                ev.exit_status = code as u32;
                ev.exited_at = Some(timestamp(now)).into();
                events.send(TASK_EXIT_EVENT_TOPIC, Box::new(ev));
            }
            exec.changed.notify_all();
        };
        finish_exit(has_console, finish);
    }

    /// Kills the running exec processes of `task`: they end with their container (its exit,
    /// or a Kill of all its processes), whether or not it has a PID namespace of its own.
    /// Returns them.
    pub(super) fn kill_execs(&self, task: &Task) -> Vec<Arc<Exec>> {
        let running = task.running_execs();
        for exec in &running {
            if let Err(e) = exec
                .backend
                .signal(*lock(&exec.watched), libc::SIGKILL as u32)
            {
                log::debug!("task {}: kill exec {}: {e}", task.id, exec.id);
            }
        }
        running
    }

    /// Kill of an exec process.
    pub(super) fn kill_exec(&self, task: &Task, exec_id: &str, signal: u32) -> Result<()> {
        let exec = task.exec_named(exec_id)?;
        let st = lock(&exec.state);
        match st.status() {
            Status::Running | Status::Paused => exec.backend.signal(*lock(&exec.watched), signal),
            Status::Created => Err(Error::FailedPrecondition(format!(
                "exec {exec_id} is not started"
            ))),
            Status::Stopped | Status::Deleted => {
                Err(Error::NotFound("process already finished".into()))
            }
        }
    }

    /// Wait for an exec process.
    pub(super) fn wait_exec(&self, task: &Task, exec_id: &str) -> Result<WaitResponse> {
        let exec = task.exec_named(exec_id)?;
        let st = wait_while(&exec.changed, lock(&exec.state), |s| s.is_alive());
        let mut resp = WaitResponse::new();
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }

    /// State of an exec process.
    pub(super) fn state_exec(&self, task: &Task, exec_id: &str) -> Result<StateResponse> {
        let exec = task.exec_named(exec_id)?;
        let st = lock(&exec.state);
        let mut resp = StateResponse::new();
        resp.id = exec.id.clone();
        resp.exec_id = exec.id.clone();
        resp.bundle = task.bundle.to_string_lossy().into_owned();
        resp.pid = *lock(&exec.pid);
        resp.set_status(match st.status() {
            Status::Created => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Paused => ApiStatus::PAUSED,
            Status::Stopped | Status::Deleted => ApiStatus::STOPPED,
        });
        resp.stdin = exec.stdin.clone();
        resp.stdout = exec.stdout.clone();
        resp.stderr = exec.stderr.clone();
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }

    /// Delete of an exec process: one that ran must have exited; one never started goes
    /// without running. Sends no event (containerd expects TaskDelete for tasks only).
    pub(super) fn delete_exec(&self, task: &Task, exec_id: &str) -> Result<DeleteResponse> {
        let exec = task.exec_named(exec_id)?;
        let mut st = lock(&exec.state);
        if st.status() == Status::Created {
            st.exited(0, SystemTime::now());
        }
        let exit = st.deleted().map_err(|_| {
            Error::FailedPrecondition(format!(
                "exec {exec_id} is {}: kill it before deleting it",
                st.status()
            ))
        })?;
        drop(st);
        exec.backend.remove();
        lock(&task.execs).remove(exec_id);
        exec.changed.notify_all();
        let mut resp = DeleteResponse::new();
        resp.pid = *lock(&exec.pid);
        resp.exit_status = exit.code;
        resp.exited_at = Some(timestamp(exit.at)).into();
        Ok(resp)
    }

    /// ResizePty of an exec process; one without a terminal has nothing to resize.
    pub(super) fn resize_exec(
        &self,
        task: &Task,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        match task.exec_named(exec_id)?.backend.console() {
            Some(console) => console.resize(width, height),
            None => Ok(()),
        }
    }

    /// The pids of `task`'s exec processes that are running.
    pub(super) fn exec_pids(&self, task: &Task) -> Vec<u32> {
        task.running_execs().iter().map(|e| *lock(&e.pid)).collect()
    }

    /// Whether an exec of `task` named `exec_id` exists (CloseIO, ResizePty).
    pub(super) fn check_exec(&self, task: &Task, exec_id: &str) -> Result<()> {
        task.exec_named(exec_id).map(drop)
    }
}
