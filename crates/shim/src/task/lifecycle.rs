//! The task lifecycle as an explicit state machine.
//!
//! `Created → Running → Stopped → Deleted`, with `Created → Stopped` when a task is killed or
//! deleted before it starts, and `Running ⇄ Paused` (a paused task that exits, or is killed
//! with SIGKILL, which thaws it, goes on from there). An invalid transition is an
//! [`Error::FailedPrecondition`] (containerd's FailedPrecondition), never a panic; a second exit is reported as such so that the shim never
//! publishes a duplicate TaskExit.

use std::fmt;
use std::time::SystemTime;

use crate::error::{Error, Result};

/// Where a task is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Started and not yet exited.
    Running,
    /// Running, with its processes frozen.
    Paused,
    /// Exited; the exit status is known.
    Stopped,
    /// Deleted; nothing is left.
    Deleted,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Deleted => "deleted",
        })
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, `128 + signal` for a process ended by a signal.
    pub code: u32,
    /// When the shim saw the exit.
    pub at: SystemTime,
}

/// State of one task.
#[derive(Debug, Clone)]
pub struct TaskState {
    id: String,
    status: Status,
    exit: Option<ExitStatus>,
}

impl TaskState {
    /// A freshly created task.
    pub fn new(id: &str) -> Self {
        TaskState {
            id: id.to_owned(),
            status: Status::Created,
            exit: None,
        }
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The exit status, once stopped.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit
    }

    fn invalid(&self, operation: &'static str) -> Error {
        Error::FailedPrecondition(format!(
            "task {} is {}: cannot {operation}",
            self.id, self.status
        ))
    }

    /// Checks that the task can start.
    pub fn check_start(&self) -> Result<()> {
        match self.status {
            Status::Created => Ok(()),
            _ => Err(self.invalid("start")),
        }
    }

    /// `Created → Running`.
    pub fn started(&mut self) -> Result<()> {
        self.check_start()?;
        self.status = Status::Running;
        Ok(())
    }

    /// Records the exit; returns `false` (and changes nothing) if an exit was already recorded.
    pub fn exited(&mut self, code: u32, at: SystemTime) -> bool {
        match self.status {
            Status::Created | Status::Running | Status::Paused => {
                self.status = Status::Stopped;
                self.exit = Some(ExitStatus { code, at });
                true
            }
            Status::Stopped | Status::Deleted => false,
        }
    }

    /// Checks that the task can be paused (`frozen`) or resumed.
    pub fn check_freeze(&self, frozen: bool) -> Result<()> {
        match (self.status, frozen) {
            (Status::Running, true) | (Status::Paused, false) => Ok(()),
            (_, true) => Err(self.invalid("pause")),
            (_, false) => Err(self.invalid("resume")),
        }
    }

    /// `Running → Paused` (`frozen`) or `Paused → Running`.
    pub fn frozen(&mut self, frozen: bool) -> Result<()> {
        self.check_freeze(frozen)?;
        self.status = if frozen {
            Status::Paused
        } else {
            Status::Running
        };
        Ok(())
    }

    /// `Paused → Running` after SIGKILL, which thaws a frozen task so that it can die; any
    /// other status stays.
    pub fn thawed_by_kill(&mut self) {
        if self.status == Status::Paused {
            self.status = Status::Running;
        }
    }

    /// Whether the task has not exited yet (created, running or paused).
    pub fn is_alive(&self) -> bool {
        matches!(
            self.status,
            Status::Created | Status::Running | Status::Paused
        )
    }

    /// `Stopped → Deleted`; a running task must be killed first.
    pub fn deleted(&mut self) -> Result<ExitStatus> {
        match (self.status, self.exit) {
            (Status::Stopped, Some(exit)) => {
                self.status = Status::Deleted;
                Ok(exit)
            }
            _ => Err(self.invalid("delete")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_transition_is_a_failed_precondition_naming_the_task() {
        let mut task = TaskState::new("x");
        task.started().expect("a created task starts");
        let again = task
            .check_start()
            .expect_err("a running task does not start again");
        assert_eq!(
            again.code(),
            containerd_shim::protos::ttrpc::Code::FAILED_PRECONDITION
        );
        assert_eq!(again.to_string(), "task x is running: cannot start");
    }

    #[test]
    fn lifecycle() {
        let mut t = TaskState::new("a");
        assert_eq!(t.status(), Status::Created);
        assert!(
            t.deleted().is_err(),
            "cannot delete a created task that has not exited"
        );
        t.started().expect("start");
        assert!(t.started().is_err(), "no second start");
        assert!(t.deleted().is_err(), "cannot delete a running task");
        let now = SystemTime::now();
        assert!(t.exited(137, now));
        assert!(!t.exited(0, now), "a second exit is refused");
        assert_eq!(t.exit().map(|e| e.code), Some(137));
        assert_eq!(t.deleted().map(|e| e.code).ok(), Some(137));
        assert!(t.deleted().is_err());
    }

    #[test]
    fn exit_before_start() {
        let mut t = TaskState::new("b");
        assert!(t.exited(143, SystemTime::now()));
        assert!(t.started().is_err());
        let err = t.check_start().expect_err("stopped");
        assert_eq!(err.to_string(), "task b is stopped: cannot start");
    }

    #[test]
    fn pause_and_resume() {
        let mut t = TaskState::new("c");
        assert!(t.frozen(true).is_err(), "a created task cannot be paused");
        t.started().expect("start");
        assert!(t.frozen(false).is_err(), "a running task cannot be resumed");
        t.frozen(true).expect("pause");
        assert_eq!(t.status(), Status::Paused);
        assert!(t.frozen(true).is_err(), "no second pause");
        t.frozen(false).expect("resume");
        assert_eq!(t.status(), Status::Running);
        t.frozen(true).expect("pause");
        t.thawed_by_kill();
        assert_eq!(t.status(), Status::Running);
        t.frozen(true).expect("pause");
        assert!(t.exited(137, SystemTime::now()), "a paused task exits");
        let err = t.frozen(false).expect_err("stopped");
        assert_eq!(err.to_string(), "task c is stopped: cannot resume");
    }
}
