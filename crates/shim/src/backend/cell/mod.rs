//! The cell backend: a task's wasm program in a cell process, in a cgroup the shim makes
//! ([`launch`], [`CellTask`]), and the shim side of `wasmcell_cell`'s protocol ([`Cell`]).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wasmcell_cell::{Ready, Role};
use wasmcell_cgroup::{Cgroup, Hierarchy};
use wasmcell_oci::entrypoint::Entrypoint;
use wasmcell_oci::hooks::Hooks;
use wasmcell_oci::isolation::NamespaceKind;
use wasmcell_oci::{Bundle, CgroupPath, Resources, RunSpec};

mod process;

use process::{Cell, Placement};

use super::{Backend, ExecBackend, ExecIo, ExecStarted, CELL_ARG};
use crate::error::{Error, Result};
use crate::host::console::{self, Console, ConsoleIo};
use crate::host::hooks;
use crate::host::prometheus::{self, ContainerMetrics, ExitKind};
use crate::host::systemd;

/// File in the bundle that records a cell's pid, for `shim delete` after a shim crash.
pub const CELL_PID_FILE: &str = "cell.pid";

/// A task run by a cell: the cell, its cgroup (made by the shim, or by systemd as a scope) and
/// the bundle that records its pid.
pub struct CellTask {
    id: String,
    cell: Cell,
    cgroup: Cgroup,
    /// The systemd scope unit of the cgroup, with systemd's driver (`crate::host::systemd`).
    scope: Option<String>,
    pid_file: std::path::PathBuf,
    /// The host file mounted at the container's termination message path (by the kubelet).
    termination_log: Option<std::path::PathBuf>,
    /// Its series in its pod's Prometheus endpoint, when the metrics-addr setting asks for one.
    metrics: Option<Arc<ContainerMetrics>>,
    /// What an exec's cell is made from: the container's bundle, its run spec, the process
    /// whose namespaces are the container's, and the deadline for loading a program.
    bundle: Bundle,
    run: RunSpec,
    container_pid: i32,
    prepare_timeout: Duration,
    /// Its terminal, when it has one.
    console: Option<Console>,
    /// The spec's runtime-namespace hooks (poststart and poststop are still to run).
    hooks: Hooks,
}

/// A cell's stdout and stderr.
pub enum CellOutput {
    /// These files (stdin is the run spec's FIFO).
    Streams(OwnedFd, OwnedFd),
    /// A terminal made for the cell: its slave side is the cell's stdin, stdout and stderr,
    /// its master relayed to containerd's stdio.
    Terminal(ConsoleIo),
}

/// The annotations by which the CRI plugin names a container's pod and the container.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";

/// Joins the container to its pod's Prometheus endpoint (opening it, in the network namespace
/// of `container_pid`, for the pod's first), and has its cell's reports counted there.
fn join_pod_metrics(
    run: &RunSpec,
    bundle: &Bundle,
    addr: std::net::SocketAddr,
    container_pid: i32,
    cell: &Cell,
) -> Result<Arc<ContainerMetrics>> {
    let annotations = bundle.spec.annotations().clone().unwrap_or_default();
    let pod = annotations.get(SANDBOX_ID_ANNOTATION).unwrap_or(&run.id);
    let name = annotations
        .get(CONTAINER_NAME_ANNOTATION)
        .unwrap_or(&run.id);
    let metrics = Arc::new(prometheus::join(
        pod,
        name,
        addr,
        run.settings.source_of("metrics-addr"),
        container_pid,
    )?);
    let reported = Arc::clone(&metrics);
    cell.follow_reports(move |report| reported.reported(report))?;
    Ok(metrics)
}

/// The kind of an exit with status `code`: the OOM killer's (or the memory limit's), a trap
/// (the cell said how its guest ended, with a trap's status), a signal (a status past 128, as a
/// shell reads it), else the program's own code.
fn exit_kind(code: i32, oom_killed: bool, ended_by_cell: bool) -> ExitKind {
    if oom_killed {
        ExitKind::Oom
    } else if ended_by_cell && code == wasmcell_engine::TRAP_EXIT_CODE {
        ExitKind::Trap
    } else if code > 128 && !ended_by_cell {
        ExitKind::Signal
    } else {
        ExitKind::Code
    }
}

