//! The runc fallback: a wasm container whose spec the cell cannot honour (here a user namespace
//! with id mappings, as `ctr run --uidmap` gives) runs under runc with the cell as its process,
//! never in a cell with weaker isolation.

use std::time::Duration;

use wasmcell_e2e::{cmdline, fixtures, proc_status, Containerd};

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
    // The cell installs its filter once it has loaded the program, just after Start.
    let filters = || {
        proc_status(pid, "Seccomp_filters")
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert!(
        c.wait_until(Duration::from_secs(5), || filters() >= 2),
        "runc's profile plus the cell's own filter: {}",
        filters()
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
/// which writes them, and the task runs.
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
    // A read throttle on one of the host's disks: runc writes it on any host (a weight needs
    // the BFQ I/O scheduler, which not every host's disks use).
    let Some((major, minor)) = a_disk() else {
        wasmcell_e2e::skip("no block device under /sys/block to throttle");
        return;
    };
    spec["linux"]["resources"]["blockIO"] = json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 10_485_760}]
    });
    let request = ContainerRequest::wasmcell("fb-blkio", name, spec, d.tar_layers);
    let r = api
        .run(request, c.dir.path())
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    assert_eq!((r.exit, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
    let log = c.log();
    assert!(log.contains("task fb-blkio: runs under runc"), "{log}");
}

/// A disk of this host (`major`, `minor`), not a loop or RAM device when there is one.
fn a_disk() -> Option<(i64, i64)> {
    let mut devices: Vec<(bool, i64, i64)> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
            let (major, minor) = dev.trim().split_once(':')?;
            let virtual_device = name.starts_with("loop") || name.starts_with("ram");
            Some((virtual_device, major.parse().ok()?, minor.parse().ok()?))
        })
        .collect();
    devices.sort();
    devices.first().map(|d| (d.1, d.2))
}

/// While a fallback task's program compiles, the compiler is in the container runc created:
/// in each of its cgroups and in its mount, network, IPC, UTS and PID namespaces, as the
/// guest will be. The compiler is seen from outside, through `/proc`, while it works on a
/// module large enough to take a while.
#[test]
fn a_fallback_tasks_compiler_runs_in_its_containers_cgroups_and_namespaces() {
    let c = Containerd::start();
    let large = "wasmcell.test/large:latest";
    c.import_wasm(large, "large.wasm", fixtures::LARGE);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut last = None;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(seen) = compiler_beside_its_container() {
                    last = Some(seen);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            last
        })
    };
    let r = c.run_wasm_with(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP],
        large,
        "fb-where",
        &[],
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "large module ok\n"),
        "{r:?}\n{}",
        c.log()
    );
    let (compiler, container) = watcher
        .join()
        .unwrap()
        .expect("no compiler was seen beside a created container");
    assert_eq!(compiler, container, "the compiler's cgroups and namespaces");
    assert_ne!(
        compiler.namespaces,
        where_is("self").expect("this process").namespaces,
        "the compiler is in the test's own namespaces"
    );
}

/// A fallback task whose program takes longer to compile than the prepare deadline fails
/// Create with the deadline named, as a cell does; its compiler is killed and its container
/// deleted.
#[test]
fn a_fallback_compile_past_the_prepare_deadline_fails_create_and_leaves_nothing() {
    let c = Containerd::start_with_env(&[("WASMCELL_PREPARE_TIMEOUT_SECS", "1")]);
    let large = "wasmcell.test/large:latest";
    c.import_wasm(large, "large.wasm", fixtures::LARGE);
    let r = c.run_wasm_with(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP],
        large,
        "fb-late",
        &[],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("took longer than the 1s deadline"),
        "{r:?}\n{}",
        c.log()
    );
    let gone = c.wait_until(Duration::from_secs(5), || {
        compiler_beside_its_container().is_none() && c.runc_containers().is_empty()
    });
    assert!(gone, "a compiler or the runc container is left");
    let _ = c.ctr(&["container", "delete", "fb-late"]);
    assert_eq!(c.bundles(), Vec::<String>::new());
}

/// A process's cgroups (the text of `/proc/<pid>/cgroup`) and namespaces.
#[derive(Debug, PartialEq)]
struct Place {
    cgroups: String,
    namespaces: Vec<String>,
}

fn where_is(pid: &str) -> Option<Place> {
    let namespaces = ["mnt", "net", "ipc", "uts", "pid", "cgroup"]
        .iter()
        .map(|ns| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .map(|l| l.display().to_string())
        .collect();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(Place {
        cgroups,
        namespaces,
    })
}

/// The shim's `compile <cache> <program> <container pid>` process, if one runs: where its
/// compiler child is, and where that container's init is.
fn compiler_beside_its_container() -> Option<(Place, Place)> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let args = cmdline(pid);
        // `<shim> compile <cache-dir> <program> <container pid> <settings>`
        if args.get(1).map(String::as_str) != Some("compile") || args.len() != 6 {
            continue;
        }
        let init = &args[4];
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        let child = children.split_whitespace().next()?;
        let seen = (where_is(child)?, where_is(init)?);
        // A v1 hierarchy shows an exiting task as in its root (only v2 keeps its cgroup), so
        // a look taken while the compiler was finishing says nothing of where it worked.
        return (!exiting(child)?).then_some(seen);
    }
    None
}

/// Whether the kernel has begun to end process `pid` (`PF_EXITING` in the flags of
/// `/proc/<pid>/stat`); `None` once it is gone.
fn exiting(pid: &str) -> Option<bool> {
    const PF_EXITING: u64 = 0x4;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: the
    // state is the first and the flags the seventh.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = after_name.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_EXITING != 0)
}
