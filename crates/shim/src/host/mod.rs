//! The host side of the shim, below the task core and the backends: child processes and their
//! reaping, stdio and terminals, rootfs mounts, the image lookup, cgroup metrics, systemd
//! scopes, runc's command line, the process title, and termination messages.

pub mod console;
pub mod hooks;
pub mod image;
pub mod metrics;
pub mod process;
pub mod proctitle;
pub mod prometheus;
pub mod reaper;
pub mod rootfs;
pub mod runc;
pub mod streams;
pub mod systemd;
pub mod systemd_direct;
pub mod termination;
