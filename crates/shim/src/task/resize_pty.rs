//! ResizePty: the window size of a task's or an exec's terminal. A process without a terminal
//! has nothing to resize, and that is not an error (containerd's runc shim answers the same).

use super::Tasks;
use crate::error::Result;

impl Tasks {
    /// ResizePty (of the task, or of exec `exec_id`).
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let task = self.get(id)?;
        if exec_id.is_empty() {
            return match task.backend.console() {
                Some(console) => console.resize(width, height),
                None => Ok(()),
            };
        }
        self.resize_exec(&task, exec_id, width, height)
    }
}
