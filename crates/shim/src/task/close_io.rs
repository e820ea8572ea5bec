//! CloseIO: the cell reads stdin straight from the FIFO, so the client closing its end is the
//! guest's end of file; nothing is held open here. A terminal's stdin relay
//! (`crate::host::console`) ends the same way, when the client closes the FIFO.

use super::Tasks;
use crate::error::Result;

impl Tasks {
    /// CloseIO (of the task, or of exec `exec_id`).
    pub fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        let task = self.get(id)?;
        if exec_id.is_empty() {
            Ok(())
        } else {
            self.check_exec(&task, exec_id)
        }
    }
}
