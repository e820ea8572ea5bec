//! The task service's logic, free of ttrpc plumbing: `service.rs` only forwards to it.
//!
//! Ordering of events is kept by taking a task's state lock around every transition and sending
//! the event while holding it: Start sends TaskStart before the exit path (which needs the same
//! lock) can send TaskExit, and [`TaskState::exited`] refuses a second exit.
//!
//! Exits come from the framework's reaper through one subscription. An exit can arrive before its
//! pid is registered (a process that dies at once); it is kept as *unclaimed* and matched when
//! the pid is registered, so no exit is lost. Only an exit reaped after the Create that
//! registers the pid began can be that process's: pids are reused, and an older exit of the
//! same number (a helper the shim reaped as subreaper) would end a new task before it started.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, KillRequest, PauseRequest, PidsRequest, PidsResponse, ResumeRequest,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest,
    StatsResponse, Status as ApiStatus, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::topics::{
    TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC,
    TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use containerd_shim::protos::types::mount::Mount;
use nix::sys::signal::Signal;
use wasmcell_cell::cgroup::{Cgroup, Hierarchy};
use wasmcell_cell::Role;
use wasmcell_task::{runspec, CgroupPath, Resources, RunSpec, Status, TaskState};

use crate::cell::{Cell, Placement};
use crate::error::{Error, Result};
use crate::events::{timestamp, EventSender};
use crate::fallback;
use crate::process::ExitWatch;
use crate::program;
use crate::runc::{NativeStdio, Runc};
use crate::stdio;

/// How long Delete waits for a killed, never-started task to exit.
const DELETE_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exit waits for the task's binary logger to drain and exit.
const LOGGER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an exit looks whether the binary logger has read everything.
const LOGGER_DRAIN_POLL: Duration = Duration::from_millis(2);
/// How long a shim that is about to exit waits for its last events to reach containerd.
const EVENT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How many exits of unknown pids are remembered.
const UNCLAIMED_EXITS: usize = 1024;
/// File in the bundle that records a cell's pid, for `shim delete` after a shim crash.
pub const CELL_PID_FILE: &str = "cell.pid";

/// Locks a mutex, recovering the data if a thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Settings of one shim instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// containerd namespace.
    pub namespace: String,
    /// Root of the host compile cache.
    pub cache_dir: PathBuf,
    /// runc, for native containers.
    pub runc: Runc,
    /// Deadline for preparing (compiling) a wasm program.
    pub prepare_timeout: Duration,
    /// containerd's gRPC socket (the shim's `-address`), where images and their wasm layers are
    /// read; `None` when the shim was not given one.
    pub containerd_address: Option<String>,
    /// Who holds a pod's sandbox (its pause container).
    pub pause: PauseBy,
}

/// Who holds a pod's sandbox: the shim's environment `WASMCELL_PAUSE` (`cell` or `runc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseBy {
    /// A pause cell (`wasmcell_cell::Role::Pause`), when the cell can honour the sandbox's spec;
    /// runc otherwise.
    Cell,
    /// runc, running the pause image's program, always.
    Runc,
}

impl PauseBy {
    fn from_env(value: Option<&std::ffi::OsStr>) -> std::result::Result<PauseBy, String> {
        match value.map(|v| v.to_string_lossy()) {
            None => Ok(PauseBy::Cell),
            Some(v) if v == "cell" => Ok(PauseBy::Cell),
            Some(v) if v == "runc" => Ok(PauseBy::Runc),
            Some(v) => Err(format!(
                "WASMCELL_PAUSE={v:?} is neither \"cell\" nor \"runc\"; pods' sandboxes are held by pause cells"
            )),
        }
    }
}

/// The annotation by which the CRI plugin tells a pod's sandbox (pause) container from the
/// pod's other containers.
const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

impl Config {
    /// The default configuration for `namespace`, adjusted by the shim's own environment (which
    /// containerd gives it; a container's env never reaches here).
    pub fn from_env(namespace: &str) -> Config {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Config {
            namespace: namespace.to_owned(),
            cache_dir: env("WASMCELL_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/wasmcell/cache")),
            runc: Runc {
                binary: env("WASMCELL_RUNC")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("runc")),
                root: env("WASMCELL_RUNC_ROOT")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/run/wasmcell/runc"))
                    .join(namespace),
            },
            prepare_timeout: env("WASMCELL_PREPARE_TIMEOUT_SECS")
                .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(300)),
            containerd_address: None,
            pause: PauseBy::from_env(env("WASMCELL_PAUSE").as_deref()).unwrap_or_else(|e| {
                log::warn!("{e}");
                PauseBy::Cell
            }),
        }
    }
}

