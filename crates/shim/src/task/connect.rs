//! Connect: the shim's and the task's pids.

use containerd_shim::api::{ConnectRequest, ConnectResponse};

use super::Tasks;
use crate::error::Result;

impl Tasks {
    /// Connect.
    pub fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse> {
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").to_owned();
        if let Ok(task) = self.get(&req.id) {
            resp.task_pid = task.pid;
        }
        Ok(resp)
    }
}
