//! Engine-agnostic task logic of wasmcell.
//!
//! This crate knows containerd's and OCI's vocabulary but nothing of wasmtime: it turns an OCI
//! bundle into a [`RunSpec`] (what a cell must run and what the guest may see), finds and
//! classifies the container's entrypoint inside its rootfs, opens the task's stdio (FIFOs,
//! `file://` and `binary://` log URIs) and holds the task state machine.
//!
//! Everything here is unit-testable without root, containerd or a wasm engine.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod entrypoint;
pub mod error;
pub mod isolation;
pub mod resources;
pub mod runspec;
pub mod state;
pub mod stdio;

pub use entrypoint::{Entrypoint, ProgramKind};
pub use error::{Error, Result};
pub use isolation::Isolation;
pub use resources::{CgroupPath, Resources};
pub use runspec::{Bundle, Preopen, RunSpec};
pub use state::{ExitStatus, Status, TaskState};
