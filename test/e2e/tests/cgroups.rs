//! The cell's cgroup: membership and limits from the spec, removal at delete, OOM →
//! exit 137 and TaskOOM, linear memory refused inside the guest, metrics, pause/resume, update.
//!
//! These tests use the machine's real cgroup filesystem and read the limit files of whichever
//! version it is: v1 on the CI machines, v2 (the unified hierarchy, systemd as PID 1) in the
//! VM tier, which runs this file inside a VM (`test/vm`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api::UpdateTaskRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::ttrpc::context;
use wasmcell_e2e::cri::HANDLER;
use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";
const HOG: &str = "wasmcell.test/hog:latest";
const BUSYBOX: &str = "wasmcell.test/busybox:latest";
const ROOT: &str = "/sys/fs/cgroup";

fn start(c: &Containerd, id: &str, flags: &[&str], args: &[&str]) -> i32 {
    let mut full = vec!["/probe.wasm"];
    full.extend_from_slice(args);
    let r = c.run_detached(flags, IMG, id, &full);
    assert_eq!(r.code, 0, "{id}: {r:?}");
    let pids = c.guest_pids(&[id.to_owned()]);
    assert_eq!(pids.len(), 1, "{id}: one process runs the guest");
    pids[0]
}

/// `/proc/<pid>/cgroup` as (controllers, path): v1's hierarchies, or v2's one.
fn cgroups_of(pid: i32) -> Vec<(String, String)> {
    cgroups_of_task(&pid.to_string())
}

/// Same, for `task`: a pid, or `pid/task/tid` for one thread.
fn cgroups_of_task(task: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{task}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (n, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            (n != "0" || !is_v1()).then(|| (ctrl.to_owned(), path.to_owned()))
        })
        .collect()
}

/// A file of `cgroup`: in `controller`'s hierarchy on v1; on v2 (`controller` unused), in the
/// one hierarchy.
fn read(controller: &str, cgroup: &str, file: &str) -> String {
    let base = if is_v1() {
        Path::new(ROOT).join(controller)
    } else {
        PathBuf::from(ROOT)
    };
    let p = base.join(cgroup.trim_start_matches('/')).join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    if !is_v1() {
        return vec![Path::new(ROOT).join(cgroup.trim_start_matches('/'))];
    }
    ["memory", "cpu", "pids", "freezer", "devices"]
        .iter()
        .map(|c| Path::new(ROOT).join(c).join(cgroup.trim_start_matches('/')))
        .collect()
}

