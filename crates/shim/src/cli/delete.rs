//! `shim delete`: containerd runs it after every task, and after a shim died, to clean up what
//! the task left: a cell and its cgroup, a runc container, the rootfs mount, a stale socket.
//! It answers containerd with a DeleteResponse on stdout.

use std::path::{Path, PathBuf};

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;

use crate::backend::cell::CELL_PID_FILE;
use crate::backend::config::Config;
use crate::rpc::socket_path;
use crate::task::events::timestamp;

/// Cleans up after task `flags.id` of the bundle in the working directory.
pub fn run(flags: &containerd_shim::Flags) -> Result<(), String> {
    let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let config = Config::from_env(&flags.namespace);
    // containerd runs `shim delete` after every task, normally with nothing left to clean up;
    // only a cell or a runc container left behind needs child processes (runc, systemctl),
    // whose exits the reaper hands on, as in the daemon.
    let runc_left = config.runc.knows(&flags.id);
    if runc_left || bundle.join(CELL_PID_FILE).exists() {
        crate::host::reaper::start()?;
    }
    let pid = crate::backend::cell::clean_up_after_shim(&bundle, &flags.id).unwrap_or(0);
    // runc, a costly process to start, runs only when it has state for this id.
    if runc_left {
        if let Err(e) = config.runc.delete(&flags.id) {
            log::warn!("shim delete {}: {e}", flags.id);
        }
    }
    crate::host::rootfs::unmount(&bundle.join("rootfs"));
    remove_stale_socket(&bundle);
    let mut resp = DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(timestamp(std::time::SystemTime::now())).into();
    let mut stdout = std::io::stdout().lock();
    resp.write_to_writer(&mut stdout)
        .map_err(|e| format!("write the delete response: {e}"))
}

/// Removes the socket of a shim that died without cleaning up (its `address` file is in the
/// bundle). A socket that still answers belongs to a live shim of the same pod and stays.
fn remove_stale_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = socket_path(address.trim());
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        .unwrap_or(false);
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