/// What runs a task's process.
enum Backend {
    /// A wasm cell.
    Cell(Cell),
    /// A native container under runc.
    Runc,
}

/// One task (container) of this shim.
pub struct Task {
    id: String,
    bundle: PathBuf,
    pid: u32,
    backend: Backend,
    io: TaskIO,
    rootfs: Option<PathBuf>,
    logger_pid: Option<i32>,
    /// The task's cgroup: created and removed by the shim for a cell; runc's own for a native
    /// container (read for Stats only), when its path is a cgroupfs one.
    cgroup: Option<Cgroup>,
    /// The systemd scope unit of a cell's cgroup, with systemd's driver (`crate::systemd`).
    scope: Option<String>,
    /// Frozen by Pause.
    paused: std::sync::atomic::AtomicBool,
    state: Mutex<TaskState>,
    changed: Condvar,
    logger_gone: Mutex<bool>,
    logger_changed: Condvar,
    /// The read ends of the binary logger's pipes while the logger lives: FIONREAD on them
    /// tells when it has read everything.
    logger_pipes: Mutex<Vec<OwnedFd>>,
}

impl Task {
    /// Whether the kernel's OOM killer ended a process of the task's cgroup: a cell's (as its
    /// supervisor reported, or as the cgroup says), or runc's for a native container (CRI turns
    /// the TaskOOM event sent before TaskExit into the `OOMKilled` reason, whichever backend
    /// ran the container).
    fn oom_killed(&self) -> bool {
        let reported = match &self.backend {
            Backend::Cell(cell) => cell.reported_oom_kill(),
            Backend::Runc => false,
        };
        reported || self.cgroup.as_ref().is_some_and(|cg| cg.oom_kills() > 0)
    }

    fn cell_cgroup(&self) -> Option<&Cgroup> {
        match self.backend {
            Backend::Cell(_) => self.cgroup.as_ref(),
            Backend::Runc => None,
        }
    }

    fn logger_exited(&self) {
        *lock(&self.logger_gone) = true;
        // With its reader gone, a writer must see EPIPE again, not a pipe that fills up.
        lock(&self.logger_pipes).clear();
        self.logger_changed.notify_all();
    }

