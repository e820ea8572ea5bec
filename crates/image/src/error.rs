//! Errors while building an image.

/// What can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// Writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being written.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
