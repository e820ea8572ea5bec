//! Whether this kernel has the system calls a cell needs, asked of the kernel itself: a call
//! the kernel lacks fails with `ENOSYS`, one it has fails on the bad argument it is given (or
//! does its harmless work). Version numbers are not read: distributions backport calls, and
//! seccomp profiles of a container doctor runs in can hide them.
//!
//! The one place in this program with `unsafe`: libc's raw `syscall` is the only way to reach
//! calls that libc and nix do not wrap. Each call is given arguments that touch no memory of
//! ours beyond what it names.
#![allow(unsafe_code)]

/// A kernel feature the cell needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// seccomp filters (the cell's system-call allow-list).
    SeccompFilter,
    /// `open_tree(2)` (Linux 5.2): detached copies of mounts for a cell's preopens.
    OpenTree,
    /// `mount_setattr(2)` (Linux 5.12): read-only, nosuid, nodev on those copies.
    MountSetattr,
    /// `pidfd_open(2)` (Linux 5.3): waiting on a cell's process without pid reuse races.
    Pidfd,
}

impl Feature {
    pub const ALL: [Feature; 4] = [
        Feature::SeccompFilter,
        Feature::OpenTree,
        Feature::MountSetattr,
        Feature::Pidfd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::SeccompFilter => "seccomp filter",
            Feature::OpenTree => "open_tree",
            Feature::MountSetattr => "mount_setattr",
            Feature::Pidfd => "pidfd_open",
        }
    }

    /// The kernel release that brought it.
    pub fn since(self) -> &'static str {
        match self {
            Feature::SeccompFilter => "3.5",
            Feature::OpenTree => "5.2",
            Feature::MountSetattr => "5.12",
            Feature::Pidfd => "5.3",
        }
    }
}

/// Asks a kernel for features; a double in tests.
pub trait Kernel {
    /// Ok(true) when the kernel has `feature`, Ok(false) when it lacks it, Err when the
    /// answer could not be read.
    fn has(&self, feature: Feature) -> Result<bool, String>;
}

/// The kernel this program runs on.
pub struct Running;

impl Kernel for Running {
    fn has(&self, feature: Feature) -> Result<bool, String> {
        // SAFETY: each call gets an invalid file descriptor or a null pointer with flags that
        // make the kernel check the arguments before it reads any memory, or (pidfd_open of
        // this process) returns a new descriptor that is closed at once.
        let rc = unsafe {
            match feature {
                Feature::SeccompFilter => {
                    const SECCOMP_GET_ACTION_AVAIL: libc::c_long = 2;
                    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
                    let action = SECCOMP_RET_ERRNO;
                    libc::syscall(
                        libc::SYS_seccomp,
                        SECCOMP_GET_ACTION_AVAIL,
                        0,
                        &action as *const u32,
                    )
                }
                Feature::OpenTree => libc::syscall(libc::SYS_open_tree, -1, c"".as_ptr(), 0),
                Feature::MountSetattr => libc::syscall(
                    libc::SYS_mount_setattr,
                    -1,
                    c"".as_ptr(),
                    0,
                    std::ptr::null::<u8>(),
                    0,
                ),
                Feature::Pidfd => {
                    let fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
                    if fd >= 0 {
                        libc::close(fd as libc::c_int);
                    }
                    fd
                }
            }
        };
        if rc >= 0 {
            return Ok(true);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS) => Ok(false),
            // A seccomp profile around doctor itself may refuse the call; that says nothing
            // of the kernel.
            Some(libc::EPERM) if feature != Feature::SeccompFilter => Err(format!(
                "{} was refused (EPERM): is doctor running under a seccomp profile?",
                feature.name()
            )),
            // seccomp without filter support answers EINVAL for the operation.
            Some(libc::EINVAL) if feature == Feature::SeccompFilter => Ok(false),
            Some(_) => Ok(true),
            None => Err(format!("{}: no error number", feature.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machines_kernel_has_what_the_cell_uses() {
        // The shim's own tests run cells here, so every feature is present.
        for f in Feature::ALL {
            assert_eq!(Running.has(f), Ok(true), "{}", f.name());
        }
    }
}
