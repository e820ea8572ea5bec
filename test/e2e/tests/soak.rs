//! The long runs: exit statuses on every path a task can take, and run/delete cycles of every
//! kind of task, after which nothing may be left behind. `make test` runs them shortened;
//! `make soak` (`WASMCELL_SOAK=full`) runs them whole, and prints the figures that
//! `docs/reliability.md` reports.
//!
//! All tasks of a run are one pod (the sandbox-id annotation CRI sets), so one shim daemon
//! serves them all: its file descriptors and memory are measured across the whole run.

use std::time::{Duration, Instant};

use wasmcell_e2e::{fixtures, Containerd, Ran, RUNTIME};

const PROBE: &str = "wasmcell.test/probe:latest";
const COMPONENT: &str = "wasmcell.test/probe-component:latest";
const TRAP: &str = "wasmcell.test/trap:latest";
const HOG: &str = "wasmcell.test/hog:latest";
const BUSYBOX: &str = "wasmcell.test/busybox:latest";
const POD: &str = "--annotation=io.kubernetes.cri.sandbox-id=soak-pod";
/// A user namespace with id mappings: the cell does not build one, so the task goes to runc.
const FALLBACK: &[&str] = &["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];

/// Whether this is `make soak`'s whole run rather than `make test`'s shortened one.
fn full() -> bool {
    std::env::var("WASMCELL_SOAK").is_ok_and(|v| v == "full")
}

/// How a task runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// A wasm module in a cell.
    Cell,
    /// A wasm component in a cell.
    Component,
    /// A wasm module in a cell under runc (the fallback).
    Fallback,
    /// A native program under runc.
    Native,
}

