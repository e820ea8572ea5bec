//! The runc backend: native containers (the pod's pause container, sidecars, busybox…) go to
//! runc, with the same task semantics as a cell: `runc create` makes the process and hands it
//! our stdio fds, `runc start` lets it run, and its exit reaches us as its subreaper. The runc
//! fallback (`super::fallback`) makes runc tasks too. runc itself is driven through its command
//! line ([`crate::host::runc`]).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use wasmcell_cgroup::{Cgroup, Hierarchy};
use wasmcell_oci::Bundle;
use wasmcell_oci::CgroupPath;

use super::fallback_report::CellReport;
use super::{Backend, ExecBackend, ExecIo, ExecStarted};
use crate::error::{Error, Result};
use crate::host::console::{Console, ConsoleIo, ConsoleSocket};
use crate::host::runc::{NativeStdio, Runc};
use crate::host::systemd;

/// runc makes a terminal for the process (`process.terminal`) and sends its master over a
/// console socket; the shim attaches it to containerd's stdio. `discard` undoes what `run`
/// made when its terminal cannot be attached, so that nothing runs unwatched.
fn with_terminal<T>(
    terminal: Option<ConsoleIo>,
    run: impl FnOnce(Option<&Path>) -> Result<T>,
    discard: impl FnOnce(&T),
) -> Result<(T, Option<Console>)> {
    let Some(io) = terminal else {
        return Ok((run(None)?, None));
    };
    let socket = ConsoleSocket::bind()?;
    let made = run(Some(&socket.path()))?;
    match socket.receive().and_then(|master| io.attach(master)) {
        Ok(console) => Ok((made, Some(console))),
        Err(e) => {
            discard(&made);
            Err(e)
        }
    }
}

/// A task run by runc: its container's id, bundle and init pid, and the cgroup runc puts it
/// in, for Stats and OOM (when its path is a cgroupfs one).
pub struct RuncTask {
    runc: Runc,
    id: String,
    bundle: PathBuf,
    pid: i32,
    cgroup: Option<Cgroup>,
    /// The container's rootfs when its process is a cell (the runc fallback of a wasm
    /// container): an exec's program is looked up there.
    wasm_rootfs: Option<PathBuf>,
    /// What that cell says of how its guest ended, and the file its reason goes to.
    wasm_ending: Option<(Arc<CellReport>, Option<PathBuf>)>,
    /// Its process's terminal, when it has one.
    console: Option<Console>,
}

impl RuncTask {
    /// `runc create` of the container of `bundle` from the runc bundle `runc_bundle` (its spec
    /// may differ from the container's), with the process's `stdio` and `extra_fds` (see
    /// [`Runc::create`]), or with a terminal runc makes (`stdio` is then runc's own).
    pub fn create_with(
        runc: &Runc,
        id: &str,
        bundle: &Bundle,
        runc_bundle: &Path,
        stdio: NativeStdio,
        extra_fds: &[&dyn AsFd],
        terminal: Option<ConsoleIo>,
    ) -> Result<RuncTask> {
        let spec = &bundle.spec;
        let drives = systemd::drives(spec, id);
        let (pid, console) = with_terminal(
            terminal,
            |socket| runc.create(id, runc_bundle, stdio, extra_fds, drives, socket),
            |_| {
                if let Err(e) = runc.delete(id) {
                    log::warn!("task {id}: removing the container: {e}");
                }
            },
        )?;
        Ok(RuncTask {
            runc: runc.clone(),
            id: id.to_owned(),
            bundle: bundle.dir.clone(),
            pid,
            cgroup: runc_cgroup(spec, id),
            wasm_rootfs: None,
            wasm_ending: None,
            console,
        })
    }

    /// Marks the container as a wasm one (its process a cell) whose rootfs is `rootfs`: an
    /// exec's program is looked up there before it goes to `runc exec`; `report` says how its
    /// guest ended, whose reason goes to `termination_log`.
    pub fn holding_wasm(
        mut self,
        rootfs: PathBuf,
        report: Arc<CellReport>,
        termination_log: Option<PathBuf>,
    ) -> RuncTask {
        self.wasm_rootfs = Some(rootfs);
        self.wasm_ending = Some((report, termination_log));
        self
    }

    /// `runc create` of a native container (its bundle is containerd's), with `stdio`, or
    /// with a terminal runc makes (`stdio` is then runc's own).
    pub fn create(
        runc: &Runc,
        id: &str,
        bundle: &Bundle,
        stdio: NativeStdio,
        terminal: Option<ConsoleIo>,
    ) -> Result<RuncTask> {
        RuncTask::create_with(runc, id, bundle, &bundle.dir, stdio, &[], terminal)
    }

    /// The container's init pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Removes the container (`runc delete --force`), for a Create that fails after it.
    pub fn discard(&self) {
        if let Err(e) = self.runc.delete(&self.id) {
            log::warn!("task {}: removing the container: {e}", self.id);
        }
    }
}

impl Backend for RuncTask {
    fn start(&self) -> Result<()> {
        self.runc.start(&self.id)
    }

    fn signal(&self, signal: u32, all: bool) -> Result<()> {
        self.runc.kill(&self.id, signal, all)
    }

    fn kill_unstarted(&self) {
        if let Err(e) = self.runc.kill(&self.id, libc::SIGKILL as u32, true) {
            log::warn!("task {}: {e}", self.id);
        }
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        self.runc.freeze(&self.id, frozen)
    }

    fn update(&self, _resources: &oci_spec::runtime::LinuxResources, json: &[u8]) -> Result<()> {
        let file = self.bundle.join("update-resources.json");
        self.runc.update(&self.id, &file, json)
    }

