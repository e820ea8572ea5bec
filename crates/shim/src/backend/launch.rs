//! The real [`Launch`]: one Create's work on the host. The request and the bundle are read
//! once, into a [`Plan`] (spec, rootfs, program, stdio, and the backend with what it needs:
//! the cell's [`RunSpec`] with its isolation and resources, or what sends the task to runc),
//! which the chosen backend then carries out:
//!
//! 1. the image lookup starts in a thread of its own (`crate::host::image`), overlapping the
//!    next steps;
//! 2. the bundle is read ([`Bundle`]) and the rootfs mounted (`crate::host::rootfs`);
//! 3. the program is found: a wasm layer of the image, else the rootfs entrypoint;
//! 4. stdout and stderr are opened (`crate::host::streams`);
//! 5. the backend is chosen ([`How`]): a cell for a wasm program whose spec the cell honours (or
//!    a pod's sandbox held by a pause cell); runc with the cell as its process for a wasm
//!    program whose spec asks for more; runc for a native program;
//! 6. the backend makes the process (`super::cell`, `super::fallback`, `super::runc`).

use std::os::fd::OwnedFd;
use std::path::Path;

use containerd_shim::api::CreateTaskRequest;
use wasmcell_cell::Role;
use wasmcell_oci::isolation::Unsupported;
use wasmcell_oci::{Bundle, Entrypoint, RunSpec};

use super::cell::CellOutput;
use super::config::{Config, PauseBy};
use super::{cell, fallback, runc, Backend, ExecIo, Launch, Launched, Logger};
use crate::error::{Error, Result};
use crate::host::console::ConsoleIo;
use crate::host::image;
use crate::host::rootfs::MountedRootfs;
use crate::host::runc::NativeStdio;
use crate::host::streams::{self, Outputs};

/// The annotation by which the CRI plugin tells a pod's sandbox (pause) container from the
/// pod's other containers.
const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// Launches tasks on this host with the shim's settings.
pub struct HostLauncher {
    config: Config,
}

impl HostLauncher {
    /// A launcher with `config`.
    pub fn new(config: Config) -> HostLauncher {
        HostLauncher { config }
    }
}

/// One Create, read and decided once.
pub struct Plan {
    /// The container's id.
    pub id: String,
    /// Its bundle: the spec (with the args the guest gets) and the rootfs.
    pub bundle: Bundle,
    /// Its program, open.
    pub program: Entrypoint,
    /// Its stdout and stderr, open, and the binary logger serving them.
    pub outputs: Outputs,
    /// containerd's stdin for it (a FIFO path, or empty for none).
    pub stdin: String,
    /// Whether its process gets a terminal (then `outputs.stdout` is the terminal's output).
    pub terminal: bool,
    /// Which backend runs it.
    pub how: How,
}

/// Which backend runs a container, with what that backend needs beyond the [`Plan`].
pub enum How {
    /// A wasm program in a cell, or a pod's sandbox held by a pause cell.
    Cell(Box<RunSpec>, Role),
    /// A wasm program whose spec the cell cannot honour: under runc, with the cell as the
    /// process (`super::fallback`).
    CellUnderRunc(Unsupported),
    /// A native program, under runc.
    Native,
}

/// Kills a binary logger if Create fails after starting it.
struct LoggerGuard(Option<i32>);

impl Drop for LoggerGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Launch for HostLauncher {
    fn launch(&self, req: &CreateTaskRequest) -> Result<Launched> {
        let config = &self.config;
        let id = req.id.as_str();
        let lookup = image::start_lookup(config.containerd_address.clone(), &config.namespace, id);
        let mut bundle = Bundle::read(Path::new(&req.bundle))?;
        let mounted = MountedRootfs::mount(&bundle.dir, &req.rootfs)?;
        let program = image::find(lookup, id, &mut bundle)?;
        let outputs = streams::open_outputs(id, &config.namespace, &req.stdout, &req.stderr)?;
        let logger_guard = LoggerGuard(outputs.logger_pid);
        let how = if program.kind.is_wasm() {
            self.wasm_backend(id, &bundle, &req.stdin, &program.path)?
        } else {
            self.native_backend(id, &bundle)
        };
        let plan = Plan {
            id: id.to_owned(),
            bundle,
            program,
            outputs,
            stdin: req.stdin.clone(),
            terminal: req.terminal,
            how,
        };
        let launched = self.carry_out(plan)?;
        std::mem::forget(logger_guard);
        Ok(Launched {
            rootfs: mounted.keep(),
            ..launched
        })
    }

    fn exec_io(
        &self,
        id: &str,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
    ) -> Result<ExecIo> {
        if [stdout, stderr].iter().any(|s| s.starts_with("binary://")) {
            return Err(Error::NotImplemented(format!(
                "exec in task {id}: output to a binary logger"
            )));
        }
        let outputs = streams::open_outputs(id, &self.config.namespace, stdout, stderr)?;
        if terminal {
            let null = || streams::open_dev_null().map_err(|e| Error::io("open /dev/null", e));
            return Ok(ExecIo {
                stdin: String::new(),
                stdout: null()?.into(),
                stderr: null()?.into(),
                terminal: Some(ConsoleIo {
                    stdin: stdin.to_owned(),
                    stdout: outputs.stdout,
                }),
            });
        }
        Ok(ExecIo {
            stdin: stdin.to_owned(),
            stdout: outputs.stdout,
            stderr: outputs.stderr,
            terminal: None,
        })
    }
}

