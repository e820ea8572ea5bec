//! A task's standard streams on the shim side: opening the FIFOs, `file://` logs and
//! `binary://` loggers containerd names (their URIs are parsed by `wasmcell_oci::stdio`).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use wasmcell_oci::stdio::{self, BinaryLogger, OutputTarget};

use crate::error::{Error, Result};
use crate::host::process::{map_fds, pipe, spawn_watched};

/// How long a binary logger may take to say it is ready.
const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The opened output side of a task.
pub struct Outputs {
    /// Where the program's stdout goes.
    pub stdout: OwnedFd,
    /// Where the program's stderr goes.
    pub stderr: OwnedFd,
    /// The binary logger's pid, if one was started.
    pub logger_pid: Option<i32>,
    /// The read ends of the logger's pipes, kept by the shim to see when the logger has read
    /// everything (see `Task::wait_logger`).
    pub logger_pipes: Vec<OwnedFd>,
}

/// `/dev/null`, for reading and writing.
pub fn open_dev_null() -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open("/dev/null")
}

fn dev_null() -> Result<File> {
    open_dev_null().map_err(|e| Error::io("open /dev/null", e))
}

fn open_target(what: &'static str, target: &OutputTarget) -> Result<OwnedFd> {
    Ok(match target {
        OutputTarget::Null => dev_null()?.into(),
        OutputTarget::Path(p) => stdio::open_output_path(what, p)?.into(),
        OutputTarget::File(p) => stdio::open_log_file(what, p)?.into(),
        // `open_outputs` starts binary loggers itself before calling this.
        OutputTarget::Binary(_) => {
            return Err(Error::Internal(format!(
                "{what}: a binary logger must serve stdout and stderr together"
            )))
        }
    })
}

/// Opens stdout and stderr as containerd passed them.
pub fn open_outputs(id: &str, namespace: &str, stdout: &str, stderr: &str) -> Result<Outputs> {
    let out = stdio::parse_output("stdout", stdout)?;
    let err = stdio::parse_output("stderr", stderr)?;
    match (&out, &err) {
        (OutputTarget::Binary(logger), _) | (_, OutputTarget::Binary(logger)) => {
            let (pid, o, e, pipes) = spawn_logger(logger, id, namespace)?;
            Ok(Outputs {
                stdout: o,
                stderr: e,
                logger_pid: Some(pid),
                logger_pipes: pipes,
            })
        }
        _ => Ok(Outputs {
            stdout: open_target("stdout", &out)?,
            stderr: open_target("stderr", &err)?,
            logger_pid: None,
            logger_pipes: Vec::new(),
        }),
    }
}

/// Opens stdin for a native (runc) container: relayed from the client's FIFO like a cell's.
pub fn open_native_stdin(stdin: &str) -> Result<File> {
    if stdin.is_empty() {
        return dev_null();
    }
    Ok(stdio::stdin_relay(Path::new(stdin))?)
}

/// The stdin path a cell should open itself, or `None` for no stdin.
pub fn cell_stdin(stdin: &str) -> Option<PathBuf> {
    (!stdin.is_empty()).then(|| Path::new(stdin).to_owned())
}

/// Starts a `binary://` logger the way containerd's shims do: the program reads the container's
/// stdout on fd 3 and stderr on fd 4, closes fd 5 once it is ready, and finds the container in
/// `CONTAINER_ID` / `CONTAINER_NAMESPACE`.
fn spawn_logger(
    logger: &BinaryLogger,
    id: &str,
    namespace: &str,
) -> Result<(i32, OwnedFd, OwnedFd, Vec<OwnedFd>)> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (mut ready_r, ready_w) = pipe()?;
    let mut cmd = Command::new(&logger.path);
    cmd.args(&logger.args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let staged = map_fds(
        &mut cmd,
        &[
            (&out_r.as_fd(), 3),
            (&err_r.as_fd(), 4),
            (&ready_w.as_fd(), 5),
        ],
    )?;
    let (child, _watch) = spawn_watched(&mut cmd).map_err(|e| {
        Error::Task(wasmcell_oci::Error::Stdio {
            what: "stdout",
            uri: format!("binary://{}", logger.path.display()),
            reason: e.to_string(),
        })
    })?;
    let pid = child.id() as i32;
    drop((cmd, staged, ready_w));
    let ms = LOGGER_READY_TIMEOUT.as_millis() as i32;
    let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
    let ready = poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    )
    .map_err(|e| Error::io("wait for the binary logger", e))?;
    if ready == 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        return Err(Error::InvalidArgument(format!(
            "binary logger {} did not close its ready fd (5) within {:?}",
            logger.path.display(),
            LOGGER_READY_TIMEOUT
        )));
    }
    let mut sink = Vec::new();
    let _ = ready_r.read_to_end(&mut sink);
    Ok((
        pid,
        out_w.into(),
        err_w.into(),
        vec![out_r.into(), err_r.into()],
    ))
}
