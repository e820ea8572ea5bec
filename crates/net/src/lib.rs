//! What a guest reaches by name, and whom it trusts there: the container's resolver and the
//! container's TLS roots, which the engine gives `wasi:sockets/ip-name-lookup` and outgoing
//! `wasi:http`. Engine-agnostic, so it is tested and fuzzed without wasmtime.
//!
//! | module | what |
//! |---|---|
//! | `conf` | the container's `/etc/resolv.conf`, as libc reads it |
//! | `hosts` | the container's `/etc/hosts` |
//! | `resolver` | a lookup: hosts, then DNS with the search list, bounded |
//! | `trust` | the container's CA bundle as rustls roots |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod conf;
pub mod hosts;
pub mod resolver;
pub mod trust;

pub use conf::ResolvConf;
pub use hosts::Hosts;
pub use resolver::{LookupError, Resolver};
pub use trust::{Roots, Trust};
