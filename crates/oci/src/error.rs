//! Errors of the task layer.
//!
//! Each variant carries what a user needs to act on; the shim maps them to ttrpc status codes in
//! one place (`crates/shim/src/error.rs`).

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while preparing or driving a task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's `config.json` is missing or malformed.
    #[error("invalid OCI spec {path}: {reason}")]
    InvalidSpec {
        /// Path of the spec file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The spec asks for isolation the cell does not implement.
    #[error("{0}")]
    Unsupported(#[from] crate::isolation::Unsupported),
    /// A setting (annotation or env) names nothing known, or has a value it does not allow.
    #[error("{0}")]
    Setting(#[from] crate::settings::SettingError),
    /// The spec has no `process` or `process.args` is empty.
    #[error("the OCI spec has no process to run (process.args is empty)")]
    NoProcess,
    /// The entrypoint named by `process.args[0]` does not exist in the rootfs.
    #[error("entrypoint {entrypoint:?} not found in the container rootfs{searched}")]
    EntrypointNotFound {
        /// `process.args[0]`.
        entrypoint: String,
        /// Where it was looked for (PATH search), pre-formatted.
        searched: String,
    },
    /// The entrypoint is a special file (a FIFO, a device node, a socket): never opened.
    #[error("entrypoint {entrypoint:?} is {kind}, not a regular file; it was not opened")]
    EntrypointNotAFile {
        /// The path in the rootfs.
        entrypoint: String,
        /// What it is ("a FIFO", ...).
        kind: &'static str,
    },
    /// The entrypoint is neither wasm nor a native executable.
    #[error(
        "entrypoint {entrypoint:?} is neither a WebAssembly module or component (no \\0asm magic) \
         nor a native executable (ELF or #!): first bytes {head}"
    )]
    UnknownEntrypointFormat {
        /// `process.args[0]`.
        entrypoint: String,
        /// Hex dump of the first bytes.
        head: String,
    },
    /// The wasm binary has a version this shim does not know.
    #[error("entrypoint {entrypoint:?} has the wasm magic but an unknown version/layer {version}")]
    UnknownWasmVersion {
        /// `process.args[0]`.
        entrypoint: String,
        /// The 4 version bytes, hex.
        version: String,
    },
    /// A stdio URI containerd handed us is not understood.
    #[error("unsupported stdio {what} {uri:?}: {reason}")]
    Stdio {
        /// stdin/stdout/stderr.
        what: &'static str,
        /// The URI or path.
        uri: String,
        /// Why it failed.
        reason: String,
    },
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
