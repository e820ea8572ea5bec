//! ttrpc, the RPC protocol containerd speaks to its shims, served and called with as few
//! threads as a shim needs.
//!
//! Why not the `ttrpc` crate's own server and client: its synchronous server starts, for every
//! connection, a handler thread, a reader, a writer and two or more request threads, besides its
//! listener and reaper, and hands every request from the reader to a request thread and every
//! response on to the writer; its client starts a reader and a writer thread. A daemon serves one
//! short task, so those threads and the hand-offs between them would be a large share of the CPU
//! a task costs (docs/performance.md).
//! Here one thread serves every connection ([`server`]) and answers itself the requests that
//! never wait; the others get a thread of their own (the daemon names which, in
//! `crate::daemon`). The events client ([`client`]) makes its calls from the thread that sends
//! them.
//!
//! What stays the crate's: the message types (`ttrpc::Request`, `Response`, `Status`) and the
//! generated method handlers of containerd's Task service, which this server calls as the
//! crate's server would.

/// The socket path of a ttrpc address (`unix:///run/...` or a plain path), as containerd and
/// its shims write them.
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

pub mod client;
pub mod frame;
pub mod outstanding;
pub mod server;
pub mod workers;
