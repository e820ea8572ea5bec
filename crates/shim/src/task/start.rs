//! Start: let the prepared process run, and send TaskStart before its exit can be sent.

use containerd_shim::api::{StartRequest, StartResponse};
use containerd_shim::protos::events::task::TaskStart;
use containerd_shim::protos::topics::TASK_START_EVENT_TOPIC;

use super::Tasks;
use crate::error::Result;
use crate::sync::lock;

impl Tasks {
    /// Start.
    pub fn start(&self, req: StartRequest) -> Result<StartResponse> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            let mut resp = StartResponse::new();
            resp.pid = self.start_exec(&task, &req.exec_id)?;
            return Ok(resp);
        }
        let mut st = lock(&task.state);
        st.check_start()?;
        task.backend.start()?;
        st.started()?;
        let mut ev = TaskStart::new();
        ev.container_id = task.id.clone();
        ev.pid = task.pid;
        self.events.send(TASK_START_EVENT_TOPIC, Box::new(ev));
        let mut resp = StartResponse::new();
        resp.pid = task.pid;
        Ok(resp)
    }
}
