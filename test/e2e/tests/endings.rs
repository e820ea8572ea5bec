//! How a wasm container ended, where the kubelet reads it: the reason in the file mounted at the
//! container's termination message path (a trap, a trap after the memory limit refused memory,
//! the CPU deadline, a failure after start), TaskOOM for the memory limit's doing, and an
//! application's own message kept. The kubelet's mount is made here with `ctr run --mount`, as
//! the CRI plugin makes it from the kubelet's.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use wasmcell_e2e::{fixtures, Containerd, Ran};

const TRAP: &str = "wasmcell.test/trap:latest";
const GROW: &str = "wasmcell.test/grow:latest";
const BUSY: &str = "wasmcell.test/busy:latest";
const BAD_START: &str = "wasmcell.test/bad-start:latest";
const HELLO: &str = "wasmcell.test/hello:latest";
const LIMIT_32MI: &str = "33554432";

/// An empty file standing in for the one the kubelet makes for container `name`.
fn log_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "").unwrap();
    path
}

/// `ctr run --mount` of `file` at `at`, as the kubelet mounts its termination message file.
fn mounted(file: &Path, at: &str) -> String {
    format!("type=bind,src={},dst={at},options=rbind:rw", file.display())
}

fn run(c: &Containerd, file: &Path, flags: &[&str], image: &str, id: &str) -> (Ran, String) {
    let mount = mounted(file, "/dev/termination-log");
    let mut all = vec!["--mount", mount.as_str()];
    all.extend_from_slice(flags);
    let r = c.run_wasm_with(&all, image, id, &[]);
    let message = std::fs::read_to_string(file).unwrap();
    (r, message)
}

#[test]
fn the_reason_a_guest_ended_is_its_termination_message() {
    let c = Containerd::start();
    for (image, file, wasm) in [
        (TRAP, "trap.wasm", fixtures::TRAP),
        (GROW, "grow.wasm", fixtures::GROW),
        (BUSY, "busy.wasm", fixtures::BUSY),
        (BAD_START, "bad_start.wasm", fixtures::BAD_START),
        (HELLO, "hello.wasm", fixtures::HELLO),
    ] {
        c.import_wasm(image, file, wasm);
    }
    let dir = tempfile::tempdir().unwrap();
    let events = c.events();

    // A trap: what, and where.
    let (r, message) = run(&c, &log_file(dir.path(), "trap"), &[], TRAP, "end-trap");
    assert_eq!(r.code, 134, "{r:?}");
    assert!(
        message.starts_with("wasm trap: wasm `unreachable` instruction executed\n    0: "),
        "{message:?}"
    );
    assert!(
        r.stderr.contains(&message),
        "the log ends with it too: {r:?}"
    );

    // A trap after the memory limit refused a growth: the limit's doing, reported as an OOM kill.
    let (r, message) = run(
        &c,
        &log_file(dir.path(), "grow"),
        &["--memory-limit", LIMIT_32MI],
        GROW,
        "end-grow",
    );
    assert_eq!(r.code, 134, "the trap's status: {r:?}");
    assert!(
        message.starts_with("memory.grow refused at the container's memory limit (32Mi): ")
            && message.contains("wasm trap: wasm `unreachable` instruction executed")
            && message.contains("0: grow!grow_forever\n    1: grow!<wasm function 1>"),
        "{message:?}"
    );
    let topics =
        |id: &str| -> Vec<String> { events.of_task(id).into_iter().map(|e| e.topic).collect() };
    let seen = topics("end-grow");
    let oom = seen.iter().position(|t| t == "/tasks/oom");
    let exit = seen.iter().position(|t| t == "/tasks/exit");
    assert!(
        matches!((oom, exit), (Some(o), Some(e)) if o < e),
        "TaskOOM before TaskExit: {seen:?}"
    );

    // The same at the memory-max setting, below the limit: the workload's own cap, no OOM.
    let (r, message) = run(
        &c,
        &log_file(dir.path(), "grow-max"),
        &[
            "--memory-limit",
            LIMIT_32MI,
            "--annotation",
            "wasmcell.dev/memory-max=8Mi",
        ],
        GROW,
        "end-grow-max",
    );
    assert_eq!(r.code, 134, "{r:?}");
    assert!(
        message.starts_with(
            "memory.grow refused at memory-max (8Mi, annotation wasmcell.dev/memory-max): "
        ),
        "{message:?}"
    );
    assert!(
        !topics("end-grow-max").iter().any(|t| t == "/tasks/oom"),
        "not the limit's doing"
    );

    // The CPU deadline stops a loop with no host call.
    let (r, message) = run(
        &c,
        &log_file(dir.path(), "busy"),
        &["--annotation", "wasmcell.dev/cpu-deadline-ms=300"],
        BUSY,
        "end-busy",
    );
    assert_eq!(r.code, 134, "{r:?}");
    assert!(
        message.starts_with(
            "stopped at its CPU deadline of 300 ms (annotation wasmcell.dev/cpu-deadline-ms)\n\
             wasm trap: interrupt"
        ),
        "{message:?}"
    );

    // A program that links but cannot start.
    let (r, message) = run(
        &c,
        &log_file(dir.path(), "bad-start"),
        &[],
        BAD_START,
        "end-bad-start",
    );
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        message.starts_with("wasmcell: ") && message.contains("`_start` has the wrong type"),
        "{message:?}"
    );

    // An application's own message is kept.
    let own = log_file(dir.path(), "own");
    std::fs::write(&own, "the application's own words").unwrap();
    let (r, message) = run(&c, &own, &[], TRAP, "end-own");
    assert_eq!(r.code, 134, "{r:?}");
    assert_eq!(message, "the application's own words");
    assert!(r.stderr.contains("wasm trap"), "{r:?}");

    // A clean exit leaves nothing.
    let (r, message) = run(&c, &log_file(dir.path(), "hello"), &[], HELLO, "end-hello");
    assert_eq!((r.code, message.as_str()), (0, ""), "{r:?}");
}

