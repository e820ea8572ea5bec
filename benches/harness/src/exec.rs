//! Exec through CRI, as an exec probe or `kubectl exec` does it: CRI `ExecSync` of a small
//! program in a running container, called over gRPC on containerd's socket as the kubelet calls
//! it (`wasmcell_e2e::cri_client`), on the CRI containerd of the `pods` scenario, the sides in
//! turn each round:
//!
//! - wasmcell: the probe (`probe.wasm exit 0`, compiled once and cached) in a wasm container,
//!   in a cell of its own;
//! - runc: busybox `true` in a busybox container, through `runc exec`;
//! - the reference shim: tried once; runwasi's shims answer exec with NotImplemented.
//!
//! Then the same with 4 execs in flight at once on each side, on the same connection (an exec
//! must not hold up the shim's other requests).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_e2e::cri_client::CriClient;
use wasmcell_e2e::Containerd;

use crate::pods::{self, Side};
use crate::progress::Progress;
use crate::stats::Summary;

/// How many execs run at once in the parallel part.
const PARALLEL: usize = 4;

/// One ExecSync of `args` in container `id`, which must exit 0; how long it took.
fn exec_sync(cri: &CriClient, id: &str, args: &[&str]) -> Result<Duration, String> {
    let started = Instant::now();
    let answer = cri.exec_sync(id, args, 0)?;
    let took = started.elapsed();
    if answer.exit_code != 0 {
        return Err(format!(
            "exec in {id}: exit status {}: {}{}",
            answer.exit_code,
            String::from_utf8_lossy(&answer.stdout),
            String::from_utf8_lossy(&answer.stderr)
        ));
    }
    Ok(took)
}

/// The container id of the one container of pod `name`.
fn container_of(c: &Containerd, name: &str) -> Result<String, String> {
    let pod = c.crictl(&["pods", "--name", name, "-q"]).stdout;
    let pod = pod.trim();
    let r = c.crictl(&["ps", "-q", "--pod", pod]);
    let id = r.stdout.trim().to_owned();
    if id.is_empty() {
        return Err(format!("no container in pod {name}: {}", r.stderr));
    }
    Ok(id)
}

/// ExecSync latency per side, one at a time and 4 at once; prints the table.
pub fn measure(rounds: usize, stop: &dyn Fn() -> bool) -> Value {
    let c = pods::node(&[]);
    let result = measure_on(&c, rounds, stop);
    pods::remove_all(&c);
    result.unwrap_or_else(|e| {
        eprintln!("wasmcell-bench: exec: {e}\n{}", pods::tail(&c.log()));
        json!({ "error": e })
    })
}

fn measure_on(c: &Containerd, rounds: usize, stop: &dyn Fn() -> bool) -> Result<Value, String> {
    let cri = &CriClient::connect(&c.socket)?;
    let sides: [(&Side, &[&str]); 2] = [
        (pods::side("wasmcell"), &["/probe.wasm", "exit", "0"]),
        (pods::side("runc"), &["/bin/busybox", "true"]),
    ];
    let mut ids = Vec::new();
    for (side, _) in &sides {
        let name = format!("exec-{}", side.handler);
        pods::start(c, side, &name)?;
        ids.push(container_of(c, &name)?);
    }
    // The reference shim: whether it can exec at all.
    let reference = pods::side("reference");
    pods::start(c, reference, "exec-reference")?;
    let reference_id = container_of(c, "exec-reference")?;
    let reference_answer = match exec_sync(cri, &reference_id, &["/probe.wasm", "exit", "0"]) {
        Ok(took) => format!("exec works ({:.1} ms)", took.as_secs_f64() * 1000.0),
        Err(e) => {
            let e = e.lines().last().unwrap_or_default().trim().to_owned();
            format!("exec fails: {e}")
        }
    };
    // Warm-up: the probe is compiled into the cache by its container's start already; page
    // cache and the first runc exec.
    for ((_, args), id) in sides.iter().zip(&ids) {
        for _ in 0..3 {
            exec_sync(cri, id, args)?;
        }
    }

    let mut one: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let progress = Progress::new("exec through CRI".to_owned(), rounds * sides.len());
    for _ in 0..rounds {
        if stop() {
            return Err("interrupted".to_owned());
        }
        for (i, ((_, args), id)) in sides.iter().zip(&ids).enumerate() {
            one[i].push(exec_sync(cri, id, args)?);
            progress.advance(1);
        }
    }
    drop(progress);

    let mut four: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let per_thread = rounds.div_ceil(PARALLEL);
    let progress = Progress::new(
        format!("exec through CRI, {PARALLEL} at once"),
        per_thread * PARALLEL * sides.len(),
    );
    for (i, ((_, args), id)) in sides.iter().zip(&ids).enumerate() {
        if stop() {
            return Err("interrupted".to_owned());
        }
        let runs: Result<Vec<Vec<Duration>>, String> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..PARALLEL)
                .map(|_| {
                    s.spawn(|| {
                        (0..per_thread)
                            .map(|_| {
                                let took = exec_sync(cri, id, args);
                                progress.advance(1);
                                took
                            })
                            .collect::<Result<Vec<Duration>, String>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|_| Err("a thread panicked".into())))
                .collect()
        });
        four[i] = runs?.into_iter().flatten().collect();
    }
    drop(progress);

    let [wc, rc] = [0, 1].map(|i| Summary::of(&one[i]));
    let [wc4, rc4] = [0, 1].map(|i| Summary::of(&four[i]));
    println!(
        "\n{:<40} {:>10} {:>10} {:>10}",
        "ExecSync through CRI (gRPC)", "wasmcell", "runc", "wc/runc"
    );
    let row = |what: &str, w: f64, r: f64| {
        println!("{what:<40} {w:>10.1} {r:>10.1} {:>10.2}", w / r);
    };
    row("  median (ms)", wc.median, rc.median);
    row("  p99 (ms)", wc.p99, rc.p99);
    row(
        &format!("  {PARALLEL} at once, median (ms)"),
        wc4.median,
        rc4.median,
    );
    row(&format!("  {PARALLEL} at once, p99 (ms)"), wc4.p99, rc4.p99);
    println!("  reference shim: {reference_answer}");
    Ok(json!({
        "what": "CRI ExecSync over gRPC: probe.wasm exit 0 in a wasm container (wasmcell); busybox true in a busybox container (runc)",
        "one_at_a_time": {"wasmcell": wc.to_json(), "runc": rc.to_json(),
            "ratio_median_wasmcell_over_runc": wc.median / rc.median},
        "four_at_once": {"wasmcell": wc4.to_json(), "runc": rc4.to_json(),
            "ratio_median_wasmcell_over_runc": wc4.median / rc4.median},
        "reference": reference_answer,
    }))
}
