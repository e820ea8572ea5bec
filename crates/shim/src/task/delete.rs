//! Delete: remove a stopped (or never started) task and everything it left.

use std::time::Duration;

use containerd_shim::api::{DeleteRequest, DeleteResponse};
use containerd_shim::protos::events::task::TaskDelete;
use containerd_shim::protos::topics::TASK_DELETE_EVENT_TOPIC;

use super::events::timestamp;
use super::lifecycle::Status;
use super::Tasks;
use crate::error::{Error, Result};
use crate::sync::{lock, wait_timeout_while};

/// How long Delete waits for a killed, never-started task to exit.
const DELETE_KILL_TIMEOUT: Duration = Duration::from_secs(10);

impl Tasks {
    /// Delete.
    pub fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.delete_exec(&task, &req.exec_id);
        }
        let status = lock(&task.state).status();
        match status {
            Status::Created => {
                task.backend.kill_unstarted();
                let (_st, waited) = wait_timeout_while(
                    &task.changed,
                    lock(&task.state),
                    DELETE_KILL_TIMEOUT,
                    |s| s.status() == Status::Created,
                );
                if waited.timed_out() {
                    return Err(Error::Internal(format!(
                        "task {} did not exit within {DELETE_KILL_TIMEOUT:?} of SIGKILL",
                        task.id
                    )));
                }
            }
            Status::Running | Status::Paused => {
                return Err(Error::FailedPrecondition(format!(
                    "task {} is {status}: kill it before deleting it",
                    task.id
                )))
            }
            Status::Stopped | Status::Deleted => {}
        }
        let exit = lock(&task.state).deleted()?;
        task.backend.remove();
        if let Some(rootfs) = &task.rootfs {
            crate::host::rootfs::unmount(rootfs);
        }
        lock(&self.tasks).remove(&task.id);

        let mut ev = TaskDelete::new();
        ev.container_id = task.id.clone();
        ev.id = task.id.clone();
        ev.pid = task.pid;
        ev.exit_status = exit.code;
        ev.exited_at = Some(timestamp(exit.at)).into();
        self.events.send(TASK_DELETE_EVENT_TOPIC, Box::new(ev));

        let mut resp = DeleteResponse::new();
        resp.pid = task.pid;
        resp.exit_status = exit.code;
        resp.exited_at = Some(timestamp(exit.at)).into();
        Ok(resp)
    }
}
