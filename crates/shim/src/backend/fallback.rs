//! The runc fallback: a wasm container whose spec asks for something the cell cannot honour (see
//! `wasmcell_oci::isolation::Unsupported`) runs under runc, with the cell program as the
//! container's process, rather than in a cell with weaker isolation than asked for. The shim's
//! log says why.
//!
//! How (the cell's side is `wasmcell_cell::under_runc`):
//! 1. a copy of the spec is written to `<bundle>/runc-cell/config.json`: the process becomes
//!    the shim binary in `cell-in-runc` mode, bound read-only below `/.wasmcell` in the
//!    container; a dynamically linked build runs through the host's dynamic loader, bound there
//!    too with the libraries it was loaded with (a wasm image has no C library); its env is
//!    empty (the guest's env goes in the run spec, so nothing in it steers the host side);
//! 2. `runc create --preserve-fds 3` hands the process the run spec pipe, the status pipe and a
//!    socket for its program;
//! 3. the program is loaded from, or compiled into, the host compile cache by the shim binary in
//!    `compile` mode, which joins the created container's cgroups and namespaces first, so
//!    compiling is charged to the container, bounded by its limits and kept to its namespaces
//!    whatever made them (runc, systemd); the compile itself runs in a locked-down child
//!    (`wasmcell_cell::compiler`) under the prepare deadline. Bad wasm fails Create with its own
//!    message, as for a cell, and the container is deleted. The entry, opened here (the
//!    container cannot see the cache), goes to the process over its socket;
//! 4. from then on the task is a runc task: Start, Kill, Pause, Stats, Update and Delete go
//!    through runc, as for a native container.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::Spec;
use wasmcell_cell::under_runc::{CELL_IN_RUNC_ARG, COMPILE_ARG, SERVING};
use wasmcell_cell::PROGRAM_FD;
use wasmcell_oci::isolation::Isolation;
use wasmcell_oci::isolation::Unsupported;
use wasmcell_oci::resources::{CgroupPath, Resources};
use wasmcell_oci::{Bundle, Entrypoint, RunSpec};

use super::config::Config;
use super::fallback_report::CellReport;
use super::runc::RuncTask;
use crate::error::{Error, Result};
use crate::host::console::ConsoleIo;
use crate::host::process::{map_fds, pipe, run_command, send_fds};
use crate::host::runc::NativeStdio;

/// Where the cell's files are bound in the container.
const CELL_DIR: &str = "/.wasmcell";
/// The bundle of the runc container, below the task's bundle.
const BUNDLE_DIR: &str = "runc-cell";

