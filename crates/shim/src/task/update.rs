//! Update: apply new resources (OCI `LinuxResources` as JSON, as containerd sends them).

use containerd_shim::api::UpdateTaskRequest;

use super::Tasks;
use crate::error::{Error, Result};

impl Tasks {
    /// Update.
    pub fn update(&self, req: UpdateTaskRequest) -> Result<()> {
        let task = self.get(&req.id)?;
        let json = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&json)
            .map_err(|e| Error::InvalidArgument(format!("malformed LinuxResources: {e}")))?;
        task.backend.update(&resources, &json)
    }
}
