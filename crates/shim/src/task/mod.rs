//! The task core: each task's state machine, the registry of the shim's tasks, the routing of
//! exits to them, and the events containerd sees, in order. One file per Task RPC.
//!
//! The core reaches the host only through three seams it is given, so that unit tests can drive
//! it with fakes: [`Launch`](crate::backend::Launch) makes a task's process and [`crate::backend::Backend`] acts on it;
//! [`ExitSource`](exit_source::ExitSource) tells which processes ended; [`EventSender`](events::EventSender) delivers the events.
//!
//! Ordering of events is kept by taking a task's state lock around every transition and sending
//! the event while holding it: Start sends TaskStart before the exit path (which needs the same
//! lock) can send TaskExit, and `TaskState::exited` refuses a second exit.

mod close_io;
mod connect;
mod create;
mod delete;
pub mod events;
mod exec;
mod exit_source;
mod exits;
mod kill;
mod lifecycle;
mod pause;
mod pid_table;
mod pids;
mod registry;
mod report;
mod resize_pty;
mod shutdown;
mod start;
mod state;
mod stats;
mod update;
mod wait;

#[cfg(test)]
mod tests;

pub use registry::{Task, Tasks};
