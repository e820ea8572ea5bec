//! `nerdctl`: `nerdctl run --rm` of the wasm hello image (in a cell: nerdctl's OCI hooks, which
//! it puts into every spec, run by the shim) against `nerdctl run --rm` of busybox `echo` under
//! runc, each the whole CLI run timed, `--net none` (no CNI), interleaved.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_e2e::{Containerd, RUNTIME};

use crate::progress::Progress;
use crate::stats::Summary;

/// The pinned nerdctl (`WASMCELL_NERDCTL`, which `make bench` sets), else `nerdctl` on PATH.
fn nerdctl_bin() -> PathBuf {
    std::env::var_os("WASMCELL_NERDCTL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "nerdctl".into())
}

/// One `nerdctl run --rm` with `args`; how long it took.
fn run(c: &Containerd, data: &Path, args: &[&str], want: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new(nerdctl_bin())
        .arg("--address")
        .arg(&c.socket)
        .args(["--namespace", "default", "--cgroup-manager", "cgroupfs"])
        .arg("--data-root")
        .arg(data)
        .args(["run", "--rm", "--net", "none"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", nerdctl_bin().display()));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(want),
        "nerdctl run {args:?}: {out:?}"
    );
    took
}

/// Measures the scenario: `hello` is the wasm hello image, `busybox` the busybox image.
pub fn measure(c: &Containerd, hello: &str, busybox: &str, rounds: usize) -> Value {
    let data = c.dir.path().join("nerdctl-bench");
    let wasm_args = ["--runtime", RUNTIME, "--platform", "wasi/wasm", hello];
    let runc_args = [busybox, "/bin/busybox", "echo", "hello from busybox"];
    // Warm-up: nerdctl's own state, the page cache.
    run(c, &data, &wasm_args, "hello from wasm");
    run(c, &data, &runc_args, "hello from busybox");
    let progress = Progress::new("nerdctl run --rm", rounds * 2);
    let (mut cell, mut runc) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        cell.push(run(c, &data, &wasm_args, "hello from wasm"));
        runc.push(run(c, &data, &runc_args, "hello from busybox"));
        progress.advance(2);
    }
    drop(progress);
    let (wc, rc) = (Summary::of(&cell), Summary::of(&runc));
    let ratio = wc.median / rc.median;
    println!(
        "\n{:<44} {:>10} {:>14} {:>10}",
        "nerdctl run --rm, hello (ms)", "wasmcell", "busybox (runc)", "wc/runc"
    );
    println!(
        "{:<44} {:>10.1} {:>14.1} {:>10.2}",
        "  median", wc.median, rc.median, ratio
    );
    json!({
        "method": "the whole `nerdctl run --rm --net none` timed; wasm hello in a cell (nerdctl's hooks run by the shim) against busybox echo under runc, interleaved",
        "wasmcell": wc.to_json(),
        "runc": rc.to_json(),
        "ratio_median": ratio,
    })
}
