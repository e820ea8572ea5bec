//! The cell's only unsafe code: taking ownership of the fds the shim placed, and the system
//! calls no safe wrapper offers (capabilities, `close_range`, installing a seccomp filter).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// Closes every fd from `first` up (nothing the shim did not place on purpose stays open).
pub fn close_fds_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; the ones from `first` up are not owned by
    // any object of this process at this point (called before anything else opens files).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        );
    }
}

/// Drops capability `cap` from the bounding set.
pub fn drop_bounding(cap: u32) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `PR_SET_KEEPCAPS` (keep permitted capabilities across a uid change).
pub fn set_keepcaps(keep: bool) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Clears the ambient set, then raises each of `caps` in it.
pub fn set_ambient(caps: &[u32]) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let clear = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if clear != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for cap in caps {
        // SAFETY: as above.
        let raised = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                *cap as libc::c_ulong,
                0,
                0,
            )
        };
        if raised != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets (bit masks) of this thread, which is the
/// cell's only thread at this point.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        Data {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        Data {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: capset reads a version-3 header and two data structs, both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Forks; the child runs `child` and exits with its result (0 ok, 1 error, the message written
/// to `report`). Returns the child's pid to the parent.
///
/// Only called while the cell is single-threaded, so the child may do anything.
pub fn fork_run(child: impl FnOnce() -> i32) -> std::io::Result<nix::unistd::Pid> {
    // SAFETY: the cell is single-threaded when it forks (before the guest runs and before
    // anything spawns a thread), so the child's copy of the address space is consistent.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = child();
            // SAFETY: leave the child without running the parent's atexit handlers or
            // destructors twice.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Installs a seccomp filter on the calling thread (and so on the threads it creates later).
/// Needs `no_new_privs` or `CAP_SYS_ADMIN`.
pub fn install_seccomp_filter(
    program: &[libc::sock_filter],
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a filter of {} instructions", program.len()),
        )
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// This process's pid as the `/proc` mounted in its mount namespace counts it: the pid in the
/// shim's PID namespace for a cell that has not pivoted yet, whatever PID namespace the cell
/// itself is in (`/proc/self` names the reader in the namespace of the procfs instance).
pub fn pid_in_host_proc() -> Result<i32, String> {
    let link = std::fs::read_link("/proc/self").map_err(|e| format!("read /proc/self: {e}"))?;
    link.to_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("/proc/self points to {}", link.display()))
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_*` flags (`linux/mount.h`).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

const AT_RECURSIVE: libc::c_uint = 0x8000;

fn c_path(path: &std::path::Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn result(rc: libc::c_long) -> std::io::Result<libc::c_long> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A detached copy of the mount tree at `path`, this one and every mount below it, as it is now
/// (`open_tree(2)` with `OPEN_TREE_CLONE` and `AT_RECURSIVE`, Linux 5.2+): later mounts on
/// `path` do not change it.
pub fn clone_tree(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = c_path(path)?;
    // SAFETY: `c` outlives the call; the returned fd is new and owned here.
    let fd = result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    })?;
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sets `attrs` on the detached tree `tree` and every mount in it (`mount_setattr(2)` with
/// `AT_RECURSIVE`, Linux 5.12+).
pub fn set_tree_attrs(tree: &OwnedFd, attrs: u64) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the empty path and `attr` outlive the call; the size passed is the struct's.
    result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Attaches the detached tree `tree` at `path` (`move_mount(2)`).
pub fn attach_tree(tree: &OwnedFd, path: &std::path::Path) -> std::io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let c = c_path(path)?;
    // SAFETY: the paths outlive the call.
    result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Receives one file sent with `SCM_RIGHTS` over the unix socket `socket`, and the one byte sent
/// with it (the shim sends the compiled program of a cell under runc this way, once it has
/// compiled it).
pub fn receive_file(socket: &File) -> std::io::Result<(File, u8)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    // SAFETY: the kernel just installed these descriptors in this process for this message;
    // nothing else owns them.
    let mut owned = fds.into_iter().map(|fd| unsafe { File::from_raw_fd(fd) });
    match (owned.next(), owned.next()) {
        (Some(file), None) => Ok((file, byte[0])),
        (None, _) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the shim sent no file (it ended, or compiling failed)",
        )),
        (Some(_), Some(_)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the shim sent more than one file",
        )),
    }
}