    fn processes(&self, pid: u32, ended: bool) -> Result<Vec<u32>> {
        if ended {
            Ok(vec![pid])
        } else {
            self.runc.ps(&self.id)
        }
    }

    fn oom_killed(&self) -> bool {
        let by_limit = self
            .wasm_ending
            .as_ref()
            .and_then(|(report, _)| report.wait().ending)
            .is_some_and(|e| e.memory_limit);
        by_limit || self.cgroup.as_ref().is_some_and(|cg| cg.oom_kills() > 0)
    }

    fn ended(&self, _code: i32, _oom_killed: bool) {
        let Some((report, Some(path))) = &self.wasm_ending else {
            return;
        };
        if let Some(ending) = report.wait().ending {
            crate::host::termination::leave(&self.id, path, &ending.reason);
        }
    }

    fn stats(&self) -> Result<Any> {
        let cg = self.cgroup.as_ref().ok_or_else(|| {
            Error::NotImplemented(format!(
                "stats of task {}: its cgroup is managed by systemd through runc",
                self.id
            ))
        })?;
        crate::host::metrics::collect(cg)
    }

    fn remove(&self) {
        if let Err(e) = self.runc.delete(&self.id) {
            log::error!("task {}: {e}", self.id);
        }
    }

    fn console(&self) -> Option<&Console> {
        self.console.as_ref()
    }

    fn exec(
        &self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
    ) -> Result<Box<dyn ExecBackend>> {
        if let Some(rootfs) = &self.wasm_rootfs {
            refuse_wasm_exec(rootfs, exec_id, process)?;
        }
        let stdio = if io.terminal.is_some() {
            NativeStdio::null()?
        } else {
            NativeStdio {
                stdin: crate::host::streams::open_native_stdin(&io.stdin)?,
                stdout: io.stdout.into(),
                stderr: io.stderr.into(),
            }
        };
        if exec_id.is_empty() || exec_id.contains('/') || exec_id.starts_with('.') {
            return Err(Error::InvalidArgument(format!("exec id {exec_id:?}")));
        }
        let json = serde_json::to_vec(process)
            .map_err(|e| Error::InvalidArgument(format!("exec {exec_id}: its process: {e}")))?;
        // A directory of its own: no exec's files can be named like another's.
        let dir = self.bundle.join("execs").join(exec_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let process_file = dir.join("process.json");
        std::fs::write(&process_file, json)
            .map_err(|e| Error::io(format!("write {}", process_file.display()), e))?;
        Ok(Box::new(RuncExec {
            runc: self.runc.clone(),
            container: self.id.clone(),
            pid_file: dir.join("pid"),
            log: dir.join("log.json"),
            process_file,
            dir,
            stdio: std::sync::Mutex::new(Some((stdio, io.terminal))),
            console: std::sync::OnceLock::new(),
        }))
    }
}

/// An exec in a wasm container under the runc fallback: a native program of its image goes to
/// `runc exec` as in any runc container; a wasm one answers NotImplemented (its cell would have
/// to run as runc's exec process, with its program compiled in the container's cgroup as the
/// fallback's own is).
fn refuse_wasm_exec(
    rootfs: &Path,
    exec_id: &str,
    process: &oci_spec::runtime::Process,
) -> Result<()> {
    let entry = super::exec_program(rootfs, exec_id, process)?;
    if entry.kind.is_wasm() {
        return Err(Error::NotImplemented(format!(
            "exec {exec_id}: a wasm exec ({}) in a wasm container under the runc fallback is \
             not implemented by wasmcell yet; exec a native program of its image, or probe it \
             with httpGet or tcpSocket",
            entry.path
        )));
    }
    Ok(())
}

/// An exec process in a runc container: `runc exec --detach` at its Start.
struct RuncExec {
    runc: Runc,
    container: String,
    /// Its files' directory in the bundle.
    dir: PathBuf,
    process_file: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
    /// Given to runc at Start, with the terminal's side in containerd when it has one.
    stdio: std::sync::Mutex<Option<(NativeStdio, Option<ConsoleIo>)>>,
    /// Its terminal, once started.
    console: std::sync::OnceLock<Console>,
}

impl ExecBackend for RuncExec {
    fn start(&self) -> Result<ExecStarted> {
        let (stdio, terminal) = crate::sync::lock(&self.stdio)
            .take()
            .ok_or_else(|| Error::Internal("exec started twice".into()))?;
        let (pid, console) = with_terminal(
            terminal,
            |socket| {
                self.runc.exec(
                    &self.container,
                    &self.process_file,
                    &self.pid_file,
                    &self.log,
                    stdio,
                    socket,
                )
            },
            |pid| {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            },
        )?;
        if let Some(console) = console {
            let _ = self.console.set(console);
        }
        Ok(ExecStarted { pid, watched: pid })
    }

    fn console(&self) -> Option<&Console> {
        self.console.get()
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // The parent, once no exec has files left in it.
        if let Some(execs) = self.dir.parent() {
            let _ = std::fs::remove_dir(execs);
        }
    }
}

/// The cgroup runc puts a container in, for Stats; `None` for systemd paths (runc asks
/// systemd, which may place it differently) or when it cannot be read.
fn runc_cgroup(spec: &oci_spec::runtime::Spec, id: &str) -> Option<Cgroup> {
    let path = wasmcell_oci::resources::cgroups_path_of(spec)?;
    match CgroupPath::parse(Some(path), id).ok()? {
        p @ CgroupPath::Fs(_) => Some(Cgroup::at(Hierarchy::detect().ok()?, &p.relative())),
        CgroupPath::Systemd { .. } => None,
    }
}
