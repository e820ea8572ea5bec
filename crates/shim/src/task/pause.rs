//! Pause and Resume: freeze and thaw a running task.

use containerd_shim::api::{PauseRequest, ResumeRequest};
use containerd_shim::protos::events::task::{TaskPaused, TaskResumed};
use containerd_shim::protos::topics::{TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC};

use super::Tasks;
use crate::error::Result;
use crate::sync::lock;

impl Tasks {
    /// Pause.
    pub fn pause(&self, req: PauseRequest) -> Result<()> {
        self.freeze(&req.id, true)
    }

    /// Resume.
    pub fn resume(&self, req: ResumeRequest) -> Result<()> {
        self.freeze(&req.id, false)
    }

    fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let task = self.get(id)?;
        let mut st = lock(&task.state);
        st.check_freeze(frozen)?;
        task.backend.freeze(frozen)?;
        st.frozen(frozen)?;
        if frozen {
            let mut ev = TaskPaused::new();
            ev.container_id = id.to_owned();
            self.events.send(TASK_PAUSED_EVENT_TOPIC, Box::new(ev));
        } else {
            let mut ev = TaskResumed::new();
            ev.container_id = id.to_owned();
            self.events.send(TASK_RESUMED_EVENT_TOPIC, Box::new(ev));
        }
        Ok(())
    }
}