    /// Waits (bounded) until the binary logger has read all the output: its pipes are empty,
    /// or it has exited. Some loggers (nerdctl's) exit only once they see the task's exit
    /// from containerd, so waiting for the exit alone would hold TaskExit up to the bound.
    fn wait_logger(&self) {
        if self.logger_pid.is_none() {
            return;
        }
        let deadline = Instant::now() + LOGGER_DRAIN_TIMEOUT;
        let mut gone = lock(&self.logger_gone);
        loop {
            let drained = lock(&self.logger_pipes)
                .iter()
                .all(|p| crate::process::unread_bytes(p.as_fd()).map_or(true, |n| n == 0));
            let now = Instant::now();
            if *gone || drained || now >= deadline {
                return;
            }
            let wait = LOGGER_DRAIN_POLL.min(deadline - now);
            gone = self
                .logger_changed
                .wait_timeout(gone, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

enum Owner {
    Task(String),
    Logger(String),
}

#[derive(Default)]
struct Pids {
    owners: HashMap<i32, Owner>,
    /// Exits of pids nobody has registered yet: pid, status, when it was reaped.
    unclaimed: VecDeque<(i32, i32, Instant)>,
}

impl Pids {
    /// Keeps the exit of a pid nobody has registered (yet).
    fn keep_exit(&mut self, pid: i32, code: i32, reaped: Instant) {
        self.unclaimed.push_back((pid, code, reaped));
        if self.unclaimed.len() > UNCLAIMED_EXITS {
            self.unclaimed.pop_front();
        }
    }

    /// The kept exit of `pid` if it was reaped after `began`; older exits of the same pid, a
    /// process before it with the same number, are dropped.
    fn take_exit(&mut self, pid: i32, began: Instant) -> Option<i32> {
        while let Some(i) = self.unclaimed.iter().position(|(p, _, _)| *p == pid) {
            let (_, code, reaped) = self.unclaimed.remove(i)?;
            if reaped >= began {
                return Some(code);
            }
        }
        None
    }
}

/// The tasks of one shim.
pub struct Tasks {
    config: Config,
    events: Arc<dyn EventSender>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    /// Ids whose Create is under way (see [`Reservation`]).
    creating: Mutex<HashSet<String>>,
    pids: Mutex<Pids>,
    on_idle: Box<dyn Fn() + Send + Sync>,
}

/// An id whose Create is under way, from its first check to the task's entry in the registry
/// (or Create's failure): a second Create of the same id meanwhile answers AlreadyExists
/// instead of building a second cell and cgroup that the first one's would orphan.
struct Reservation<'a> {
    tasks: &'a Tasks,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.tasks.creating).remove(&self.id);
    }
}

/// Unmounts the rootfs we mounted unless disarmed (on Create failure).
struct RootfsGuard(Option<PathBuf>);

impl RootfsGuard {
    fn mount(bundle: &Path, mounts: &[Mount]) -> Result<RootfsGuard> {
        if mounts.is_empty() {
            return Ok(RootfsGuard(None));
        }
        let target = bundle.join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
        let guard = RootfsGuard(Some(target.clone()));
        for m in mounts {
            crate::rootfs::mount(&m.type_, &m.source, &m.options, &target).map_err(|e| {
                Error::Internal(format!(
                    "mount {} ({}) on {}: {e}",
                    m.source,
                    m.type_,
                    target.display()
                ))
            })?;
        }
        Ok(guard)
    }

    fn disarm(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for RootfsGuard {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            crate::rootfs::unmount(&target);
        }
    }
}

/// Kills a binary logger if Create fails after starting it.
struct LoggerGuard(Option<i32>);

impl Drop for LoggerGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Tasks {
    /// Creates the registry and starts the thread that routes child exits to tasks.
    pub fn new(
        config: Config,
        events: Arc<dyn EventSender>,
        on_idle: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Arc<Tasks>> {
        let tasks = Arc::new(Tasks {
            config,
            events,
            tasks: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            pids: Mutex::new(Pids::default()),
            on_idle,
        });
        let watch = ExitWatch::new()?;
        let weak = Arc::downgrade(&tasks);
        std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || {
                while let Some((pid, code)) = watch.next() {
                    match weak.upgrade() {
                        Some(t) => t.on_exit(pid, code),
                        None => break,
                    }
                }
            })
            .map_err(|e| Error::io("start the exit thread", e))?;
        Ok(tasks)
    }

    fn get(&self, id: &str) -> Result<Arc<Task>> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id} not found")))
    }

