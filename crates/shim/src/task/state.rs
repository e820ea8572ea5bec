//! State: what containerd shows in `ctr task ls`.

use containerd_shim::api::{StateRequest, StateResponse, Status as ApiStatus};

use super::events::timestamp;
use super::lifecycle::Status;
use super::Tasks;
use crate::error::Result;
use crate::sync::lock;

impl Tasks {
    /// State.
    pub fn state(&self, req: StateRequest) -> Result<StateResponse> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.state_exec(&task, &req.exec_id);
        }
        let st = lock(&task.state);
        let mut resp = StateResponse::new();
        resp.id = task.id.clone();
        resp.bundle = task.bundle.to_string_lossy().into_owned();
        resp.pid = task.pid;
        resp.set_status(match st.status() {
            Status::Created => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Paused => ApiStatus::PAUSED,
            Status::Stopped | Status::Deleted => ApiStatus::STOPPED,
        });
        resp.stdin = task.io.stdin.clone();
        resp.stdout = task.io.stdout.clone();
        resp.stderr = task.io.stderr.clone();
        resp.terminal = task.io.terminal;
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }
}
