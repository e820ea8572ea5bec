//! CloseIO: the cell reads stdin straight from the FIFO, so the client closing its end is the
//! guest's end of file; nothing is held open here.

use super::Tasks;
use crate::error::Result;

impl Tasks {
    /// CloseIO.
    pub fn close_io(&self, id: &str) -> Result<()> {
        self.get(id).map(drop)
    }
}