/// Imports every image the runs use, and starts the pod's long-running task, which keeps the
/// pod's shim up.
fn pod() -> Containerd {
    let c = Containerd::start();
    c.import_wasm(PROBE, "probe.wasm", fixtures::PROBE);
    c.import_wasm(COMPONENT, "probe.wasm", fixtures::PROBE_COMPONENT);
    c.import_wasm(TRAP, "trap.wasm", fixtures::TRAP);
    c.import_wasm(HOG, "hog.wasm", fixtures::TWO_MEMORIES);
    c.import_busybox(BUSYBOX);
    let r = c.run_detached(
        &[POD],
        PROBE,
        "soak-anchor",
        &["/probe.wasm", "sleep", "3600"],
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    c
}

/// Runs task `id` on `path` to its end (`ctr run --rm`); `args` after the program.
fn run(c: &Containerd, path: Path, id: &str, flags: &[&str], args: &[&str]) -> Ran {
    let mut a = vec!["run", "--rm", "--runtime", RUNTIME, POD];
    a.extend_from_slice(flags);
    if path == Path::Fallback {
        a.extend_from_slice(FALLBACK);
    }
    let program = match path {
        Path::Native => {
            a.extend(["--platform", "linux/amd64", BUSYBOX, id, "/bin/busybox"]);
            return c.ctr(&[a, args.to_vec()].concat());
        }
        Path::Component => COMPONENT,
        Path::Cell | Path::Fallback => PROBE,
    };
    a.extend(["--platform", "wasi/wasm", program, id, "/probe.wasm"]);
    c.ctr(&[a, args.to_vec()].concat())
}

/// Runs the trapping program as task `id` in a cell (`Path::Cell`) or under runc
/// (`Path::Fallback`).
fn trap(c: &Containerd, path: Path, id: &str) -> Ran {
    let mut a = vec!["run", "--rm", "--runtime", RUNTIME, POD];
    if path == Path::Fallback {
        a.extend_from_slice(FALLBACK);
    }
    a.extend(["--platform", "wasi/wasm", TRAP, id]);
    c.ctr(&a)
}

/// Starts task `id` on `path` sleeping, signals it with `signal`, and returns the exit status
/// its TaskExit event reports.
fn signalled(
    c: &Containerd,
    events: &wasmcell_e2e::Events,
    path: Path,
    id: &str,
    signal: &str,
) -> i64 {
    let mut a = vec!["run", "-d", "--runtime", RUNTIME, POD];
    if path == Path::Fallback {
        a.extend_from_slice(FALLBACK);
    }
    match path {
        Path::Native => a.extend([
            "--platform",
            "linux/amd64",
            BUSYBOX,
            id,
            "/bin/busybox",
            "sleep",
            "600",
        ]),
        _ => a.extend([
            "--platform",
            "wasi/wasm",
            PROBE,
            id,
            "/probe.wasm",
            "sleep",
            "600",
        ]),
    }
    let r = c.ctr(&a);
    assert_eq!(r.code, 0, "{id}: {r:?}\n{}", c.log());
    let k = c.ctr(&["task", "kill", "-s", signal, id]);
    assert_eq!(k.code, 0, "{id}: {k:?}");
    let exit = events
        .wait_for("/tasks/exit", id, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{id}: no TaskExit\n{}", c.log()));
    let d = c.ctr(&["container", "delete", id]);
    assert_eq!(d.code, 0, "{id}: {d:?}");
    exit.exit_status()
}

/// Signal names and numbers whose default action ends a process, as users send them.
const SIGNALS: &[(&str, i64)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGABRT", 6),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGPWR", 30),
];

#[test]
fn every_exit_status_is_exact_on_every_path() {
    let c = pod();
    let events = c.events();
    let codes: Vec<u32> = if full() {
        (0..=255).collect()
    } else {
        vec![0, 1, 2, 3, 42, 126, 127, 128, 129, 137, 254, 255]
    };
    let signals = if full() { SIGNALS } else { &SIGNALS[3..6] };
    let component_codes: Vec<u32> = if full() {
        (0..209).collect()
    } else {
        vec![0, 3]
    };
    let started = Instant::now();
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut check = |what: String, got: i64, want: i64| {
        checked += 1;
        if got != want {
            wrong.push(format!("{what}: {got}, want {want}"));
        }
    };
    for path in [Path::Cell, Path::Fallback, Path::Native] {
        for code in &codes {
            let id = format!("exit-{path:?}-{code}").to_lowercase();
            let code_text = code.to_string();
            let r = match path {
                Path::Native => run(&c, path, &id, &[], &["sh", "-c", &format!("exit {code}")]),
                _ => run(&c, path, &id, &[], &["exit", &code_text]),
            };
            check(id, i64::from(r.code), i64::from(*code));
        }
        // A native program is its PID namespace's init under runc, where the kernel drops
        // every signal it has no handler for but SIGKILL: that is runc's behaviour, not ours.
        let signals = if path == Path::Native {
            &SIGNALS[4..5]
        } else {
            signals
        };
        for (name, number) in signals {
            let id = format!("signal-{path:?}-{number}").to_lowercase();
            let got = signalled(&c, &events, path, &id, name);
            check(id, got, 128 + number);
        }
    }
    for path in [Path::Cell, Path::Fallback] {
        let id = format!("trap-{path:?}").to_lowercase();
        let code = trap(&c, path, &id).code;
        check(id, i64::from(code), 134);
    }
    // WASI 0.2's exit carries ok or err only: err is 1.
    for code in &component_codes {
        let id = format!("exit-component-{code}");
        let r = run(&c, Path::Component, &id, &[], &["exit", &code.to_string()]);
        check(id, i64::from(r.code), i64::from(*code != 0));
    }
    eprintln!(
        "exit fidelity: {}/{checked} exact in {:.0} s",
        checked - wrong.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}\n{}",
        wrong.len(),
        wrong.join("\n"),
        c.log()
    );
}

