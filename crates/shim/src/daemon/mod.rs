//! The shim daemon: how `shim start` brings it up, and how it serves.
//!
//! containerd runs `shim start` for every container and reads the address it prints. When no
//! shim serves the container's pod yet, `start` binds the pod's socket and **forks** the daemon
//! from itself, instead of executing the binary again as the `containerd-shim` crate's `spawn`
//! does. An exec costs the kernel's exec, the dynamic loader's CPU probes (which trap to the
//! hypervisor in a VM) and the page faults of a fresh process (docs/performance.md has the
//! figures); `start` has just paid for all of it, and has a single thread, so its child is a
//! complete process that may do anything. The daemon then:
//!
//! 1. takes the shape an executed daemon would have: `/dev/null` as stdio (containerd reads
//!    `start`'s output until every copy of it is closed), default signal handlers, a
//!    subreaper, and a command line without `start`;
//! 2. blocks SIGCHLD, SIGTERM and SIGINT, then forks the zygote (`crate::backend::zygote`) while
//!    it still has one thread, then limits malloc to one arena for its own threads;
//! 3. reaps its children in one thread (`crate::host::reaper`), which hands every exit to the
//!    exit monitor and ignores SIGTERM and SIGINT, as containerd's shims do;
//! 4. sets up the log, the events connection and the ttrpc server on the bound socket, and only
//!    then tells `start`, which prints the address and exits. A daemon that fails before that
//!    sends `start` the reason, which containerd shows.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::protos::shim::shim_ttrpc::{create_task, Task};
use containerd_shim::{ExitSignal, StartOpts};
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::ForkResult;

use crate::backend::config::Config;
use crate::backend::launch::HostLauncher;
use crate::host::process::ExitWatch;
use crate::host::proctitle::Cmdline;
use crate::rpc::server::Server;
use crate::service::events::RemoteEvents;
use crate::service::Service;
use crate::task::Tasks;

/// What the daemon writes to `start` once it serves; anything else is why it could not.
const READY: &[u8] = b"ready";

/// The Task methods the serving thread answers itself: they take no lock that is held across
/// a wait and start no process, so they never wait. Every other method may wait (for a compile, the task's exit, a
/// task's state lock held across a runc call, runc itself, the events flush) and is answered on
/// a thread of its own.
const INLINE_METHODS: &[&str] = &[
    "/containerd.task.v2.Task/Connect",
    "/containerd.task.v2.Task/CloseIO",
    "/containerd.task.v2.Task/Stats",
    "/containerd.task.v2.Task/ResizePty",
    "/containerd.task.v2.Task/Checkpoint",
];

/// How long the daemon, once idle, waits for its last answers (Shutdown's own) to be written.
const SHUTDOWN_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds the pod's socket at `socket` (a path) and forks a daemon that serves it. Returns once
/// the daemon serves (or, when another `start` of the same pod won the race to bind the socket,
/// once that one's daemon answers), or with the reason it could not.
pub fn launch(opts: &StartOpts, socket: &Path) -> containerd_shim::Result<()> {
    let threads = wasmcell_cgroup::thread_count()
        .map_err(|e| containerd_shim::Error::Other(format!("count this process's threads: {e}")))?;
    if threads != 1 {
        // Nothing in `start` starts a thread; anything that did would make the fork unsafe.
        return Err(containerd_shim::Error::Other(format!(
            "shim start has {threads} threads and cannot fork the daemon"
        )));
    }
    let listener = match bind(socket)? {
        Some(listener) => listener,
        None => return Ok(()),
    };
    let (mut from_daemon, to_start) = UnixStream::pair()
        .map_err(|e| containerd_shim::Error::Other(format!("make the daemon's pipe: {e}")))?;
    // SAFETY: this process has a single thread (checked above), so the child is a complete
    // copy of a consistent process and may run any code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(containerd_shim::Error::Other(format!(
            "fork the daemon: {e}"
        ))),
        Ok(ForkResult::Child) => {
            drop(from_daemon);
            serve(opts, socket, listener, to_start)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(to_start);
            drop(listener);
            let mut said = Vec::new();
            let _ = from_daemon.read_to_end(&mut said);
            if said == READY {
                return Ok(());
            }
            let _ = std::fs::remove_file(socket);
            let why = String::from_utf8_lossy(&said).trim().to_owned();
            Err(containerd_shim::Error::Other(if why.is_empty() {
                format!("the shim daemon (pid {child}) exited before it served")
            } else {
                format!("the shim daemon could not start: {why}")
            }))
        }
    }
}

/// Binds the socket, readable by root only. `None`: a live daemon already listens there (a
/// socket file nobody answers on is left over from a dead one and replaced).
fn bind(socket: &Path) -> containerd_shim::Result<Option<UnixListener>> {
    let fail = |what: &str, e: std::io::Error| {
        containerd_shim::Error::Other(format!("{what} {}: {e}", socket.display()))
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
    }
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(socket).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(socket).map_err(|e| fail("remove the stale socket", e))?;
            UnixListener::bind(socket).map_err(|e| fail("bind", e))?
        }
        Err(e) => return Err(fail("bind", e)),
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail("chmod 0600", e))?;
    Ok(Some(listener))
}