/// [`Cell::spawn`] with `output`; for a terminal, makes it, and attaches its master to
/// containerd's stdio once the cell holds the slave side.
fn spawn_cell(
    run: &RunSpec,
    role: Role,
    program: File,
    output: CellOutput,
    prepare_timeout: Duration,
    place: Placement<'_>,
) -> Result<(Cell, Ready, Option<Console>)> {
    let io = match output {
        CellOutput::Streams(stdout, stderr) => {
            let (cell, ready) =
                Cell::spawn(run, role, program, stdout, stderr, prepare_timeout, place)?;
            return Ok((cell, ready, None));
        }
        CellOutput::Terminal(io) => io,
    };
    let (master, slave) = console::open_pty()?;
    let stdout = slave
        .try_clone()
        .map_err(|e| Error::io("duplicate a terminal's slave side", e))?;
    let mut run = run.clone();
    run.terminal = true;
    run.stdin = None;
    let (cell, ready) = Cell::spawn(&run, role, program, stdout, slave, prepare_timeout, place)?;
    match io.attach(master) {
        Ok(console) => Ok((cell, ready, Some(console))),
        Err(e) => {
            cell.kill(Signal::SIGKILL);
            Err(e)
        }
    }
}

/// Makes the cgroup of `run`, spawns its cell, and waits until the cell has loaded its program
/// (at most `prepare_timeout`). Returns the task, its pid as containerd sees it (the process
/// whose namespaces are the container's: CRI joins a pod's through `/proc/<sandbox pid>/ns`)
/// and the pid whose exit is the task's (the cell's).
pub fn launch(
    run: &RunSpec,
    role: Role,
    entry: Entrypoint,
    output: CellOutput,
    prepare_timeout: Duration,
    bundle: &Bundle,
) -> Result<(CellTask, u32, i32)> {
    let id = &run.id;
    let creating = std::time::Instant::now();
    // With systemd's driver, systemd creates the cgroup (a scope, with the cell in it) and the
    // limits are written once it exists.
    let scope = systemd::scope_of(&run.cgroup);
    let cgroup = CgroupGuard(Some(match scope {
        None => create_cgroup(&run.cgroup, &run.resources)?,
        Some(_) => Cgroup::at(hierarchy()?, &run.cgroup.relative()),
    }));
    let scope = ScopeGuard(scope);
    let created = creating.elapsed();
    let by_systemd = |pid: i32| -> Result<()> {
        if let Some((unit, slice)) = &scope.0 {
            let limits = systemd::limit_properties(&run.resources, cgroup.get().is_v2());
            systemd::start_scope(unit, slice, pid, &run.cgroup.relative(), &limits)?;
        }
        cgroup.get().apply(&run.resources).map_err(|e| {
            Error::Internal(format!("cgroup {}: {e}", run.cgroup.relative().display()))
        })
    };
    let placement = match &scope.0 {
        None => Placement::JoinItself(cgroup.get()),
        Some(_) => Placement::BySystemd(cgroup.get(), &by_systemd),
    };
    let (cell, ready, console) =
        spawn_cell(run, role, entry.file, output, prepare_timeout, placement)?;
    match role {
        Role::Guest => log::info!(
            "task {id}: prepared {} ({:?}, {} bytes): {} in {:.1} ms",
            entry.path,
            entry.kind,
            ready.wasm_bytes,
            ready.loaded(),
            ready.millis
        ),
        Role::Pause => log::info!(
            "task {id}: pod sandbox held by a pause cell (the image's {} is not run)",
            entry.path
        ),
    }
    log::info!(
        "task {id}: isolation: cgroup create {:.2} ms, join {:.2} ms, cell boundary {:.2} ms",
        created.as_secs_f64() * 1000.0,
        ready.join_millis,
        ready.boundary_millis
    );
    let metrics = match (role, run.settings.metrics_addr) {
        (Role::Guest, Some(addr)) => {
            let container_pid = ready.guest_pid.unwrap_or(cell.pid);
            match join_pod_metrics(run, bundle, addr, container_pid, &cell) {
                Ok(metrics) => {
                    metrics.prepared(
                        ready.outcome == Some(wasmcell_engine::CacheOutcome::Hit),
                        ready.millis / 1000.0,
                    );
                    Some(metrics)
                }
                Err(e) => {
                    cell.kill(Signal::SIGKILL);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let pid_file = bundle.dir.join(CELL_PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, format!("{}", cell.pid)) {
        cell.kill(Signal::SIGKILL);
        return Err(Error::io(format!("write {}", pid_file.display()), e));
    }
    let pid = ready.guest_pid.unwrap_or(cell.pid);
    let watched = cell.pid;
    // The container's namespaces exist and its process is in them: prestart and createRuntime
    // (nerdctl's CNI setup finds the network namespace through the state's pid).
    let hooks = Hooks::of(&bundle.spec);
    let annotations = bundle.spec.annotations().clone().unwrap_or_default();
    let state = |status, pid| hooks::State {
        id,
        status,
        pid,
        bundle: &bundle.dir,
        annotations: &annotations,
    };
    let creating = state("creating", u32::try_from(pid).ok());
    let created =
        hooks::run(&hooks::UnderReaper, "prestart", &hooks.prestart, &creating).and_then(|()| {
            hooks::run(
                &hooks::UnderReaper,
                "createRuntime",
                &hooks.create_runtime,
                &creating,
            )
        });
    if created.is_ok() && !(hooks.prestart.is_empty() && hooks.create_runtime.is_empty()) {
        log::info!(
            "task {id}: ran its {} prestart and {} createRuntime hook(s)",
            hooks.prestart.len(),
            hooks.create_runtime.len()
        );
    }
    if let Err(e) = created {
        cell.kill(Signal::SIGKILL);
        let _ = std::fs::remove_file(&pid_file);
        // As the runtime spec says for a failed create: on to poststop.
        let stopped = state("stopped", None);
        if let Err(stop) = hooks::run(&hooks::UnderReaper, "poststop", &hooks.poststop, &stopped) {
            log::warn!("task {id}: {stop}");
        }
        return Err(Error::FailedPrecondition(format!("task {id}: {e}")));
    }
    let task = CellTask {
        id: id.clone(),
        cell,
        scope: scope.disarm(),
        cgroup: cgroup
            .disarm()
            .unwrap_or_else(|| unreachable!("armed guard")),
        pid_file,
        termination_log: bundle.termination_log(),
        metrics,
        bundle: bundle.clone(),
        run: run.clone(),
        container_pid: pid,
        prepare_timeout,
        console,
        hooks,
    };
    Ok((task, pid as u32, watched))
}

impl CellTask {
    /// Runs this task's hooks of `stage` with the container's state.
    fn run_hooks(
        &self,
        stage: &str,
        hooks: &[wasmcell_oci::hooks::Hook],
        status: &str,
    ) -> std::result::Result<(), String> {
        if hooks.is_empty() {
            return Ok(());
        }
        let annotations = self.bundle.spec.annotations().clone().unwrap_or_default();
        let pid = (status != "stopped").then_some(self.container_pid as u32);
        let state = hooks::State {
            id: &self.id,
            status,
            pid,
            bundle: &self.bundle.dir,
            annotations: &annotations,
        };
        let ran = hooks::run(&hooks::UnderReaper, stage, hooks, &state);
        if ran.is_ok() {
            log::info!("task {}: ran its {} {stage} hook(s)", self.id, hooks.len());
        }
        ran
    }
}

impl Backend for CellTask {
    fn start(&self) -> Result<()> {
        self.cell.start()?;
        if let Some(metrics) = &self.metrics {
            metrics.started();
        }
        // A failed poststart ends the container, as runc does (runtime spec 1.3).
        if let Err(e) = self.run_hooks("poststart", &self.hooks.poststart, "running") {
            self.cell.kill(Signal::SIGKILL);
            return Err(Error::FailedPrecondition(format!("task {}: {e}", self.id)));
        }
        Ok(())
    }

    fn signal(&self, signal: u32, _all: bool) -> Result<()> {
        self.cell.signal(signal)?;
        // A frozen process only dies once thawed.
        if signal == libc::SIGKILL as u32 && self.cgroup.is_frozen() {
            if let Err(e) = self.cgroup.freeze(false) {
                log::warn!("task {}: thaw after SIGKILL: {e}", self.id);
            }
        }
        Ok(())
    }

    fn kill_unstarted(&self) {
        self.cell.kill(Signal::SIGKILL);
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        self.cgroup
            .freeze(frozen)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    fn update(&self, resources: &oci_spec::runtime::LinuxResources, _json: &[u8]) -> Result<()> {
        let resources = Resources::from_oci(resources).map_err(wasmcell_oci::Error::from)?;
        self.cgroup
            .apply(&resources)
            .map_err(|e| Error::Internal(format!("update task {}: {e}", self.id)))?;
        log::info!("task {}: resources updated", self.id);
        Ok(())
    }

    fn processes(&self, pid: u32, _ended: bool) -> Result<Vec<u32>> {
        Ok(vec![pid])
    }

    fn oom_killed(&self) -> bool {
        // The cgroup first: with systemd's driver it goes as soon as it is empty.
        if self.cgroup.oom_kills() > 0 {
            return true;
        }
        let report = self.cell.report();
        report.oom_killed || report.ending.is_some_and(|e| e.memory_limit)
    }

    fn ended(&self, code: i32, oom_killed: bool) {
        let ending = self.cell.report().ending;
        if let Some(metrics) = &self.metrics {
            metrics.exited(exit_kind(code, oom_killed, ending.is_some()));
        }
        if let (Some(path), Some(ending)) = (&self.termination_log, ending) {
            crate::host::termination::leave(&self.id, path, &ending.reason);
        }
    }

    fn stats(&self) -> Result<Any> {
        crate::host::metrics::collect(&self.cgroup)
    }

    fn console(&self) -> Option<&Console> {
        self.console.as_ref()
    }

    fn remove(&self) {
        if let Some(unit) = &self.scope {
            systemd::stop_scope(unit);
        }
        if let Err(e) = self.cgroup.remove() {
            log::error!("task {}: {e}", self.id);
        }
        let _ = std::fs::remove_file(&self.pid_file);
        // Deleted: poststop, whose failure is only reported (runtime spec).
        if let Err(e) = self.run_hooks("poststop", &self.hooks.poststop, "stopped") {
            log::warn!("task {}: {e}", self.id);
        }
    }

    fn exec(
        &self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        io: ExecIo,
    ) -> Result<Box<dyn ExecBackend>> {
        let (run, entry) = self.exec_spec(exec_id, process, &io.stdin)?;
        let output = match io.terminal {
            Some(terminal) => CellOutput::Terminal(terminal),
            None => CellOutput::Streams(io.stdout, io.stderr),
        };
        let (cell, ready, console) = spawn_cell(
            &run,
            Role::Guest,
            entry.file,
            output,
            self.prepare_timeout,
            Placement::JoinItself(&self.cgroup),
        )?;
        log::info!(
            "task {}: exec {exec_id}: prepared {} ({} bytes): {} in {:.1} ms",
            self.id,
            entry.path,
            ready.wasm_bytes,
            ready.loaded(),
            ready.millis
        );
        Ok(Box::new(CellExec {
            pid: ready.guest_pid.unwrap_or(cell.pid),
            cell,
            started: std::sync::atomic::AtomicBool::new(false),
            console,
        }))
    }
}

impl CellTask {
    /// The run spec and program of exec `exec_id`: the container's spec with the exec's
    /// process (args, env, cwd, user, capabilities, rlimits), in the container's namespaces
    /// (joined through its process; the cell makes a mount namespace of its own over the same
    /// rootfs and grants), its cgroup, limits and seccomp filters. The program is found in the
    /// rootfs as an entrypoint is, and must be wasm.
    fn exec_spec(
        &self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdin: &str,
    ) -> Result<(RunSpec, Entrypoint)> {
        let mut bundle = self.bundle.clone();
        bundle.spec.set_process(Some(process.clone()));
        let entry = super::exec_program(&bundle.rootfs, exec_id, process)?;
        if !entry.kind.is_wasm() {
            return Err(Error::InvalidArgument(format!(
                "exec {exec_id}: {} is a native program, and a wasm container runs only wasm \
                 (it holds no native userland): exec a wasm program, or probe the container \
                 with httpGet or tcpSocket",
                entry.path
            )));
        }
        let stdin = crate::host::streams::cell_stdin(stdin);
        let mut run = bundle.run_spec(&self.id, stdin, &self.run.cache_dir)?;
        run.program = entry.path.clone();
        run.cgroup = self.run.cgroup.clone();
        // The exec's own env with the container's annotations; its program is compiled for the
        // engine they configure. The pod's metrics are the container's: an exec reports none.
        run.settings = wasmcell_oci::Settings {
            metrics_addr: None,
            ..bundle.settings()?
        };
        // The container's own namespaces, whatever the spec says: joined through its process.
        // Its mount namespace is not joined: the cell always makes its own (see
        // `wasmcell_cell::boundary`), over the same rootfs and grants.
        for ns in &mut run.isolation.namespaces {
            if ns.kind != NamespaceKind::Mount {
                ns.path = Some(PathBuf::from(format!(
                    "/proc/{}/ns/{}",
                    self.container_pid,
                    ns.kind.proc_name()
                )));
            }
        }
        // Set in those namespaces when the container was made.
        run.isolation.hostname = None;
        run.isolation.sysctls.clear();
        Ok((run, entry))
    }
}

/// An exec process in a cell of its own.
struct CellExec {
    cell: Cell,
    /// The guest's pid (in the container's PID namespace, when it has one).
    pid: i32,
    started: std::sync::atomic::AtomicBool,
    console: Option<Console>,
}

impl ExecBackend for CellExec {
    fn start(&self) -> Result<ExecStarted> {
        self.cell.start()?;
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(ExecStarted {
            pid: self.pid,
            watched: self.cell.pid,
        })
    }

    fn signal(&self, _pid: i32, signal: u32) -> Result<()> {
        self.cell.signal(signal)
    }

    fn remove(&self) {
        self.end_unstarted();
    }

    fn console(&self) -> Option<&Console> {
        self.console.as_ref()
    }
}

impl CellExec {
    /// A cell prepared but never started waits for its start byte: end it.
    fn end_unstarted(&self) {
        if !self.started.load(std::sync::atomic::Ordering::SeqCst) {
            self.cell.kill(Signal::SIGKILL);
        }
    }
}

impl Drop for CellExec {
    /// A cell prepared but never started waits for its start byte: its exec's Delete, or its
    /// task's, ends it.
    fn drop(&mut self) {
        self.end_unstarted();
    }
}

/// After a shim died: kills the cell of task `id` its bundle records (after checking that the
/// pid is still that cell) and removes its cgroup, found from the bundle's spec. The cell's
/// pid, if the bundle records one.
pub fn clean_up_after_shim(bundle: &Path, id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(bundle.join(CELL_PID_FILE)).ok()?;
    let pid = text.trim().parse::<i32>().ok();
    if let Some(p) = pid {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&CELL_ARG.as_bytes()) && args.get(2) == Some(&id.as_bytes()) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(bundle.join(CELL_PID_FILE));
    remove_cgroup_of_bundle(bundle, id);
    pid.map(|p| p as u32)
}

/// Removes the cgroup of a cell whose shim died, found from the bundle's spec.
fn remove_cgroup_of_bundle(bundle: &Path, id: &str) {
    let Ok(bundle) = Bundle::read(bundle) else {
        return;
    };
    let path = CgroupPath::of_spec(&bundle.spec, id);
    let (Ok(path), Ok(hierarchy)) = (path, Hierarchy::detect()) else {
        return;
    };
    if let Some((unit, _)) = systemd::scope_of(&path) {
        systemd::stop_scope(&unit);
    }
    if let Err(e) = Cgroup::at(hierarchy, &path.relative()).remove() {
        log::warn!("shim delete {id}: {e}");
    }
}

fn hierarchy() -> Result<Hierarchy> {
    Hierarchy::detect().map_err(|e| Error::Internal(e.to_string()))
}

/// Creates a cell's cgroup with its limits.
fn create_cgroup(path: &CgroupPath, resources: &Resources) -> Result<Cgroup> {
    Cgroup::create(hierarchy()?, &path.relative(), resources)
        .map_err(|e| Error::Internal(format!("cgroup {}: {e}", path.relative().display())))
}

/// Removes a cell's cgroup unless disarmed (on Create failure).
struct CgroupGuard(Option<Cgroup>);

impl CgroupGuard {
    fn get(&self) -> &Cgroup {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("armed guard"))
    }

    fn disarm(mut self) -> Option<Cgroup> {
        self.0.take()
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            if let Err(e) = cg.remove() {
                log::error!("{e}");
            }
        }
    }
}

/// Stops a cell's systemd scope (unit, slice) unless disarmed.
struct ScopeGuard(Option<(String, String)>);

impl ScopeGuard {
    fn disarm(mut self) -> Option<String> {
        self.0.take().map(|(unit, _)| unit)
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if let Some((unit, _)) = self.0.take() {
            systemd::stop_scope(&unit);
        }
    }
}
