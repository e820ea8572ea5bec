//! Launching a cell process and talking to it (the shim side of `wasmcell_cell`'s protocol).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wasmcell_cell::cgroup::Cgroup;
use wasmcell_cell::{Ready, Role, CONTROL_FD, PROGRAM_FD, START_BYTE, STATUS_FD};
use wasmcell_task::RunSpec;

use crate::error::{Error, Result};
use crate::process::{map_fds, pipe, spawn_watched};

/// The argument that makes the shim binary act as a cell.
pub const CELL_ARG: &str = "cell";

/// How a new cell gets into its cgroup.
pub enum Placement<'a> {
    /// It writes itself into this cgroup (created beforehand).
    JoinItself(&'a Cgroup),
    /// This puts the cell's pid into its cgroup (a systemd scope, which can only be created
    /// with a process in it) before the cell gets its orders.
    BySystemd(&'a dyn Fn(i32) -> Result<()>),
}

/// A running (or prepared, not yet started) cell.
pub struct Cell {
    /// The cell's pid.
    pub pid: i32,
    control: Mutex<Option<File>>,
}

impl Cell {
    /// Starts a cell for `spec` and waits until it has loaded and linked `program`, at most
    /// `prepare_timeout` (the compile deadline). `place` says how the new cell gets into its
    /// cgroup ([`Placement`]).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        spec: &RunSpec,
        role: Role,
        program: File,
        stdout: OwnedFd,
        stderr: OwnedFd,
        prepare_timeout: Duration,
        place: Placement<'_>,
    ) -> Result<(Cell, Ready)> {
        let (control_r, mut control_w) = pipe()?;
        let (mut status_r, status_w) = pipe()?;
        let fds = [
            stdout.as_fd(),
            stderr.as_fd(),
            control_r.as_fd(),
            status_w.as_fd(),
            program.as_fd(),
        ];
        let pid = match crate::zygote::get().map(|z| z.spawn_cell(&spec.id, fds)) {
            Some(Ok(pid)) => pid,
            Some(Err(e)) => {
                log::warn!("task {}: {e}; executing the cell instead", spec.id);
                exec_cell(&spec.id, fds)?
            }
            None => exec_cell(&spec.id, fds)?,
        };
        drop((control_r, status_w, program, stdout, stderr));
        let cell = Cell {
            pid,
            control: Mutex::new(None),
        };

        // The cell moves itself into the cgroup before it loads anything (see
        // `wasmcell_cell::cgroup::join_self` for why it is not moved from here), unless systemd
        // puts it there.
        let join = match place {
            Placement::JoinItself(cgroup) => cgroup.self_join_files(),
            Placement::BySystemd(place) => match place(pid) {
                Ok(()) => Vec::new(),
                Err(e) => {
                    cell.kill(Signal::SIGKILL);
                    return Err(e);
                }
            },
        };
        if let Err(e) = wasmcell_cell::write_orders(&mut control_w, join, role, spec) {
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
                Ok((cell, ready))
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

/// Executes the shim binary as the cell of container `id` with `fds` (in the order of
/// [`crate::zygote::CELL_FDS`]); its pid.
fn exec_cell(id: &str, fds: [BorrowedFd<'_>; crate::zygote::CELL_FDS]) -> Result<i32> {
    let [stdout, stderr, control_r, status_w, program] = fds;
    let exe = std::env::current_exe().map_err(|e| Error::io("find the shim binary", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg(CELL_ARG)
        .arg(id)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(dup(stdout)?))
        .stderr(Stdio::from(dup(stderr)?));
    let _staged = map_fds(
        &mut cmd,
        &[
            (&control_r, CONTROL_FD),
            (&status_w, STATUS_FD),
            (&program, PROGRAM_FD),
        ],
    )?;
    let (child, _watch) = spawn_watched(&mut cmd)?;
    Ok(child.id() as i32)
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned()
        .map_err(|e| Error::io("duplicate an fd for the cell", e))
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
