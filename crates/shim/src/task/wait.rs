//! Wait: block until the task has exited (answered on a thread of its own).

use containerd_shim::api::{WaitRequest, WaitResponse};

use super::events::timestamp;
use super::Tasks;
use crate::error::Result;
use crate::sync::{lock, wait_while};

impl Tasks {
    /// Wait.
    pub fn wait(&self, req: WaitRequest) -> Result<WaitResponse> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.wait_exec(&task, &req.exec_id);
        }
        let st = wait_while(&task.changed, lock(&task.state), |s| s.is_alive());
        let mut resp = WaitResponse::new();
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }
}
