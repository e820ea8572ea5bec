//! containerd restarting under running tasks: every task keeps running, and a task that exits
//! or is OOM-killed while containerd is away has its TaskOOM and TaskExit published once it is
//! back, in order; a shim killed with SIGKILL leaves nothing behind once its task is deleted.

use std::time::{Duration, Instant};

use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";
const HOG: &str = "wasmcell.test/delayed-hog:latest";
/// Tasks running when containerd stops.
const TASKS: usize = 50;

fn id(i: usize) -> String {
    format!("restart-{i:02}")
}

/// The `ctr task ls` status (RUNNING, STOPPED, ...) of each task.
fn statuses(c: &Containerd) -> Vec<(String, String)> {
    let r = c.ctr(&["task", "ls"]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.to_owned();
            let status = f.nth(1)?.to_owned();
            Some((id, status))
        })
        .collect()
}

/// Where in containerd's log (which carries the shims' logs) `needle` first appears.
fn position(log: &str, needle: &str) -> Option<usize> {
    log.find(needle)
}

#[test]
fn tasks_outlive_a_containerd_restart_and_what_happened_meanwhile_is_published() {
    let mut c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    c.import_wasm(HOG, "hog.wasm", fixtures::DELAYED_HOG);
    let exits_while_away = id(TASKS - 2);
    let oom_while_away = id(TASKS - 1);
    for i in 0..TASKS {
        let task = id(i);
        let r = if task == oom_while_away {
            // Grows past its limit 8 s after it starts, while containerd is away.
            c.run_detached(&["--memory-limit", "33554432"], HOG, &task, &[])
        } else {
            c.run_detached(&[], IMG, &task, &["/probe.wasm", "sleep", "3600"])
        };
        assert_eq!(r.code, 0, "{task}: {r:?}\n{}", c.log());
    }
    let oom_started = Instant::now();
    let all: Vec<String> = (0..TASKS).map(id).collect();
    assert_eq!(c.guest_pids(&all).len(), TASKS);
    let shims = c.shim_pids();

    // containerd goes away; one guest is ended by a signal, one by the OOM killer.
    c.stop();
    let guest = c.guest_pids(std::slice::from_ref(&exits_while_away))[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guest),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the guest");
    let gone = c.wait_until(Duration::from_secs(30), || {
        c.guest_pids(&[exits_while_away.clone(), oom_while_away.clone()])
            .is_empty()
    });
    assert!(gone, "both guests ended while containerd was away");
    assert!(
        oom_started.elapsed() >= Duration::from_secs(8),
        "the OOM kill came too early"
    );
    // Long enough for the shims' retries to be spaced at their widest.
    std::thread::sleep(Duration::from_secs(3));
    c.start_again();

    // Every other task still runs, under the same shims.
    let running: Vec<String> = statuses(&c)
        .into_iter()
        .filter(|(_, s)| s == "RUNNING")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(running.len(), TASKS - 2, "{running:?}\n{}", c.log());
    assert_eq!(c.shim_pids(), shims, "the shims stayed");
    let delivered = c.wait_until(Duration::from_secs(30), || {
        let log = c.log();
        [
            format!("published /tasks/exit for {exits_while_away} at attempt"),
            format!("published /tasks/oom for {oom_while_away} at attempt"),
            format!("published /tasks/exit for {oom_while_away} at attempt"),
        ]
        .iter()
        .all(|line| log.contains(line))
    });
    let log = c.log();
    assert!(
        delivered,
        "the events were not published after the restart\n{log}"
    );
    let oom = position(&log, &format!("published /tasks/oom for {oom_while_away}"));
    let exit = position(&log, &format!("published /tasks/exit for {oom_while_away}"));
    assert!(oom < exit, "TaskOOM before TaskExit");
    // `ctr task delete` of one task gives the task's exit status: its own exit code on
    // containerd 1.6, a warning that names it on 2.x.
    for (task, want) in [(&exits_while_away, 143), (&oom_while_away, 137)] {
        let r = c.ctr(&["task", "delete", task]);
        let said = r.stderr.contains(&format!("exit code {want}"));
        assert!(r.code == want || (r.code == 0 && said), "{task}: {r:?}");
        assert_eq!(c.ctr(&["container", "delete", task]).code, 0);
    }

    // A shim killed with SIGKILL: its next delete leaves nothing of its task behind.
    let victim = id(0);
    let before: Vec<i32> = c.shim_pids();
    let shim = c
        .shim_pid_of(&victim)
        .unwrap_or_else(|| panic!("no shim serves {victim}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    // containerd sees the shim go, runs the binary's `delete` and drops the task.
    assert!(
        c.wait_until(Duration::from_secs(10), || {
            !statuses(&c)
                .iter()
                .any(|(t, s)| *t == victim && s == "RUNNING")
        }),
        "{victim} still RUNNING\n{}",
        c.log()
    );
    let deleted = Instant::now();
    let r = c.ctr(&["container", "delete", &victim]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    let clean = c.wait_until(Duration::from_secs(5), || {
        c.guest_pids(std::slice::from_ref(&victim)).is_empty()
            && !c.bundles().contains(&victim)
            && !c.mounts().iter().any(|m| m.contains(&victim))
    });
    assert!(
        clean,
        "{victim} left behind after {:?}: guests {:?}, bundles {:?}, mounts {:?}",
        deleted.elapsed(),
        c.guest_pids(std::slice::from_ref(&victim)),
        c.bundles(),
        c.mounts()
    );
    assert_eq!(c.shim_pids().len(), before.len() - 1);
}
