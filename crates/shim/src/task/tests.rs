//! The task core with fakes for its seams: a launcher that makes no process, a backend that
//! records what it is asked, exits fed by the test, and events recorded in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::api::{
    CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest, PauseRequest, StartRequest,
    StateRequest, Status as ApiStatus, WaitRequest,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageDyn;

use super::events::EventSender;
use super::exit_source::ExitSource;
use super::Tasks;
use crate::backend::{Backend, ExecBackend, ExecIo, ExecStarted, Launch, Launched};
use crate::error::{Error, Result};
use crate::sync::lock;

/// Events as sent: their topics, in order.
#[derive(Default)]
struct Recorded(Mutex<Vec<&'static str>>);

impl EventSender for Recorded {
    fn send(&self, topic: &'static str, _event: Box<dyn MessageDyn + Send>) {
        lock(&self.0).push(topic);
    }
}

struct Exits(Receiver<(i32, i32)>);

impl ExitSource for Exits {
    fn next_exit(&mut self) -> Option<(i32, i32)> {
        self.0.recv().ok()
    }
}

/// A backend that records its calls; its Start waits for `release` when one is given.
#[derive(Default)]
struct FakeBackend {
    calls: Arc<Mutex<Vec<String>>>,
    oom: bool,
    start_gate: Option<Mutex<Receiver<()>>>,
    starting: Arc<AtomicBool>,
}

impl Backend for FakeBackend {
    fn start(&self) -> Result<()> {
        self.starting.store(true, Ordering::SeqCst);
        if let Some(gate) = &self.start_gate {
            let _ = lock(gate).recv();
        }
        lock(&self.calls).push("start".into());
        Ok(())
    }
    fn signal(&self, signal: u32, _all: bool) -> Result<()> {
        lock(&self.calls).push(format!("signal {signal}"));
        Ok(())
    }
    fn kill_unstarted(&self) {
        lock(&self.calls).push("kill unstarted".into());
    }
    fn freeze(&self, frozen: bool) -> Result<()> {
        lock(&self.calls).push(format!("freeze {frozen}"));
        Ok(())
    }
    fn update(&self, _: &oci_spec::runtime::LinuxResources, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn processes(&self, pid: u32, _ended: bool) -> Result<Vec<u32>> {
        Ok(vec![pid])
    }
    fn oom_killed(&self) -> bool {
        self.oom
    }
    fn stats(&self) -> Result<Any> {
        Err(Error::NotImplemented("stats".into()))
    }
    fn remove(&self) {
        lock(&self.calls).push("remove".into());
    }
    fn exec(
        &self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        _io: ExecIo,
    ) -> Result<Box<dyn ExecBackend>> {
        let args = process.args().clone().unwrap_or_default().join(" ");
        lock(&self.calls).push(format!("exec {exec_id}: {args}"));
        Ok(Box::new(FakeExec {
            calls: Arc::clone(&self.calls),
            pid: 200 + i32::try_from(lock(&self.calls).len()).unwrap_or(0),
        }))
    }
}

/// An exec process that records its calls and "runs" as `pid`.
struct FakeExec {
    calls: Arc<Mutex<Vec<String>>>,
    pid: i32,
}

impl ExecBackend for FakeExec {
    fn start(&self) -> Result<ExecStarted> {
        lock(&self.calls).push(format!("exec start {}", self.pid));
        Ok(ExecStarted {
            pid: self.pid,
            watched: self.pid,
        })
    }
    fn signal(&self, pid: i32, signal: u32) -> Result<()> {
        lock(&self.calls).push(format!("exec signal {pid} {signal}"));
        Ok(())
    }
    fn remove(&self) {
        lock(&self.calls).push("exec remove".into());
    }
}

type LaunchFn = dyn Fn(&CreateTaskRequest) -> Result<Launched> + Send + Sync;

struct FakeLauncher(Box<LaunchFn>);

impl Launch for FakeLauncher {
    fn launch(&self, req: &CreateTaskRequest) -> Result<Launched> {
        (self.0)(req)
    }
    fn exec_io(&self, _: &str, stdin: &str, _: &str, _: &str, terminal: bool) -> Result<ExecIo> {
        let null = || {
            crate::host::streams::open_dev_null()
                .expect("/dev/null")
                .into()
        };
        Ok(ExecIo {
            stdin: stdin.to_owned(),
            stdout: null(),
            stderr: null(),
            terminal: terminal.then(|| crate::host::console::ConsoleIo {
                stdin: stdin.to_owned(),
                stdout: null(),
            }),
        })
    }
}

/// A launched task whose process is `pid`.
fn launched(pid: i32, backend: FakeBackend) -> Launched {
    Launched {
        backend: Box::new(backend),
        pid: pid as u32,
        watched: pid,
        rootfs: None,
        logger: None,
    }
}

struct Core {
    tasks: Arc<Tasks>,
    events: Arc<Recorded>,
    exits: Sender<(i32, i32)>,
}

fn core(launch: impl Fn(&CreateTaskRequest) -> Result<Launched> + Send + Sync + 'static) -> Core {
    let events = Arc::new(Recorded::default());
    let (exits, rx) = channel();
    let tasks = Tasks::new(
        Box::new(FakeLauncher(Box::new(launch))),
        events.clone(),
        Box::new(Exits(rx)),
        Box::new(|| {}),
    )
    .expect("tasks");
    Core {
        tasks,
        events,
        exits,
    }
}

fn create(id: &str) -> CreateTaskRequest {
    let mut req = CreateTaskRequest::new();
    req.id = id.into();
    req.bundle = format!("/nonexistent/{id}");
    req
}

fn start(id: &str) -> StartRequest {
    let mut req = StartRequest::new();
    req.id = id.into();
    req
}

fn delete(id: &str) -> DeleteRequest {
    let mut req = DeleteRequest::new();
    req.id = id.into();
    req
}

fn wait(id: &str) -> WaitRequest {
    let mut req = WaitRequest::new();
    req.id = id.into();
    req
}

fn status(core: &Core, id: &str) -> ApiStatus {
    let mut req = StateRequest::new();
    req.id = id.into();
    core.tasks
        .state(req)
        .expect("state")
        .status
        .enum_value_or_default()
}

fn topics(core: &Core) -> Vec<&'static str> {
    lock(&core.events.0).clone()
}

#[test]
fn a_second_create_of_an_id_being_created_answers_already_exists() {
    let (entered_tx, entered) = channel();
    let (release, gate) = channel::<()>();
    let gate = Mutex::new(gate);
    let core = core(move |_| {
        let _ = entered_tx.send(());
        let _ = lock(&gate).recv();
        Ok(launched(100, FakeBackend::default()))
    });
    let tasks = Arc::clone(&core.tasks);
    let first = std::thread::spawn(move || tasks.create(create("twin")).map(|r| r.pid));
    entered.recv().expect("the first Create launches");
    let second = core.tasks.create(create("twin"));
    assert!(
        matches!(&second, Err(Error::AlreadyExists(_))),
        "{:?}",
        second.map(drop)
    );
    release.send(()).expect("release");
    assert_eq!(first.join().expect("join").expect("first create"), 100);
    assert_eq!(topics(&core), ["/tasks/create"]);
    // Once it is in the registry, the id is still taken; after a failed Create it is free.
    assert!(matches!(
        core.tasks.create(create("twin")),
        Err(Error::AlreadyExists(_))
    ));
}

#[test]
fn a_failed_create_frees_its_id() {
    let fail = Arc::new(AtomicBool::new(true));
    let failing = Arc::clone(&fail);
    let core = core(move |_| {
        if failing.swap(false, Ordering::SeqCst) {
            Err(Error::InvalidArgument("no program".into()))
        } else {
            Ok(launched(101, FakeBackend::default()))
        }
    });
    assert!(core.tasks.create(create("again")).is_err());
    assert_eq!(core.tasks.create(create("again")).expect("create").pid, 101);
}

#[test]
fn an_exit_that_arrives_before_its_pid_is_registered_ends_the_task() {
    let (exits_tx, exits_rx) = channel::<Sender<(i32, i32)>>();
    let tasks_slot: Arc<Mutex<Option<std::sync::Weak<Tasks>>>> = Arc::default();
    let slot = Arc::clone(&tasks_slot);
    let exits_rx = Mutex::new(exits_rx);
    let core = core(move |_| {
        // The process dies before Create has registered it, and the exit is routed first.
        let exits = lock(&exits_rx).recv().expect("exits");
        exits.send((102, 3)).expect("exit");
        let tasks = lock(&slot)
            .clone()
            .and_then(|w| w.upgrade())
            .expect("tasks");
        while lock(&tasks.pids).unclaimed_len() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(launched(102, FakeBackend::default()))
    });
    *lock(&tasks_slot) = Some(Arc::downgrade(&core.tasks));
    exits_tx.send(core.exits.clone()).expect("exits");
    core.tasks.create(create("brief")).expect("create");
    assert_eq!(core.tasks.wait(wait("brief")).expect("wait").exit_status, 3);
    assert_eq!(topics(&core), ["/tasks/create", "/tasks/exit"]);
    assert_eq!(status(&core, "brief"), ApiStatus::STOPPED);
}

#[test]
fn events_follow_the_lifecycle_in_order() {
    let core = core(|_| {
        Ok(launched(
            103,
            FakeBackend {
                oom: true,
                ..FakeBackend::default()
            },
        ))
    });
    core.tasks.create(create("life")).expect("create");
    assert_eq!(status(&core, "life"), ApiStatus::CREATED);
    core.tasks.start(start("life")).expect("start");
    assert_eq!(status(&core, "life"), ApiStatus::RUNNING);
    core.exits.send((103, 137)).expect("exit");
    assert_eq!(
        core.tasks.wait(wait("life")).expect("wait").exit_status,
        137
    );
    core.tasks.delete(delete("life")).expect("delete");
    assert_eq!(
        topics(&core),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    assert!(matches!(
        core.tasks.state({
            let mut r = StateRequest::new();
            r.id = "life".into();
            r
        }),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn a_delete_while_start_is_in_flight_waits_for_it_and_refuses_a_running_task() {
    let (release, gate) = channel::<()>();
    let starting = Arc::new(AtomicBool::new(false));
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let backend = Mutex::new(Some(FakeBackend {
        calls: Arc::clone(&calls),
        start_gate: Some(Mutex::new(gate)),
        starting: Arc::clone(&starting),
        ..FakeBackend::default()
    }));
    let core = core(move |_| {
        let backend = lock(&backend).take().expect("one create");
        Ok(launched(104, backend))
    });
    core.tasks.create(create("racing")).expect("create");
    let tasks = Arc::clone(&core.tasks);
    let starter = std::thread::spawn(move || tasks.start(start("racing")).map(drop));
    while !starting.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let tasks = Arc::clone(&core.tasks);
    let deleter = std::thread::spawn(move || tasks.delete(delete("racing")).map(drop));
    std::thread::sleep(Duration::from_millis(20));
    release.send(()).expect("release");
    starter.join().expect("join").expect("start");
    let deleted = deleter.join().expect("join");
    assert!(
        matches!(&deleted, Err(Error::FailedPrecondition(_))),
        "{deleted:?}"
    );
    assert_eq!(topics(&core), ["/tasks/create", "/tasks/start"]);
    assert_eq!(
        *lock(&calls),
        ["start"],
        "nothing removed under a running task"
    );
    core.exits.send((104, 0)).expect("exit");
    core.tasks.wait(wait("racing")).expect("wait");
    core.tasks.delete(delete("racing")).expect("delete");
    assert_eq!(*lock(&calls), ["start", "remove"]);
}

#[test]
fn sigkill_of_a_paused_task_leaves_it_running_until_it_exits() {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let backend = Mutex::new(Some(FakeBackend {
        calls: Arc::clone(&calls),
        ..FakeBackend::default()
    }));
    let core = core(move |_| Ok(launched(105, lock(&backend).take().expect("one"))));
    core.tasks.create(create("frozen")).expect("create");
    let mut pause = PauseRequest::new();
    pause.id = "frozen".into();
    assert!(
        core.tasks.pause(pause.clone()).is_err(),
        "a created task cannot be paused"
    );
    core.tasks.start(start("frozen")).expect("start");
    core.tasks.pause(pause.clone()).expect("pause");
    assert_eq!(status(&core, "frozen"), ApiStatus::PAUSED);
    assert!(core.tasks.delete(delete("frozen")).is_err(), "paused");
    let mut kill = KillRequest::new();
    kill.id = "frozen".into();
    kill.signal = 9;
    core.tasks.kill(kill).expect("kill");
    assert_eq!(status(&core, "frozen"), ApiStatus::RUNNING);
    core.exits.send((105, 137)).expect("exit");
    core.tasks.wait(wait("frozen")).expect("wait");
    assert_eq!(
        *lock(&calls),
        ["start", "freeze true", "signal 9"],
        "the backend saw each step once"
    );
    assert_eq!(
        topics(&core),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/exit"
        ]
    );
}

fn exec(id: &str, exec_id: &str, process: &str) -> ExecProcessRequest {
    let mut req = ExecProcessRequest::new();
    req.id = id.into();
    req.exec_id = exec_id.into();
    let mut spec = Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value = process.as_bytes().to_vec();
    req.spec = Some(spec).into();
    req
}

const PROBE: &str = r#"{"args": ["/probe", "--ok"], "cwd": "/", "user": {"uid": 0, "gid": 0}}"#;

#[test]
fn an_exec_runs_beside_its_task_with_its_own_events_exit_and_delete() {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let backend = Mutex::new(Some(FakeBackend {
        calls: Arc::clone(&calls),
        ..FakeBackend::default()
    }));
    let core = core(move |_| Ok(launched(106, lock(&backend).take().expect("one"))));
    core.tasks.create(create("host")).expect("create");
    assert!(
        matches!(
            core.tasks.exec(exec("host", "early", PROBE)),
            Err(Error::FailedPrecondition(_))
        ),
        "no exec in a task that has not started"
    );
    core.tasks.start(start("host")).expect("start");
    core.tasks.exec(exec("host", "probe", PROBE)).expect("exec");
    assert!(matches!(
        core.tasks.exec(exec("host", "probe", PROBE)),
        Err(Error::AlreadyExists(_))
    ));
    let mut start_exec = start("host");
    start_exec.exec_id = "probe".into();
    let pid = core.tasks.start(start_exec).expect("start exec").pid;
    let exec_status = |core: &Core| {
        let mut req = StateRequest::new();
        req.id = "host".into();
        req.exec_id = "probe".into();
        core.tasks
            .state(req)
            .expect("state")
            .status
            .enum_value_or_default()
    };
    assert_eq!(exec_status(&core), ApiStatus::RUNNING);
    let mut del = delete("host");
    del.exec_id = "probe".into();
    assert!(
        matches!(
            core.tasks.delete(del.clone()),
            Err(Error::FailedPrecondition(_))
        ),
        "a running exec is not deleted"
    );
    let mut kill = KillRequest::new();
    kill.id = "host".into();
    kill.exec_id = "probe".into();
    kill.signal = 15;
    core.tasks.kill(kill).expect("kill exec");
    core.exits.send((pid as i32, 143)).expect("exit");
    let mut w = wait("host");
    w.exec_id = "probe".into();
    assert_eq!(core.tasks.wait(w).expect("wait exec").exit_status, 143);
    assert_eq!(exec_status(&core), ApiStatus::STOPPED);
    assert_eq!(
        status(&core, "host"),
        ApiStatus::RUNNING,
        "the task runs on"
    );
    assert_eq!(
        core.tasks
            .delete(del.clone())
            .expect("delete exec")
            .exit_status,
        143
    );
    assert!(matches!(core.tasks.delete(del), Err(Error::NotFound(_))));
    assert_eq!(
        topics(&core),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit"
        ],
        "an exec's Delete sends no TaskDelete"
    );
    assert_eq!(
        *lock(&calls),
        [
            "start".to_owned(),
            "exec probe: /probe --ok".to_owned(),
            format!("exec start {pid}"),
            format!("exec signal {pid} 15"),
            "exec remove".to_owned()
        ]
    );
}

#[test]
fn an_exec_that_cannot_be_made_is_refused_with_the_problem_named() {
    let core = core(|_| Ok(launched(107, FakeBackend::default())));
    core.tasks.create(create("strict")).expect("create");
    core.tasks.start(start("strict")).expect("start");
    let bad = core.tasks.exec(exec("strict", "bad", "{not json"));
    assert!(
        matches!(&bad, Err(Error::InvalidArgument(m)) if m.contains("bad")),
        "{bad:?}"
    );
    // A terminal is the backend's to make; resizing a process without one does nothing, as
    // with containerd's runc shim.
    let mut tty = exec("strict", "tty", PROBE);
    tty.terminal = true;
    core.tasks.exec(tty).expect("a terminal exec");
    core.tasks
        .resize_pty("strict", "tty", 80, 24)
        .expect("resize");
    core.tasks.resize_pty("strict", "", 80, 24).expect("resize");
    assert!(matches!(
        core.tasks.resize_pty("strict", "nobody", 80, 24),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        core.tasks.exec(exec("strict", "", PROBE)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        core.tasks.exec(exec("nobody", "x", PROBE)),
        Err(Error::NotFound(_))
    ));
    let mut start_missing = start("strict");
    start_missing.exec_id = "missing".into();
    assert!(matches!(
        core.tasks.start(start_missing),
        Err(Error::NotFound(_))
    ));
    // A never-started exec can be deleted; nothing of it ran.
    core.tasks
        .exec(exec("strict", "unstarted", PROBE))
        .expect("exec");
    let mut del = delete("strict");
    del.exec_id = "unstarted".into();
    core.tasks.delete(del).expect("delete an unstarted exec");
}

#[test]
fn a_tasks_end_kills_its_running_execs_whose_exits_are_reported_even_after_its_delete() {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let backend = Mutex::new(Some(FakeBackend {
        calls: Arc::clone(&calls),
        ..FakeBackend::default()
    }));
    let core = core(move |_| Ok(launched(108, lock(&backend).take().expect("one"))));
    core.tasks.create(create("ending")).expect("create");
    core.tasks.start(start("ending")).expect("start");
    core.tasks
        .exec(exec("ending", "late", PROBE))
        .expect("exec");
    let mut start_exec = start("ending");
    start_exec.exec_id = "late".into();
    let pid = core.tasks.start(start_exec).expect("start exec").pid;
    core.exits.send((108, 0)).expect("the task's exit");
    core.tasks.wait(wait("ending")).expect("wait");
    assert!(
        lock(&calls).contains(&format!("exec signal {pid} 9")),
        "the task's end kills its exec: {:?}",
        lock(&calls)
    );
    core.tasks.delete(delete("ending")).expect("delete");
    core.exits.send((pid as i32, 137)).expect("the exec's exit");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while topics(&core).len() < 7 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        topics(&core),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/delete",
            "/tasks/exit"
        ]
    );
}

#[test]
fn a_tasks_exit_is_reported_after_the_exits_of_the_execs_that_die_with_it() {
    let core = core(|_| Ok(launched(109, FakeBackend::default())));
    core.tasks.create(create("ordered")).expect("create");
    core.tasks.start(start("ordered")).expect("start");
    core.tasks
        .exec(exec("ordered", "inside", PROBE))
        .expect("exec");
    let mut start_exec = start("ordered");
    start_exec.exec_id = "inside".into();
    let pid = core.tasks.start(start_exec).expect("start exec").pid;
    core.exits.send((109, 0)).expect("the task's exit");
    // The exec, killed with its task, ends a moment later.
    let exits = core.exits.clone();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        exits.send((pid as i32, 137)).expect("the exec's exit");
    });
    core.tasks.wait(wait("ordered")).expect("wait");
    let mut req = StateRequest::new();
    req.id = "ordered".into();
    req.exec_id = "inside".into();
    let exec = core.tasks.state(req).expect("state of the exec");
    assert_eq!(
        (exec.status.enum_value_or_default(), exec.exit_status),
        (ApiStatus::STOPPED, 137),
        "the exec's exit came first"
    );
    late.join().expect("the exec's exit was sent");
}
