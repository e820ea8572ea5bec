//! The shim's errors and their one conversion to ttrpc status codes, so that containerd can tell
//! NotFound from AlreadyExists from FailedPrecondition from NotImplemented.

use containerd_shim::protos::ttrpc::{self, Code};

/// Result with the shim's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a task RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such task (or exec).
    #[error("{0}")]
    NotFound(String),
    /// A task with this id exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed or names a program that cannot run.
    #[error("{0}")]
    InvalidArgument(String),
    /// The task is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The RPC or option is not implemented by wasmcell.
    #[error("{0}")]
    NotImplemented(String),
    /// Bundle, spec, entrypoint or stdio problems found by the task layer.
    #[error(transparent)]
    Task(#[from] wasmcell_oci::Error),
    /// runc failed.
    #[error("runc: {0}")]
    Runc(String),
    /// A helper command did not finish within its time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else, with context.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// An internal error from an I/O failure, with what was being done.
    pub fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{context}: {e}"))
    }

    /// Loading or compiling a task's program passed the prepare deadline (its process is
    /// killed); the same words for a cell and for the fallback's compiler.
    pub fn prepare_deadline(timeout: std::time::Duration) -> Error {
        Error::InvalidArgument(format!(
            "preparing the wasm (compile or cache load) took longer than the {}s deadline",
            timeout.as_secs()
        ))
    }

    /// The ttrpc code containerd will see.
    pub fn code(&self) -> Code {
        use wasmcell_oci::Error as T;
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::NotImplemented(_) => Code::UNIMPLEMENTED,
            Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Error::Task(T::Io { .. }) => Code::INTERNAL,
            Error::Task(_) => Code::INVALID_ARGUMENT,
            Error::Runc(_) | Error::Internal(_) => Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reach_containerd() {
        assert_eq!(
            Error::FailedPrecondition("task x is running: cannot start".into()).code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            Error::NotImplemented("exec".into()).code(),
            Code::UNIMPLEMENTED
        );
        let ttrpc::Error::RpcStatus(status) = ttrpc::Error::from(Error::NotFound("t".into()))
        else {
            panic!("not a status")
        };
        assert_eq!(status.code(), Code::NOT_FOUND);
        assert_eq!(status.message(), "t");
    }
}