    /// Reserves `id` for a Create, or answers AlreadyExists when a task of that id exists or
    /// is being created.
    fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
        let mut creating = lock(&self.creating);
        if creating.contains(id) || lock(&self.tasks).contains_key(id) {
            return Err(Error::AlreadyExists(format!("task {id} already exists")));
        }
        creating.insert(id.to_owned());
        Ok(Reservation {
            tasks: self,
            id: id.to_owned(),
        })
    }

    /// Registers `pid`, a process started after `began`; returns its exit status if it has
    /// already exited. An unclaimed exit of the same pid from before `began` was another
    /// process's, and is dropped.
    fn register(&self, pid: i32, owner: Owner, began: Instant) -> Option<i32> {
        let mut pids = lock(&self.pids);
        let code = pids.take_exit(pid, began);
        if code.is_none() {
            pids.owners.insert(pid, owner);
        }
        code
    }

    fn on_exit(&self, pid: i32, code: i32) {
        let owner = {
            let mut pids = lock(&self.pids);
            match pids.owners.remove(&pid) {
                Some(o) => o,
                None => {
                    pids.keep_exit(pid, code, Instant::now());
                    return;
                }
            }
        };
        match owner {
            Owner::Task(id) => {
                if let Ok(task) = self.get(&id) {
                    self.task_exited(task, code);
                }
            }
            Owner::Logger(id) => {
                if let Ok(task) = self.get(&id) {
                    task.logger_exited();
                }
            }
        }
    }

    /// Records a task's exit once its output has been drained, then sends TaskExit.
    fn task_exited(&self, task: Arc<Task>, code: i32) {
        let events = Arc::clone(&self.events);
        let drain = task_has_running_logger(&task);
        // Read at once: with systemd's driver, systemd removes the scope's cgroup (and its
        // `memory.events`) as soon as it is empty.
        let oom_killed = task.oom_killed();
        let finish = move || {
            task.wait_logger();
            let mut st = lock(&task.state);
            let now = SystemTime::now();
            if st.exited(code as u32, now) {
                if oom_killed {
                    log::info!("task {}: killed by the OOM killer", task.id);
                    let mut ev = TaskOOM::new();
                    ev.container_id = task.id.clone();
                    events.send(TASK_OOM_EVENT_TOPIC, Box::new(ev));
                }
                log::info!("task {} exited with status {code}", task.id);
                let mut ev = TaskExit::new();
                ev.container_id = task.id.clone();
                ev.id = task.id.clone();
                ev.pid = task.pid;
                ev.exit_status = code as u32;
                ev.exited_at = Some(timestamp(now)).into();
                events.send(TASK_EXIT_EVENT_TOPIC, Box::new(ev));
            }
            task.changed.notify_all();
        };
        if drain {
            // Do not hold up other exits while this logger drains.
            let _ = std::thread::Builder::new()
                .name("drain".into())
                .spawn(finish);
        } else {
            finish();
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

    /// Create: mount the rootfs, find the program, prepare a cell or `runc create`.
    pub fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        // Every process of this task is started after this instant.
        let began = Instant::now();
        let id = req.id.clone();
        if id.is_empty() {
            return Err(Error::InvalidArgument("task id is empty".into()));
        }
        let _reservation = self.reserve(&id)?;
        if req.terminal {
            return Err(Error::NotImplemented(
                "terminal (tty) tasks are not implemented by wasmcell yet".into(),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::NotImplemented(
                "checkpoint/restore is not implemented".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let lookup = program::start_lookup(&self.config, &id);
        let mut spec = runspec::load_spec(&bundle)?;
        let rootfs_guard = RootfsGuard::mount(&bundle, &req.rootfs)?;
        let rootfs = runspec::rootfs_of(&bundle, &spec);
        let entry = program::find(lookup, &id, &mut spec, &rootfs)?;

        let outputs = stdio::open_outputs(&id, &self.config.namespace, &req.stdout, &req.stderr)?;
        let logger_guard = LoggerGuard(outputs.logger_pid);
        let plan = if !entry.kind.is_wasm() {
            self.native_plan(&id, &spec, &rootfs)
        } else {
            match RunSpec::from_spec(
                &id,
                &spec,
                &rootfs,
                stdio::cell_stdin(&req.stdin),
                &self.config.cache_dir,
            ) {
                Ok(mut run) => {
                    run.program = entry.path.clone();
                    let profile = run.isolation.seccomp.as_ref();
                    match profile.map(wasmcell_cell::seccomp::check_profile) {
                        Some(Err(reason)) => {
                            Plan::CellUnderRunc(wasmcell_task::isolation::Unsupported(reason))
                        }
                        _ => Plan::Cell(Box::new(run), Role::Guest),
                    }
                }
                // Never weaker isolation than asked for: such a container goes to runc.
                Err(wasmcell_task::Error::Unsupported(reason)) => Plan::CellUnderRunc(reason),
                Err(e) => return Err(e.into()),
            }
        };
        let mut scope_unit = None;
        let (backend, pid, cgroup) = match plan {
            Plan::Cell(run, role) => {
                let creating = std::time::Instant::now();
                // With systemd's driver, systemd creates the cgroup (a scope, with the cell in
                // it) and the limits are written once it exists.
                let scope = crate::systemd::scope_of(&run.cgroup);
                let cgroup = CgroupGuard(Some(match scope {
                    None => create_cgroup(&run.cgroup, &run.resources)?,
                    Some(_) => Cgroup::at(
                        Hierarchy::detect().map_err(|e| Error::Internal(e.to_string()))?,
                        &run.cgroup.relative(),
                    ),
                }));
                let scope = ScopeGuard(scope);
                let created = creating.elapsed();
                let by_systemd = |pid: i32| -> Result<()> {
                    if let Some((unit, slice)) = &scope.0 {
                        crate::systemd::start_scope(unit, slice, pid, &run.cgroup.relative())?;
                    }
                    cgroup.get().apply(&run.resources).map_err(|e| {
                        Error::Internal(format!("cgroup {}: {e}", run.cgroup.relative().display()))
                    })
                };
                let placement = match &scope.0 {
                    None => Placement::JoinItself(cgroup.get()),
                    Some(_) => Placement::BySystemd(cgroup.get(), &by_systemd),
                };
                let (cell, ready) = Cell::spawn(
                    &run,
                    role,
                    entry.file,
                    outputs.stdout,
                    outputs.stderr,
                    self.config.prepare_timeout,
                    placement,
                )?;
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
                let pid_file = bundle.join(CELL_PID_FILE);
                if let Err(e) = std::fs::write(&pid_file, format!("{}", cell.pid)) {
                    cell.kill(Signal::SIGKILL);
                    return Err(Error::io(format!("write {}", pid_file.display()), e));
                }
                // The task's pid is the process whose namespaces are the container's (CRI
                // joins a pod's through `/proc/<sandbox pid>/ns`); exits are the cell's.
                let pid = ready.guest_pid.unwrap_or(cell.pid);
                let watched = cell.pid;
                scope_unit = scope.disarm();
                (Backend::Cell(cell), (pid, watched), cgroup.disarm())
            }
            Plan::CellUnderRunc(reason) => {
                let stdin = stdio::open_native_stdin(&req.stdin)?;
                let pid = fallback::create(
                    &self.config.runc,
                    &self.config.cache_dir,
                    self.config.prepare_timeout,
                    &id,
                    &bundle,
                    &spec,
                    &rootfs,
                    (&entry.path, entry.file),
                    NativeStdio {
                        stdin,
                        stdout: outputs.stdout.into(),
                        stderr: outputs.stderr.into(),
                    },
                    &reason.to_string(),
                )?;
                (Backend::Runc, (pid, pid), runc_cgroup(&spec, &id))
            }
            Plan::Native => {
                drop(entry.file);
                let stdin = stdio::open_native_stdin(&req.stdin)?;
                let pid = self.config.runc.create(
                    &id,
                    &bundle,
                    NativeStdio {
                        stdin,
                        stdout: outputs.stdout.into(),
                        stderr: outputs.stderr.into(),
                    },
                    &[],
                    crate::systemd::drives(&spec, &id),
                )?;
                log::info!(
                    "task {id}: native entrypoint {}, created with runc",
                    entry.path
                );
                (Backend::Runc, (pid, pid), runc_cgroup(&spec, &id))
            }
        };
        let (pid, watched) = pid;

        let mut io = TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        let logger_pid = outputs.logger_pid;
        let logger_pipes = outputs.logger_pipes;
        std::mem::forget(logger_guard);
        let task = Arc::new(Task {
            id: id.clone(),
            bundle: bundle.clone(),
            pid: pid as u32,
            backend,
            io: io.clone(),
            rootfs: rootfs_guard.disarm(),
            logger_pid,
            cgroup,
            scope: scope_unit,
            paused: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(TaskState::new(&id)),
            changed: Condvar::new(),
            logger_gone: Mutex::new(false),
            logger_changed: Condvar::new(),
            logger_pipes: Mutex::new(logger_pipes),
        });
        lock(&self.tasks).insert(id.clone(), Arc::clone(&task));

        if let Some(lpid) = logger_pid {
            if self
                .register(lpid, Owner::Logger(id.clone()), began)
                .is_some()
            {
                task.logger_exited();
            }
        }
        {
            let _st = lock(&task.state);
            let mut ev = TaskCreate::new();
            ev.container_id = id.clone();
            ev.bundle = req.bundle.clone();
            ev.rootfs = req.rootfs.clone();
            ev.io = Some(io).into();
            ev.pid = pid as u32;
            self.events.send(TASK_CREATE_EVENT_TOPIC, Box::new(ev));
        }
        if let Some(code) = self.register(watched, Owner::Task(id), began) {
            self.task_exited(Arc::clone(&task), code);
        }
        let mut resp = CreateTaskResponse::new();
        resp.pid = pid as u32;
        Ok(resp)
    }

    /// Start: let the prepared cell run, or `runc start`.
    pub fn start(&self, req: StartRequest) -> Result<StartResponse> {
        no_exec(&req.exec_id)?;
        let task = self.get(&req.id)?;
        let mut st = lock(&task.state);
        st.check_start()?;
        match &task.backend {
            Backend::Cell(cell) => cell.start()?,
            Backend::Runc => self.config.runc.start(&task.id)?,
        }
        st.started()?;
        let mut ev = TaskStart::new();
        ev.container_id = task.id.clone();
        ev.pid = task.pid;
        self.events.send(TASK_START_EVENT_TOPIC, Box::new(ev));
        let mut resp = StartResponse::new();
        resp.pid = task.pid;
        Ok(resp)
    }

    /// Kill: deliver a signal to the task's process.
    pub fn kill(&self, req: KillRequest) -> Result<()> {
        no_exec(&req.exec_id)?;
        let task = self.get(&req.id)?;
        let st = lock(&task.state);
        if matches!(st.status(), Status::Stopped | Status::Deleted) {
            return Err(Error::NotFound("process already finished".into()));
        }
        let sent = match &task.backend {
            Backend::Cell(cell) => cell.signal(req.signal),
            Backend::Runc => self.config.runc.kill(&task.id, req.signal, req.all),
        };
        // A frozen process only dies once thawed; SIGKILL must end a paused task, as with runc.
        if req.signal == libc::SIGKILL as u32 && task.paused.load(Ordering::SeqCst) {
            if let Some(cg) = task.cell_cgroup() {
                if let Err(e) = cg.freeze(false) {
                    log::warn!("task {}: thaw after SIGKILL: {e}", task.id);
                }
                task.paused.store(false, Ordering::SeqCst);
            }
        }
        sent
    }

    /// Wait: block until the task has exited.
    pub fn wait(&self, req: WaitRequest) -> Result<WaitResponse> {
        no_exec(&req.exec_id)?;
        let task = self.get(&req.id)?;
        let st = lock(&task.state);
        let st = task
            .changed
            .wait_while(st, |s| {
                matches!(s.status(), Status::Created | Status::Running)
            })
            .unwrap_or_else(|p| p.into_inner());
        let mut resp = WaitResponse::new();
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }

    /// Delete: remove a stopped (or never started) task and everything it left.
    pub fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        no_exec(&req.exec_id)?;
        let task = self.get(&req.id)?;
        let status = lock(&task.state).status();
        match status {
            Status::Created => {
                match &task.backend {
                    Backend::Cell(cell) => cell.kill(Signal::SIGKILL),
                    Backend::Runc => {
                        if let Err(e) = self.config.runc.kill(&task.id, libc::SIGKILL as u32, true)
                        {
                            log::warn!("task {}: {e}", task.id);
                        }
                    }
                }
                let st = lock(&task.state);
                let (_st, timeout) = task
                    .changed
                    .wait_timeout_while(st, DELETE_KILL_TIMEOUT, |s| s.status() == Status::Created)
                    .unwrap_or_else(|p| p.into_inner());
                if timeout.timed_out() {
                    return Err(Error::Internal(format!(
                        "task {} did not exit within {DELETE_KILL_TIMEOUT:?} of SIGKILL",
                        task.id
                    )));
                }
            }
            Status::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "task {} is running: kill it before deleting it",
                    task.id
                )))
            }
            Status::Stopped | Status::Deleted => {}
        }
        let exit = lock(&task.state).deleted()?;
        if matches!(task.backend, Backend::Runc) {
            if let Err(e) = self.config.runc.delete(&task.id) {
                log::error!("task {}: {e}", task.id);
            }
        }
        if let Some(unit) = &task.scope {
            crate::systemd::stop_scope(unit);
        }
        if let Some(cg) = task.cell_cgroup() {
            if let Err(e) = cg.remove() {
                log::error!("task {}: {e}", task.id);
            }
        }
        if let Some(rootfs) = &task.rootfs {
            crate::rootfs::unmount(rootfs);
        }
        let _ = std::fs::remove_file(task.bundle.join(CELL_PID_FILE));
        lock(&self.tasks).remove(&task.id);

        let mut ev = TaskDelete::new();
        ev.container_id = task.id.clone();
        ev.id = task.id.clone();
        ev.pid = task.pid;
        ev.exit_status = exit.code;
        ev.exited_at = Some(timestamp(exit.at)).into();
        self.events.send(TASK_DELETE_EVENT_TOPIC, Box::new(ev));

        let mut resp = DeleteResponse::new();
        resp.pid = task.pid;
        resp.exit_status = exit.code;
        resp.exited_at = Some(timestamp(exit.at)).into();
        Ok(resp)
    }

    /// State: what containerd shows in `ctr task ls`.
    pub fn state(&self, req: StateRequest) -> Result<StateResponse> {
        no_exec(&req.exec_id)?;
        let task = self.get(&req.id)?;
        let st = lock(&task.state);
        let mut resp = StateResponse::new();
        resp.id = task.id.clone();
        resp.bundle = task.bundle.to_string_lossy().into_owned();
        resp.pid = task.pid;
        resp.set_status(match st.status() {
            Status::Created => ApiStatus::CREATED,
            Status::Running if task.paused.load(Ordering::SeqCst) => ApiStatus::PAUSED,
            Status::Running => ApiStatus::RUNNING,
            Status::Stopped | Status::Deleted => ApiStatus::STOPPED,
        });
        resp.stdin = task.io.stdin.clone();
        resp.stdout = task.io.stdout.clone();
        resp.stderr = task.io.stderr.clone();
        resp.terminal = task.io.terminal;
        if let Some(exit) = st.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }

    /// Pids: the cell, or the container's processes as runc lists them.
    pub fn pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let task = self.get(&req.id)?;
        let status = lock(&task.state).status();
        let pids = match &task.backend {
            Backend::Runc if status != Status::Stopped => self.config.runc.ps(&task.id)?,
            // A task that has ended but is not deleted still names its process: containerd,
            // reloading its shims after a restart, takes a shim whose task lists no process for
            // one whose task was never created and deletes it, and with it the exit status and
            // events of a task that ended while containerd was away.
            _ => vec![task.pid],
        };
        let mut resp = PidsResponse::new();
        resp.processes = pids
            .into_iter()
            .map(|pid| {
                let mut p = ProcessInfo::new();
                p.pid = pid;
                p
            })
            .collect();
        Ok(resp)
    }

    /// Pause (`freeze`) or Resume (`frozen == false`) a running task.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let task = self.get(id)?;
        let st = lock(&task.state);
        if st.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "task {id} is {:?}: only a running task can be paused or resumed",
                st.status()
            )));
        }
        match (&task.backend, &task.cgroup) {
            (Backend::Cell(_), Some(cg)) => cg
                .freeze(frozen)
                .map_err(|e| Error::Internal(e.to_string()))?,
            (Backend::Cell(_), None) => {
                return Err(Error::Internal(format!("task {id} has no cgroup")))
            }
            (Backend::Runc, _) => self.config.runc.freeze(id, frozen)?,
        }
        task.paused.store(frozen, Ordering::SeqCst);
        if frozen {
            let mut ev = TaskPaused::new();
            ev.container_id = id.to_owned();
            self.events.send(TASK_PAUSED_EVENT_TOPIC, Box::new(ev));
        } else {
            let mut ev = TaskResumed::new();
            ev.container_id = id.to_owned();
            self.events.send(TASK_RESUMED_EVENT_TOPIC, Box::new(ev));
        }
        Ok(())
    }

    /// Pause: freeze the task's cgroup.
    pub fn pause(&self, req: PauseRequest) -> Result<()> {
        self.freeze(&req.id, true)
    }

    /// Resume: thaw it.
    pub fn resume(&self, req: ResumeRequest) -> Result<()> {
        self.freeze(&req.id, false)
    }

    /// Update: apply new resources (OCI `LinuxResources` as JSON, as containerd sends them).
    pub fn update(&self, req: UpdateTaskRequest) -> Result<()> {
        let task = self.get(&req.id)?;
        let json = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
        let oci: oci_spec::runtime::LinuxResources = serde_json::from_slice(&json)
            .map_err(|e| Error::InvalidArgument(format!("malformed LinuxResources: {e}")))?;
        match &task.backend {
            Backend::Cell(_) => {
                let resources = Resources::from_oci(&oci).map_err(wasmcell_task::Error::from)?;
                let cg = task
                    .cgroup
                    .as_ref()
                    .ok_or_else(|| Error::Internal(format!("task {} has no cgroup", task.id)))?;
                cg.apply(&resources)
                    .map_err(|e| Error::Internal(format!("update task {}: {e}", task.id)))?;
                log::info!("task {}: resources updated", task.id);
                Ok(())
            }
            Backend::Runc => {
                let file = task.bundle.join("update-resources.json");
                self.config.runc.update(&task.id, &file, &json)
            }
        }
    }

    /// Stats: the task's cgroup metrics.
    pub fn stats(&self, req: StatsRequest) -> Result<StatsResponse> {
        let task = self.get(&req.id)?;
        let cg = task.cgroup.as_ref().ok_or_else(|| {
            Error::NotImplemented(format!(
                "stats of task {}: its cgroup is managed by systemd through runc",
                task.id
            ))
        })?;
        let mut resp = StatsResponse::new();
        resp.stats = Some(crate::metrics::collect(cg)?).into();
        Ok(resp)
    }

    /// Connect: the shim's and the task's pids.
    pub fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse> {
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").to_owned();
        if let Ok(task) = self.get(&req.id) {
            resp.task_pid = task.pid;
        }
        Ok(resp)
    }

    /// Shutdown: the shim exits once it serves no task.
    pub fn shutdown(&self, _req: ShutdownRequest) -> Result<()> {
        if lock(&self.tasks).is_empty() {
            // TaskDelete may still be queued; the process ends soon after `on_idle`.
            self.events.flush(EVENT_FLUSH_TIMEOUT);
            (self.on_idle)();
        }
        Ok(())
    }

    /// CloseIO: the cell reads stdin straight from the FIFO, so the client closing its end is
    /// the guest's end of file; nothing is held open here.
    pub fn close_io(&self, id: &str) -> Result<()> {
        self.get(id).map(drop)
    }
}