#[test]
fn the_kubelets_annotation_names_the_termination_message_path() {
    let c = Containerd::start();
    c.import_wasm(TRAP, "trap.wasm", fixtures::TRAP);
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = log_file(dir.path(), "elsewhere");
    let default = log_file(dir.path(), "default");
    let (m1, m2) = (
        mounted(&elsewhere, "/msg/reason"),
        mounted(&default, "/dev/termination-log"),
    );
    let r = c.run_wasm_with(
        &[
            "--mount",
            &m1,
            "--mount",
            &m2,
            "--annotation",
            "io.kubernetes.container.terminationMessagePath=/msg/reason",
        ],
        TRAP,
        "end-elsewhere",
        &[],
    );
    assert_eq!(r.code, 134, "{r:?}");
    let written = std::fs::read_to_string(&elsewhere).unwrap();
    assert!(written.starts_with("wasm trap: "), "{written:?}");
    assert_eq!(std::fs::read_to_string(&default).unwrap(), "");
}

/// A container the cell cannot honour runs under runc with the cell as its process: its guest's
/// reason reaches the same file, and the memory limit's doing the same TaskOOM.
#[test]
fn under_the_runc_fallback_the_reason_is_left_the_same_way() {
    const UIDMAP: &str = "0:100000:65536";
    let c = Containerd::start();
    c.import_wasm(TRAP, "trap.wasm", fixtures::TRAP);
    c.import_wasm(GROW, "grow.wasm", fixtures::GROW);
    let dir = tempfile::tempdir().unwrap();
    let events = c.events();
    let userns = ["--uidmap", UIDMAP, "--gidmap", UIDMAP];

    let (r, message) = run(&c, &log_file(dir.path(), "trap"), &userns, TRAP, "fb-trap");
    assert_eq!(r.code, 134, "{r:?}");
    assert!(
        message.starts_with("wasm trap: wasm `unreachable` instruction executed"),
        "{message:?}\n{}",
        c.log()
    );
    assert!(
        c.log().contains("task fb-trap: runs under runc"),
        "it ran under runc"
    );

    let mut flags = userns.to_vec();
    flags.extend(["--memory-limit", LIMIT_32MI]);
    let (r, message) = run(&c, &log_file(dir.path(), "grow"), &flags, GROW, "fb-grow");
    assert_eq!(r.code, 134, "{r:?}");
    assert!(
        message.starts_with("memory.grow refused at the container's memory limit (32Mi)"),
        "{message:?}"
    );
    let seen: Vec<String> = events
        .of_task("fb-grow")
        .into_iter()
        .map(|e| e.topic)
        .collect();
    let oom = seen.iter().position(|t| t == "/tasks/oom");
    let exit = seen.iter().position(|t| t == "/tasks/exit");
    assert!(
        matches!((oom, exit), (Some(o), Some(e)) if o < e),
        "TaskOOM before TaskExit: {seen:?}"
    );
}
