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
        // SAFETY: each call is given arguments the kernel refuses before it reads memory of
        // ours or changes anything: a null filter program (EFAULT when filters exist), an
        // invalid file descriptor, a zero size; pidfd_open of this process returns a new
        // descriptor that is closed at once.
        let rc = unsafe {
            match feature {
                Feature::SeccompFilter => libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    std::ptr::null::<libc::c_void>(),
                ) as libc::c_long,
                Feature::OpenTree => libc::syscall(
                    libc::SYS_open_tree,
                    -1 as libc::c_long,
                    c"".as_ptr(),
                    0 as libc::c_long,
                ),
                Feature::MountSetattr => libc::syscall(
                    libc::SYS_mount_setattr,
                    -1 as libc::c_long,
                    c"".as_ptr(),
                    0 as libc::c_long,
                    std::ptr::null::<u8>(),
                    0 as libc::size_t,
                ),
                Feature::Pidfd => {
                    let fd = libc::syscall(
                        libc::SYS_pidfd_open,
                        libc::getpid() as libc::c_long,
                        0 as libc::c_long,
                    );
                    if fd >= 0 {
                        libc::close(fd as libc::c_int);
                    }
                    fd
                }
            }
        };
        let errno = (rc < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        answer(feature, errno, confined())
    }
}

/// Whether this process runs under a seccomp filter of its own (a container's profile), which
/// can answer ENOSYS or EPERM for calls the kernel has.
fn confined() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(false)
}

/// What a probe's outcome says: `errno` is None when the call succeeded.
fn answer(feature: Feature, errno: Option<i32>, confined: bool) -> Result<bool, String> {
    let hidden = || {
        Err(format!(
            "{} could not be asked: doctor runs under a seccomp filter that refuses it; run it \
             on the node itself",
            feature.name()
        ))
    };
    match (feature, errno) {
        (Feature::SeccompFilter, None) => Err("seccomp accepted a null filter".into()),
        // The null filter is refused as a bad address only where filters exist.
        (Feature::SeccompFilter, Some(libc::EFAULT)) => Ok(true),
        (Feature::SeccompFilter, Some(libc::EINVAL)) => Ok(false),
        (_, None) => Ok(true),
        (_, Some(libc::ENOSYS | libc::EPERM)) if confined => hidden(),
        (_, Some(libc::ENOSYS)) => Ok(false),
        (_, Some(libc::EPERM)) => hidden(),
        (Feature::SeccompFilter, Some(e)) => Err(format!("seccomp probe: errno {e}")),
        // The call exists and refused its arguments.
        (_, Some(_)) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_of_a_probe_is_read_as_the_kernel_meant_it() {
        use Feature::*;
        assert_eq!(answer(OpenTree, Some(libc::ENOSYS), false), Ok(false));
        assert_eq!(answer(OpenTree, Some(libc::EBADF), false), Ok(true));
        assert_eq!(answer(Pidfd, None, false), Ok(true));
        assert!(answer(MountSetattr, Some(libc::ENOSYS), true).is_err());
        assert!(answer(MountSetattr, Some(libc::EPERM), false).is_err());
        assert_eq!(answer(SeccompFilter, Some(libc::EFAULT), false), Ok(true));
        assert_eq!(answer(SeccompFilter, Some(libc::EINVAL), false), Ok(false));
        assert!(answer(SeccompFilter, None, false).is_err());
    }

    #[test]
    fn this_machines_kernel_has_what_the_cell_uses() {
        // The shim's own tests run cells here, so every feature is present.
        for f in Feature::ALL {
            assert_eq!(Running.has(f), Ok(true), "{}", f.name());
        }
    }
}
