//! Pods through CRI, as the kubelet starts them: a private containerd with its CRI plugin and
//! three runtime handlers (wasmcell's `wasmtime`, the reference shim's `wasmref`, and runc),
//! the same pod shape on each: a pause sandbox and one container that prints a line and
//! sleeps (the probe's `sleep` on the wasm handlers, busybox's on runc). wasmcell holds its
//! pods' sandboxes in pause cells; a fourth side is wasmcell with `WASMCELL_PAUSE=runc` (the
//! pause image's program under runc), on a second containerd started
//! with that environment, which its shims inherit.
//!
//! - **Pod start**: `crictl run` (RunPodSandbox + CreateContainer + StartContainer) until it
//!   returns, the handlers in turn each round. crictl's own cost (a process start and a
//!   connection: the median of `crictl version`, one RPC) is measured too and shown; it is in
//!   every side's figure alike.
//! - **Footprint per pod**: `n` pods of a handler up at once, then the PSS of its shims and all
//!   their descendants (pause, cells or container processes), divided by `n`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_e2e::cri::{cri_config, handler_section};
use wasmcell_e2e::{bin_dir, fixtures, Containerd};

use crate::footprint::{memory_kib, with_descendants};
use crate::progress::Progress;
use crate::stats::Summary;

/// One side of the comparison: a CRI runtime handler, the shim binary that serves it, and the
/// container it runs.
pub struct Side {
    pub name: &'static str,
    pub handler: &'static str,
    shim: &'static str,
    image: &'static str,
    args: &'static [&'static str],
    /// Served by the second containerd, whose shims get `WASMCELL_PAUSE=runc`.
    pause_by_runc: bool,
}

const SIDES: [Side; 4] = [
    Side {
        name: "wasmcell",
        handler: "wasmtime",
        shim: "containerd-shim-wasmcell-v1",
        image: "bench.wasmcell/probe:1",
        args: &["sleep", "3600"],
        pause_by_runc: false,
    },
    Side {
        name: "wasmcell, pause under runc",
        handler: "wasmtime",
        shim: "containerd-shim-wasmcell-v1",
        image: "bench.wasmcell/probe:1",
        args: &["sleep", "3600"],
        pause_by_runc: true,
    },
    Side {
        name: "reference",
        handler: "wasmref",
        shim: "containerd-shim-wasmref-v1",
        image: "bench.wasmcell/probe:1",
        args: &["sleep", "3600"],
        pause_by_runc: false,
    },
    Side {
        name: "runc",
        handler: "runc",
        shim: "containerd-shim-runc-v2",
        image: "bench.wasmcell/busybox:1",
        args: &["sleep", "3600"],
        pause_by_runc: false,
    },
];

/// The side named `name` (its pause in a cell where it is wasmcell's).
pub fn side(name: &str) -> &'static Side {
    SIDES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no side {name}"))
}

/// The CRI containerd, with the images imported; its shims get `env`.
pub fn node(env: &[(&str, &str)]) -> Containerd {
    let dir = Containerd::new_dir();
    let socket = dir.path().join("containerd.sock");
    let plugin = if wasmcell_e2e::containerd_major() >= 2 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    std::fs::write(
        dir.path().join("config.toml"),
        cri_config(dir.path(), &socket)
            + &handler_section()
            + &format!(
                "\n[plugins.\"{plugin}\".containerd.runtimes.wasmref]\n  \
                 runtime_type = \"io.containerd.wasmref.v1\"\n"
            ),
    )
    .expect("write the CRI config");
    let c = Containerd::start_in(dir, env, &[bin_dir()]);
    c.import_pause();
    let probe = c.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).expect("write probe.wasm");
    let tar = c.build_image(
        "probe.tar",
        &[
            "--name",
            "bench.wasmcell/probe:1",
            "--wasm",
            probe.to_str().unwrap_or_default(),
            "--extra-platform",
            "linux/amd64",
        ],
    );
    c.import_cri(&tar);
    c.import_busybox_cri("bench.wasmcell/busybox:1");
    c
}

/// Writes the pod and container configs of pod `name` of `side`; their paths.
fn configs(c: &Containerd, side: &Side, name: &str) -> (String, String) {
    let dir = c.dir.path().join("pods").join(name);
    std::fs::create_dir_all(&dir).expect("pod dir");
    let pod = json!({
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{name}")},
        "log_directory": dir.join("logs").display().to_string(),
        "linux": {"security_context": {"namespace_options": {"network": 2}}}
    });
    let container = json!({
        "metadata": {"name": "main"},
        "image": {"image": side.image},
        "args": side.args,
        "log_path": "main.log",
        "linux": {}
    });
    let (p, k) = (dir.join("pod.json"), dir.join("container.json"));
    std::fs::write(&p, pod.to_string()).expect("pod.json");
    std::fs::write(&k, container.to_string()).expect("container.json");
    (p.display().to_string(), k.display().to_string())
}

/// Starts pod `name` of `side`; how long `crictl run` took.
pub fn start(c: &Containerd, side: &Side, name: &str) -> Result<Duration, String> {
    let (pod, container) = configs(c, side, name);
    let started = Instant::now();
    // --no-pull: the images are imported; crictl run would otherwise pull them first.
    let r = c.crictl(&[
        "run",
        "--no-pull",
        "--runtime",
        side.handler,
        &container,
        &pod,
    ]);
    let took = started.elapsed();
    if r.code != 0 {
        return Err(format!(
            "{} pod {name}: crictl run: {}",
            side.name, r.stderr
        ));
    }
    Ok(took)
}

