//! Shutdown: the shim exits once it serves no task.

use std::time::Duration;

use containerd_shim::api::ShutdownRequest;

use super::Tasks;
use crate::error::Result;
use crate::sync::lock;

/// How long a shim that is about to exit waits for its last events to reach containerd.
const EVENT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Tasks {
    /// Shutdown.
    pub fn shutdown(&self, _req: ShutdownRequest) -> Result<()> {
        // One lock at a time: Create takes `creating` before `tasks`.
        let idle = lock(&self.tasks).is_empty();
        if idle && lock(&self.creating).is_empty() {
            // TaskDelete may still be queued; the process ends soon after `on_idle`.
            self.events.flush(EVENT_FLUSH_TIMEOUT);
            (self.on_idle)();
        }
        Ok(())
    }
}
