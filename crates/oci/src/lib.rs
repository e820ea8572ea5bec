//! The OCI side of a container, engine-agnostic: its bundle read once ([`Bundle`]), turned into a
//! [`RunSpec`] (what a cell must run, what the guest may see, the isolation and resources the
//! spec asks for), its entrypoint found and classified inside its rootfs, and its stdio (FIFOs,
//! `file://` and `binary://` log URIs) opened.
//!
//! This crate knows containerd's and OCI's vocabulary but nothing of wasmtime; the task state
//! machine is the shim's (`crates/shim/src/task/lifecycle.rs`).
//!
//! Everything here is unit-testable without root, containerd or a wasm engine.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod container_files;
pub mod entrypoint;
pub mod error;
pub mod hooks;
pub mod isolation;
pub mod resources;
pub mod runspec;
pub mod settings;
pub mod stdio;

pub use bundle::Bundle;
pub use container_files::ReadError;
pub use entrypoint::{Entrypoint, ProgramKind};
pub use error::{Error, Result};
pub use isolation::Isolation;
pub use resources::{CgroupPath, Resources};
pub use runspec::{Preopen, RunSpec};
pub use settings::Settings;
