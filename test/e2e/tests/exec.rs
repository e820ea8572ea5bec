//! Exec processes through containerd: `ctr task exec` into a native container the shim runs
//! with runc (`runc exec`), with its output, exit status, events, Kill and Delete; and into a
//! wasm container, which answers NotImplemented naming the problem while the container runs on.

use std::time::Duration;

use wasmcell_e2e::{fixtures, Containerd, Events};

const BUSYBOX: &str = "wasmcell.test/busybox:latest";
const BUSYBOX_BIN: &str = "/bin/busybox";

/// The `/tasks/exit` event of exec `exec_id` of container `id`, waiting for it.
fn exec_exit(events: &Events, id: &str, exec_id: &str) -> Option<wasmcell_e2e::Event> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = events.of_task(id).into_iter().find(|e| {
            e.topic == "/tasks/exit" && e.body.get("id").and_then(|v| v.as_str()) == Some(exec_id)
        });
        if found.is_some() || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many fds the shim holds.
fn shim_fds(c: &Containerd) -> usize {
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    std::fs::read_dir(format!("/proc/{}/fd", shims[0]))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ctr_task_exec_runs_in_a_native_container_with_its_output_exit_status_and_kill() {
    let c = Containerd::start();
    c.import_busybox(BUSYBOX);
    let events = c.events();
    let r = c.run_detached(&[], BUSYBOX, "native", &[BUSYBOX_BIN, "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Output on both streams, and the exit status, through containerd.
    let r = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "say",
        "native",
        BUSYBOX_BIN,
        "sh",
        "-c",
        "echo hello from exec; echo to stderr >&2; exit 3",
    ]);
    assert_eq!(r.code, 3, "the exec's exit status: {r:?}");
    assert!(r.stdout.contains("hello from exec"), "{r:?}");
    assert!(r.stderr.contains("to stderr"), "{r:?}");
    let exit = exec_exit(&events, "native", "say").expect("TaskExit of exec say");
    assert_eq!(exit.exit_status(), 3, "{exit:?}");
    let topics: Vec<String> = events
        .of_task("native")
        .into_iter()
        .filter(|e| e.body.get("exec_id").and_then(|v| v.as_str()) == Some("say"))
        .map(|e| e.topic)
        .collect();
    assert_eq!(
        topics,
        ["/tasks/exec-added", "/tasks/exec-started"],
        "exec events in order"
    );

    // It runs in the container: it sees the container's processes (its PID namespace).
    let r = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "ps",
        "native",
        BUSYBOX_BIN,
        "ps",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("sleep 600") && r.stdout.lines().count() <= 4,
        "only the container's processes: {r:?}"
    );

    // A detached exec, listed by Pids, killed with SIGKILL: one TaskExit, 137.
    let fds_before = shim_fds(&c);
    let r = c.ctr(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "sleeper",
        "native",
        BUSYBOX_BIN,
        "sleep",
        "600",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.ctr(&["task", "ps", "native"]);
    assert_eq!(r.stdout.lines().count(), 3, "the task and its exec: {r:?}");
    let r = c.ctr(&[
        "task",
        "kill",
        "--exec-id",
        "sleeper",
        "-s",
        "SIGKILL",
        "native",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let exit = exec_exit(&events, "native", "sleeper").expect("TaskExit of the killed exec");
    assert_eq!(exit.exit_status(), 137, "{exit:?}");

    // Twenty more, one after another: every status exact, nothing left in the shim.
    for i in 0..20 {
        let exec_id = format!("n{i}");
        let script = format!("exit {i}");
        let r = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            "native",
            BUSYBOX_BIN,
            "sh",
            "-c",
            &script,
        ]);
        assert_eq!(r.code, i, "{exec_id}: {r:?}");
    }
    // Events may still be on their way when ctr returns.
    let exits = || {
        events
            .of_task("native")
            .into_iter()
            .filter(|e| e.topic == "/tasks/exit")
            .count()
    };
    c.wait_until(Duration::from_secs(5), || exits() >= 23);
    assert_eq!(exits(), 23, "one TaskExit per exec, none for the task yet");
    assert!(
        c.wait_until(Duration::from_secs(5), || shim_fds(&c) <= fds_before),
        "the shim holds no fd of an ended exec: {} before, {} after",
        fds_before,
        shim_fds(&c)
    );
    // ctr deletes each exec it waited for; only the detached one is left.
    let left: Vec<String> = std::fs::read_dir(c.bundle_dir("native").join("execs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        left,
        ["sleeper"],
        "deleted execs leave no files in the bundle"
    );

    let r = c.ctr(&["task", "kill", "-s", "SIGKILL", "native"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        exec_exit(&events, "native", "native").is_some(),
        "the task's own exit"
    );
    c.ctr(&["task", "delete", "native"]);
    c.ctr(&["container", "delete", "native"]);
}

/// A wasm container under the runc fallback: an exec of a native program of its image goes to
/// `runc exec`; a wasm exec answers NotImplemented naming the problem, and the container runs
/// on.
#[test]
fn exec_in_a_wasm_container_under_the_runc_fallback_runs_native_programs_and_refuses_wasm() {
    // A user namespace with id mappings sends a wasm container to runc (tests/fallback.rs).
    const UIDMAP: &str = "0:100000:65536";
    const IMG: &str = "wasmcell.test/probe-and-busybox:latest";
    let c = Containerd::start();
    let probe = c.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    c.build_and_import(&[
        "--name",
        IMG,
        "--wasm",
        probe.to_str().unwrap(),
        "--file",
        "/bin/busybox:/bin/busybox",
    ]);
    let r = c.run_detached(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP],
        IMG,
        "fallback",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "probe",
        "fallback",
        "/probe.wasm",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(
            "a wasm exec (/probe.wasm) in a wasm container under the runc fallback is not \
             implemented"
        ),
        "{r:?}"
    );
    // A native program of the image runs in the container, as runc's exec, in its user
    // namespace: root there is uid 100000 outside.
    let r = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "native",
        "fallback",
        "/bin/busybox",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; exit 3",
    ]);
    assert_eq!(r.code, 3, "{r:?}\n{}", c.log());
    assert!(r.stdout.starts_with("0\n"), "{r:?}");
    assert!(r.stdout.contains("100000"), "{r:?}");
    let r = c.ctr(&["task", "ls"]);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("fallback") && l.contains("RUNNING")),
        "{r:?}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", "fallback"]);
}

