//! What runs a task's process: a cell ([`cell`], forked by the [`zygote`]), or runc ([`runc`]),
//! for a native container or for a wasm one whose spec the cell cannot honour ([`fallback`]).
//!
//! The task core (`crate::task`) keeps each task's state machine and sends its events; it
//! reaches the process only through [`Backend`], and makes a task only through [`Launch`].
//! [`launch::HostLauncher`] is the real [`Launch`]: it prepares everything a Create needs on
//! the host (rootfs, program, stdio) and picks the backend; unit tests of the task core use
//! fakes of both traits.

pub mod cell;
pub mod config;
pub mod fallback;
mod fallback_report;
pub mod launch;
pub mod runc;
pub mod zygote;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use wasmcell_oci::Entrypoint;

use crate::error::{Error, Result};
use crate::host::console::{Console, ConsoleIo};

/// The argument that makes the shim binary act as a cell (see `wasmcell_cell`).
pub const CELL_ARG: &str = "cell";

/// A task's process as its backend runs it. The task core calls each method under the task's
/// state lock, in the order its state machine allows.
pub trait Backend: Send + Sync {
    /// Lets the prepared process run (Start).
    fn start(&self) -> Result<()>;
    /// Delivers `signal` (to every process of the container with `all`, where the backend
    /// has several). SIGKILL also thaws a paused task, so that it can die, as runc does.
    fn signal(&self, signal: u32, all: bool) -> Result<()>;
    /// Kills a process that was never started (Delete of a created task); failures are logged.
    fn kill_unstarted(&self);
    /// Freezes (Pause) or thaws (Resume) the task's processes.
    fn freeze(&self, frozen: bool) -> Result<()>;
    /// Applies new resources: OCI `LinuxResources` as JSON, as containerd sends them (checked
    /// to parse by the caller).
    fn update(&self, resources: &oci_spec::runtime::LinuxResources, json: &[u8]) -> Result<()>;
    /// The task's processes (Pids); `pid` is the task's own, `ended` whether it has exited.
    fn processes(&self, pid: u32, ended: bool) -> Result<Vec<u32>>;
    /// Whether the kernel's OOM killer ended a process of the task (read at its exit), or its
    /// guest trapped after its memory limit refused it memory.
    fn oom_killed(&self) -> bool;
    /// The task ended with status `code` (`oom_killed`: as [`Backend::oom_killed`] said):
    /// leaves the reason a guest ended by (a trap, a deadline, a failure after start) in the
    /// container's termination message file, for `kubectl describe`, and counts the exit in the
    /// pod's metrics. Called at its exit, before TaskExit is sent.
    fn ended(&self, _code: i32, _oom_killed: bool) {}
    /// The task's cgroup metrics (Stats).
    fn stats(&self) -> Result<Any>;
    /// Removes what the backend made for the task, once it has exited (Delete).
    fn remove(&self);
    /// The task's terminal, when it has one (ResizePty; its output is drained before the
    /// task's exit is reported).
    fn console(&self) -> Option<&Console> {
        None
    }
    /// Prepares exec process `exec_id` running `process` in the task's container, with
    /// `io`; Start of the exec runs it ([`ExecBackend::start`]).
    fn exec(
        &self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
    ) -> Result<Box<dyn ExecBackend>>;
}

/// The program of exec `exec_id` running `process` in a container whose rootfs is `rootfs`:
/// its `args[0]`, found there as an entrypoint is (with the exec's cwd and `PATH`), and what it
/// is (a module, a component, a native program).
fn exec_program(
    rootfs: &Path,
    exec_id: &str,
    process: &oci_spec::runtime::Process,
) -> Result<Entrypoint> {
    let args = process.args().as_deref().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| Error::InvalidArgument(format!("exec {exec_id}: no args")))?;
    let cwd = process.cwd().to_string_lossy();
    let env = wasmcell_oci::runspec::process_env(process);
    wasmcell_oci::entrypoint::resolve(rootfs, arg0, &cwd, &env)
        .map_err(|e| Error::InvalidArgument(format!("exec {exec_id}: {e}")))
}

/// The stdio of an exec process: containerd's stdin (a FIFO path, or empty for none), and its
/// stdout and stderr, open; or, for a terminal, where the terminal's traffic goes (the backend
/// makes the terminal; `stdout` and `stderr` are then unused).
pub struct ExecIo {
    /// The stdin FIFO's path, or empty.
    pub stdin: String,
    /// Where its stdout goes.
    pub stdout: OwnedFd,
    /// Where its stderr goes.
    pub stderr: OwnedFd,
    /// Its terminal's side in containerd, when it asks for one.
    pub terminal: Option<ConsoleIo>,
}

/// A started exec process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecStarted {
    /// Its pid as containerd sees it (the process in the container's namespaces).
    pub pid: i32,
    /// The process whose exit is the exec's (a cell's supervisor; runc's exec'd process).
    pub watched: i32,
}

/// An exec process of a task, as its backend runs it.
pub trait ExecBackend: Send + Sync {
    /// Runs it.
    fn start(&self) -> Result<ExecStarted>;
    /// Delivers `signal` to it (`pid`: the watched pid [`ExecBackend::start`] returned).
    fn signal(&self, pid: i32, signal: u32) -> Result<()> {
        let signal = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| match e {
            nix::errno::Errno::ESRCH => Error::NotFound("process already finished".into()),
            e => Error::Internal(format!("signal exec process {pid}: {e}")),
        })
    }
    /// Removes what it left (Delete of the exec).
    fn remove(&self) {}
    /// Its terminal, when it has one.
    fn console(&self) -> Option<&Console> {
        None
    }
}

/// What [`Launch::launch`] made for a Create.
pub struct Launched {
    /// Runs the task's process from now on.
    pub backend: Box<dyn Backend>,
    /// The task's pid as containerd sees it: the process whose namespaces are the container's.
    pub pid: u32,
    /// The process whose exit is the task's exit (a cell's supervisor; runc's init).
    pub watched: i32,
    /// The rootfs the shim mounted for the task, unmounted at Delete.
    pub rootfs: Option<PathBuf>,
    /// A binary logger serving the task's output.
    pub logger: Option<Logger>,
}

/// A binary logger (`binary://`) of a task.
pub struct Logger {
    /// Its pid, whose exit says it has read everything.
    pub pid: i32,
    /// The read ends of its pipes: while they hold unread bytes, it has not.
    pub pipes: Vec<OwnedFd>,
}

/// Makes a task's process from a Create request, up to the point where Start lets it run.
pub trait Launch: Send + Sync {
    /// Carries out what a Create asks of the host. On failure nothing of it is left.
    fn launch(&self, req: &CreateTaskRequest) -> Result<Launched>;
    /// Opens the output an exec process of task `id` asks for (its FIFOs or files), for a
    /// terminal's output with `terminal`.
    fn exec_io(
        &self,
        id: &str,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
    ) -> Result<ExecIo>;
}
