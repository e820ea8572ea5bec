//! runc's command line: `create`, `start`, `exec`, `kill`, `delete`, `pause`/`resume`,
//! `update` and `ps`, each with a deadline, and its errors read from its JSON log.

use std::fs::File;
use std::os::fd::{AsFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::host::process::{map_fds, run_command, spawn_watched, Output};

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