const PROBE_IMG: &str = "wasmcell.test/probe:latest";

/// The pid containerd shows for task `id` (`ctr task ls`).
fn task_pid(c: &Containerd, id: &str) -> i32 {
    let r = c.ctr(&["task", "ls"]);
    r.stdout
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(id))
                .then(|| cols.next().and_then(|p| p.parse().ok()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no task {id}: {r:?}"))
}

/// What a process's namespace links and cgroups are.
fn identity(pid: i32) -> Vec<String> {
    let mut out: Vec<String> = ["net", "pid", "ipc", "uts", "cgroup"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|e| format!("{ns}: {e}"))
        })
        .collect();
    out.push(std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default());
    out
}

#[test]
fn ctr_task_exec_runs_a_wasm_program_in_a_cell_in_the_containers_namespaces_and_cgroup() {
    let c = Containerd::start();
    // The probe, with a native program and a file of garbage beside it.
    let probe = c.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    let garbage = c.dir.path().join("garbage");
    std::fs::write(&garbage, b"\0asm but not really a module").unwrap();
    let garbage_file = format!("{}:/garbage.wasm", garbage.display());
    c.build_and_import(&[
        "--name",
        PROBE_IMG,
        "--wasm",
        probe.to_str().unwrap(),
        "--file",
        "/bin/busybox:/bin/busybox",
        "--file",
        &garbage_file,
    ]);
    let events = c.events();
    let r = c.run_detached(
        &["--env", "FROM_SPEC=container"],
        PROBE_IMG,
        "wasm",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let exec = |exec_id: &str, args: &[&str]| {
        let mut a = vec!["task", "exec", "--exec-id", exec_id, "wasm"];
        a.extend_from_slice(args);
        c.ctr(&a)
    };

    // Its args, its output, its exit status.
    let r = exec("args", &["/probe.wasm", "args", "one", "two words"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("one") && r.stdout.contains("two words"),
        "{r:?}"
    );
    let r = exec("exit", &["/probe.wasm", "exit", "7"]);
    assert_eq!(r.code, 7, "{r:?}");
    let exit = exec_exit(&events, "wasm", "exit").expect("TaskExit of exec exit");
    assert_eq!(exit.exit_status(), 7);
    // Its env is the process's containerd gives it (ctr: the container's).
    let r = exec("env", &["/probe.wasm", "env"]);
    assert!(r.stdout.contains("FROM_SPEC=container"), "{r:?}");
    // It sees the container's files: what one exec writes, the next reads.
    let r = exec(
        "write",
        &["/probe.wasm", "write", "/from-exec.txt", "written"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = exec("cat", &["/probe.wasm", "cat", "/from-exec.txt"]);
    assert!(r.stdout.contains("written"), "{r:?}");

    // In the container's namespaces and cgroup: a sleeping exec, compared with the task.
    let r = c.ctr(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "sleeper2",
        "wasm",
        "/probe.wasm",
        "sleep",
        "600",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // `ctr task exec -d` returns once the exec started; its event may still be on its way.
    let exec_started = || {
        events.of_task("wasm").into_iter().find(|e| {
            e.topic == "/tasks/exec-started"
                && e.body.get("exec_id").and_then(|v| v.as_str()) == Some("sleeper2")
        })
    };
    assert!(
        c.wait_until(Duration::from_secs(5), || exec_started().is_some()),
        "TaskExecStarted of sleeper2"
    );
    let started = exec_started().expect("TaskExecStarted of sleeper2");
    let exec_pid = started.body["pid"].as_i64().expect("its pid") as i32;
    let task = task_pid(&c, "wasm");
    assert_ne!(exec_pid, task);
    assert_eq!(
        identity(exec_pid),
        identity(task),
        "the exec's namespaces and cgroup are the container's"
    );
    assert_ne!(identity(exec_pid), identity(std::process::id() as i32));
    let r = c.ctr(&["task", "ps", "wasm"]);
    assert!(
        r.stdout.contains(&exec_pid.to_string()),
        "Pids lists the exec: {r:?}"
    );

    // What is not a wasm program in the rootfs fails the exec, naming it; the task runs on.
    for (exec_id, args, problem) in [
        ("missing", vec!["/nowhere.wasm"], "nowhere.wasm"),
        (
            "native",
            vec!["/bin/busybox", "true"],
            "/bin/busybox is a native program",
        ),
        ("garbage", vec!["/garbage.wasm"], "garbage.wasm"),
    ] {
        let r = exec(exec_id, &args);
        assert_ne!(r.code, 0, "{exec_id}: {r:?}");
        assert!(
            r.stderr.contains(problem),
            "{exec_id}: the error names {problem}: {r:?}"
        );
    }

    let r = exec("after", &["/probe.wasm", "hello"]);
    assert_eq!(
        r.code, 0,
        "the container serves execs after failed ones: {r:?}"
    );

    // The container's end ends its execs: both exits reported, once each.
    let r = c.ctr(&["task", "kill", "-s", "SIGKILL", "wasm"]);
    assert_eq!(r.code, 0, "{r:?}");
    let exit = exec_exit(&events, "wasm", "sleeper2").expect("the exec ended with the task");
    assert_eq!(exit.exit_status(), 137, "{exit:?}");
    assert!(
        exec_exit(&events, "wasm", "wasm").is_some(),
        "the task's exit"
    );
    let exits = |id: &str| {
        events
            .of_task("wasm")
            .into_iter()
            .filter(|e| {
                e.topic == "/tasks/exit" && e.body.get("id").and_then(|v| v.as_str()) == Some(id)
            })
            .count()
    };
    assert_eq!((exits("sleeper2"), exits("wasm")), (1, 1));
    // In the order containerd's runc shim reports them: the exec's, then its container's.
    let order: Vec<String> = events
        .of_task("wasm")
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit")
        .filter_map(|e| e.body.get("id").and_then(|v| v.as_str()).map(str::to_owned))
        .filter(|id| id == "sleeper2" || id == "wasm")
        .collect();
    assert_eq!(order, ["sleeper2", "wasm"], "exits in order");
    c.ctr(&["task", "delete", "wasm"]);
    c.ctr(&["container", "delete", "wasm"]);

    // Delete of a running task with a running exec (`ctr task delete --force`): both end,
    // both exits are reported, and nothing of either is left.
    let r = c.run_detached(&[], PROBE_IMG, "forced", &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.ctr(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "held",
        "forced",
        "/probe.wasm",
        "sleep",
        "600",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        c.cell_pids(&["forced".to_owned()]).len(),
        2,
        "the task's and the exec's cells"
    );
    let r = c.ctr(&["task", "delete", "--force", "forced"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    let exit = exec_exit(&events, "forced", "held").expect("the exec's exit");
    assert_eq!(exit.exit_status(), 137, "{exit:?}");
    assert!(
        exec_exit(&events, "forced", "forced").is_some(),
        "the task's exit"
    );
    assert!(
        c.wait_until(Duration::from_secs(5), || c
            .cell_pids(&["forced".to_owned()])
            .is_empty()),
        "cells left: {:?}",
        c.cell_pids(&["forced".to_owned()])
    );
    let r = c.ctr(&["task", "ls"]);
    assert!(!r.stdout.contains("forced"), "{r:?}");
    c.ctr(&["container", "delete", "forced"]);
}

#[test]
fn cri_exec_sync_runs_in_wasm_and_native_pods_and_a_timed_out_exec_is_killed() {
    use wasmcell_e2e::cri::HANDLER;
    const CRI_PROBE: &str = "wasmcell.test/cri-probe:1";
    const CRI_BUSYBOX: &str = "wasmcell.test/cri-busybox:1";
    let c = Containerd::start_cri();
    c.import_wasm_cri(CRI_PROBE, "probe.wasm", fixtures::PROBE);
    c.import_busybox_cri(CRI_BUSYBOX);
    // CRI appends `args` to the image's entrypoint (the probe; busybox).
    let (wasm_pod, wasm) = c.start_cri_pod(
        HANDLER,
        "wasm-exec",
        CRI_PROBE,
        &["sleep", "600"],
        &[],
        true,
    );
    let (native_pod, native) = c.start_cri_pod(
        HANDLER,
        "native-exec",
        CRI_BUSYBOX,
        &["sleep", "600"],
        &[],
        true,
    );

    // ExecSync: output and exit code, in a wasm container and in a native one.
    let r = c.crictl(&[
        "exec",
        "--sync",
        &wasm,
        "/probe.wasm",
        "args",
        "from",
        "cri",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("from") && r.stdout.contains("cri"),
        "{r:?}"
    );
    let r = c.crictl(&["exec", "--sync", &wasm, "/probe.wasm", "exit", "3"]);
    assert_ne!(r.code, 0, "a failing exec fails crictl: {r:?}");
    let r = c.crictl(&[
        "exec",
        "--sync",
        &native,
        "/bin/busybox",
        "echo",
        "native exec",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("native exec"), "{r:?}");

    // A timed-out ExecSync: the exec is killed and the call answers within the timeout and a
    // small margin, for both kinds of container.
    for (id, args) in [
        (&wasm, ["/probe.wasm", "sleep", "60"]),
        (&native, ["/bin/busybox", "sleep", "60"]),
    ] {
        let asked = std::time::Instant::now();
        let mut a = vec!["exec", "--sync", "--timeout", "2", id.as_str()];
        a.extend(args);
        let r = c.crictl(&a);
        let took = asked.elapsed();
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            took < Duration::from_secs(7),
            "ExecSync with a 2 s timeout answered after {took:?}: {r:?}"
        );
    }
    let timed_out_sleep = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| c == b"/bin/busybox\x00sleep\x0060\x00")
        })
    };
    assert!(
        c.wait_until(Duration::from_secs(5), || !timed_out_sleep()),
        "the timed-out native exec is not left on the node"
    );
    // The timed-out execs are gone: each container has its own process only.
    for (pod, id) in [(&wasm_pod, &wasm), (&native_pod, &native)] {
        let r = c.crictl(&["inspect", "-o", "json", id]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
        assert_eq!(v["status"]["state"], "CONTAINER_RUNNING", "{v}");
        let r = c.crictl(&["stopp", pod]);
        assert_eq!(r.code, 0, "{r:?}");
        let r = c.crictl(&["rmp", pod]);
        assert_eq!(r.code, 0, "{r:?}");
    }
}

/// The shim's child processes.
fn shim_children(c: &Containerd) -> usize {
    let shim = c.shim_pids()[0];
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter(|p| {
            std::fs::read_to_string(p.path().join("stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: the comm may hold spaces, so read after its ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<i32>().ok())
                    == Some(shim)
            })
        })
        .count()
}

#[test]
fn a_hundred_wasm_execs_ten_at_a_time_report_exact_statuses_and_leave_nothing() {
    let c = Containerd::start();
    c.import_wasm(PROBE_IMG, "probe.wasm", fixtures::PROBE);
    let events = c.events();
    let r = c.run_detached(&[], PROBE_IMG, "many", &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");
    // One exec first: the program is compiled once, for the container, and cached.
    let r = c.ctr(&["task", "exec", "--exec-id", "first", "many", "/probe.wasm"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (fds, children) = (shim_fds(&c), shim_children(&c));
    std::thread::scope(|s| {
        for t in 0..10 {
            let c = &c;
            s.spawn(move || {
                for i in 0..10 {
                    let n = t * 10 + i;
                    let exec_id = format!("x{n}");
                    let status = (n * 7 % 256).to_string();
                    let r = c.ctr(&[
                        "task",
                        "exec",
                        "--exec-id",
                        &exec_id,
                        "many",
                        "/probe.wasm",
                        "exit",
                        &status,
                    ]);
                    assert_eq!(r.code.to_string(), status, "{exec_id}: {r:?}");
                }
            });
        }
    });
    // Events may still be on their way when ctr returns.
    let exits = || {
        events
            .of_task("many")
            .into_iter()
            .filter(|e| e.topic == "/tasks/exit")
            .count()
    };
    c.wait_until(Duration::from_secs(5), || exits() >= 101);
    assert_eq!(exits(), 101, "one TaskExit per exec");
    assert!(
        c.wait_until(Duration::from_secs(5), || shim_fds(&c) <= fds
            && shim_children(&c) <= children),
        "nothing of the execs is left in the shim: fds {} (before {fds}), children {} \
         (before {children})",
        shim_fds(&c),
        shim_children(&c)
    );
    let r = c.ctr(&["task", "ps", "many"]);
    assert_eq!(
        r.stdout.lines().count(),
        2,
        "only the task's process: {r:?}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", "many"]);
}