/// Creates the runc container of wasm task `id`, whose program is `program`, with `stdio`, or
/// with a terminal runc makes (the cell reads and writes it as any stdio). `reason`: what the
/// cell cannot honour, for the log.
pub fn create(
    config: &Config,
    id: &str,
    bundle: &Bundle,
    program: Entrypoint,
    stdio: NativeStdio,
    terminal: Option<ConsoleIo>,
    reason: &Unsupported,
) -> Result<RuncTask> {
    log::warn!("task {id}: runs under runc with the cell as its process: {reason}");
    let run = run_spec(id, bundle)?;
    if run.settings.metrics_addr.is_some() {
        return Err(Error::NotImplemented(format!(
            "setting {}: a container under the runc fallback ({reason}) has no metrics \
             endpoint",
            run.settings.source_of("metrics-addr")
        )));
    }
    let (spec, rootfs) = (&bundle.spec, &bundle.rootfs);

    let cell_bundle = bundle.dir.join(BUNDLE_DIR);
    std::fs::create_dir_all(&cell_bundle)
        .map_err(|e| Error::io(format!("create {}", cell_bundle.display()), e))?;
    let runc_config = runc_spec(spec, rootfs, id, terminal.is_some())?;
    let config_path = cell_bundle.join("config.json");
    std::fs::write(&config_path, runc_config)
        .map_err(|e| Error::io(format!("write {}", config_path.display()), e))?;

    let (control_r, mut control_w) = pipe()?;
    let (mut status_r, status_w) = pipe()?;
    let (program_r, program_w) =
        UnixStream::pair().map_err(|e| Error::io("make the program socket", e))?;
    // The pipe holds the orders until the process reads them at `runc start`. runc puts the
    // process in its cgroup, so there is nothing for it to join.
    wasmcell_cell::write_orders(
        &mut control_w,
        Vec::new(),
        wasmcell_cell::Role::Guest,
        None,
        &run,
    )
    .map_err(|e| Error::io("send the run spec", e))?;
    drop(control_w);
    let task = RuncTask::create_with(
        &config.runc,
        id,
        bundle,
        &cell_bundle,
        stdio,
        &[&control_r.as_fd(), &status_w.as_fd(), &program_r.as_fd()],
        terminal,
    )?;
    drop((control_r, status_w, program_r));
    // The container exists, stopped before its process: compiling now runs in its cgroups
    // (charged to it, bounded by its limits, whatever made them) and its namespaces.
    let compiled = compile(
        &config.cache_dir,
        config.prepare_timeout,
        &program.path,
        program.file,
        task.pid(),
        &run.settings,
    )
    .and_then(|(compiled, serving)| {
        send_fds(program_w.as_fd(), &[u8::from(serving)], &[compiled.as_fd()])
            .map_err(|e| Error::io("send the compiled program", e))
    });
    if let Err(e) = compiled {
        task.discard();
        return Err(e);
    }
    drop(program_w);

    // Nobody waits for the cell's status under runc; the log gets it. What follows it (how
    // the guest ended) is kept for the task's exit.
    let report = Arc::new(CellReport::default());
    let id = id.to_owned();
    let reading = Arc::clone(&report);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = status_r.read_to_string(&mut text);
        let (line, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        match wasmcell_cell::parse_status(line) {
            Ok(ready) => log::info!(
                "task {id}: the cell under runc loaded its program in {:.1} ms",
                ready.millis
            ),
            Err(message) if !message.is_empty() => {
                log::warn!("task {id}: the cell under runc failed: {message}")
            }
            Err(_) => {}
        }
        reading.set(wasmcell_cell::parse_after_status(rest));
    });
    Ok(task.holding_wasm(bundle.rootfs.clone(), report, bundle.termination_log()))
}

