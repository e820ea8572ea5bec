//! Stats: the task's cgroup metrics.

use containerd_shim::api::{StatsRequest, StatsResponse};

use super::Tasks;
use crate::error::Result;

impl Tasks {
    /// Stats.
    pub fn stats(&self, req: StatsRequest) -> Result<StatsResponse> {
        let task = self.get(&req.id)?;
        let mut resp = StatsResponse::new();
        resp.stats = Some(task.backend.stats()?).into();
        Ok(resp)
    }
}
