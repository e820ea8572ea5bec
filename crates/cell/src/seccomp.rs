//! The cell's seccomp allow-list: the system calls wasmtime, its WASI implementation and the
//! Rust runtime make while a guest runs, and nothing else.
//!
//! Installed last in [`crate::boundary::lock_down`], after `no_new_privs`, while the cell is still
//! single-threaded (every thread created later inherits it), and before the cell starts the
//! guest. The list was taken from `strace -f` of cells running core modules and components
//! (stdio, files, stdin, sleep, traps, memory growth) and widened only by the calls of the same
//! families (the `*v`/`*64` variants, sockets for WASI sockets). Anything else fails with
//! `EPERM`, as in runc's default profile.
//!
//! Stronger than a container profile in three places, because a wasm cell never needs them:
//! - no new executable memory: `mmap` and `mprotect` with `PROT_EXEC` are refused (the guest's
//!   code is mapped when it is loaded, before the filter);
//! - `clone` only for threads (`CLONE_THREAD`), so no process or namespace can be created;
//!   `clone3` answers `ENOSYS`, which makes glibc fall back to `clone`, whose flags can be checked;
//! - `socket` only for `AF_INET` and `AF_INET6`, `ioctl` only for a handful of fd requests.
//!
//! The policy is one filter, compiled by `wasmcell_seccomp` into a binary search over the call numbers, which
//! the kernel's own run of each new filter over every call number at install makes several
//! times cheaper than linear filters (docs/performance.md).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use wasmcell_seccomp::arch::{nr, AUDIT_ARCH};

use crate::protocol::{OOM_KILLS_FD, REPORT_FD};
use wasmcell_seccomp::{profile, Action, Case, Check, Compare, Condition, Policy, Rule};

/// System calls allowed whatever their arguments.
const ALLOWED: &[libc::c_long] = &[
    // memory
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_membarrier,
    // wasmtime's copy-on-write images of linear memories, for a program deserialized from bytes
    // (the cell under runc); mapping them executable is refused below
    libc::SYS_memfd_create,
    // threads and synchronisation
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // a sleep interrupted by a stop (a paused cell) resumes through it
    libc::SYS_restart_syscall,
    // signals (wasmtime turns faults in guest code into traps with handlers on an alt stack)
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    // time and randomness
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    // files, reached only through the preopens and the stdio the cell holds
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fadvise64,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_utimensat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    // waiting for I/O (the WASI runtime's event loop)
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    // WASI sockets, on sockets of the families below
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    // identity, read-only
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_uname,
];

/// x86_64's older forms of the same calls, which libraries may still use there.
#[cfg(target_arch = "x86_64")]
const ALLOWED_LEGACY: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_pipe,
    libc::SYS_dup2,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_LEGACY: &[libc::c_long] = &[];

/// `ioctl` requests on fds the guest may use: non-blocking and close-on-exec flags, bytes
/// readable, and the terminal queries `isatty` and window size make.
const IOCTLS: &[libc::c_ulong] = &[
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONCLEX,
    libc::FIONREAD,
    libc::TCGETS,
    libc::TIOCGWINSZ,
    PAGEMAP_SCAN,
];

/// `PAGEMAP_SCAN` (`_IOWR('f', 16, struct pm_scan_arg)`, 96 bytes): wasmtime's pool asks the
/// cell's own `/proc/self/pagemap` which pages of a memory slot a request dirtied, and resets
/// just those.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;

/// `fcntl` commands: fd and status flags, duplicates, locks, seals. Not the ones that make the
/// kernel signal a process (`F_SETOWN`, `F_SETOWN_EX`, `F_SETSIG`, leases, `F_NOTIFY`) or resize
/// pipes.
const FCNTLS: &[libc::c_int] = &[
    libc::F_DUPFD,
    libc::F_DUPFD_CLOEXEC,
    libc::F_GETFD,
    libc::F_SETFD,
    libc::F_GETFL,
    libc::F_SETFL,
    libc::F_GETLK,
    libc::F_SETLK,
    libc::F_SETLKW,
    libc::F_OFD_GETLK,
    libc::F_OFD_SETLK,
    libc::F_OFD_SETLKW,
    libc::F_ADD_SEALS,
    libc::F_GET_SEALS,
    libc::F_GETPIPE_SZ,
];