/// Loads `name` from the compile cache or compiles it into the cache (the shim binary in
/// `compile` mode, which first joins the cgroups and namespaces of the container whose init
/// is `pid`) for the engine the workload's `settings` configure, and opens the entry; also
/// whether it was compiled for the serving engine.
fn compile(
    cache_dir: &Path,
    timeout: Duration,
    name: &str,
    program: File,
    pid: i32,
    settings: &wasmcell_oci::Settings,
) -> Result<(File, bool)> {
    let settings = serde_json::to_string(settings)
        .map_err(|e| Error::Internal(format!("encode the settings: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find the shim binary", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg(COMPILE_ARG)
        .arg(cache_dir)
        .arg(name)
        .arg(pid.to_string())
        .arg(settings)
        .env_clear()
        .stdin(Stdio::null());
    if let Some(cap) = std::env::var_os(wasmcell_engine::CAP_ENV) {
        cmd.env(wasmcell_engine::CAP_ENV, cap);
    }
    let staged = map_fds(&mut cmd, &[(&program.as_fd(), PROGRAM_FD)])?;
    let out = run_command(&mut cmd, timeout).map_err(|e| match e {
        Error::DeadlineExceeded(_) => Error::prepare_deadline(timeout),
        other => other,
    })?;
    drop((staged, program));
    if out.status != 0 {
        let why = out.stderr.trim();
        return Err(Error::InvalidArgument(if why.is_empty() {
            format!(
                "compiling {name} ended with status {} and no message (killed: by the \
                 container's memory limit?)",
                out.status
            )
        } else {
            why.to_owned()
        }));
    }
    let mut lines = out.stdout.lines();
    let path = PathBuf::from(lines.next().unwrap_or_default().trim());
    let serving = lines.next().map(str::trim) == Some(SERVING);
    if !path.starts_with(cache_dir) {
        return Err(Error::Internal(format!(
            "the compiler named {} outside the cache {}",
            path.display(),
            cache_dir.display()
        )));
    }
    let file = File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    Ok((file, serving))
}

/// The run spec as the process in the container sees it: `/` is the rootfs, each directory bind
/// mount is at its destination (runc mounted it there).
fn run_spec(id: &str, bundle: &Bundle) -> Result<RunSpec> {
    let process = bundle.process()?;
    let preopens = bundle
        .preopens()
        .into_iter()
        .map(|mut p| {
            p.host = PathBuf::from(&p.guest);
            p
        })
        .collect();
    let memory_limit = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit());
    Ok(RunSpec {
        id: id.to_owned(),
        args: process.args().clone().unwrap_or_default(),
        program: String::new(),
        env: bundle.env()?,
        cwd: process.cwd().to_string_lossy().into_owned(),
        rootfs: PathBuf::from("/"),
        preopens,
        // runc mounted them where they belong: the cell reads them in its root.
        file_mounts: Vec::new(),
        stdin: None,
        terminal: false,
        cache_dir: PathBuf::new(),
        isolation: Isolation::default(),
        cgroup: CgroupPath::Fs(PathBuf::new()),
        resources: Resources {
            memory_limit,
            ..Resources::default()
        },
        settings: bundle.settings()?,
    })
}

/// The files the shim binary needs to run: itself and, unless it is linked statically (as `make
/// build` links it), the dynamic loader and the shared libraries mapped into this process.
fn cell_files() -> Result<(PathBuf, Option<PathBuf>, Vec<PathBuf>)> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find the shim binary", e))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| Error::io("read /proc/self/maps", e))?;
    let mut loader = None;
    let mut libs: Vec<PathBuf> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let p = PathBuf::from(path);
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.starts_with('/') || !name.contains(".so") || libs.contains(&p) {
            continue;
        }
        if name.starts_with("ld-linux") {
            loader = Some(p);
        } else {
            libs.push(p);
        }
    }
    if loader.is_none() && !libs.is_empty() {
        return Err(Error::Internal(format!(
            "shared libraries but no dynamic loader in /proc/self/maps ({}): cannot run the \
             cell under runc",
            libs[0].display()
        )));
    }
    Ok((exe, loader, libs))
}

/// A read-only bind mount of a host file into the container.
fn bind(source: &Path, destination: String) -> serde_json::Value {
    serde_json::json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", "ro", "nosuid", "nodev"],
    })
}

/// The spec of the runc container: `spec` with the cell as its process.
fn runc_spec(spec: &Spec, rootfs: &Path, id: &str, terminal: bool) -> Result<Vec<u8>> {
    let (exe, loader, libs) = cell_files()?;
    let mut v = serde_json::to_value(spec).map_err(|e| Error::io("encode the spec", e))?;
    let exe_in = format!("{CELL_DIR}/cell");
    let mut mounts = vec![bind(&exe, exe_in.clone())];
    let args = match loader {
        // A static binary runs as it is.
        None => serde_json::json!([exe_in, CELL_IN_RUNC_ARG, id]),
        // A dynamic one through the host's loader and libraries (a wasm image has no C library).
        Some(loader) => {
            let loader_in = format!("{CELL_DIR}/ld.so");
            let lib_dir = format!("{CELL_DIR}/lib");
            mounts.push(bind(&loader, loader_in.clone()));
            for lib in &libs {
                let name = lib.file_name().unwrap_or_default().to_string_lossy();
                mounts.push(bind(lib, format!("{lib_dir}/{name}")));
            }
            serde_json::json!([
                loader_in,
                "--library-path",
                lib_dir,
                exe_in,
                CELL_IN_RUNC_ARG,
                id
            ])
        }
    };
    v["process"]["args"] = args;
    v["process"]["env"] = serde_json::json!([]);
    v["process"]["terminal"] = serde_json::json!(terminal);
    v["root"]["path"] = serde_json::json!(rootfs);
    match v["mounts"].as_array_mut() {
        Some(existing) => existing.extend(mounts),
        None => v["mounts"] = serde_json::Value::Array(mounts),
    }
    serde_json::to_vec_pretty(&v).map_err(|e| Error::io("encode the runc spec", e))
}
