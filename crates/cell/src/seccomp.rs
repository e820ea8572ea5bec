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

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule,
};

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
    libc::SYS_fcntl,
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
    libc::SYS_setsockopt,
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
    libc::SYS_arch_prctl,
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
];

/// `prctl` options: thread names only.
const PRCTLS: &[u64] = &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64];

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| format!("seccomp condition: {e}"))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))
}

/// One rule per allowed value of argument `arg`.
fn one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, String> {
    values
        .iter()
        .map(|v| rule(vec![cond(arg, Len::Dword, Op::Eq, *v)?]))
        .collect()
}

fn arch() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))
}

/// The allow-list as a BPF program.
fn allow_list(own_pid: i32) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in ALLOWED.iter().chain(ALLOWED_LEGACY) {
        rules.insert(*nr, vec![]);
    }
    let no_exec = || cond(2, Len::Dword, Op::MaskedEq(libc::PROT_EXEC as u64), 0);
    rules.insert(libc::SYS_mmap, vec![rule(vec![no_exec()?])?]);
    rules.insert(libc::SYS_mprotect, vec![rule(vec![no_exec()?])?]);
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            Len::Qword,
            Op::MaskedEq(thread),
            thread,
        )?])?],
    );
    // Allowed here so that the ENOSYS filter below decides it.
    rules.insert(libc::SYS_clone3, vec![]);
    rules.insert(
        libc::SYS_socket,
        one_of(0, &[libc::AF_INET as u64, libc::AF_INET6 as u64])?,
    );
    // `c_ulong` is `u64` on the 64-bit targets wasmcell builds for.
    #[allow(clippy::useless_conversion)]
    let ioctls: Vec<u64> = IOCTLS.iter().map(|r| u64::from(*r)).collect();
    rules.insert(libc::SYS_ioctl, one_of(1, &ioctls)?);
    rules.insert(libc::SYS_prctl, one_of(0, PRCTLS)?);
    // Signals only to the cell's own threads (the runtime may interrupt a thread).
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(0, Len::Dword, Op::Eq, own_pid as u64)?])?],
    );
    compile(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )
}

/// `rules` as a BPF program for this architecture: `otherwise` for calls without a matching
/// rule, `matched` for the others.
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    otherwise: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    SeccompFilter::new(rules, otherwise, matched, arch()?)
        .map_err(|e| format!("seccomp filter: {e}"))?
        .try_into()
        .map_err(|e| format!("seccomp filter: {e}"))
}

/// `clone3` answers ENOSYS: its flags sit in memory, out of a filter's reach, and glibc falls
/// back to `clone`, whose flags the allow-list checks.
fn clone3_enosys() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_clone3, vec![]);
    compile(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
}

/// Installs the filters on the calling thread (and so on every thread it creates later). Needs
/// `no_new_privs`.
pub fn install() -> Result<(), String> {
    let allow = allow_list(std::process::id() as i32)?;
    let enosys = clone3_enosys()?;
    // The kernel runs every filter and takes the strictest answer: for clone3, ENOSYS over the
    // allow-list's Allow; for anything else, the allow-list's EPERM over this filter's Allow. The
    // ENOSYS filter goes first, because the allow-list does not allow installing filters.
    seccompiler::apply_filter(&enosys).map_err(|e| format!("install seccomp filter: {e}"))?;
    seccompiler::apply_filter(&allow).map_err(|e| format!("install seccomp filter: {e}"))?;
    Ok(())
}

/// What the PID namespace's supervisor (`crate::supervisor`) does once it has locked itself
/// down: wait for its child, pass signals on, end.
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

/// Installs the supervisor's filter (anything but [`SUPERVISOR`] fails with `EPERM`).
pub fn install_supervisor() -> Result<(), String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        SUPERVISOR.iter().map(|nr| (*nr, vec![])).collect();
    let program = compile(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )?;
    seccompiler::apply_filter(&program).map_err(|e| format!("install seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_for_this_architecture() {
        let allow = allow_list(1).expect("allow list");
        assert!(allow.len() > ALLOWED.len(), "one jump at least per call");
        assert!(!clone3_enosys().expect("clone3").is_empty());
    }
}
