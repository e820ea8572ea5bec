//! Launching a cell process and talking to it (the shim side of `wasmcell_cell`'s protocol).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wasmcell_cell::cgroup::Cgroup;
use wasmcell_cell::{Ready, CONTROL_FD, PROGRAM_FD, START_BYTE, STATUS_FD};
use wasmcell_task::RunSpec;

use crate::error::{Error, Result};
use crate::process::{map_fds, pipe, spawn_watched};

/// The argument that makes the shim binary act as a cell.
pub const CELL_ARG: &str = "cell";

/// A running (or prepared, not yet started) cell.
pub struct Cell {
    /// The cell's pid.
    pub pid: i32,
    control: Mutex<Option<File>>,
}

impl Cell {
    /// Starts a cell for `spec` in `cgroup` and waits until it has loaded and linked `program`, at most
    /// `prepare_timeout` (the compile deadline). Also returns how long moving the cell into its
    /// cgroup took (for the log and the benchmark: on cgroup v1 the first migration waits for an
    /// RCU grace period).
    pub fn spawn(
        spec: &RunSpec,
        program: File,
        stdout: OwnedFd,
        stderr: OwnedFd,
        prepare_timeout: Duration,
        cgroup: &Cgroup,
    ) -> Result<(Cell, Ready, Duration)> {
        let (control_r, mut control_w) = pipe()?;
        let (mut status_r, status_w) = pipe()?;
        let exe = std::env::current_exe().map_err(|e| Error::io("find the shim binary", e))?;
        let mut cmd = Command::new(exe);
        cmd.arg(CELL_ARG)
            .arg(&spec.id)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let staged = map_fds(
            &mut cmd,
            &[
                (&control_r.as_fd(), CONTROL_FD),
                (&status_w.as_fd(), STATUS_FD),
                (&program.as_fd(), PROGRAM_FD),
            ],
        )?;
        let (child, _watch) = spawn_watched(&mut cmd)?;
        let pid = child.id() as i32;
        drop((cmd, staged, control_r, status_w, program));
        let cell = Cell {
            pid,
            control: Mutex::new(None),
        };

        // The cell waits for its run spec before doing anything, so it loads and compiles the
        // guest inside the container's cgroup and limits.
        let joining = std::time::Instant::now();
        if let Err(e) = cgroup.add_process(pid) {
            cell.kill(Signal::SIGKILL);
            return Err(Error::Internal(e.to_string()));
        }
        let joined = joining.elapsed();
        let mut json = serde_json::to_vec(spec).map_err(|e| Error::io("encode run spec", e))?;
        json.push(b'\n');
        if let Err(e) = control_w.write_all(&json) {
            cell.kill(Signal::SIGKILL);
            return Err(Error::io("send the run spec to the cell", e));
        }

        let ready = match wait_status(&mut status_r, prepare_timeout) {
            Ok(line) => wasmcell_cell::parse_status(&line),
            Err(e) => {
                cell.kill(Signal::SIGKILL);
                return Err(e);
            }
        };
        match ready {
            Ok(ready) => {
                *cell.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(control_w);
                Ok((cell, ready, joined))
            }
            Err(message) => {
                cell.kill(Signal::SIGKILL);
                Err(Error::InvalidArgument(message))
            }
        }
    }

    /// Lets the prepared guest run.
    pub fn start(&self) -> Result<()> {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = control
            .take()
            .ok_or_else(|| Error::Internal("cell was already started".into()))?;
        file.write_all(&[START_BYTE])
            .map_err(|e| Error::io("start the cell (it has exited)", e))
    }

    /// Sends `signal` to the cell; a cell that is gone already is not an error here.
    pub fn kill(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid), signal);
    }

    /// Sends a raw signal number.
    pub fn signal(&self, signal: u32) -> Result<()> {
        let sig = Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        kill(Pid::from_raw(self.pid), sig).map_err(|e| match e {
            nix::errno::Errno::ESRCH => Error::NotFound("process already finished".into()),
            e => Error::io(format!("kill cell {}", self.pid), e),
        })
    }
}

/// Reads the cell's status line, waiting at most `timeout` for it.
fn wait_status(status: &mut File, timeout: Duration) -> Result<String> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(status.as_fd(), PollFlags::POLLIN)];
    let n = poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    )
    .map_err(|e| Error::io("wait for the cell", e))?;
    if n == 0 {
        return Err(Error::InvalidArgument(format!(
            "preparing the wasm (compile or cache load) took longer than the {}s deadline",
            timeout.as_secs()
        )));
    }
    let mut line = String::new();
    status
        .read_to_string(&mut line)
        .map_err(|e| Error::io("read the cell's status", e))?;
    Ok(line)
}
