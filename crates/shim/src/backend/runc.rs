//! The runc backend: native containers (the pod's pause container, sidecars, busybox…) go to
//! runc, with the same task semantics as a cell: `runc create` makes the process and hands it
//! our stdio fds, `runc start` lets it run, and its exit reaches us as its subreaper. The runc
//! fallback (`super::fallback`) makes runc tasks too.

use std::fs::File;
use std::os::fd::{AsFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use wasmcell_cgroup::{Cgroup, Hierarchy};
use wasmcell_task::Bundle;
use wasmcell_task::CgroupPath;

use super::{Backend, ExecBackend, ExecIo, ExecStarted};
use crate::error::{Error, Result};
use crate::host::console::{Console, ConsoleIo, ConsoleSocket};
use crate::host::process::{map_fds, run_command, spawn_watched, Output};
use crate::host::systemd;

/// How long a runc command may take.
const RUNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The runc binary and its state directory.
#[derive(Debug, Clone)]
pub struct Runc {
    /// The runc binary (looked up in `PATH` when relative).
    pub binary: PathBuf,
    /// runc's `--root`.
    pub root: PathBuf,
}

/// The stdio a native container gets.
pub struct NativeStdio {
    /// Standard input.
    pub stdin: File,
    /// Standard output.
    pub stdout: File,
    /// Standard error.
    pub stderr: File,
}

impl NativeStdio {
    /// `/dev/null` for all three: runc's own stdio, for a process whose stdio is a terminal
    /// runc makes.
    pub fn null() -> Result<NativeStdio> {
        let null =
            || crate::host::streams::open_dev_null().map_err(|e| Error::io("open /dev/null", e));
        Ok(NativeStdio {
            stdin: null()?,
            stdout: null()?,
            stderr: null()?,
        })
    }
}

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
            console,
        })
    }

    /// Marks the container as a wasm one (its process a cell) whose rootfs is `rootfs`: an
    /// exec's program is looked up there before it goes to `runc exec`.
    pub fn holding_wasm(mut self, rootfs: PathBuf) -> RuncTask {
        self.wasm_rootfs = Some(rootfs);
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
        self.cgroup.as_ref().is_some_and(|cg| cg.oom_kills() > 0)
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
    let path = wasmcell_task::resources::cgroups_path_of(spec)?;
    match CgroupPath::parse(Some(path), id).ok()? {
        p @ CgroupPath::Fs(_) => Some(Cgroup::at(Hierarchy::detect().ok()?, &p.relative())),
        CgroupPath::Systemd { .. } => None,
    }
}

impl Runc {
    fn command(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = log {
            cmd.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        cmd.env_remove("NOTIFY_SOCKET");
        cmd
    }

    /// The last error runc wrote to its JSON log.
    fn last_error(log: &Path) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["level"] == "error" || v["level"] == "fatal")
            .and_then(|v| v["msg"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "no message in runc's log".to_owned())
    }

    fn check(&self, what: &str, out: Output) -> Result<String> {
        if out.status == 0 {
            return Ok(out.stdout);
        }
        Err(Error::Runc(format!(
            "{what} failed (exit {}): {}",
            out.status,
            out.stderr.trim()
        )))
    }

