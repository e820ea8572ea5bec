//! ttrpc, the RPC protocol containerd speaks to its shims, served and called with as few
//! threads as a shim needs.
//!
//! Why not the `ttrpc` crate's own server and client: its synchronous server starts, for every
//! connection, a handler thread, a reader, a writer and two or more request threads, besides its
//! listener and reaper, and hands every request from the reader to a request thread and every
//! response on to the writer; its client starts a reader and a writer thread. A daemon serves one
//! short task, so those threads (about 11 of the 16 a daemon started) and the hand-offs between
//! them were a large share of the CPU a task costs (`perf`: `clone3` alone took 0.3 ms of the
//! daemon's 4.7).
//! Here one thread serves every connection ([`server`]) and answers most requests itself; only
//! requests that may take long get a thread of their own (Create, which may compile, and Wait,
//! which lasts as long as the task). The events client ([`client`]) makes its calls from the
//! thread that sends them.
//!
//! What stays the crate's: the message types (`ttrpc::Request`, `Response`, `Status`) and the
//! generated method handlers of containerd's Task service, which this server calls as the
//! crate's server would.

pub mod client;
pub mod frame;
pub mod outstanding;
pub mod server;