/// The daemon's life, in the forked child. Never returns into `start`.
fn serve(opts: &StartOpts, socket: &Path, listener: UnixListener, mut to_start: UnixStream) -> ! {
    let serving = match set_up(opts, socket, listener) {
        Ok(serving) => serving,
        Err(why) => {
            log::error!("the shim daemon could not start: {why}");
            let _ = to_start.write_all(why.as_bytes());
            std::process::exit(1)
        }
    };
    let (exit, server) = serving;
    if to_start.write_all(READY).is_err() {
        // `start` is gone, so containerd never got the address: nobody will use this daemon.
        log::error!("shim start went away before the daemon served; exiting");
        std::process::exit(1)
    }
    drop(to_start);
    log::info!("shim daemon serving {}", socket.display());
    exit.wait();
    log::info!("shutting down the shim daemon");
    let _ = std::fs::remove_file(socket);
    server.shutdown(SHUTDOWN_ANSWER_TIMEOUT);
    std::process::exit(0)
}

/// Steps 1 to 4 of the module documentation.
fn set_up(
    opts: &StartOpts,
    socket: &Path,
    listener: UnixListener,
) -> Result<(Arc<ExitSignal>, Server), String> {
    detach_stdio()?;
    reset_signal_handlers()?;

    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("become a child subreaper: {e}"))?;
    rename(opts);
    // Before any thread exists (the zygote's reader is the first): a thread that left these
    // unblocked would take a SIGCHLD that the signalfd below then never sees.
    let handled = crate::host::reaper::block()?;
    if std::env::var_os(crate::backend::zygote::DISABLE_ENV).is_none() {
        crate::backend::zygote::start(&opts.id);
    }
    // One malloc arena for all the daemon's threads: glibc gives each new thread that allocates
    // an arena of its own, whose first pages fault in, and the daemon's threads are short-lived
    // and seldom allocate at once (the CPU it saves per task: docs/performance.md). Set after
    // the zygote is forked, so the cells (where wasmtime compiles in parallel) keep glibc's
    // default.
    // SAFETY: mallopt has no preconditions.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // From here on the process may have threads.
    crate::host::reaper::reap_in_thread(&handled)?;
    containerd_shim::logger::init(opts.debug, "info", &opts.namespace, &opts.id)
        .map_err(|e| format!("open the shim log: {e}"))?;
    let exit = Arc::new(ExitSignal::default());
    let service: Arc<dyn Task + Send + Sync> = Arc::new(task_service(opts, Arc::clone(&exit))?);
    let server = Server::start(listener, create_task(service), INLINE_METHODS)
        .map_err(|e| format!("start the ttrpc server on {}: {e}", socket.display()))?;
    Ok((exit, server))
}

/// The Task service of this daemon: the task core with the host's launcher, the exits the
/// reaper hands on, and events to containerd's ttrpc address; idle, it signals `exit`.
fn task_service(opts: &StartOpts, exit: Arc<ExitSignal>) -> Result<Service, String> {
    let address = &opts.ttrpc_address;
    let events = RemoteEvents::connect(address, opts.namespace.clone())
        .map_err(|e| format!("connect to containerd's events at {address}: {e}"))?;
    let mut config = Config::from_env(&opts.namespace);
    config.containerd_address = Some(opts.address.clone()).filter(|a| !a.is_empty());
    log::info!(
        "wasmcell shim {} serving namespace {} (cache {}, runc root {})",
        env!("CARGO_PKG_VERSION"),
        opts.namespace,
        config.cache_dir.display(),
        config.runc.root.display()
    );
    let exits = ExitWatch::new().map_err(|e| e.to_string())?;
    Tasks::new(
        Box::new(HostLauncher::new(config)),
        Arc::new(events),
        Box::new(exits),
        Box::new(move || exit.signal()),
    )
    .map(Service::new)
    .map_err(|e| format!("cannot start the task service: {e}"))
}

/// `/dev/null` as stdin, stdout and stderr. containerd reads `start`'s stdout and stderr until
/// every copy of them is closed, and has given `start` its options on stdin.
fn detach_stdio() -> Result<(), String> {
    let null = crate::host::streams::open_dev_null().map_err(|e| format!("open /dev/null: {e}"))?;
    for (what, result) in [
        ("stdin", nix::unistd::dup2_stdin(&null)),
        ("stdout", nix::unistd::dup2_stdout(&null)),
        ("stderr", nix::unistd::dup2_stderr(&null)),
    ] {
        result.map_err(|e| format!("point {what} at /dev/null: {e}"))?;
    }
    Ok(())
}

/// The handlers an executed daemon starts with, whatever `start` inherited from containerd: the
/// default for SIGTERM, SIGINT and SIGCHLD, and SIGPIPE ignored as Rust programs have it. The zygote and the cells it
/// forks inherit these.
fn reset_signal_handlers() -> Result<(), String> {
    for (signal, handler) in [
        (Signal::SIGTERM, SigHandler::SigDfl),
        (Signal::SIGINT, SigHandler::SigDfl),
        (Signal::SIGCHLD, SigHandler::SigDfl),
        (Signal::SIGPIPE, SigHandler::SigIgn),
    ] {
        // SAFETY: installs no handler function, only the kernel's default or ignore.
        unsafe { nix::sys::signal::signal(signal, handler) }
            .map_err(|e| format!("reset the handler of {signal}: {e}"))?;
    }
    Ok(())
}

/// `/proc/PID/cmdline` as an executed daemon's: the binary, `-namespace`, `-id` and `-address`
/// (containerd's socket, which tools and the tests look for), without `-publish-binary` and
/// `start`. Left as it is if that does not fit, which it always does, being shorter.
fn rename(opts: &StartOpts) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let exe = exe.to_string_lossy();
    let Ok(cmdline) = Cmdline::of_this_process() else {
        return;
    };
    let mut args = vec![&*exe, "-namespace", &opts.namespace, "-id", &opts.id];
    args.extend(["-address", &opts.address]);
    if opts.debug {
        args.push("-debug");
    }
    if let Ok(bytes) = cmdline.encode(&args) {
        cmdline.set(&bytes);
    }
}
