//! seccomp filters as data: a [`Policy`] (an answer per system call number, some depending on
//! an argument) compiled to a classic BPF program, a spec's own seccomp profile compiled the
//! way runc applies it, and an interpreter that runs a compiled program as the kernel does.
//!
//! This crate only computes programs; installing one (`seccomp(2)`) is its caller's business,
//! so the crate has no `unsafe` and no system calls, and everything in it can be tested and
//! fuzzed without privileges. The cell (`wasmcell-cell`) holds the policies wasmcell installs
//! and installs them.
//!
//! | module | what |
//! |---|---|
//! | [`bpf`] | the compiler: [`Policy`] → BPF, by binary search over the call numbers |
//! | `interpreter` | the part of classic BPF the compiler emits, run as the kernel runs it (feature `interpreter`: tests and the fuzz target) |
//! | [`profile`] | an OCI `linux.seccomp` profile → a compiled program, as runc applies it |
//! | [`syscalls`] | the native architecture's call names and numbers |
//! | [`arch`] | the native architecture's audit number, and call numbers as a filter sees them |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod arch;
pub mod bpf;
#[cfg(feature = "interpreter")]
pub mod interpreter;
#[cfg(feature = "oci-profile")]
pub mod profile;
pub mod syscalls;

pub use bpf::{Action, Case, Check, Compare, Condition, Instruction, Policy, Rule};
