//! One cell process as the shim sees it: spawned (forked by the zygote, or executed), told
//! its orders, waited for until its program is loaded, started, signalled, and asked how its
//! guest ended.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wasmcell_cell::{MetricsReport, Ready, Role, CONTROL_FD, PROGRAM_FD, START_BYTE, STATUS_FD};
use wasmcell_cgroup::Cgroup;
use wasmcell_oci::RunSpec;

use crate::backend::CELL_ARG;
use crate::error::{Error, Result};
use crate::host::process::{map_fds, pipe, spawn_watched};
use crate::sync::{lock, wait_timeout_while};

/// How a new cell gets into its cgroup.
pub enum Placement<'a> {
    /// It writes itself into this cgroup (created beforehand).
    JoinItself(&'a Cgroup),
    /// This puts the cell's pid into its cgroup (a systemd scope, which can only be created
    /// with a process in it) before the cell gets its orders.
    BySystemd(&'a Cgroup, &'a dyn Fn(i32) -> Result<()>),
}

impl Placement<'_> {
    fn cgroup(&self) -> &Cgroup {
        match self {
            Placement::JoinItself(cgroup) | Placement::BySystemd(cgroup, _) => cgroup,
        }
    }
}

/// A running (or prepared, not yet started) cell.
pub struct Cell {
    /// The cell's pid.
    pub pid: i32,
    control: Mutex<Option<File>>,
    /// The status pipe after the status line, and what was read of it: a cell with a PID
    /// namespace writes [`wasmcell_cell::OOM_KILLED`] there when the OOM killer killed its
    /// guest, a cell whose guest trapped writes how it ended, and a serving cell with metrics
    /// on writes its server's counters now and then.
    after_status: Arc<(Mutex<AfterStatusPipe>, Condvar)>,
}

/// The status pipe after the status line.
#[derive(Default)]
struct AfterStatusPipe {
    /// The pipe (non-blocking) while nobody follows it.
    pipe: Option<File>,
    /// What was read of it, metrics lines aside.
    seen: Vec<u8>,
    /// A thread reads it as it comes ([`Cell::follow_reports`]), until its end.
    followed: bool,
}