/// The stdio of a process runc starts: containerd's stdin (relayed) and outputs; or, for a
/// terminal runc makes, `/dev/null` for runc itself and where the terminal's traffic goes.
fn native_stdio(
    terminal: bool,
    stdin: String,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<(NativeStdio, Option<ConsoleIo>)> {
    if terminal {
        let io = ConsoleIo { stdin, stdout };
        return Ok((NativeStdio::null()?, Some(io)));
    }
    let stdio = NativeStdio {
        stdin: streams::open_native_stdin(&stdin)?,
        stdout: stdout.into(),
        stderr: stderr.into(),
    };
    Ok((stdio, None))
}

impl HostLauncher {
    /// Has the plan's backend make the task's process (the rootfs is left to the caller).
    fn carry_out(&self, plan: Plan) -> Result<Launched> {
        let config = &self.config;
        let Plan {
            id,
            bundle,
            program,
            outputs,
            stdin,
            terminal,
            how,
        } = plan;
        let logger = outputs.logger_pid.map(|pid| Logger {
            pid,
            pipes: outputs.logger_pipes,
        });
        let (backend, pid, watched): (Box<dyn Backend>, u32, i32) = match how {
            How::Cell(run, role) => {
                let output = if terminal {
                    CellOutput::Terminal(ConsoleIo {
                        stdin,
                        stdout: outputs.stdout,
                    })
                } else {
                    CellOutput::Streams(outputs.stdout, outputs.stderr)
                };
                let (task, pid, watched) =
                    cell::launch(&run, role, program, output, config.prepare_timeout, &bundle)?;
                (Box::new(task), pid, watched)
            }
            How::CellUnderRunc(reason) => {
                let (stdio, terminal) =
                    native_stdio(terminal, stdin, outputs.stdout, outputs.stderr)?;
                let task =
                    fallback::create(config, &id, &bundle, program, stdio, terminal, &reason)?;
                let pid = task.pid();
                (Box::new(task), pid as u32, pid)
            }
            How::Native => {
                let Entrypoint { file, path, .. } = program;
                drop(file);
                let (stdio, terminal) =
                    native_stdio(terminal, stdin, outputs.stdout, outputs.stderr)?;
                let task = runc::RuncTask::create(&config.runc, &id, &bundle, stdio, terminal)?;
                log::info!("task {id}: native entrypoint {path}, created with runc");
                let pid = task.pid();
                (Box::new(task), pid as u32, pid)
            }
        };
        Ok(Launched {
            backend,
            pid,
            watched,
            rootfs: None,
            logger,
        })
    }

    /// How a container whose program is wasm runs: in a cell, unless its spec asks for what
    /// the cell cannot build; then under runc, never in a weaker cell. `program`: what the
    /// program is called in messages (its path in the rootfs, or the image's wasm layer).
    fn wasm_backend(&self, id: &str, bundle: &Bundle, stdin: &str, program: &str) -> Result<How> {
        // First: a bad setting fails Create whichever way the container would have run.
        let settings = bundle.settings()?;
        let cell_stdin = streams::cell_stdin(stdin);
        match bundle.run_spec(id, cell_stdin, &self.config.cache_dir) {
            Ok(mut run) => {
                run.program = program.to_owned();
                run.settings = settings;
                let profile = run.isolation.seccomp.as_ref();
                Ok(match profile.map(wasmcell_cell::seccomp::check_profile) {
                    Some(Err(reason)) => How::CellUnderRunc(Unsupported(reason)),
                    _ => How::Cell(Box::new(run), Role::Guest),
                })
            }
            Err(wasmcell_oci::Error::Unsupported(reason)) => Ok(How::CellUnderRunc(reason)),
            Err(e) => Err(Error::from(e)),
        }
    }

    /// How a container whose program is native runs: a pod's sandbox in a pause cell, when
    /// that is configured and the cell can honour its spec; anything else under runc.
    fn native_backend(&self, id: &str, bundle: &Bundle) -> How {
        let sandbox = bundle
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
            .is_some_and(|t| t == "sandbox");
        if !sandbox || self.config.pause == PauseBy::Runc {
            return How::Native;
        }
        match bundle.run_spec(id, None, &self.config.cache_dir) {
            Ok(mut run) => {
                // The pause cell's own filter (a handful of calls: wait for signals, reap,
                // exit) is narrower than any profile a sandbox's spec can carry, so it takes
                // the profile's place.
                run.isolation.seccomp = None;
                How::Cell(Box::new(run), Role::Pause)
            }
            Err(e) => {
                log::info!("task {id}: pod sandbox under runc: {e}");
                How::Native
            }
        }
    }
}
