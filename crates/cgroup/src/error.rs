//! Errors of cgroup operations.

/// A failed cgroup operation, naming the file or directory.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CgroupError {
    pub(crate) what: String,
    #[source]
    pub(crate) source: std::io::Error,
}

pub(crate) fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CgroupError {
    let what = what.into();
    move |source| CgroupError { what, source }
}

/// Result of cgroup operations.
pub type Result<T> = std::result::Result<T, CgroupError>;