/// How long the exit of a cell whose pipe is followed waits for the pipe's end: it ends with
/// the cell, whose exit is being handled.
const FOLLOWED_END_TIMEOUT: Duration = Duration::from_secs(2);

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
        let pid = match crate::backend::zygote::get().map(|z| z.spawn_cell(&spec.id, fds)) {
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
            after_status: Arc::default(),
        };
        let oom_kill_file = place.cgroup().oom_kill_file();

        // The cell moves itself into the cgroup before it loads anything (see
        // `wasmcell_cgroup::join_self` for why it is not moved from here), unless systemd
        // puts it there.
        let join = match place {
            Placement::JoinItself(cgroup) => cgroup.self_join_files(),
            Placement::BySystemd(_, place) => match place(pid) {
                Ok(()) => Vec::new(),
                Err(e) => {
                    cell.kill(Signal::SIGKILL);
                    return Err(e);
                }
            },
        };
        if let Err(e) = wasmcell_cell::write_orders(&mut control_w, join, role, oom_kill_file, spec)
        {
            cell.kill(Signal::SIGKILL);
            return Err(Error::io("send the run spec to the cell", e));
        }

        let ready = match wait_status(&mut status_r, prepare_timeout) {
            Ok((line, rest)) => {
                let _ = nix::fcntl::fcntl(
                    status_r.as_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                *lock(&cell.after_status.0) = AfterStatusPipe {
                    pipe: Some(status_r),
                    seen: rest,
                    followed: false,
                };
                wasmcell_cell::parse_status(&line)
            }
            Err(e) => {
                cell.kill(Signal::SIGKILL);
                return Err(e);
            }
        };
        match ready {
            Ok(ready) => {
                *lock(&cell.control) = Some(control_w);
                Ok((cell, ready))
            }
            Err(message) => {
                cell.kill(Signal::SIGKILL);
                Err(Error::InvalidArgument(message))
            }
        }
    }

    /// What the cell said after its status line: whether the OOM killer killed its guest, how
    /// the guest ended. Read once the cell has exited (its supervisor writes before it ends),
    /// after which the pipe is closed.
    pub fn report(&self) -> wasmcell_cell::AfterStatus {
        let (state, ended) = &*self.after_status;
        let (mut after, _) =
            wait_timeout_while(ended, lock(state), FOLLOWED_END_TIMEOUT, |a| a.followed);
        if let Some(mut file) = after.pipe.take() {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = file.read(&mut buf) {
                after.seen.extend_from_slice(&buf[..n]);
            }
        }
        wasmcell_cell::parse_after_status(&String::from_utf8_lossy(&after.seen))
    }

    /// Reads the status pipe as it comes, in a thread, until it ends: each metrics report goes
    /// to `on_metrics`, the rest is kept for [`Cell::report`].
    pub fn follow_reports(
        &self,
        on_metrics: impl Fn(MetricsReport) + Send + 'static,
    ) -> Result<()> {
        let shared = Arc::clone(&self.after_status);
        let pipe = {
            let mut after = lock(&shared.0);
            let Some(pipe) = after.pipe.take() else {
                return Ok(());
            };
            after.followed = true;
            pipe
        };
        let _ = nix::fcntl::fcntl(
            pipe.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        );
        let follow = move || {
            let (state, ended) = &*shared;
            // Ends the following however the loop ends, a panicking callback included, so that
            // `report` does not wait for it.
            struct Ended<'a>(&'a Mutex<AfterStatusPipe>, &'a Condvar);
            impl Drop for Ended<'_> {
                fn drop(&mut self) {
                    lock(self.0).followed = false;
                    self.1.notify_all();
                }
            }
            let _ended = Ended(state, ended);
            for line in BufReader::new(pipe)
                .split(b'\n')
                .map_while(std::result::Result::ok)
            {
                let text = String::from_utf8_lossy(&line);
                match wasmcell_cell::parse_metrics(&text) {
                    Some(report) => on_metrics(report),
                    None => {
                        let mut after = lock(state);
                        after.seen.extend_from_slice(&line);
                        after.seen.push(b'\n');
                    }
                }
            }
        };
        std::thread::Builder::new()
            .name("cell-reports".into())
            .spawn(follow)
            .map(drop)
            .map_err(|e| {
                lock(&self.after_status.0).followed = false;
                Error::io("start the thread that reads the cell's reports", e)
            })
    }

    /// Lets the prepared guest run.
    pub fn start(&self) -> Result<()> {
        let mut control = lock(&self.control);
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
/// [`crate::backend::zygote::CELL_FDS`]); its pid.
fn exec_cell(id: &str, fds: [BorrowedFd<'_>; crate::backend::zygote::CELL_FDS]) -> Result<i32> {
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

/// Reads the cell's status line, waiting at most `timeout` for it: the line (empty if the cell
/// closed the pipe without one), and any bytes read past it.
fn wait_status(status: &mut File, timeout: Duration) -> Result<(String, Vec<u8>)> {
    let deadline = std::time::Instant::now() + timeout;
    let mut read = Vec::new();
    loop {
        if let Some(end) = read.iter().position(|b| *b == b'\n') {
            let rest = read.split_off(end + 1);
            return Ok((String::from_utf8_lossy(&read).into_owned(), rest));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(status.as_fd(), PollFlags::POLLIN)];
        let n = match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.map_err(|e| Error::io("wait for the cell", e))?,
        };
        if n == 0 {
            return Err(Error::prepare_deadline(timeout));
        }
        let mut buf = [0u8; 512];
        match status.read(&mut buf) {
            Ok(0) => return Ok((String::from_utf8_lossy(&read).into_owned(), Vec::new())),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read the cell's status", e)),
        }
    }
}
