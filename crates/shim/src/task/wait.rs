//! Wait: block until the task has exited (answered on a thread of its own).

use containerd_shim::api::{WaitRequest, WaitResponse};

use super::events::timestamp;
use super::{no_exec, Tasks};
use crate::error::Result;
use crate::sync::{lock, wait_while};

impl Tasks {
    /// Wait.
    pub fn wait(&self, req: WaitRequest) -> Result<WaitResponse> {
        no_exec(&req.exec_id)?;
        let task = self.get(&req.id)?;
        let st = wait_while(&task.changed, lock(&task.state), |s| s.is_alive());
        let mut resp = WaitResponse::new();
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }
}
