//! Pids: the task's processes.

use containerd_shim::api::{PidsRequest, PidsResponse};
use containerd_shim::protos::api::ProcessInfo;

use super::Tasks;
use crate::error::Result;
use crate::sync::lock;

impl Tasks {
    /// Pids. A task that has ended but is not deleted still names its process: containerd,
    /// reloading its shims after a restart, takes a shim whose task lists no process for one
    /// whose task was never created and deletes it, and with it the exit status and events of
    /// a task that ended while containerd was away.
    pub fn pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let task = self.get(&req.id)?;
        let ended = !lock(&task.state).is_alive();
        let mut pids = task.backend.processes(task.pid, ended)?;
        // A runc task's list has its execs already; a cell task's has its own process only.
        for pid in self.exec_pids(&task) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        let mut resp = PidsResponse::new();
        resp.processes = pids
            .into_iter()
            .map(|pid| {
                let mut p = ProcessInfo::new();
                p.pid = pid;
                p
            })
            .collect();
        Ok(resp)
    }
}
