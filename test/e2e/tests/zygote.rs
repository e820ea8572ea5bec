//! The zygote (`crates/shim/src/backend/zygote.rs`): cells are forked by a single-threaded helper of
//! the shim and look exactly like executed cells; a dead zygote loses no exit and the shim goes
//! on executing cells; `WASMCELL_NO_ZYGOTE` turns it off.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wasmcell_e2e::{cmdline, fixtures, proc_status, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";
/// One pod, so that every container below is served by the same shim.
const POD: [&str; 2] = ["--annotation", "io.kubernetes.cri.sandbox-id=pod-z"];

fn parent(pid: i32) -> i32 {
    proc_status(pid, "PPid").parse().unwrap()
}

/// The cell of container `id` (the process the shim started for it).
fn cell_of(c: &Containerd, id: &str) -> i32 {
    let cells = c.cell_pids(&[id.to_owned()]);
    assert_eq!(cells.len(), 1, "{id}: one cell: {cells:?}");
    cells[0]
}

fn sleeper(c: &Containerd, id: &str) {
    let r = c.run_detached(&POD, IMG, id, &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{id}: {r:?}");
}

fn hello(c: &Containerd, id: &str) {
    let r = c.run_wasm_with(&POD, IMG, id, &["/probe.wasm", "hello"]);
    assert_eq!(r.code, 0, "{id}: {r:?}");
    assert!(r.stdout.contains("hello"), "{id}: {r:?}");
}

fn kill_and_delete(c: &Containerd, events: &wasmcell_e2e::Events, id: &str) -> i64 {
    assert_eq!(
        c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code,
        0,
        "{id}"
    );
    let exit = events
        .wait_for("/tasks/exit", id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{id}: no TaskExit"));
    assert_eq!(c.ctr(&["task", "delete", id]).code, 0, "{id}");
    assert_eq!(c.ctr(&["container", "delete", id]).code, 0, "{id}");
    exit.exit_status()
}

#[test]
fn cells_are_forked_by_the_zygote_which_may_die_without_losing_an_exit() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let events = c.events();

    sleeper(&c, "z-first");
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    let daemon = shims[0];
    let cell = cell_of(&c, "z-first");
    let zygote = parent(cell);
    assert_ne!(zygote, daemon, "the cell is not the daemon's own child");
    assert_eq!(parent(zygote), daemon, "the zygote is the daemon's child");
    // Named after the daemon's `-id` (the container containerd started the shim for).
    let daemon_cmd = cmdline(daemon);
    let daemon_id = daemon_cmd
        .iter()
        .skip_while(|a| *a != "-id")
        .nth(1)
        .unwrap();
    let zygote_cmd = cmdline(zygote);
    assert!(
        zygote_cmd[0].ends_with("containerd-shim-wasmcell-v1"),
        "{zygote_cmd:?}"
    );
    assert_eq!(
        zygote_cmd[1..],
        ["zygote", daemon_id.as_str()],
        "{zygote_cmd:?}"
    );
    assert_eq!(
        proc_status(zygote, "Threads"),
        "1",
        "the zygote is single-threaded"
    );
    // Named as an executed cell is, with nothing of the daemon's environment.
    let cell_cmd = cmdline(cell);
    assert_eq!(cell_cmd[0], zygote_cmd[0]);
    assert_eq!(cell_cmd[1..], ["cell", "z-first"], "{cell_cmd:?}");
    let environ = std::fs::read(format!("/proc/{cell}/environ")).unwrap();
    assert!(
        environ.iter().all(|b| *b == 0),
        "cell environment: {environ:?}"
    );

    // A second cell of the same shim comes from the same zygote.
    sleeper(&c, "z-second");
    assert_eq!(parent(cell_of(&c, "z-second")), zygote);

    // The zygote dies: its cells are re-parented to the daemon (a subreaper), and their exits
    // still reach containerd.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), || parent(cell) == daemon),
        "the orphaned cell is re-parented to the daemon"
    );

    // The shim goes on, executing its cells now.
    hello(&c, "z-after");
    sleeper(&c, "z-third");
    let third = cell_of(&c, "z-third");
    assert_eq!(parent(third), daemon, "executed by the daemon");
    assert!(
        c.log().contains("executing the cell instead"),
        "the log says why the cell was executed"
    );
    // (containerd 1.6 stops reading the shim's log once the task that started the shim is
    // deleted, so the log is read before that.)
    assert_eq!(kill_and_delete(&c, &events, "z-first"), 137);
    assert_eq!(kill_and_delete(&c, &events, "z-second"), 137);
    assert_eq!(kill_and_delete(&c, &events, "z-third"), 137);
    assert!(
        c.wait_until(Duration::from_secs(10), || c.shim_pids().is_empty()),
        "the shim exits with its last task"
    );
    assert!(c
        .cell_pids(&["z-first".into(), "z-second".into(), "z-third".into()])
        .is_empty());
}

#[test]
fn with_wasmcell_no_zygote_the_shim_executes_its_cells() {
    let c = Containerd::start_with_env(&[("WASMCELL_NO_ZYGOTE", "1")]);
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let events = c.events();
    hello(&c, "nz-hello");
    sleeper(&c, "nz-sleeper");
    let daemon = c.shim_pids()[0];
    let cell = cell_of(&c, "nz-sleeper");
    assert_eq!(parent(cell), daemon);
    let zygotes = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|p| {
            parent_or_zero(*p) == daemon && cmdline(*p).get(1).map(String::as_str) == Some("zygote")
        })
        .count();
    assert_eq!(zygotes, 0, "no zygote");
    assert_eq!(kill_and_delete(&c, &events, "nz-sleeper"), 137);
}

fn parent_or_zero(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}