/// Stops and removes every pod of this containerd.
pub fn remove_all(c: &Containerd) {
    let r = c.crictl(&["rmp", "--force", "--all"]);
    if r.code != 0 {
        eprintln!("\nwasmcell-bench: removing pods: {}", r.stderr);
    }
    let _ = std::fs::remove_dir_all(c.dir.path().join("pods"));
}

/// The median time of `crictl version`: one process start, one connection, one RPC.
fn crictl_cost(c: &Containerd, rounds: usize) -> Summary {
    let runs: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            c.crictl(&["version"]);
            t.elapsed()
        })
        .collect();
    Summary::of(&runs)
}

/// Pod start and footprint per pod, for each side; prints the table and returns the figures.
pub fn measure(rounds: usize, per_pod: usize, stop: &dyn Fn() -> bool) -> Value {
    let nodes = [node(&[]), node(&[("WASMCELL_PAUSE", "runc")])];
    let result = measure_on(&nodes, rounds, per_pod, stop);
    for c in &nodes {
        remove_all(c);
    }
    match result {
        Ok(v) => v,
        Err(e) => {
            let logs: Vec<String> = nodes.iter().map(|c| tail(&c.log())).collect();
            eprintln!("wasmcell-bench: pods: {e}\n{}", logs.join("\n--\n"));
            json!({ "error": e })
        }
    }
}

/// The containerd that serves `side`.
fn node_of<'a>(nodes: &'a [Containerd; 2], side: &Side) -> &'a Containerd {
    &nodes[usize::from(side.pause_by_runc)]
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn measure_on(
    nodes: &[Containerd; 2],
    rounds: usize,
    n: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Value, String> {
    let remove_all_pods = || nodes.iter().for_each(remove_all);
    // Warm-up: the first wasm start fills the compile cache; page cache for all.
    for (k, side) in SIDES.iter().enumerate() {
        start(node_of(nodes, side), side, &format!("warm-{k}"))?;
    }
    remove_all_pods();

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); SIDES.len()];
    let progress = Progress::new("pods, start through CRI".to_owned(), rounds * SIDES.len());
    for round in 0..rounds {
        if stop() {
            return Err("interrupted".to_owned());
        }
        for (i, side) in SIDES.iter().enumerate() {
            times[i].push(start(
                node_of(nodes, side),
                side,
                &format!("start-{i}-{round}"),
            )?);
            progress.advance(1);
        }
        remove_all_pods();
    }
    drop(progress);
    let crictl = crictl_cost(&nodes[0], rounds);
    let starts: Vec<Summary> = times.iter().map(|t| Summary::of(t)).collect();

    let mut pss = Vec::new();
    for side in &SIDES {
        if stop() {
            return Err("interrupted".to_owned());
        }
        let c = node_of(nodes, side);
        let progress = Progress::new(format!("pods, {n} idle {}", side.name), n);
        for k in 0..n {
            start(c, side, &format!("idle-{k}"))?;
            progress.advance(1);
        }
        drop(progress);
        std::thread::sleep(Duration::from_secs(2));
        let shims = c.shim_pids_of(side.shim);
        let kib: u64 = with_descendants(&shims)
            .iter()
            .map(|pid| memory_kib(*pid).0)
            .sum();
        pss.push(kib as f64 / n as f64);
        remove_all(c);
    }

    // wasmcell (pause cell), wasmcell (pause under runc), reference, runc.
    let [wc, wr, rf, rc] = [0, 1, 2, 3].map(|i| starts[i]);
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "pods through CRI", "wasmcell", "reference", "runc", "wc/ref", "wc/runc"
    );
    let row = |what: &str, w: f64, r: f64, n: f64| {
        println!(
            "{what:<34} {w:>10.1} {r:>10.1} {n:>10.1} {:>10.2} {:>10.2}",
            w / r,
            w / n
        );
    };
    row("  pod start, median (ms)", wc.median, rf.median, rc.median);
    row(
        "    with its pause under runc",
        wr.median,
        rf.median,
        rc.median,
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>10.1}",
        "  pod start, p99 (ms)", wc.p99, rf.p99, rc.p99
    );
    println!(
        "{:<34} {:>10.1}   (in every figure above alike)",
        "  of which crictl itself (ms)", crictl.median
    );
    row(
        &format!("  PSS per idle pod, {n} pods (KiB)"),
        pss[0],
        pss[2],
        pss[3],
    );
    row("    with its pause under runc", pss[1], pss[2], pss[3]);
    Ok(json!({
        "pod_shape": "pause sandbox + one container printing a line and sleeping (probe.wasm on the wasm handlers, busybox on runc)",
        "start": {"wasmcell": wc.to_json(), "wasmcell_pause_under_runc": wr.to_json(),
                  "reference": rf.to_json(), "runc": rc.to_json(),
                  "crictl_version": crictl.to_json(),
                  "ratio_median_wasmcell_over_reference": wc.median / rf.median,
                  "ratio_median_wasmcell_over_runc": wc.median / rc.median,
                  "ratio_median_wasmcell_pause_under_runc_over_runc": wr.median / rc.median},
        "footprint_per_pod_pss_kib": {"pods": n, "wasmcell": pss[0],
                  "wasmcell_pause_under_runc": pss[1], "reference": pss[2], "runc": pss[3],
                  "ratio_wasmcell_over_reference": pss[0] / pss[2],
                  "ratio_wasmcell_over_runc": pss[0] / pss[3]},
    }))
}
