//! The runc fallback: a wasm container whose spec the cell cannot honour (here a user namespace
//! with id mappings, as `ctr run --uidmap` gives) runs under runc with the cell as its process,
//! never in a cell with weaker isolation.

use std::time::Duration;

use wasmcell_e2e::{fixtures, proc_status, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";
/// A user namespace with id mappings, which the cell does not build: runc does.
const UIDMAP: &str = "0:100000:65536";

#[test]
fn a_spec_the_cell_cannot_honour_runs_under_runc() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);

    // Output, args, env and exit status as in a cell.
    let r = c.run_wasm_with(
        &[
            "--uidmap",
            UIDMAP,
            "--gidmap",
            UIDMAP,
            "--env",
            "GREETING=hi",
        ],
        IMG,
        "fb-args",
        &["/probe.wasm", "env"],
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    assert!(r.stdout.contains("GREETING=hi"), "{r:?}");
    let r = c.run_wasm_with(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP],
        IMG,
        "fb-exit",
        &["/probe.wasm", "exit", "9"],
    );
    assert_eq!(r.code, 9, "{r:?}");
    assert!(
        c.log().contains(
            "task fb-args: runs under runc with the cell as its process: the cell cannot honour a User namespace"
        ),
        "the shim's log says why"
    );

    // A running one is a runc container; the spec's profile (runc's) and the cell's allow-list
    // both apply.
    let r = c.run_detached(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP, "--seccomp"],
        IMG,
        "fb-sleep",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(c.runc_containers().contains(&"fb-sleep".to_owned()));
    assert!(
        c.cell_pids(&["fb-sleep".to_owned()]).is_empty(),
        "no cell of our own"
    );
    let pid: i32 = c
        .ctr(&["task", "ls"])
        .stdout
        .lines()
        .find(|l| l.starts_with("fb-sleep "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("the task's pid");
    assert_eq!(proc_status(pid, "Seccomp"), "2");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    let filters: u32 = proc_status(pid, "Seccomp_filters").parse().unwrap();
    assert!(
        filters >= 2,
        "runc's profile plus the cell's own filter: {filters}"
    );
    // The container's init: SIGTERM ends it (143), as a cell.
    let events = c.events();
    assert_eq!(c.ctr(&["task", "kill", "-s", "TERM", "fb-sleep"]).code, 0);
    let exit = events
        .wait_for("/tasks/exit", "fb-sleep", Duration::from_secs(10))
        .expect("exit after TERM");
    assert_eq!(exit.exit_status(), 143);
    assert_eq!(c.ctr(&["task", "delete", "fb-sleep"]).code, 0);

    // Bad wasm fails at create with its own message, as in a cell.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("truncated.wasm"), &fixtures::HELLO[..20]).unwrap();
    c.build_and_import(&[
        "--name",
        "wasmcell.test/truncated:latest",
        "--wasm",
        d.path().join("truncated.wasm").to_str().unwrap(),
    ]);
    let r = c.run_wasm_with(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP],
        "wasmcell.test/truncated:latest",
        "fb-bad",
        &["/truncated.wasm"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("not valid WebAssembly"), "{r:?}");

    // Nothing left: no runc container, no bundle.
    assert_eq!(c.runc_containers(), Vec::<String>::new());
    assert_eq!(c.bundles(), Vec::<String>::new());
}

/// Compiling a fallback task's program is charged to the task's own cgroup, so its memory
/// limit bounds the compiler too: a limit too small for compiling a large module fails
/// Create, saying the compiler was killed, and leaves no cgroup behind. With a limit that
/// fits, the same task runs.
#[test]
fn a_fallback_tasks_compiler_runs_in_its_cgroup() {
    let c = Containerd::start();
    let large = "wasmcell.test/large:latest";
    c.import_wasm(large, "large.wasm", fixtures::LARGE);
    let userns = ["--uidmap", UIDMAP, "--gidmap", UIDMAP];
    let small = [&userns[..], &["--memory-limit", "16777216"]].concat();
    let r = c.run_wasm_with(&small, large, "fb-small", &[]);
    assert_ne!(r.code, 0, "compiled within 16 MiB: {r:?}");
    assert!(r.stderr.contains("killed"), "{r:?}\n{}", c.log());
    let leftover = [
        "/sys/fs/cgroup/memory/default/fb-small",
        "/sys/fs/cgroup/default/fb-small",
    ];
    assert!(
        leftover.iter().all(|p| !std::path::Path::new(p).exists()),
        "the compile's cgroup is left behind"
    );
    let enough = [&userns[..], &["--memory-limit", "1073741824"]].concat();
    let r = c.run_wasm_with(&enough, large, "fb-enough", &[]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "large module ok\n"),
        "{r:?}\n{}",
        c.log()
    );
}

/// A spec with cgroup settings the cell does not write (here a block I/O weight) goes to runc,
/// which writes them; its compiler then stays in the shim's cgroup, and the task runs.
#[test]
fn cgroup_settings_only_runc_writes_send_the_task_to_runc_and_it_runs() {
    use serde_json::json;
    use wasmcell_e2e::api::ContainerRequest;

    let c = Containerd::start();
    let api = c.api();
    let name = "wasmcell.test/blkio:1";
    let d = c.import_probe_unpacked(name);
    let args = vec!["/probe.wasm".to_owned(), "hello".to_owned()];
    let mut spec = c.default_spec("fb-blkio", &args, &d.env, &d.cwd);
    spec["linux"]["resources"]["blockIO"] = json!({"weight": 500});
    let request = ContainerRequest::wasmcell("fb-blkio", name, spec, d.tar_layers);
    let r = api
        .run(request, c.dir.path())
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    assert_eq!((r.exit, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
    let log = c.log();
    assert!(log.contains("task fb-blkio: runs under runc"), "{log}");
    assert!(
        log.contains("task fb-blkio: compiling in the shim's cgroup"),
        "{log}"
    );
}