/// Creates a cell's cgroup with its limits.
fn create_cgroup(path: &CgroupPath, resources: &Resources) -> Result<Cgroup> {
    let hierarchy = Hierarchy::detect().map_err(|e| Error::Internal(e.to_string()))?;
    Cgroup::create(hierarchy, &path.relative(), resources)
        .map_err(|e| Error::Internal(format!("cgroup {}: {e}", path.relative().display())))
}

/// The cgroup runc puts a native container in, for Stats; `None` for systemd paths (runc asks
/// systemd, which may place it differently) or when it cannot be read.
fn runc_cgroup(spec: &oci_spec::runtime::Spec, id: &str) -> Option<Cgroup> {
    let path = spec.linux().as_ref()?.cgroups_path().as_ref()?.to_str()?;
    match CgroupPath::parse(Some(path), id).ok()? {
        p @ CgroupPath::Fs(_) => Some(Cgroup::at(Hierarchy::detect().ok()?, &p.relative())),
        CgroupPath::Systemd { .. } => None,
    }
}

/// How Create runs a container.
enum Plan {
    /// A wasm program in a cell, or a pod's sandbox held by a pause cell.
    Cell(Box<RunSpec>, Role),
    /// A wasm program whose spec the cell cannot honour: under runc, with the cell as the
    /// process (`crate::fallback`).
    CellUnderRunc(wasmcell_task::isolation::Unsupported),
    /// A native program, under runc.
    Native,
}

