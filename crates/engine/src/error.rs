//! Errors of the engine layer.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong compiling, caching, linking or running a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be configured.
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// The wasm bytes do not compile.
    #[error("{program} is not valid WebAssembly: {reason}")]
    Compile {
        /// Program name (`process.args[0]`).
        program: String,
        /// The validator's or compiler's message.
        reason: String,
    },
    /// Compiling was cut short from outside (the compiler process was killed: at the
    /// container's memory limit, typically); the bytes may be valid.
    #[error("{program} could not be compiled: {reason}")]
    CompileAborted {
        /// Program name.
        program: String,
        /// What ended the compiler.
        reason: String,
    },
    /// The guest imports something no host provides, or exports no entry point.
    #[error("{program} cannot be linked: {reason}")]
    Link {
        /// Program name.
        program: String,
        /// What is missing.
        reason: String,
    },
    /// The compile cache directory is unsafe or unusable.
    #[error("compile cache {dir}: {reason}")]
    Cache {
        /// Cache directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The guest's WASI context could not be built (for example a preopen that cannot be
    /// opened).
    #[error("{0}")]
    Wasi(String),
    /// An I/O error, after what was being done.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io(context.into(), source)
    }
}
