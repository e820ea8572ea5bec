//! The real [`Launch`]: one Create's work on the host, in order. The bundle is read once, into
//! a [`Plan`] that names the backend and carries what it needs:
//!
//! 1. the image lookup starts in a thread of its own (`crate::host::image`), overlapping the
//!    next steps;
//! 2. the spec is read and the rootfs mounted (`crate::host::rootfs`);
//! 3. the program is found: a wasm layer of the image, else the rootfs entrypoint;
//! 4. stdout and stderr are opened (`crate::host::streams`);
//! 5. the plan: a cell for a wasm program whose spec the cell honours (or a pod's sandbox held
//!    by a pause cell); runc with the cell as its process for a wasm program whose spec asks for
//!    more; runc for a native program;
//! 6. the backend makes the process (`super::cell`, `super::fallback`, `super::runc`).

use std::path::{Path, PathBuf};

use containerd_shim::api::CreateTaskRequest;
use wasmcell_cell::Role;
use wasmcell_task::isolation::Unsupported;
use wasmcell_task::{runspec, RunSpec};

use super::config::{Config, PauseBy};
use super::{cell, fallback, runc, Launch, Launched, Logger};
use crate::error::{Error, Result};
use crate::host::rootfs::MountedRootfs;
use crate::host::{image, streams};

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

/// How Create runs a container.
enum Plan {
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
        let bundle = PathBuf::from(&req.bundle);
        let lookup = image::start_lookup(config.containerd_address.clone(), &config.namespace, id);
        let mut spec = runspec::load_spec(&bundle)?;
        let mounted = MountedRootfs::mount(&bundle, &req.rootfs)?;
        let rootfs = runspec::rootfs_of(&bundle, &spec);
        let entry = image::find(lookup, id, &mut spec, &rootfs)?;

        let outputs = streams::open_outputs(id, &config.namespace, &req.stdout, &req.stderr)?;
        let logger_guard = LoggerGuard(outputs.logger_pid);
        let plan = if entry.kind.is_wasm() {
            self.wasm_plan(id, &spec, &rootfs, &req.stdin, &entry.path)?
        } else {
            self.native_plan(id, &spec, &rootfs)
        };
        let (backend, pid, watched) = match plan {
            Plan::Cell(run, role) => {
                let (task, pid, watched) = cell::launch(
                    &run,
                    role,
                    entry,
                    outputs.stdout,
                    outputs.stderr,
                    config.prepare_timeout,
                    &bundle,
                )?;
                (Box::new(task) as Box<dyn super::Backend>, pid, watched)
            }
            Plan::CellUnderRunc(reason) => {
                let stdin = streams::open_native_stdin(&req.stdin)?;
                let task = fallback::create(
                    config,
                    id,
                    &bundle,
                    &spec,
                    &rootfs,
                    (&entry.path, entry.file),
                    runc::NativeStdio {
                        stdin,
                        stdout: outputs.stdout.into(),
                        stderr: outputs.stderr.into(),
                    },
                    &reason.to_string(),
                )?;
                let pid = task.pid();
                (Box::new(task) as Box<dyn super::Backend>, pid as u32, pid)
            }
            Plan::Native => {
                drop(entry.file);
                let stdin = streams::open_native_stdin(&req.stdin)?;
                let task = runc::RuncTask::create(
                    &config.runc,
                    id,
                    &bundle,
                    &spec,
                    runc::NativeStdio {
                        stdin,
                        stdout: outputs.stdout.into(),
                        stderr: outputs.stderr.into(),
                    },
                )?;
                log::info!(
                    "task {id}: native entrypoint {}, created with runc",
                    entry.path
                );
                let pid = task.pid();
                (Box::new(task) as Box<dyn super::Backend>, pid as u32, pid)
            }
        };
        std::mem::forget(logger_guard);
        Ok(Launched {
            backend,
            pid,
            watched,
            rootfs: mounted.keep(),
            logger: outputs.logger_pid.map(|pid| Logger {
                pid,
                pipes: outputs.logger_pipes,
            }),
        })
    }
}

impl HostLauncher {
    /// How a container whose program is wasm runs: in a cell, unless its spec asks for what
    /// the cell cannot build; then under runc, never in a weaker cell.
    fn wasm_plan(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        rootfs: &Path,
        stdin: &str,
        program: &str,
    ) -> Result<Plan> {
        let cell_stdin = streams::cell_stdin(stdin);
        match RunSpec::from_spec(id, spec, rootfs, cell_stdin, &self.config.cache_dir) {
            Ok(mut run) => {
                run.program = program.to_owned();
                let profile = run.isolation.seccomp.as_ref();
                Ok(match profile.map(wasmcell_cell::seccomp::check_profile) {
                    Some(Err(reason)) => Plan::CellUnderRunc(Unsupported(reason)),
                    _ => Plan::Cell(Box::new(run), Role::Guest),
                })
            }
            Err(wasmcell_task::Error::Unsupported(reason)) => Ok(Plan::CellUnderRunc(reason)),
            Err(e) => Err(Error::from(e)),
        }
    }

    /// How a container whose program is native runs: a pod's sandbox in a pause cell, when
    /// that is configured and the cell can honour its spec; anything else under runc.
    fn native_plan(&self, id: &str, spec: &oci_spec::runtime::Spec, rootfs: &Path) -> Plan {
        let sandbox = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
            .is_some_and(|t| t == "sandbox");
        if !sandbox || self.config.pause == PauseBy::Runc {
            return Plan::Native;
        }
        // The pause cell's own filter (a handful of calls: wait for signals, reap, exit) is
        // narrower than any profile a sandbox's spec can carry, so it takes the profile's place.
        let mut spec = spec.clone();
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(None);
        }
        match RunSpec::from_spec(id, &spec, rootfs, None, &self.config.cache_dir) {
            Ok(run) => Plan::Cell(Box::new(run), Role::Pause),
            Err(e) => {
                log::info!("task {id}: pod sandbox under runc: {e}");
                Plan::Native
            }
        }
    }
}
