//! Kill: deliver a signal to the task's process.

use containerd_shim::api::KillRequest;

use super::Tasks;
use crate::error::{Error, Result};
use crate::sync::lock;

impl Tasks {
    /// Kill.
    pub fn kill(&self, req: KillRequest) -> Result<()> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.kill_exec(&task, &req.exec_id, req.signal);
        }
        let mut st = lock(&task.state);
        if !st.is_alive() {
            return Err(Error::NotFound("process already finished".into()));
        }
        task.backend.signal(req.signal, req.all)?;
        if req.all {
            let _killed = self.kill_execs(&task);
        }
        if req.signal == libc::SIGKILL as u32 {
            st.thawed_by_kill();
        }
        Ok(())
    }
}
