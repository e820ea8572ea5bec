//! A container's termination message: the file the kubelet mounts at its
//! `terminationMessagePath`, which it reads when the container has ended and shows in `kubectl
//! describe` (the container's last state's `message`).
//!
//! A wasm guest that ends by a trap, a deadline or a failure after its start gets its reason
//! there. An application that wrote the file itself keeps its own message: the file is written
//! only while empty. The kubelet reads at most 4 KiB; a longer reason is cut on a character
//! boundary at that length. With nothing written, `terminationMessagePolicy:
//! FallbackToLogsOnError` still finds the reason at the end of the log, where the cell wrote it
//! too.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most the kubelet reads of a termination message.
pub const MAX_MESSAGE: usize = wasmcell_cell::MAX_REASON;

/// Writes `reason` into the termination message file at `path`, unless it holds a message
/// already; failures are logged (the task's exit is reported either way).
pub fn leave(task: &str, path: &Path, reason: &str) {
    match write_if_empty(path, reason) {
        Ok(true) => log::info!("task {task}: reason left in {}", path.display()),
        Ok(false) => log::info!(
            "task {task}: {} holds the application's own message; left as it is",
            path.display()
        ),
        Err(e) => log::warn!(
            "task {task}: could not leave its reason in {}: {e}",
            path.display()
        ),
    }
}

/// Writes `reason`, cut to [`MAX_MESSAGE`] bytes, into the regular file `path` if it is empty;
/// whether it did. Never creates the file, never follows a symlink, never blocks on a FIFO.
fn write_if_empty(path: &Path, reason: &str) -> std::io::Result<bool> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > 0 {
        return Ok(false);
    }
    file.write_all(wasmcell_cell::cut(reason, MAX_MESSAGE).as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_empty_file_only_and_keeps_the_kubelets_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("termination-log");
        std::fs::write(&path, "").expect("create");
        let long = "é".repeat(MAX_MESSAGE);
        assert!(write_if_empty(&path, &long).expect("write"));
        let written = std::fs::read_to_string(&path).expect("read");
        assert_eq!(written.len(), MAX_MESSAGE);
        assert!(long.starts_with(&written));

        std::fs::write(&path, "the application's own").expect("write");
        assert!(!write_if_empty(&path, "a trap").expect("kept"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "the application's own"
        );

        // Never created, never through a symlink.
        assert!(write_if_empty(&dir.path().join("missing"), "x").is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(write_if_empty(&link, "x").is_err());
    }
}
