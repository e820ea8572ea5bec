//! nerdctl against the containerd under test: `run --rm`, `run -d`, `logs`, `stop`, `rm` of a
//! wasm image with `--runtime io.containerd.wasmcell.v1`. nerdctl puts OCI hooks in every spec
//! (its network setup and clean-up), so these containers run through the runc fallback, which
//! runs the hooks; and `-d` sends the output to nerdctl's own `binary://` logger, which exits
//! only once it sees the task's exit.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use wasmcell_e2e::{bin_dir, fixtures, Containerd, Ran, RUNTIME};

const IMG: &str = "wasmcell.test/probe:1";

/// `WASMCELL_NERDCTL` (`make test` builds the pinned nerdctl), else `nerdctl` on PATH.
fn nerdctl_bin() -> PathBuf {
    std::env::var_os("WASMCELL_NERDCTL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "nerdctl".into())
}

fn nerdctl(c: &Containerd, args: &[&str]) -> Ran {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["--kill-after=5", "120"])
        .arg(nerdctl_bin())
        .arg("--address")
        .arg(&c.socket)
        .args(["--namespace", "default", "--cgroup-manager", "cgroupfs"])
        .arg("--data-root")
        .arg(c.dir.path().join("nerdctl"))
        // Its CNI configuration too stays in the test's directory (unused with --net none).
        .arg("--cni-netconfpath")
        .arg(c.dir.path().join("cni/conf"))
        .arg("--cni-path")
        .arg(c.dir.path().join("cni/bin"))
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (build it with `make tools`, or set WASMCELL_NERDCTL)",
                nerdctl_bin().display()
            )
        });
    out.into()
}

/// Builds the probe image (with `extra` image build flags) and loads it with nerdctl.
fn load_probe(c: &Containerd, extra: &[&str]) {
    let probe = c.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    let mut args = vec!["--name", IMG, "--wasm", probe.to_str().unwrap()];
    args.extend_from_slice(extra);
    let tar = c.build_image("probe.tar", &args);
    let r = nerdctl(c, &["load", "--all-platforms", "-i", tar.to_str().unwrap()]);
    assert_eq!(r.code, 0, "load: {r:?}");
}

fn run_flags() -> Vec<&'static str> {
    vec![
        "--runtime",
        RUNTIME,
        "--net",
        "none",
        "--platform",
        "wasi/wasm",
    ]
}

#[test]
fn nerdctl_runs_logs_stops_and_removes_a_wasm_container() {
    let c = Containerd::start();
    load_probe(&c, &["--arg", "hello"]);

    // run --rm: output and exit status.
    let mut args = vec!["run", "--rm"];
    args.extend(run_flags());
    args.push(IMG);
    let r = nerdctl(&c, &args);
    assert_eq!(r.code, 0, "run --rm: {r:?}\n{}", c.log());
    assert!(r.stdout.contains("hello from C"), "{r:?}");
    let mut args = vec!["run", "--rm"];
    args.extend(run_flags());
    args.extend([IMG, "exit", "7"]);
    let r = nerdctl(&c, &args);
    assert_eq!(r.code, 7, "{r:?}");

    // run -d, logs, stop, rm.
    let mut args = vec!["run", "-d", "--name", "sleeper"];
    args.extend(run_flags());
    args.extend([IMG, "sleep", "600"]);
    let r = nerdctl(&c, &args);
    assert_eq!(r.code, 0, "run -d: {r:?}\n{}", c.log());
    let logged = c.wait_until(std::time::Duration::from_secs(10), || {
        nerdctl(&c, &["logs", "sleeper"])
            .stdout
            .contains("sleeping")
    });
    assert!(logged, "logs: {:?}", nerdctl(&c, &["logs", "sleeper"]));
    let r = nerdctl(&c, &["stop", "-t", "5", "sleeper"]);
    assert_eq!(r.code, 0, "stop: {r:?}\n{}", c.log());
    let r = nerdctl(&c, &["ps", "-a"]);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("sleeper") && l.contains("Exited (143)")),
        "SIGTERM ended it: {r:?}"
    );
    let r = nerdctl(&c, &["rm", "sleeper"]);
    assert_eq!(r.code, 0, "rm: {r:?}");
    let r = nerdctl(&c, &["ps", "-a", "-q"]);
    assert_eq!(r.stdout.trim(), "", "nothing left: {r:?}");

    // Nothing of those containers is left on the node.
    let gone = c.wait_until(std::time::Duration::from_secs(10), || {
        c.shim_pids().is_empty() && c.bundles().is_empty() && c.runc_containers().is_empty()
    });
    assert!(
        gone,
        "shims {:?}, bundles {:?}, runc {:?}",
        c.shim_pids(),
        c.bundles(),
        c.runc_containers()
    );
}

#[test]
fn a_task_exit_is_not_held_up_by_a_logger_that_waits_for_it() {
    // nerdctl's logger exits only once containerd reports the task's exit: the exit must
    // come as soon as the logger has read the output, not when a drain bound runs out.
    let c = Containerd::start();
    load_probe(&c, &[]);
    let mut args = vec!["run", "-d", "--name", "quick"];
    args.extend(run_flags());
    args.extend([IMG, "hello"]);
    let started = std::time::Instant::now();
    let r = nerdctl(&c, &args);
    assert_eq!(r.code, 0, "{r:?}");
    let exited = c.wait_until(std::time::Duration::from_secs(10), || {
        nerdctl(&c, &["ps", "-a"])
            .stdout
            .lines()
            .any(|l| l.contains("quick") && l.contains("Exited (0)"))
    });
    assert!(exited, "{:?}", nerdctl(&c, &["ps", "-a"]));
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(4),
        "the exit took {took:?}: held up by the logger (the drain bound is 5 s)"
    );
    let r = nerdctl(&c, &["logs", "quick"]);
    assert!(r.stdout.contains("hello from C"), "{r:?}");
    assert_eq!(nerdctl(&c, &["rm", "quick"]).code, 0);
}
