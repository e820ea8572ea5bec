//! The cell's only unsafe code: taking ownership of the fds the shim placed.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, RawFd};

/// Takes ownership of an fd the shim placed at a fixed number, and marks it close-on-exec.
pub fn take_inherited(fd: RawFd) -> std::io::Result<File> {
    // Checks the fd is open before claiming it.
    nix::fcntl::fcntl(
        // SAFETY: borrowing for the duration of this call only; F_GETFD does not change it.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: the shim's spawn put this fd here for us; nothing else in this freshly executed
    // process has taken ownership of it, and `take_inherited` is called once per fd.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A new owned handle (dup) of one of our own stdio fds.
pub fn dup_file(fd: &impl AsFd) -> std::io::Result<File> {
    Ok(File::from(fd.as_fd().try_clone_to_owned()?))
}