/// Removes the cgroup of a cell whose shim died (for `shim delete`), found from the bundle's spec.
pub fn remove_cell_cgroup(bundle: &Path, id: &str) {
    let Ok(spec) = runspec::load_spec(bundle) else {
        return;
    };
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .and_then(|p| p.to_str());
    let (Ok(path), Ok(hierarchy)) = (CgroupPath::parse(path, id), Hierarchy::detect()) else {
        return;
    };
    if let Some((unit, _)) = crate::systemd::scope_of(&path) {
        crate::systemd::stop_scope(&unit);
    }
    if let Err(e) = Cgroup::at(hierarchy, &path.relative()).remove() {
        log::warn!("shim delete {id}: {e}");
    }
}

/// Removes a cell's cgroup unless disarmed (on Create failure).
struct CgroupGuard(Option<Cgroup>);

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
            crate::systemd::stop_scope(&unit);
        }
    }
}

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

fn task_has_running_logger(task: &Task) -> bool {
    task.logger_pid.is_some() && !*lock(&task.logger_gone)
}

fn no_exec(exec_id: &str) -> Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "exec {exec_id} not found (exec is not implemented by wasmcell)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_reaped_before_a_create_began_is_not_its_process() {
        let mut pids = Pids::default();
        let long_ago = Instant::now();
        // A helper with pid 4242 exited and was reaped; later a Create began, and its cell
        // got the same pid.
        pids.keep_exit(4242, 0, long_ago);
        let began = long_ago + Duration::from_millis(10);
        assert_eq!(pids.take_exit(4242, began), None);
        assert!(pids.unclaimed.is_empty(), "the stale exit is dropped");
        // A cell that died at once, before its pid was registered, keeps its exit.
        pids.keep_exit(4242, 137, began + Duration::from_millis(1));
        assert_eq!(pids.take_exit(4242, began), Some(137));
    }
}
