//! The settings of one shim daemon (and of `shim delete`), from the environment containerd
//! gives the shim; a container's env never reaches here.

use std::path::PathBuf;
use std::time::Duration;

use crate::host::runc::Runc;

/// Settings of one shim instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// containerd namespace.
    pub namespace: String,
    /// Root of the host compile cache.
    pub cache_dir: PathBuf,
    /// runc, for native containers.
    pub runc: Runc,
    /// Deadline for preparing (compiling) a wasm program.
    pub prepare_timeout: Duration,
    /// containerd's gRPC socket (the shim's `-address`), where images and their wasm layers are
    /// read; `None` when the shim was not given one.
    pub containerd_address: Option<String>,
    /// Who holds a pod's sandbox (its pause container).
    pub pause: PauseBy,
}

/// Who holds a pod's sandbox: the shim's environment `WASMCELL_PAUSE` (`cell` or `runc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseBy {
    /// A pause cell (`wasmcell_cell::Role::Pause`), when the cell can honour the sandbox's spec;
    /// runc otherwise.
    Cell,
    /// runc, running the pause image's program, always.
    Runc,
}

impl PauseBy {
    pub fn from_env(value: Option<&std::ffi::OsStr>) -> std::result::Result<PauseBy, String> {
        match value.map(|v| v.to_string_lossy()) {
            None => Ok(PauseBy::Cell),
            Some(v) if v == "cell" => Ok(PauseBy::Cell),
            Some(v) if v == "runc" => Ok(PauseBy::Runc),
            Some(v) => Err(format!(
                "WASMCELL_PAUSE={v:?} is neither \"cell\" nor \"runc\"; pods' sandboxes are held by pause cells"
            )),
        }
    }
}

impl Config {
    /// The default configuration for `namespace`, adjusted by the shim's own environment (which
    /// containerd gives it; a container's env never reaches here).
    pub fn from_env(namespace: &str) -> Config {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Config {
            namespace: namespace.to_owned(),
            cache_dir: env("WASMCELL_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/wasmcell/cache")),
            runc: Runc {
                binary: env("WASMCELL_RUNC")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("runc")),
                root: env("WASMCELL_RUNC_ROOT")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/run/wasmcell/runc"))
                    .join(namespace),
            },
            prepare_timeout: env("WASMCELL_PREPARE_TIMEOUT_SECS")
                .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(300)),
            containerd_address: None,
            pause: PauseBy::from_env(env("WASMCELL_PAUSE").as_deref()).unwrap_or_else(|e| {
                log::warn!("{e}");
                PauseBy::Cell
            }),
        }
    }
}