    /// `runc create`: returns the pid of the container's init process. `extra_fds` become the
    /// process's fds 3, 4, … (`--preserve-fds`); runc sends the terminal it makes for a
    /// process with `process.terminal` over `console_socket`.
    /// `systemd_cgroup`: runc's systemd cgroup driver (`crate::host::systemd`); runc records it in
    /// the container's state, so later commands need not repeat it.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: NativeStdio,
        extra_fds: &[&dyn AsFd],
        systemd_cgroup: bool,
        console_socket: Option<&Path>,
    ) -> Result<i32> {
        let pid_file = bundle.join("init.pid");
        let log = bundle.join("runc-log.json");
        let mut cmd = self.command(Some(&log));
        if systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        if !extra_fds.is_empty() {
            cmd.arg("--preserve-fds").arg(extra_fds.len().to_string());
        }
        cmd.arg(id)
            .current_dir(bundle)
            .stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr));
        let targets: Vec<(&dyn AsFd, RawFd)> =
            extra_fds.iter().zip(3..).map(|(fd, n)| (*fd, n)).collect();
        let staged = map_fds(&mut cmd, &targets)?;
        // runc's stdio becomes the container's, so its own errors go to --log, not stderr.
        let (child, watch) = spawn_watched(&mut cmd)?;
        drop((cmd, staged));
        let pid = child.id() as i32;
        let status = watch.wait(pid, RUNC_TIMEOUT).ok_or_else(|| {
            Error::Runc(format!(
                "create {id} did not finish within {RUNC_TIMEOUT:?}"
            ))
        })?;
        if status != 0 {
            return Err(Error::Runc(format!(
                "create {id} failed: {}",
                Self::last_error(&log)
            )));
        }
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| Error::io(format!("read {}", pid_file.display()), e))?;
        text.trim()
            .parse()
            .map_err(|e| Error::Runc(format!("bad pid file {}: {e}", pid_file.display())))
    }

    /// `runc exec --detach` of the process in `process_file` in container `id`, with `stdio`
    /// (or the terminal runc sends over `console_socket`): returns its pid once it runs. Its
    /// exit reaches the shim as its subreaper.
    pub fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        log: &Path,
        stdio: NativeStdio,
        console_socket: Option<&Path>,
    ) -> Result<i32> {
        let mut cmd = self.command(Some(log));
        cmd.arg("exec")
            .arg("--process")
            .arg(process_file)
            .arg("--detach")
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id)
            .stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr));
        let (child, watch) = spawn_watched(&mut cmd)?;
        drop(cmd);
        let runc_pid = child.id() as i32;
        let Some(status) = watch.wait(runc_pid, RUNC_TIMEOUT) else {
            // Not left behind to start the process later, unwatched.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(runc_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(Error::Runc(format!(
                "exec in {id} did not finish within {RUNC_TIMEOUT:?}"
            )));
        };
        if status != 0 {
            return Err(Error::Runc(format!(
                "exec in {id} failed: {}",
                Self::last_error(log)
            )));
        }
        let text = std::fs::read_to_string(pid_file)
            .map_err(|e| Error::io(format!("read {}", pid_file.display()), e))?;
        text.trim()
            .parse()
            .map_err(|e| Error::Runc(format!("bad pid file {}: {e}", pid_file.display())))
    }

    /// `runc start`.
    pub fn start(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("start").arg(id);
        let out = run_command(&mut cmd, RUNC_TIMEOUT)?;
        self.check("start", out).map(drop)
    }

    /// `runc kill [--all] id signal`.
    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        let out = run_command(&mut cmd, RUNC_TIMEOUT)?;
        self.kill_outcome(out)
    }

    /// What a `runc kill` that ran means. A container that ended between containerd's decision
    /// to signal it and runc's kill gets the answer containerd's own runc shim gives then,
    /// NotFound, which CRI takes as "already stopped" (an error would fail StopPodSandbox for
    /// a container that did stop).
    fn kill_outcome(&self, out: Output) -> Result<()> {
        if out.status != 0 && out.stderr.contains("container not running") {
            return Err(Error::NotFound("process already finished".into()));
        }
        self.check("kill", out).map(drop)
    }

    /// Whether runc keeps state for container `id` (its directory under `--root`). A task that
    /// never went to runc has none, and `delete` need not start runc for it.
    pub fn knows(&self, id: &str) -> bool {
        !id.is_empty() && !id.contains('/') && self.root.join(id).exists()
    }

    /// `runc delete --force`; a container runc does not know is already gone.
    pub fn delete(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("delete").arg("--force").arg(id);
        let out = run_command(&mut cmd, RUNC_TIMEOUT)?;
        if out.status != 0 && out.stderr.contains("does not exist") {
            return Ok(());
        }
        self.check("delete", out).map(drop)
    }

    /// `runc pause` or `runc resume`.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let verb = if frozen { "pause" } else { "resume" };
        let mut cmd = self.command(None);
        cmd.arg(verb).arg(id);
        let out = run_command(&mut cmd, RUNC_TIMEOUT)?;
        self.check(verb, out).map(drop)
    }

    /// `runc update --resources FILE`, with the OCI `LinuxResources` JSON written to `file`.
    pub fn update(&self, id: &str, file: &Path, resources_json: &[u8]) -> Result<()> {
        std::fs::write(file, resources_json)
            .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
        let mut cmd = self.command(None);
        cmd.arg("update").arg("--resources").arg(file).arg(id);
        let out = run_command(&mut cmd, RUNC_TIMEOUT);
        let _ = std::fs::remove_file(file);
        self.check("update", out?).map(drop)
    }

    /// `runc ps --format json`: the container's pids.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let mut cmd = self.command(None);
        cmd.arg("ps").arg("--format").arg("json").arg(id);
        let out = run_command(&mut cmd, RUNC_TIMEOUT)?;
        let stdout = self.check("ps", out)?;
        let pids: Option<Vec<u32>> = serde_json::from_str(stdout.trim())
            .map_err(|e| Error::Runc(format!("unreadable `runc ps` output {stdout:?}: {e}")))?;
        Ok(pids.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::process::Output;

    fn runc() -> Runc {
        Runc {
            binary: "runc".into(),
            root: "/run/wasmcell-test-runc".into(),
        }
    }

    #[test]
    fn killing_a_container_that_has_just_exited_is_not_found_not_a_failure() {
        let exited = Output {
            status: 1,
            stdout: String::new(),
            stderr: "time=\"now\" level=error msg=\"container not running\"\n".into(),
        };
        let err = runc()
            .kill_outcome(exited)
            .expect_err("nothing was signalled");
        assert!(
            matches!(&err, Error::NotFound(m) if m == "process already finished"),
            "{err:?}"
        );
        let refused = Output {
            status: 1,
            stdout: String::new(),
            stderr: "permission denied\n".into(),
        };
        let err = runc().kill_outcome(refused).expect_err("runc failed");
        assert!(
            matches!(&err, Error::Runc(m) if m.contains("permission denied")),
            "{err:?}"
        );
        let sent = Output {
            status: 0,
            stdout: String::new(),
            stderr: String::new(),
        };
        assert!(runc().kill_outcome(sent).is_ok());
    }
}