fn kill_and_delete(c: &Containerd, id: &str) {
    let events = c.events();
    assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", id]).code, 0);
    events
        .wait_for("/tasks/exit", id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{id} did not exit"));
    let d = c.ctr(&["task", "delete", id]);
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(c.ctr(&["container", "delete", id]).code, 0);
}

/// Whether systemd is the machine's init (the VM tier's machine; not the CI hosts).
fn systemd_is_init() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> String {
    let out = std::process::Command::new("systemctl")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Systemd's scope `unit` is active with cgroup `cgroup`, and `systemctl status` lists `pid`.
fn assert_scope(unit: &str, cgroup: &str, pid: Option<i32>) {
    let show = systemctl(&["show", "-p", "ActiveState", "-p", "ControlGroup", unit]);
    assert!(show.contains("ActiveState=active"), "{unit}: {show}");
    assert!(
        show.contains(&format!("ControlGroup={cgroup}")),
        "{unit}: {show}"
    );
    if let Some(pid) = pid {
        let status = systemctl(&["status", "--no-pager", unit]);
        assert!(status.contains(&pid.to_string()), "{unit}: {status}");
    }
}

fn is_v1() -> bool {
    Path::new(ROOT).join("memory").is_dir()
}

#[test]
fn cell_joins_the_spec_cgroup_with_its_limits_and_leaves_none_behind() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);

    let mut flags = vec![
        "--memory-limit",
        "67108864",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        "--cpu-shares",
        "512",
    ];
    // (ctr 1.6 has no flag for a cpuset.)
    let cpuset = wasmcell_e2e::containerd_major() >= 2;
    if cpuset {
        flags.extend(["--cpuset-cpus", "0"]);
    }
    let pid = start(&c, "cg-limits", &flags, &["sleep", "600"]);
    let want = "/default/cg-limits";
    let groups = cgroups_of(pid);
    assert!(groups.len() >= if is_v1() { 5 } else { 1 }, "{groups:?}");
    for (ctrl, path) in &groups {
        assert_eq!(path, want, "hierarchy {ctrl}: the spec's cgroupsPath");
    }
    // The cell moves itself in thread by thread (v1's `tasks`) while it has one thread; every
    // thread started since (wasmtime's, the runtime's) must have been born inside.
    let threads: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect();
    for tid in &threads {
        for (ctrl, path) in cgroups_of_task(&format!("{pid}/task/{tid}")) {
            assert_eq!(path, want, "thread {tid}, hierarchy {ctrl}");
        }
    }
    if cpuset {
        assert_eq!(read("cpuset", want, "cpuset.cpus"), "0");
    }
    if is_v1() {
        assert_eq!(read("memory", want, "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", want, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", want, "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", want, "cpu.shares"), "512");
        let devices = read("devices", want, "devices.list");
        assert!(
            !devices.contains("a *:* rwm"),
            "the spec denies all devices but its list: {devices}"
        );
        assert!(
            devices.contains("c 1:3 rwm"),
            "/dev/null allowed: {devices}"
        );
    } else {
        assert_eq!(read("", want, "memory.max"), "67108864");
        assert_eq!(read("", want, "cpu.max"), "50000 100000");
        // runc's mapping of shares (2..262144) onto weights (1..10000).
        assert_eq!(read("", want, "cpu.weight"), "20");
        let enabled = read("", "/default", "cgroup.subtree_control");
        for controller in ["cpu", "memory", "pids", "cpuset"] {
            assert!(
                enabled.split_whitespace().any(|c| c == controller),
                "{controller} is enabled for the task's cgroup: {enabled}"
            );
        }
    }

    // The systemd form `slice:prefix:name`, with limits.
    let spid = start(
        &c,
        "cg-systemd",
        &[
            "--cgroup",
            "wasmcelltest-pod1.slice:wc:cg-systemd",
            "--memory-limit",
            "67108864",
            "--cpu-quota",
            "25000",
            "--cpu-period",
            "100000",
        ],
        &["sleep", "600"],
    );
    let swant = "/wasmcelltest.slice/wasmcelltest-pod1.slice/wc-cg-systemd.scope";
    for (ctrl, path) in cgroups_of(spid) {
        assert_eq!(path, swant, "hierarchy {ctrl}");
    }
    let limit_file = if is_v1() {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    assert_eq!(read("memory", swant, limit_file), "67108864");
    if systemd_is_init() {
        // systemd's driver: the cgroup is a transient scope systemd made, with the cell in it,
        // and a native container's is runc's scope.
        assert_scope("wc-cg-systemd.scope", swant, Some(spid));
        // systemd applies a unit's settings to its cgroup again (a daemon-reload does): the
        // limits are the scope's own properties, so they survive it.
        systemctl(&["daemon-reload"]);
        assert_eq!(
            read("memory", swant, limit_file),
            "67108864",
            "{limit_file} after a daemon-reload"
        );
        let (quota_file, quota) = if is_v1() {
            ("cpu.cfs_quota_us", "25000")
        } else {
            ("cpu.max", "25000 100000")
        };
        assert_eq!(
            read("cpu", swant, quota_file),
            quota,
            "{quota_file} after a daemon-reload"
        );
        c.import_busybox(BUSYBOX);
        let r = c.run_detached(
            &["--cgroup", "wasmcelltest-pod1.slice:wc:cg-native"],
            BUSYBOX,
            "cg-native",
            &["/bin/busybox", "sleep", "600"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert_scope(
            "wc-cg-native.scope",
            "/wasmcelltest.slice/wasmcelltest-pod1.slice/wc-cg-native.scope",
            None,
        );
        kill_and_delete(&c, "cg-native");
    }

    kill_and_delete(&c, "cg-limits");
    kill_and_delete(&c, "cg-systemd");
    if systemd_is_init() {
        let show = systemctl(&["show", "-p", "ActiveState", "wc-cg-systemd.scope"]);
        assert_eq!(
            show.trim(),
            "ActiveState=inactive",
            "the scope is stopped at delete"
        );
    }
    for dir in cgroup_dirs(want).into_iter().chain(cgroup_dirs(swant)) {
        assert!(!dir.exists(), "{} removed at delete", dir.display());
    }
    remove_test_slice("wasmcelltest-pod1.slice");
}

/// On a node whose D-Bus system bus does not answer (no dbus, or stopped), the shim reaches
/// systemd over its private socket, as runc does as root: a cell's scope is made, holds the
/// cell, and is stopped at delete, as through the bus.
#[test]
fn without_the_system_bus_scopes_come_through_systemds_private_socket() {
    if !systemd_is_init() {
        wasmcell_e2e::skip("systemd is not this machine's init (the VM tier runs this test)");
        return;
    }
    /// The system bus comes back however the test ends.
    struct BusBack;
    impl Drop for BusBack {
        fn drop(&mut self) {
            systemctl(&["start", "dbus.socket", "dbus.service"]);
        }
    }
    let _back = BusBack;
    systemctl(&["stop", "dbus.socket", "dbus.service"]);
    assert!(
        std::os::unix::net::UnixStream::connect("/run/dbus/system_bus_socket").is_err(),
        "the system bus still answers"
    );
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let pid = start(
        &c,
        "cg-nobus",
        &["--cgroup", "wasmcelltest-pod2.slice:wc:cg-nobus"],
        &["sleep", "600"],
    );
    let want = "/wasmcelltest.slice/wasmcelltest-pod2.slice/wc-cg-nobus.scope";
    assert_scope("wc-cg-nobus.scope", want, Some(pid));
    kill_and_delete(&c, "cg-nobus");
    let show = systemctl(&["show", "-p", "ActiveState", "wc-cg-nobus.scope"]);
    assert_eq!(
        show.trim(),
        "ActiveState=inactive",
        "the scope is stopped at delete"
    );
    remove_test_slice("wasmcelltest-pod2.slice");
}

/// The slices of a systemd-form path are shared parents, which wasmcell leaves (as runc does);
/// the tests tidy their own: `slice` inside `wasmcelltest.slice`, then that.
fn remove_test_slice(slice: &str) {
    for ctrl in std::fs::read_dir(ROOT).unwrap().flatten() {
        let _ = std::fs::remove_dir(ctrl.path().join("wasmcelltest.slice").join(slice));
        let _ = std::fs::remove_dir(ctrl.path().join("wasmcelltest.slice"));
    }
}

#[test]
fn guest_past_the_memory_limit_is_oom_killed_and_reported() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    c.import_wasm(HOG, "hog.wasm", fixtures::TWO_MEMORIES);
    // Compile once without a limit; the rounds below load from the cache.
    assert_eq!(c.run_wasm(IMG, "oom-warm", &["/probe.wasm"]).code, 0);
    let free = c.run_wasm(HOG, "oom-unlimited", &["/hog.wasm"]);
    assert_eq!(free.code, 0, "without a limit the hog finishes: {free:?}");

    // A long-running container of the same pod shares the shim with the OOM rounds.
    let pod = "--annotation=io.kubernetes.cri.sandbox-id=oom-pod";
    start(&c, "oom-anchor", &[pod], &["sleep", "600"]);
    let shims = c.shim_pids();

    let events = c.events();
    for round in 0..10 {
        let id = format!("oom-{round}");
        // Half the rounds with systemd's path form: with systemd as init their cgroup is a scope
        // systemd removes as soon as it empties, so the kill must be read before that.
        let scope = format!("wasmcelltest-oom.slice:wc:{id}");
        let mut flags = vec![pod, "--memory-limit", "33554432"];
        if round >= 5 {
            flags.extend(["--cgroup", &scope]);
        }
        let r = c.run_wasm_with(&flags, HOG, &id, &["/hog.wasm"]);
        assert_eq!(r.code, 137, "round {round}: killed by the kernel: {r:?}");
        let ev = events.of_task(&id);
        let topics: Vec<&str> = ev.iter().map(|e| e.topic.as_str()).collect();
        let oom = topics.iter().position(|t| *t == "/tasks/oom");
        let exit = topics.iter().position(|t| *t == "/tasks/exit");
        assert!(
            matches!((oom, exit), (Some(o), Some(e)) if o < e),
            "round {round}: TaskOOM before TaskExit: {topics:?}"
        );
        assert_eq!(
            ev[exit.unwrap()].exit_status(),
            137,
            "round {round}: {ev:?}"
        );
    }
    assert_eq!(c.shim_pids(), shims, "the pod's shim stayed up");
    let ls = c.ctr(&["task", "ls"]);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("oom-anchor") && l.contains("RUNNING")),
        "{ls:?}"
    );

    // Growing one linear memory past the limit fails inside the guest, which handles it: malloc
    // returns NULL step by step, or at once for one large block.
    let r = c.run_wasm_with(
        &["--memory-limit", "33554432"],
        IMG,
        "grow-steps",
        &["/probe.wasm", "alloc"],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("allocation refused after"), "{r:?}");
    let r = c.run_wasm_with(
        &["--memory-limit", "33554432"],
        IMG,
        "grow-refused",
        &["/probe.wasm", "alloc-once", "64"],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("allocation of 64 MiB refused"), "{r:?}");
    let r = c.run_wasm(IMG, "grow-free", &["/probe.wasm", "alloc-once", "64"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "allocated 64 MiB"), "{r:?}");

    kill_and_delete(&c, "oom-anchor");
    remove_test_slice("wasmcelltest-oom.slice");
}

fn metrics(c: &Containerd, id: &str) -> std::collections::HashMap<String, String> {
    let r = c.ctr(&["task", "metrics", id]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// User plus system CPU ticks of a process.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn task_status(c: &Containerd, id: &str) -> String {
    let ls = c.ctr(&["task", "ls"]);
    ls.stdout
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn metrics_pause_resume_and_update() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let id = "cg-metrics";
    let pid = start(&c, id, &["--memory-limit", "67108864"], &["spin"]);

    // containerd prints v1's and v2's metrics under their own names; CPU in ns or µs.
    let (usage_key, limit_key, cpu_key, cpu_100ms) = if is_v1() {
        (
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "cpuacct.usage",
            100_000_000,
        )
    } else {
        (
            "memory.usage",
            "memory.usage_limit",
            "cpu.usage_usec",
            100_000,
        )
    };
    let cpu = |m: &std::collections::HashMap<String, String>| -> u64 {
        m.get(cpu_key).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    // Until the spinning guest has used some CPU.
    c.wait_until(Duration::from_secs(10), || {
        cpu(&metrics(&c, id)) > cpu_100ms
    });
    let m = metrics(&c, id);
    let usage: u64 = m[usage_key].parse().unwrap();
    // Pages of the shared binary and cache files may be charged to whoever read them first, so
    // only the cell's own (anonymous) memory is certain to be here.
    assert!(usage >= 64 * 1024, "the cell's memory is counted: {m:?}");
    assert_eq!(m[limit_key], "67108864");
    assert!(cpu(&m) > cpu_100ms, "a spinning guest used CPU: {m:?}");
    let tasks: u64 = m["pids.current"].parse().unwrap();
    assert!(tasks >= 1, "the cell's threads are counted: {m:?}");

    let events = c.events();
    assert_eq!(c.ctr(&["task", "pause", id]).code, 0);
    assert_eq!(task_status(&c, id), "PAUSED");
    assert!(events
        .wait_for("/tasks/paused", id, Duration::from_secs(5))
        .is_some());
    let frozen_at = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cpu_ticks(pid), frozen_at, "a paused guest does not run");
    if is_v1() {
        assert_eq!(
            read("freezer", "/default/cg-metrics", "freezer.state"),
            "FROZEN"
        );
    } else {
        assert_eq!(read("", "/default/cg-metrics", "cgroup.freeze"), "1");
        assert!(read("", "/default/cg-metrics", "cgroup.events").contains("frozen 1"));
    }

    assert_eq!(c.ctr(&["task", "resume", id]).code, 0);
    assert_eq!(task_status(&c, id), "RUNNING");
    assert!(events
        .wait_for("/tasks/resumed", id, Duration::from_secs(5))
        .is_some());
    assert!(
        c.wait_until(Duration::from_secs(5), || cpu_ticks(pid) > frozen_at),
        "a resumed guest runs again"
    );

    // Update (ctr 1.6 has no command for it): lower the memory limit through the shim's API.
    let client = c.shim_client(id);
    let update = |json: serde_json::Value| {
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
        any.value = serde_json::to_vec(&json).unwrap();
        let mut req = UpdateTaskRequest::new();
        req.id = id.to_owned();
        req.resources = Some(any).into();
        client.update(context::with_timeout(10_000_000_000), &req)
    };
    update(serde_json::json!({
        "memory": {"limit": 50331648, "swap": 67108864},
        "cpu": {"shares": 256},
        "pids": {"limit": 64}
    }))
    .expect("update");
    let cg = "/default/cg-metrics";
    if is_v1() {
        assert_eq!(read("memory", cg, "memory.limit_in_bytes"), "50331648");
        // memsw exists only where the kernel accounts swap (swapaccount=1).
        if cgroup_dirs(cg)[0]
            .join("memory.memsw.limit_in_bytes")
            .exists()
        {
            assert_eq!(
                read("memory", cg, "memory.memsw.limit_in_bytes"),
                "67108864"
            );
        }
        assert_eq!(read("cpu", cg, "cpu.shares"), "256");
        assert_eq!(read("pids", cg, "pids.max"), "64");
    } else {
        assert_eq!(read("", cg, "memory.max"), "50331648");
        // The spec's swap is memory plus swap (v1's memsw); v2's swap.max is swap alone.
        assert_eq!(read("", cg, "memory.swap.max"), "16777216");
        assert_eq!(read("", cg, "cpu.weight"), "10");
        assert_eq!(read("", cg, "pids.max"), "64");
    }
    assert_eq!(metrics(&c, id)[limit_key], "50331648");
    let e = update(serde_json::json!({"blockIO": {"weight": 10}})).expect_err("blockIO");
    assert!(e.to_string().contains("blockIO"), "{e}");

    // A guest paused in the middle of a sleep carries on sleeping once resumed (the kernel
    // restarts the interrupted call through restart_syscall), and wakes as asked.
    let sleeper = "cg-sleeper";
    let r = c.run_detached(&[], IMG, sleeper, &["/probe.wasm", "sleep", "2"]);
    assert_eq!(r.code, 0, "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.ctr(&["task", "pause", sleeper]).code, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.ctr(&["task", "resume", sleeper]).code, 0);
    let exit = events
        .wait_for("/tasks/exit", sleeper, Duration::from_secs(20))
        .expect("the sleeper ends");
    assert_eq!(exit.exit_status(), 0, "{}", c.log());
    assert_eq!(c.ctr(&["task", "delete", sleeper]).code, 0);
    assert_eq!(c.ctr(&["container", "delete", sleeper]).code, 0);

    // SIGKILL ends a paused task too.
    assert_eq!(c.ctr(&["task", "pause", id]).code, 0);
    kill_and_delete(&c, id);
    for dir in cgroup_dirs("/default/cg-metrics") {
        assert!(!dir.exists(), "{} removed at delete", dir.display());
    }
}

#[test]
fn a_killed_shims_cgroup_is_removed_by_shim_delete() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let events = c.events();
    start(&c, "cg-orphan", &[], &["sleep", "600"]);
    let dirs = cgroup_dirs("/default/cg-orphan");
    assert!(dirs.iter().all(|d| d.exists()), "{dirs:?}");
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    // containerd sees the shim die and runs `shim delete`, which ends the cell and removes
    // its cgroup.
    let exit = events
        .wait_for("/tasks/exit", "cg-orphan", Duration::from_secs(20))
        .expect("TaskExit for the dead shim's task");
    assert_eq!(exit.exit_status(), 137, "{exit:?}");
    let removed = c.wait_until(Duration::from_secs(10), || dirs.iter().all(|d| !d.exists()));
    assert!(removed, "the cgroup is removed: {dirs:?}");
}

/// A cgroup path with `..` in it is never a cell's: the shim only creates, fills, signals and
/// removes cgroups whose path names a directory below the root, so a path like this cannot
/// make it signal a process outside the task. Such a container goes to runc, which cleans the
/// path lexically (below the root, as it does for any container), and the shim says why.
#[test]
fn a_cgroup_path_with_dot_dot_is_never_a_cells() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let r = c.run_wasm_with(
        &["--cgroup", "/default/../cg-dotdot"],
        IMG,
        "cg-dotdot",
        &["/probe.wasm"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        c.log()
            .contains("the cell cannot honour the cgroupsPath \"/default/../cg-dotdot\""),
        "the shim log says why the container went to runc"
    );
    for dir in cgroup_dirs("/cg-dotdot") {
        assert!(
            !dir.exists(),
            "{} removed with the container",
            dir.display()
        );
    }
}

/// Device rules: on v1 the devices controller refuses what the spec does not allow; on v2
/// runc would attach an eBPF program. A cell attaches none: every mount it grants is `nodev`,
/// so the kernel refuses to open any device node there, whatever the rules.
#[test]
#[allow(unsafe_code)] // mknod, which the standard library does not wrap
fn a_guest_cannot_open_a_device_node_of_its_mounts() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let share = c.dir.path().join("devices");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("plain"), "a plain file\n").unwrap();
    // A node of /dev/null's numbers (1:3), which the spec's device rules allow.
    let null = std::ffi::CString::new(share.join("null").to_str().unwrap()).unwrap();
    // SAFETY: mknod with a valid C string; the result is checked.
    let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    let mount = format!(
        "type=bind,src={},dst=/devices,options=rbind:rw",
        share.display()
    );
    let r = c.run_wasm_with(
        &["--mount", &mount],
        IMG,
        "cg-devices",
        &["/probe.wasm", "cat", "/devices/plain", "/devices/null"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("a plain file"), "{r:?}");
    assert!(
        r.stdout.contains("error: /devices/null: Permission denied"),
        "the device node is refused: {r:?}"
    );
}

/// The pid and cgroup of a CRI container (`crictl inspect`) or sandbox (`inspectp`).
fn cri_pid(c: &Containerd, verb: &str, id: &str) -> i32 {
    let r = c.crictl(&[verb, "-o", "json", id]);
    assert_eq!(r.code, 0, "{verb}: {r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["info"]["pid"].as_i64().unwrap() as i32
}

/// A pod whose cgroup parent is a slice (as the kubelet's systemd driver gives it): the CRI
/// plugin asks for `slice:cri-containerd:<id>` paths, and the sandbox, a wasm container and a
/// native sidecar under runc each land in their own scope of that slice, made by systemd where
/// it is init, all gone after the pod is removed; then the same with the sandbox's pause under
/// runc. Elsewhere the cells' directories are laid out as systemd would.
#[test]
fn a_pod_under_a_slice_puts_every_container_in_its_own_scope() {
    let pauses: &[&str] = if systemd_is_init() {
        &["cell", "runc"]
    } else {
        &["cell"]
    };
    for pause in pauses {
        let c = Containerd::start_cri_with_env(&[("WASMCELL_PAUSE", pause)]);
        c.import_wasm_cri(IMG, "probe.wasm", fixtures::PROBE);
        c.import_busybox_cri(BUSYBOX);
        let dir = c.dir.path().join("slice-pod");
        let write = |name: &str, v: serde_json::Value| c.write_json("slice-pod", name, &v);
        let pod = write(
            "pod.json",
            serde_json::json!({
                "metadata": {"name": "slice-pod", "namespace": "default", "uid": "uid-slice"},
                "log_directory": dir.join("logs").display().to_string(),
                "linux": {
                    "cgroup_parent": "wasmcelltest-pod2.slice",
                    "security_context": {"namespace_options": {"network": 2}}
                }
            }),
        );
        let r = c.crictl(&["runp", "--runtime", HANDLER, &pod]);
        assert_eq!(r.code, 0, "runp: {r:?}\n{}", c.log());
        let pod_id = r.stdout.trim().to_owned();
        let mut members = vec![(pod_id.clone(), cri_pid(&c, "inspectp", &pod_id))];
        // runc's cgroupfs driver takes a slice path as one directory below its own cgroup (the
        // kubelet gives slices only with systemd's driver), so the runc parts of this pod are
        // checked where systemd is init.
        let images: &[(&str, &str)] = if systemd_is_init() {
            &[("wasm", IMG), ("sidecar", BUSYBOX)]
        } else {
            &[("wasm", IMG)]
        };
        for (name, image) in images {
            let spec = write(
                &format!("{name}.json"),
                serde_json::json!({
                    "metadata": {"name": name},
                    "image": {"image": image},
                    // Both images' entrypoints take these.
                    "args": ["sleep", "600"],
                    "log_path": format!("{name}.log"),
                    "linux": {}
                }),
            );
            let r = c.crictl(&["create", &pod_id, &spec, &pod]);
            assert_eq!(r.code, 0, "create {name}: {r:?}\n{}", c.log());
            let id = r.stdout.trim().to_owned();
            assert_eq!(c.crictl(&["start", &id]).code, 0, "{}", c.log());
            members.push((id.clone(), cri_pid(&c, "inspect", &id)));
        }
        let cgroup_of = |id: &str| {
            format!("/wasmcelltest.slice/wasmcelltest-pod2.slice/cri-containerd-{id}.scope")
        };
        for (id, pid) in &members {
            let want = cgroup_of(id);
            for (ctrl, path) in cgroups_of(*pid) {
                assert_eq!(path, want, "pause by {pause}: {id}, hierarchy {ctrl}");
            }
            if systemd_is_init() {
                assert_scope(&format!("cri-containerd-{id}.scope"), &want, Some(*pid));
            }
        }
        assert_eq!(c.crictl(&["stopp", &pod_id]).code, 0);
        assert_eq!(c.crictl(&["rmp", &pod_id]).code, 0);
        for (id, _) in &members {
            for dir in cgroup_dirs(&cgroup_of(id)) {
                assert!(!dir.exists(), "{} removed with the pod", dir.display());
            }
            if systemd_is_init() {
                let unit = format!("cri-containerd-{id}.scope");
                let show = systemctl(&["show", "-p", "ActiveState", &unit]);
                assert_eq!(show.trim(), "ActiveState=inactive", "{unit}");
            }
        }
        remove_test_slice("wasmcelltest-pod2.slice");
    }
}