/// `setsockopt` options refused: attaching a kernel module's protocol (`TCP_ULP`, kTLS and
/// others) and socket filters (classic or eBPF programs the kernel would run). Any other option
/// of the sockets the guest may open is allowed.
const SOCKOPTS_REFUSED: &[(libc::c_int, libc::c_int)] = &[
    (libc::SOL_TCP, libc::TCP_ULP),
    (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
    (libc::SOL_SOCKET, libc::SO_ATTACH_BPF),
    (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_CBPF),
    (libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_EBPF),
    (libc::SOL_SOCKET, libc::SO_LOCK_FILTER),
];

/// `arch_prctl` codes: the thread pointer (set once at start, before the filter), from
/// `asm/prctl.h` (which libc does not carry): `ARCH_SET_FS`, `ARCH_GET_FS`.
#[cfg(target_arch = "x86_64")]
const ARCH_PRCTLS: &[libc::c_int] = &[0x1002, 0x1003];

/// `prctl` options: thread names only.
const PRCTLS: &[libc::c_int] = &[libc::PR_SET_NAME, libc::PR_GET_NAME];

/// Anything not listed fails with `EPERM`, as in runc's default profile.
const REFUSED: Action = Action::Errno(libc::EPERM as u16);

/// Allowed when argument `arg` is one of `values`.
fn allow_one_of(arg: u8, values: impl IntoIterator<Item = u32>) -> Rule {
    Rule::Allow(Check::OneOf {
        arg,
        values: values.into_iter().collect(),
    })
}

/// The cell's policy. `own_pid` is the only thread group the cell may signal.
fn allow_list(own_pid: i32) -> Policy {
    let mut calls: BTreeMap<u32, Rule> = ALLOWED
        .iter()
        .chain(ALLOWED_LEGACY)
        .map(|call| (nr(*call), Rule::Always(Action::Allow)))
        .collect();
    let no_exec = || {
        Rule::Allow(Check::BitsClear {
            arg: 2,
            mask: libc::PROT_EXEC as u32,
        })
    };
    calls.insert(nr(libc::SYS_mmap), no_exec());
    calls.insert(nr(libc::SYS_mprotect), no_exec());
    // The kernel reads `clone`'s flags as 32 bits; CLONE_THREAD is among them.
    let thread = libc::CLONE_THREAD as u32;
    calls.insert(
        nr(libc::SYS_clone),
        Rule::Allow(Check::BitsSet {
            arg: 0,
            mask: thread,
        }),
    );
    // Its flags sit in memory, out of a filter's reach; glibc falls back to `clone`.
    calls.insert(
        nr(libc::SYS_clone3),
        Rule::Always(Action::Errno(libc::ENOSYS as u16)),
    );
    let families = [libc::AF_INET as u32, libc::AF_INET6 as u32];
    calls.insert(nr(libc::SYS_socket), allow_one_of(0, families));
    // `ioctl`'s request is an `unsigned int` to the kernel.
    calls.insert(
        nr(libc::SYS_ioctl),
        allow_one_of(1, IOCTLS.iter().map(|r| *r as u32)),
    );
    calls.insert(
        nr(libc::SYS_prctl),
        allow_one_of(0, PRCTLS.iter().map(|o| *o as u32)),
    );
    calls.insert(
        nr(libc::SYS_fcntl),
        allow_one_of(1, FCNTLS.iter().map(|c| *c as u32)),
    );
    calls.insert(nr(libc::SYS_setsockopt), sockopts());
    #[cfg(target_arch = "x86_64")]
    calls.insert(
        nr(libc::SYS_arch_prctl),
        allow_one_of(0, ARCH_PRCTLS.iter().map(|c| *c as u32)),
    );
    // Signals only to the cell's own threads (the runtime may interrupt a thread).
    calls.insert(nr(libc::SYS_tgkill), allow_one_of(0, [own_pid as u32]));
    Policy {
        arch: AUDIT_ARCH,
        calls,
        default: REFUSED,
    }
}

/// `setsockopt`: refused for [`SOCKOPTS_REFUSED`], allowed otherwise.
fn sockopts() -> Rule {
    let is = |arg, value: libc::c_int| Condition {
        arg,
        op: Compare::Eq,
        value: value as u64,
    };
    let mut cases: Vec<Case> = SOCKOPTS_REFUSED
        .iter()
        .map(|(level, option)| Case {
            conditions: vec![is(1, *level), is(2, *option)],
            action: REFUSED,
        })
        .collect();
    cases.push(Case {
        conditions: Vec::new(),
        action: Action::Allow,
    });
    Rule::Cases(cases)
}

/// Installs the cell's filter on the calling thread (and so on every thread it creates later).
/// Needs `no_new_privs`.
pub fn install() -> Result<(), String> {
    let program = allow_list(std::process::id() as i32).compile()?;
    crate::sys::install_seccomp_filter(&program, 0)
        .map_err(|e| format!("install seccomp filter: {e}"))
}

/// What the PID namespace's supervisor (`crate::supervisor`) does once it has locked itself
/// down: wait for its child, pass signals on, end (and report an OOM kill: see
/// `supervisor_policy`).
const SUPERVISOR: &[libc::c_long] = &[
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_getpid,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What a pause cell (`crate::pause`) does once it holds its namespaces: wait for signals,
/// reap children, end.
const PAUSE: &[libc::c_long] = &[
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What the compile child (`crate::compiler`) does once locked down: allocate, run the
/// compiler's worker threads, write the compiled program to its pipe, end. No file, socket,
/// process or identity call: it cannot reach the cache or anything else.
const COMPILER: &[libc::c_long] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn compiler_policy(out_fd: RawFd) -> Policy {
    let mut policy = only(COMPILER);
    let no_exec = || {
        Rule::Allow(Check::BitsClear {
            arg: 2,
            mask: libc::PROT_EXEC as u32,
        })
    };
    let calls = &mut policy.calls;
    calls.insert(nr(libc::SYS_mmap), no_exec());
    calls.insert(nr(libc::SYS_mprotect), no_exec());
    calls.insert(
        nr(libc::SYS_clone),
        Rule::Allow(Check::BitsSet {
            arg: 0,
            mask: libc::CLONE_THREAD as u32,
        }),
    );
    calls.insert(
        nr(libc::SYS_clone3),
        Rule::Always(Action::Errno(libc::ENOSYS as u16)),
    );
    calls.insert(
        nr(libc::SYS_prctl),
        allow_one_of(0, PRCTLS.iter().map(|o| *o as u32)),
    );
    calls.insert(nr(libc::SYS_write), allow_one_of(0, [out_fd as u32]));
    policy
}

/// Installs the compile child's filter: [`COMPILER`], memory never executable, threads only,
/// and writes to `out_fd` only.
pub fn install_compiler(out_fd: RawFd) -> Result<(), String> {
    let program = compiler_policy(out_fd).compile()?;
    crate::sys::install_seccomp_filter(&program, 0)
        .map_err(|e| format!("install seccomp filter: {e}"))
}

fn supervisor_policy() -> Policy {
    let mut policy = only(SUPERVISOR);
    // Its report of an OOM kill: the count read from one fd, the line written to another.
    let fd = |fd: RawFd| allow_one_of(0, [fd as u32]);
    let calls = &mut policy.calls;
    calls.insert(nr(libc::SYS_pread64), fd(OOM_KILLS_FD));
    calls.insert(nr(libc::SYS_write), fd(REPORT_FD));
    policy
}

/// A policy that allows `allowed` and refuses everything else.
fn only(allowed: &[libc::c_long]) -> Policy {
    let calls = allowed
        .iter()
        .map(|call| (nr(*call), Rule::Always(Action::Allow)))
        .collect();
    Policy {
        arch: AUDIT_ARCH,
        calls,
        default: REFUSED,
    }
}

/// Whether the cell can apply the spec's seccomp `profile` as runc would (see `profile`); why
/// not, if it cannot.
pub fn check_profile(profile: &oci_spec::runtime::LinuxSeccomp) -> Result<(), String> {
    profile::compile(profile).map(drop)
}

/// Installs the spec's seccomp `profile` (beneath the allow-list [`install`] adds after it).
pub fn install_profile(profile: &oci_spec::runtime::LinuxSeccomp) -> Result<(), String> {
    let compiled = profile::compile(profile)?;
    crate::sys::install_seccomp_filter(&compiled.program, compiled.flags)
        .map_err(|e| format!("install the spec's seccomp profile: {e}"))
}

/// Installs the supervisor's filter (anything but [`SUPERVISOR`] fails with `EPERM`).
pub fn install_supervisor() -> Result<(), String> {
    let program = supervisor_policy().compile()?;
    crate::sys::install_seccomp_filter(&program, 0)
        .map_err(|e| format!("install seccomp filter: {e}"))
}

/// Installs the pause cell's filter (anything but [`PAUSE`] fails with `EPERM`).
pub fn install_pause() -> Result<(), String> {
    let program = only(PAUSE).compile()?;
    crate::sys::install_seccomp_filter(&program, 0)
        .map_err(|e| format!("install seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmcell_seccomp::interpreter::{run, trace};

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    fn answer(call: libc::c_long, args: [u64; 6]) -> u32 {
        let program = allow_list(42).compile().expect("compile");
        run(&program, AUDIT_ARCH, nr(call), &args).expect("run")
    }

    #[test]
    fn the_cell_policy_answers_as_its_header_says() {
        assert_eq!(answer(libc::SYS_read, [0; 6]), ALLOW);
        assert_eq!(answer(libc::SYS_exit_group, [0; 6]), ALLOW);
        assert_eq!(answer(libc::SYS_mount, [0; 6]), EPERM);
        assert_eq!(answer(libc::SYS_execve, [0; 6]), EPERM);
        assert_eq!(answer(libc::SYS_unshare, [0; 6]), EPERM);
        let prot = |p: libc::c_int| [0, 4096, p as u64, 0, 0, 0];
        assert_eq!(
            answer(libc::SYS_mmap, prot(libc::PROT_READ | libc::PROT_WRITE)),
            ALLOW
        );
        assert_eq!(
            answer(libc::SYS_mmap, prot(libc::PROT_READ | libc::PROT_EXEC)),
            EPERM
        );
        assert_eq!(answer(libc::SYS_mprotect, prot(libc::PROT_EXEC)), EPERM);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(answer(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        let process = libc::SIGCHLD as u64;
        assert_eq!(answer(libc::SYS_clone, [process, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(answer(libc::SYS_clone3, [0; 6]), ENOSYS);
        let family = |f: libc::c_int| [f as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
        assert_eq!(answer(libc::SYS_socket, family(libc::AF_INET6)), ALLOW);
        assert_eq!(answer(libc::SYS_socket, family(libc::AF_UNIX)), EPERM);
        assert_eq!(answer(libc::SYS_socket, family(libc::AF_NETLINK)), EPERM);
        let request = |r: u64| [0, r, 0, 0, 0, 0];
        assert_eq!(answer(libc::SYS_ioctl, request(libc::FIONBIO)), ALLOW);
        assert_eq!(answer(libc::SYS_ioctl, request(PAGEMAP_SCAN)), ALLOW);
        assert_eq!(answer(libc::SYS_ioctl, request(libc::TIOCSTI)), EPERM);
        let option = |o: libc::c_int| [o as u64, 0, 0, 0, 0, 0];
        assert_eq!(answer(libc::SYS_prctl, option(libc::PR_SET_NAME)), ALLOW);
        assert_eq!(answer(libc::SYS_prctl, option(libc::PR_SET_SECCOMP)), EPERM);
        assert_eq!(answer(libc::SYS_tgkill, [42, 43, 10, 0, 0, 0]), ALLOW);
        assert_eq!(answer(libc::SYS_tgkill, [1, 1, 9, 0, 0, 0]), EPERM);
        assert_eq!(answer(libc::SYS_restart_syscall, [0; 6]), ALLOW);
        let fcntl = |cmd: libc::c_int| [3, cmd as u64, 0, 0, 0, 0];
        for allowed in [
            libc::F_GETFL,
            libc::F_SETFL,
            libc::F_DUPFD_CLOEXEC,
            libc::F_SETFD,
        ] {
            assert_eq!(answer(libc::SYS_fcntl, fcntl(allowed)), ALLOW, "{allowed}");
        }
        for refused in [
            libc::F_SETOWN,
            15, // F_SETOWN_EX
            10, // F_SETSIG
            libc::F_SETLEASE,
            libc::F_NOTIFY,
            libc::F_SETPIPE_SZ,
        ] {
            assert_eq!(answer(libc::SYS_fcntl, fcntl(refused)), EPERM, "{refused}");
        }
        let opt = |level: libc::c_int, name: libc::c_int| [3, level as u64, name as u64, 0, 0, 0];
        let sol = libc::SOL_SOCKET;
        assert_eq!(
            answer(libc::SYS_setsockopt, opt(sol, libc::SO_REUSEADDR)),
            ALLOW
        );
        assert_eq!(
            answer(
                libc::SYS_setsockopt,
                opt(libc::IPPROTO_TCP, libc::TCP_NODELAY)
            ),
            ALLOW
        );
        assert_eq!(
            answer(libc::SYS_setsockopt, opt(libc::SOL_TCP, libc::TCP_ULP)),
            EPERM
        );
        assert_eq!(
            answer(libc::SYS_setsockopt, opt(sol, libc::SO_ATTACH_FILTER)),
            EPERM
        );
        assert_eq!(
            answer(libc::SYS_setsockopt, opt(sol, libc::SO_ATTACH_BPF)),
            EPERM
        );
        // The same number at another level is another option.
        assert_eq!(
            answer(libc::SYS_setsockopt, opt(libc::SOL_IP, libc::TCP_ULP)),
            ALLOW
        );
        #[cfg(target_arch = "x86_64")]
        {
            let code = |c: libc::c_int| [c as u64, 0, 0, 0, 0, 0];
            assert_eq!(
                answer(libc::SYS_arch_prctl, code(0x1002)),
                ALLOW,
                "ARCH_SET_FS"
            );
            assert_eq!(
                answer(libc::SYS_arch_prctl, code(0x1001)),
                EPERM,
                "ARCH_SET_GS"
            );
            assert_eq!(
                answer(libc::SYS_arch_prctl, code(0x1012)),
                EPERM,
                "ARCH_SET_CPUID"
            );
        }
    }

    #[test]
    fn every_listed_call_is_allowed_and_found_in_a_dozen_steps() {
        let policy = allow_list(42);
        let program = policy.compile().expect("compile");
        for call in ALLOWED.iter().chain(ALLOWED_LEGACY) {
            let (value, steps) = trace(&program, AUDIT_ARCH, nr(*call), &[0; 6]).expect("run");
            assert_eq!(value, ALLOW, "call {call}");
            assert!(steps <= 14, "call {call} took {steps} steps");
        }
        for unlisted in (0..1024).filter(|nr| !policy.calls.contains_key(nr)) {
            let (_, steps) = trace(&program, AUDIT_ARCH, unlisted, &[0; 6]).expect("run");
            assert!(steps <= 14, "call {unlisted} took {steps} steps");
        }
    }

    #[test]
    fn the_supervisor_may_only_wait_signal_report_and_end() {
        let program = supervisor_policy().compile().expect("compile");
        let answer = |call, fd: RawFd| {
            let mut args = [0; 6];
            args[0] = fd as u64;
            run(&program, AUDIT_ARCH, nr(call), &args).expect("run")
        };
        assert_eq!(answer(libc::SYS_wait4, 0), ALLOW);
        assert_eq!(answer(libc::SYS_kill, 0), ALLOW);
        assert_eq!(answer(libc::SYS_read, 0), EPERM);
        assert_eq!(answer(libc::SYS_clone, 0), EPERM);
        assert_eq!(answer(libc::SYS_openat, 0), EPERM);
        assert_eq!(answer(libc::SYS_pread64, OOM_KILLS_FD), ALLOW);
        assert_eq!(answer(libc::SYS_pread64, REPORT_FD), EPERM);
        assert_eq!(answer(libc::SYS_write, REPORT_FD), ALLOW);
        assert_eq!(answer(libc::SYS_write, OOM_KILLS_FD), EPERM);
        assert_eq!(answer(libc::SYS_write, 2), EPERM);
    }

    #[test]
    fn the_compiler_may_only_compute_and_write_its_pipe() {
        let program = compiler_policy(5).compile().expect("compile");
        let answer =
            |call, args: [u64; 6]| run(&program, AUDIT_ARCH, nr(call), &args).expect("run");
        assert_eq!(answer(libc::SYS_write, [5, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(answer(libc::SYS_write, [2, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(answer(libc::SYS_futex, [0; 6]), ALLOW);
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        assert_eq!(answer(libc::SYS_mmap, [0, 4096, rw, 0, 0, 0]), ALLOW);
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        assert_eq!(answer(libc::SYS_mmap, [0, 4096, rx, 0, 0, 0]), EPERM);
        assert_eq!(answer(libc::SYS_mprotect, [0, 4096, rx, 0, 0, 0]), EPERM);
        let thread = (libc::CLONE_THREAD | libc::CLONE_VM) as u64;
        assert_eq!(answer(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(answer(libc::SYS_clone, [0; 6]), EPERM);
        for refused in [
            libc::SYS_openat,
            libc::SYS_open,
            libc::SYS_rename,
            libc::SYS_renameat2,
            libc::SYS_unlinkat,
            libc::SYS_linkat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_execve,
            libc::SYS_kill,
            libc::SYS_ptrace,
            libc::SYS_setuid,
            libc::SYS_read,
            libc::SYS_pwrite64,
        ] {
            assert_eq!(answer(refused, [0; 6]), EPERM, "{refused}");
        }
    }

    #[test]
    fn a_pause_cell_may_only_wait_for_signals_reap_and_end() {
        let program = only(PAUSE).compile().expect("compile");
        let answer = |call| run(&program, AUDIT_ARCH, nr(call), &[0; 6]).expect("run");
        assert_eq!(answer(libc::SYS_rt_sigtimedwait), ALLOW);
        assert_eq!(answer(libc::SYS_wait4), ALLOW);
        assert_eq!(answer(libc::SYS_exit_group), ALLOW);
        for refused in [
            libc::SYS_kill,
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_execve,
            libc::SYS_clone,
        ] {
            assert_eq!(answer(refused), EPERM, "{refused}");
        }
    }
}
