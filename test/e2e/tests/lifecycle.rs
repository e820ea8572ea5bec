//! Task lifecycle as containerd sees it: event order, exit statuses, clean-up after delete and
//! after a shim that died.

use std::time::Duration;

use wasmcell_e2e::{fixtures, Containerd, RUNTIME};

const TASK_TOPICS: [&str; 4] = [
    "/tasks/create",
    "/tasks/start",
    "/tasks/exit",
    "/tasks/delete",
];

#[test]
fn events_are_ordered_over_100_runs_and_nothing_is_left() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/hello:latest", "hello.wasm", fixtures::HELLO);
    c.import_wasm("wasmcell.test/exit7:latest", "exit7.wasm", fixtures::EXIT7);
    c.import_wasm("wasmcell.test/trap:latest", "trap.wasm", fixtures::TRAP);
    c.import_busybox("wasmcell.test/busybox:latest");
    let events = c.events();

    let mut ran = Vec::new();
    for i in 0..100 {
        let id = format!("run-{i:03}");
        // Mostly wasm (clean exits, a non-zero exit, a trap), every tenth through runc.
        let (r, want) = match i % 10 {
            0..=5 => (c.run_wasm("wasmcell.test/hello:latest", &id, &[]), 0),
            6 | 7 => (c.run_wasm("wasmcell.test/exit7:latest", &id, &[]), 7),
            8 => (c.run_wasm("wasmcell.test/trap:latest", &id, &[]), 134),
            _ => (
                c.ctr(&[
                    "run",
                    "--rm",
                    "--runtime",
                    RUNTIME,
                    "wasmcell.test/busybox:latest",
                    &id,
                ]),
                0,
            ),
        };
        assert_eq!(r.code, want, "{id}: {r:?}");
        ran.push((id, want));
    }

    for (id, want) in &ran {
        assert!(
            events
                .wait_for("/tasks/delete", id, Duration::from_secs(5))
                .is_some(),
            "{id}: no TaskDelete; its events: {:?}",
            events.of_task(id)
        );
        let of_task = events.of_task(id);
        let topics: Vec<&str> = of_task.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, TASK_TOPICS, "{id}: task events in order, once each");
        assert_eq!(
            of_task[2].exit_status(),
            i64::from(*want),
            "{id}: TaskExit status"
        );
    }

    let ids: Vec<String> = ran.into_iter().map(|(id, _)| id).collect();
    assert!(
        c.wait_until(Duration::from_secs(5), || c.shim_pids().is_empty()),
        "shims left: {:?}",
        c.shim_pids()
    );
    assert_eq!(c.cell_pids(&ids), Vec::<i32>::new(), "cells left");
    assert_eq!(c.mounts(), Vec::<String>::new(), "mounts left");
    assert_eq!(c.bundles(), Vec::<String>::new(), "bundle directories left");
    assert_eq!(c.runc_containers(), Vec::<String>::new(), "runc state left");
}

#[test]
fn delete_of_a_detached_task_leaves_no_socket_process_or_bundle() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/probe:latest", "probe.wasm", fixtures::PROBE);
    let events = c.events();
    let r = c.run_detached(
        &[],
        "wasmcell.test/probe:latest",
        "sleeper",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let socket = c.shim_socket("sleeper").expect("the shim's address file");
    assert!(socket.exists(), "{} exists while serving", socket.display());
    let ids = vec!["sleeper".to_owned()];
    assert_eq!(c.cell_pids(&ids).len(), 1, "one cell runs the guest");

    let r = c.ctr(&["task", "kill", "--signal", "SIGKILL", "sleeper"]);
    assert_eq!(r.code, 0, "{r:?}");
    let exit = events
        .wait_for("/tasks/exit", "sleeper", Duration::from_secs(2))
        .expect("TaskExit within 2 s of SIGKILL");
    assert_eq!(exit.exit_status(), 137);
    let r = c.ctr(&["task", "delete", "sleeper"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.ctr(&["container", "delete", "sleeper"]);
    assert_eq!(r.code, 0, "{r:?}");

    assert!(
        c.wait_until(Duration::from_secs(5), || c.shim_pids().is_empty()),
        "the idle shim exits"
    );
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert_eq!(c.cell_pids(&ids), Vec::<i32>::new(), "cell left");
    assert_eq!(c.mounts(), Vec::<String>::new(), "mounts left");
    assert_eq!(c.bundles(), Vec::<String>::new(), "bundle left");
}

#[test]
fn a_killed_shim_is_cleaned_up_by_shim_delete() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/probe:latest", "probe.wasm", fixtures::PROBE);
    let events = c.events();
    let r = c.run_detached(
        &[],
        "wasmcell.test/probe:latest",
        "orphan",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let ids = vec!["orphan".to_owned()];
    assert_eq!(c.cell_pids(&ids).len(), 1);
    let socket = c.shim_socket("orphan").expect("the shim's address file");
    let exit = kill_the_shim(&c, &events, "orphan");
    assert_eq!(exit.exit_status(), 137, "{exit:?}");
    assert!(
        c.wait_until(Duration::from_secs(5), || c.cell_pids(&ids).is_empty()),
        "shim delete ended the orphaned cell"
    );
    assert!(
        c.wait_until(Duration::from_secs(5), || c.mounts().is_empty()),
        "shim delete unmounted the rootfs: {:?}",
        c.mounts()
    );
    assert!(
        !socket.exists(),
        "the dead shim's socket {} is removed",
        socket.display()
    );
    let r = c.ctr(&["container", "delete", "orphan"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.bundles(), Vec::<String>::new(), "bundle left");
}

#[test]
fn a_killed_shim_of_a_native_container_is_cleaned_up_by_shim_delete() {
    // `shim delete` starts runc only for an id runc has state for (containerd runs `shim delete`
    // after every task); a native container left by a dead shim must still be removed.
    let c = Containerd::start();
    c.import_busybox("wasmcell.test/busybox:latest");
    let events = c.events();
    let r = c.run_detached(
        &[],
        "wasmcell.test/busybox:latest",
        "native-orphan",
        &["/bin/busybox", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.runc_containers(), vec!["native-orphan".to_owned()]);
    kill_the_shim(&c, &events, "native-orphan");
    assert!(
        c.wait_until(Duration::from_secs(10), || c.runc_containers().is_empty()),
        "shim delete removed the runc container: {:?}",
        c.runc_containers()
    );
    assert!(
        c.wait_until(Duration::from_secs(5), || c.mounts().is_empty()),
        "shim delete unmounted the rootfs: {:?}",
        c.mounts()
    );
    let r = c.ctr(&["container", "delete", "native-orphan"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// Kills the one shim with SIGKILL, without a word to containerd, which then runs
/// `containerd-shim-wasmcell-v1 delete`; the TaskExit containerd publishes for task `id`.
fn kill_the_shim(c: &Containerd, events: &wasmcell_e2e::Events, id: &str) -> wasmcell_e2e::Event {
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill the shim");
    events
        .wait_for("/tasks/exit", id, Duration::from_secs(10))
        .expect("containerd publishes TaskExit for the dead shim's task")
}