/// What a run may leave behind, counted.
#[derive(Clone, Debug, PartialEq)]
struct Leftovers {
    shims: Vec<i32>,
    shim_fds: usize,
    cells: usize,
    mounts: Vec<String>,
    bundles: Vec<String>,
    runc: Vec<String>,
    cgroups: Vec<String>,
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: i32) -> u64 {
    wasmcell_e2e::proc_status(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The cgroup directories of soak tasks (`/default/soak-*`, the path `ctr` gives), in every
/// hierarchy.
fn soak_cgroups() -> Vec<String> {
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(d.flatten().map(|e| e.path()));
    }
    let mut found = Vec::new();
    for root in roots {
        let Ok(d) = std::fs::read_dir(root.join("default")) else {
            continue;
        };
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with("cycle-") {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

fn leftovers(c: &Containerd, ids: &[String]) -> Leftovers {
    let shims = c.shim_pids();
    Leftovers {
        shim_fds: shims.iter().map(|p| fds(*p)).sum(),
        shims,
        cells: c.cell_pids(ids).len(),
        mounts: c.mounts(),
        bundles: c.bundles(),
        runc: c.runc_containers(),
        cgroups: soak_cgroups(),
    }
}

#[test]
fn run_delete_cycles_of_every_kind_leave_nothing_behind() {
    let c = pod();
    let cycles = if full() { 2000 } else { 60 };
    let containerd = c.pid().expect("containerd runs") as i32;
    // One round of each kind first: the compile cache and every code path warmed up.
    let kinds = 6;
    let cycle = |i: usize| -> (String, Ran, i32) {
        let id = format!("cycle-{i}");
        let (r, want) = match i % kinds {
            0 => (run(&c, Path::Cell, &id, &[], &["hello"]), 0),
            1 => (run(&c, Path::Component, &id, &[], &["hello"]), 0),
            2 => (run(&c, Path::Native, &id, &[], &["echo", "hello"]), 0),
            3 => (run(&c, Path::Fallback, &id, &[], &["exit", "3"]), 3),
            4 => {
                let mut a = vec!["run", "--rm", "--runtime", RUNTIME, POD];
                a.extend([
                    "--memory-limit",
                    "33554432",
                    "--platform",
                    "wasi/wasm",
                    HOG,
                    &id,
                ]);
                (c.ctr(&a), 137)
            }
            _ => (trap(&c, Path::Cell, &id), 134),
        };
        (id, r, want)
    };
    let mut ids = Vec::new();
    for i in 0..kinds {
        let (id, r, want) = cycle(i);
        assert_eq!(r.code, want, "{id}: {r:?}\n{}", c.log());
        ids.push(id);
    }
    let before = leftovers(&c, &ids);
    let containerd_fds = fds(containerd);
    let shim = *before.shims.first().expect("the pod's shim");
    let started = Instant::now();
    let mut rss = Vec::new();
    for i in kinds..kinds + cycles {
        let (id, r, want) = cycle(i);
        assert_eq!(r.code, want, "{id}: {r:?}\n{}", c.log());
        ids.push(id);
        if (i - kinds) % (cycles / 4).max(1) == 0 {
            rss.push(rss_kib(shim));
        }
    }
    rss.push(rss_kib(shim));
    let elapsed = started.elapsed().as_secs_f64();
    // Deletes finish their clean-up within moments of `ctr run --rm` returning.
    // The shim's fd count may dip below its start (a connection containerd had open then),
    // never rise above it.
    let same = |a: &Leftovers| {
        a.shim_fds <= before.shim_fds
            && Leftovers {
                shim_fds: before.shim_fds,
                ..a.clone()
            } == before
    };
    let mut after = leftovers(&c, &ids);
    c.wait_until(Duration::from_secs(5), || {
        after = leftovers(&c, &ids);
        same(&after)
    });
    eprintln!(
        "soak: {cycles} cycles in {elapsed:.0} s ({:.0} ms each); shim RSS KiB at each quarter \
         {rss:?}; containerd fds {containerd_fds} -> {}; shim fds {} -> {}",
        elapsed * 1000.0 / cycles as f64,
        fds(containerd),
        before.shim_fds,
        after.shim_fds,
    );
    assert!(
        same(&after),
        "left behind: {after:?}, at the start {before:?}\n{}",
        c.log()
    );
    // containerd's own count wanders a little with its background work (gc, event streams).
    assert!(
        fds(containerd) <= containerd_fds + 4,
        "containerd's fds grew from {containerd_fds} to {}",
        fds(containerd)
    );
    // Flat: the shim's memory after the first quarter does not grow with the cycles.
    let settled = rss[1.min(rss.len() - 1)];
    let last = *rss.last().expect("a figure");
    assert!(
        last <= settled + 2048,
        "the shim's RSS grew from {settled} to {last} KiB over the cycles: {rss:?}"
    );
}
