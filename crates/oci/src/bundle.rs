//! A container's bundle (its directory, `config.json` and rootfs), read once at Create.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::runspec::{file_mounts, preopens, process_env};
use crate::{CgroupPath, Error, Isolation, Preopen, Resources, Result, RunSpec, Settings};

/// The annotation in which the kubelet names a container's termination message path (the CRI
/// plugin passes it on when the handler lists it in `container_annotations`).
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Kubernetes' default termination message path.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// A container's bundle, read once at Create: every later step (finding the program, choosing
/// the backend, building the cell's [`RunSpec`] or runc's container) takes what it needs from
/// here instead of reading `config.json` again.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Its parsed `config.json`. A wasm layer's name fills in `process.args` when the image
    /// gives none, so later steps see the args the guest gets.
    pub spec: Spec,
    /// The rootfs directory: `root.path`, relative to the bundle unless absolute.
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Reads and parses the bundle's `config.json`.
    pub fn read(dir: &Path) -> Result<Bundle> {
        let path = dir.join("config.json");
        let spec = Spec::load(&path).map_err(|e| Error::InvalidSpec {
            path,
            reason: e.to_string(),
        })?;
        let rootfs = match spec.root() {
            Some(root) if root.path().is_absolute() => root.path().clone(),
            Some(root) => dir.join(root.path()),
            None => dir.join("rootfs"),
        };
        Ok(Bundle {
            dir: dir.to_owned(),
            spec,
            rootfs,
        })
    }

    /// `process`, which a container to run must have.
    pub fn process(&self) -> Result<&oci_spec::runtime::Process> {
        self.spec.process().as_ref().ok_or(Error::NoProcess)
    }

    /// `process.env`, split at the first `=`.
    pub fn env(&self) -> Result<Vec<(String, String)>> {
        Ok(process_env(self.process()?))
    }

    /// What the operator tuned for this workload, from its env and its spec's annotations,
    /// validated ([`crate::settings`]).
    pub fn settings(&self) -> Result<Settings> {
        let annotations = self.spec.annotations().clone().unwrap_or_default();
        let memory_limit = self
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .and_then(|l| u64::try_from(l).ok());
        Ok(crate::settings::resolve(
            &self.env()?,
            &annotations,
            memory_limit,
        )?)
    }

    /// The host file bind-mounted at the container's termination message path (the kubelet
    /// mounts one at `terminationMessagePath`), if the spec has one.
    pub fn termination_log(&self) -> Option<PathBuf> {
        let path = self
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(TERMINATION_MESSAGE_PATH_ANNOTATION))
            .map_or(DEFAULT_TERMINATION_MESSAGE_PATH, String::as_str);
        // A file mounted read-only is never written, whoever mounted it there.
        file_mounts(&self.rootfs, &self.spec)
            .into_iter()
            .rev()
            .find(|m| m.guest == path)
            .filter(|m| !m.read_only)
            .map(|m| m.host)
    }

    /// The directories the spec grants the guest: the rootfs as `/` (read-only when
    /// `root.readonly`), then each directory bind mount at its destination.
    pub fn preopens(&self) -> Vec<Preopen> {
        preopens(&self.rootfs, &self.spec)
    }

    /// The run spec of container `id` for a cell on the host: what it runs, what it may see
    /// and the boundary it builds. [`Error::Unsupported`] when the spec asks for something the
    /// cell cannot honour.
    pub fn run_spec(&self, id: &str, stdin: Option<PathBuf>, cache_dir: &Path) -> Result<RunSpec> {
        let process = self.process()?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(Error::NoProcess);
        }
        Ok(RunSpec {
            id: id.to_owned(),
            program: args[0].clone(),
            args,
            env: self.env()?,
            cwd: process.cwd().to_string_lossy().into_owned(),
            rootfs: self.rootfs.clone(),
            preopens: self.preopens(),
            file_mounts: file_mounts(&self.rootfs, &self.spec),
            stdin,
            // The shim sets it when it gives the cell a terminal.
            terminal: false,
            cache_dir: cache_dir.to_owned(),
            isolation: Isolation::from_spec(&self.spec)?,
            cgroup: CgroupPath::of_spec(&self.spec, id)?,
            resources: Resources::from_spec(&self.spec)?,
            // A wasm container's are resolved by the caller ([`Bundle::settings`]): a pod's
            // sandbox carries the pod's annotations too, and has no use for them.
            settings: Settings::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("valid spec")
    }

    #[test]
    fn run_spec_needs_args() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}
        }));
        let bundle = Bundle {
            dir: "/b".into(),
            spec: s,
            rootfs: "/r".into(),
        };
        let err = bundle
            .run_spec("c", None, Path::new("/c"))
            .expect_err("no args");
        assert!(matches!(err, Error::NoProcess), "{err}");
    }

    #[test]
    fn a_bundle_is_read_once_with_its_rootfs_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |root: serde_json::Value| {
            let config = serde_json::json!({
                "ociVersion": "1.0.2", "root": root,
                "process": {"args": ["/a.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
            });
            std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
            Bundle::read(dir.path())
        };
        let relative = write(serde_json::json!({"path": "rootfs"})).expect("read");
        assert_eq!(relative.rootfs, dir.path().join("rootfs"));
        let absolute = write(serde_json::json!({"path": "/elsewhere"})).expect("read");
        assert_eq!(absolute.rootfs, Path::new("/elsewhere"));
        std::fs::write(dir.path().join("config.json"), "{not json").expect("write");
        let err = Bundle::read(dir.path()).expect_err("garbage");
        assert!(
            matches!(&err, Error::InvalidSpec { path, .. } if path.ends_with("config.json")),
            "{err}"
        );
    }
}
