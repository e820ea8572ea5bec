//! The seccomp allow-list, installed in a forked child of this test: what a cell needs still
//! works, and what an escaped guest would reach for is refused.
//!
//! One test in this binary, so the fork happens while no other test thread can hold a lock.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Runs `check` in a forked child under the filter; returns the child's exit status.
fn in_filtered_child(check: fn() -> Result<(), String>) -> i32 {
    // SAFETY: the child only runs `check` and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = match nix::sys::prctl::set_no_new_privs()
                .map_err(|e| e.to_string())
                .and_then(|()| wasmcell_cell::seccomp::install())
                .and_then(|()| check())
            {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            };
            // SAFETY: end the child without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
            other => panic!("child: {other:?}"),
        },
    }
}

fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, nix::errno::Errno>) -> Result<(), String> {
    match r {
        Err(nix::errno::Errno::EPERM) => Ok(()),
        other => Err(format!("{what}: expected EPERM, got {other:?}")),
    }
}

fn checks() -> Result<(), String> {
    // Needed by a running guest.
    let t = std::thread::spawn(|| 7).join().map_err(|_| "thread")?;
    if t != 7 {
        return Err("thread result".into());
    }
    let f = std::fs::File::open("/proc/self/status").map_err(|e| format!("open: {e}"))?;
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    if !status.lines().any(|l| l == "Seccomp:\t2") {
        return Err(format!("not in filter mode: {status}"));
    }
    drop(f);
    let tcp = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .map_err(|e| format!("AF_INET socket: {e}"))?;
    drop(tcp);

    // Refused.
    refused(
        "unshare(CLONE_NEWNS)",
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS),
    )?;
    refused(
        "AF_UNIX socket",
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        ),
    )?;
    refused(
        "mount",
        nix::mount::mount(
            Some("none"),
            "/tmp",
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ),
    )?;
    let len = std::num::NonZeroUsize::new(4096).ok_or("len")?;
    // SAFETY: an anonymous mapping that is never touched.
    let exec = unsafe {
        nix::sys::mman::mmap_anonymous(
            None,
            len,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_EXEC,
            nix::sys::mman::MapFlags::MAP_PRIVATE,
        )
    };
    refused("mmap PROT_EXEC", exec)?;
    refused("setuid", nix::unistd::setuid(nix::unistd::Uid::from_raw(0)))?;
    refused(
        "ptrace",
        nix::sys::ptrace::attach(nix::unistd::Pid::from_raw(1)),
    )?;
    if std::process::Command::new("/bin/true").spawn().is_ok() {
        return Err("a new process was created".into());
    }
    // SAFETY: clone3 with no arguments; answered by the filter before the kernel reads them.
    let clone3 = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    match nix::errno::Errno::result(clone3) {
        Err(nix::errno::Errno::ENOSYS) => {}
        other => return Err(format!("clone3: expected ENOSYS, got {other:?}")),
    }
    // The x32 table of x86_64 kernels: the same call under another number.
    #[cfg(target_arch = "x86_64")]
    refused("x32 getpid", {
        // SAFETY: getpid takes no arguments.
        nix::errno::Errno::result(unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) })
    })?;
    let stdin = std::io::stdin();
    refused("ioctl TIOCSTI", {
        let c = 0u8;
        // SAFETY: TIOCSTI with a pointer to one byte; refused before the kernel reads it.
        nix::errno::Errno::result(unsafe {
            libc::ioctl(stdin.as_raw_fd(), libc::TIOCSTI, &c as *const u8)
        })
    })?;
    Ok(())
}

#[test]
fn allow_list_keeps_what_a_cell_needs_and_refuses_the_rest() {
    assert_eq!(
        in_filtered_child(checks),
        0,
        "see the child's message above"
    );
}
