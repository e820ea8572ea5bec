//! `make bench`: wasm containers under wasmcell, side by side with the same program under a
//! reference shim built on runwasi's `containerd-shim-wasm` (`benches/reference-shim`,
//! `io.containerd.wasmref.v1`) and a native busybox under runc, on a private containerd started
//! for the run and driven through its gRPC API (no `ctr` process in any figure).
//!
//! Scenarios (each interleaved across the runtimes, so a drift of the machine hits every side
//! alike), in this order:
//! - `cold`: create + start + wait + delete of a hello program, one at a time (snapshot
//!   prepared on the unpacked image, container and task created, waited, removed): a WAT hello
//!   module under wasmcell (compile cache warm, as on a node that ran it before) and under the
//!   reference shim, against a busybox `echo` under `io.containerd.runc.v2`;
//! - `isolation`: what the kernel boundary adds to a wasmcell start (the shim's own figures for
//!   the cold starts above) against runc's own `create` + `start`, timed directly;
//! - `throughput`: N such tasks with 1, 4 and 16 in flight ([`throughput`]);
//! - `footprint`: 50 idle sleeping containers, PSS of the shims and all they started
//!   ([`footprint`]);
//! - `large`: the first start of a large generated module (empty compile cache: it is compiled)
//!   and its second start (cache hit), and the same under the reference shim, which compiles a
//!   rootfs module on every start; then the same for a componentize-py component (CPython in
//!   wasm, about 18 MiB), when `make large-component` has built it.
//!
//! - `http`: wasi:http serving against `wasmtime serve` ([`http`]);
//! - `exec`: CRI ExecSync of a wasm probe in a wasm container against `runc exec` of busybox
//!   `true` ([`exec`]);
//! - `names`: a name lookup from a cell against busybox's `nslookup` under runc, against one
//!   nameserver with the kubelet's resolv.conf ([`names`]);
//! - `nerdctl`: `nerdctl run --rm` of the wasm hello (a cell) against busybox under runc
//!   ([`nerdctl`]);
//! - `outgoing`: a handler's outgoing wasi:http requests to a Service's name against `wasmtime
//!   serve` to the address ([`outgoing`]).
//!
//! Each scenario prints its table when it ends; the JSON (`--json PATH`, default
//! `target/bench/results.json`) is written at the end, also after Ctrl-C (or SIGTERM), which
//! stops after the containers in flight and removes everything the run made.
// Only the CPU-time reader asks libc for the clock tick.
#![deny(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is right

mod exec;
mod footprint;
mod http;
mod isolation;
mod kubelet;
mod machine;
mod names;
mod nerdctl;
mod outgoing;
mod pods;
mod progress;
mod stats;
mod throughput;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use serde_json::{json, Map, Value};
use wasmcell_e2e::api::Api;
use wasmcell_e2e::image::defaults_of;
use wasmcell_e2e::{fixtures, Containerd, RUNTIME};

use crate::progress::Progress;
use crate::stats::Summary;
use crate::workload::{Workload, REFERENCE, RUNC};

const SCENARIOS: &[&str] = &[
    "cold",
    "isolation",
    "throughput",
    "footprint",
    "large",
    "pods",
    "kubelet",
    "http",
    "exec",
    "names",
    "nerdctl",
    "outgoing",
];

struct Options {
    rounds: usize,
    large_rounds: usize,
    tasks: usize,
    parallel: Vec<usize>,
    idle: usize,
    pods: usize,
    kubelet_pods: usize,
    component: PathBuf,
    http_component: PathBuf,
    scenarios: Vec<String>,
    json: PathBuf,
}

fn parse_args() -> Options {
    let mut o = Options {
        rounds: 30,
        large_rounds: 5,
        tasks: 1000,
        parallel: vec![1, 4, 16],
        idle: 50,
        pods: 10,
        kubelet_pods: 100,
        component: PathBuf::from("target/bench/large-component.wasm"),
        http_component: PathBuf::from("target/bench/http-handler.wasm"),
        scenarios: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        json: PathBuf::from("target/bench/results.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let number = |v: String| -> usize {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| usage(&format!("{a} wants a positive number, not {v:?}")))
        };
        match a.as_str() {
            "--rounds" => o.rounds = number(value()),
            "--large-rounds" => o.large_rounds = number(value()),
            "--tasks" => o.tasks = number(value()),
            "--parallel" => o.parallel = value().split(',').map(|v| number(v.to_owned())).collect(),
            "--idle" => o.idle = number(value()),
            "--pods" => o.pods = number(value()),
            "--kubelet-pods" => o.kubelet_pods = number(value()),
            "--component" => o.component = PathBuf::from(value()),
            "--http-component" => o.http_component = PathBuf::from(value()),
            "--scenarios" => {
                o.scenarios = value().split(',').map(str::to_owned).collect();
                if let Some(bad) = o
                    .scenarios
                    .iter()
                    .find(|s| !SCENARIOS.contains(&s.as_str()))
                {
                    usage(&format!("unknown scenario {bad:?}"));
                }
            }
            "--json" => o.json = PathBuf::from(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    o
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("wasmcell-bench: {problem}");
    }
    eprintln!(
        "usage: wasmcell-bench [--rounds N (30)] [--large-rounds N (5)] [--tasks N (1000)]\n\
         \x20      [--parallel P,P,.. (1,4,16)] [--idle N (50)] [--pods N (10)]\n\
         \x20      [--kubelet-pods N (100)] [--component PATH] [--http-component PATH]\n\
         \x20      [--scenarios {} (all)] [--json PATH]",
        SCENARIOS.join(",")
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

/// The three sides of every comparison, for one program: wasmcell, the reference shim, runc.
struct Sides {
    wasmcell: Workload,
    reference: Workload,
    runc: Workload,
}

impl Sides {
    fn all(&self) -> [&Workload; 3] {
        [&self.wasmcell, &self.reference, &self.runc]
    }
}

fn main() {
    let o = parse_args();
    watch_interrupts();
    if std::env::var_os("WASMCELL_BIN_DIR").is_none() {
        // The shims and the CLI sit next to this binary (`make build`: target/<triple>/release).
        let exe = std::env::current_exe().unwrap();
        std::env::set_var("WASMCELL_BIN_DIR", exe.parent().unwrap());
    }
    let wants = |s: &str| o.scenarios.iter().any(|x| x == s);
    let c = Containerd::start();
    let hello = import_wasm(&c, "hello", fixtures::HELLO);
    let probe = import_wasm(&c, "probe", fixtures::PROBE);
    let busybox = defaults_of(&c.import_busybox("bench.wasmcell/busybox:latest"));
    let wasm =
        |side, runtime, image: &'static str, d: &wasmcell_e2e::image::ImageDefaults| Workload {
            side,
            runtime,
            image,
            defaults: d.clone(),
            args: vec![],
            want: "hello from wasm",
        };
    let hello_sides = Sides {
        wasmcell: wasm("wasmcell", RUNTIME, hello.0, &hello.1),
        reference: wasm("reference", REFERENCE, hello.0, &hello.1),
        runc: Workload {
            side: "runc",
            runtime: RUNC,
            image: "bench.wasmcell/busybox:latest",
            defaults: busybox.clone(),
            args: vec![],
            want: "hello from busybox",
        },
    };
    let sleep = |w: &Workload, args: &[&str]| Workload {
        args: args.iter().map(|a| a.to_string()).collect(),
        want: "sleeping",
        ..w.clone()
    };
    let probe_sleep = ["/probe.wasm", "sleep", "3600"];
    let idle_sides = Sides {
        wasmcell: sleep(&wasm("wasmcell", RUNTIME, probe.0, &probe.1), &probe_sleep),
        reference: sleep(
            &wasm("reference", REFERENCE, probe.0, &probe.1),
            &probe_sleep,
        ),
        runc: sleep(
            &hello_sides.runc,
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "echo sleeping; exec busybox sleep 3600",
            ],
        ),
    };

    let api = c.api();
    let mut report = Map::new();
    report.insert("environment".into(), machine::environment());
    report.insert(
        "driver".into(),
        json!("containerd's gRPC API: snapshot prepare, container create, task create/start/wait/delete, container delete, snapshot remove"),
    );
    report.insert(
        "reference".into(),
        json!("containerd-shim-wasmref-v1 (benches/reference-shim): containerd-shim-wasm 1.0.1 + wasmtime 48.0.8"),
    );
    print_header(&report["environment"]);

    // Warm-up: the hello module's first start fills the compile cache; page cache for all.
    for _ in 0..3 {
        for w in hello_sides.all() {
            w.run_or_panic(&api, &c);
        }
    }

    if wants("cold") && !interrupted() {
        report.insert(
            "cold_start_hello".into(),
            cold_start(&c, &api, &hello_sides, o.rounds),
        );
    }
    if wants("isolation") && !interrupted() {
        report.insert("isolation_at_start".into(), isolation(&c, o.rounds));
    }
    if wants("throughput") && !interrupted() {
        report.insert(
            "throughput_hello".into(),
            throughput(&c, &hello_sides, o.tasks, &o.parallel),
        );
    }
    if wants("footprint") && !interrupted() {
        report.insert(
            "footprint_idle".into(),
            footprint(&c, &api, &idle_sides, o.idle),
        );
    }
    if wants("pods") && !interrupted() {
        report.insert(
            "pods_through_cri".into(),
            pods::measure(o.rounds, o.pods, &interrupted),
        );
    }
    if wants("kubelet") && !interrupted() {
        report.insert(
            "pods_through_the_kubelet".into(),
            kubelet::measure(o.rounds, o.kubelet_pods, &interrupted),
        );
    }
    if wants("large") && !interrupted() {
        let large = import_wasm(&c, "large", fixtures::LARGE);
        let module = Sides {
            wasmcell: Workload {
                want: "large module ok",
                ..wasm("wasmcell", RUNTIME, large.0, &large.1)
            },
            reference: Workload {
                want: "large module ok",
                ..wasm("reference", REFERENCE, large.0, &large.1)
            },
            runc: hello_sides.runc.clone(),
        };
        let label = format!(
            "large module, generated, {} KiB",
            fixtures::LARGE.len() / 1024
        );
        let figures = large_start(&c, &api, &module, &label, "/large.wasm", o.large_rounds);
        report.insert("large_module".into(), figures);
        match std::fs::read(&o.component) {
            Ok(bytes) if !interrupted() => {
                let comp = import_wasm(&c, "large-component", &bytes);
                let want = "large component ok";
                let component = Sides {
                    wasmcell: Workload {
                        want,
                        ..wasm("wasmcell", RUNTIME, comp.0, &comp.1)
                    },
                    reference: Workload {
                        want,
                        ..wasm("reference", REFERENCE, comp.0, &comp.1)
                    },
                    runc: hello_sides.runc.clone(),
                };
                let label = format!("componentize-py component, {} KiB", bytes.len() / 1024);
                let path = "/large-component.wasm";
                let figures = large_start(&c, &api, &component, &label, path, o.large_rounds);
                report.insert("large_component".into(), figures);
            }
            Ok(_) => {}
            Err(e) => eprintln!(
                "wasmcell-bench: no componentize-py component at {} ({e}): `make large-component` builds it; skipped",
                o.component.display()
            ),
        }
    }

    if wants("http") && !interrupted() {
        let hello = import_wasm(&c, "http-hello", fixtures::HTTP_HANDLER);
        let mut handlers = vec![http::Handler {
            label: "WAT hello handler",
            image: hello.0,
            path: "/http-hello.wasm",
            wasm: fixtures::HTTP_HANDLER,
        }];
        let python = std::fs::read(&o.http_component);
        match &python {
            Ok(bytes) => {
                let image = import_wasm(&c, "http-python", bytes).0;
                handlers.push(http::Handler {
                    label: "componentize-py handler",
                    image,
                    path: "/http-python.wasm",
                    wasm: bytes,
                });
            }
            Err(e) => eprintln!(
                "wasmcell-bench: no componentize-py handler at {} ({e}): `make http-handler` builds it; skipped",
                o.http_component.display()
            ),
        }
        report.insert(
            "wasi_http".into(),
            http::measure(&c, &handlers, &interrupted),
        );
    }
    if wants("exec") && !interrupted() {
        report.insert(
            "exec_through_cri".into(),
            exec::measure(o.rounds, &interrupted),
        );
    }

    if wants("names") && !interrupted() {
        let resolve = import_wasm(&c, "resolve", fixtures::RESOLVE);
        report.insert(
            "name_lookup".into(),
            names::measure(
                &c,
                &api,
                (resolve.0, &resolve.1),
                ("bench.wasmcell/busybox:latest", &busybox),
                o.rounds.min(10),
            ),
        );
    }

    if wants("nerdctl") && !interrupted() {
        report.insert(
            "nerdctl_run".into(),
            nerdctl::measure(
                &c,
                hello.0,
                "bench.wasmcell/busybox:latest",
                o.rounds.min(20),
            ),
        );
    }

    if wants("outgoing") && !interrupted() {
        let fetch = import_wasm(&c, "http-fetch", fixtures::HTTP_FETCH);
        report.insert(
            "outgoing_wasi_http".into(),
            outgoing::measure(&c, fetch.0, fixtures::HTTP_FETCH, &interrupted),
        );
    }

    report.insert("interrupted".into(), json!(interrupted()));
    if let Some(dir) = o.json.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&o.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nwritten: {}", o.json.display());
    // Returning drops the client (its leases) and the private containerd, whose drop removes
    // leftover tasks, kills shims, stops containerd and unmounts everything.
}

/// Cold start: one container at a time, the three sides in turn.
fn cold_start(c: &Containerd, api: &Api, sides: &Sides, rounds: usize) -> Value {
    let mut runs: [Vec<Duration>; 3] = Default::default();
    // Per side, how long each API call took: where a start spends its time.
    let mut steps: [Vec<(&'static str, Vec<Duration>)>; 3] = Default::default();
    api.take_steps();
    let progress = Progress::new("cold start", rounds * 3);
    for _ in 0..rounds {
        for ((w, r), by_step) in sides
            .all()
            .into_iter()
            .zip(runs.iter_mut())
            .zip(steps.iter_mut())
        {
            r.push(w.run_or_panic(api, c));
            for (step, took) in api.take_steps() {
                match by_step.iter_mut().find(|(s, _)| *s == step) {
                    Some((_, v)) => v.push(took),
                    None => by_step.push((step, vec![took])),
                }
            }
            progress.advance(1);
        }
        if interrupted() {
            break;
        }
    }
    drop(progress);
    let [wc, rf, rc] = runs.map(|r| Summary::of(&r));
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "cold start, hello (ms)", "wasmcell", "reference", "runc", "wc/ref", "wc/runc"
    );
    for (label, f) in [
        ("  median", (|s: &Summary| s.median) as fn(&Summary) -> f64),
        ("  p99", |s| s.p99),
        ("  min", |s| s.min),
    ] {
        let (a, r, b) = (f(&wc), f(&rf), f(&rc));
        println!(
            "{label:<34} {a:>10.1} {r:>10.1} {b:>10.1} {:>10.2} {:>10.2}",
            a / r,
            a / b
        );
    }
    println!("{:<34}", "  by API call, median:");
    let mut by_step = Map::new();
    for (step, _) in &steps[0] {
        let medians = steps.clone().map(|side| {
            side.iter()
                .find(|(s, _)| s == step)
                .map(|(_, v)| Summary::of(v).median)
                .unwrap_or(f64::NAN)
        });
        let [a, r, b] = medians;
        println!(
            "{:<34} {a:>10.1} {r:>10.1} {b:>10.1} {:>10.2} {:>10.2}",
            format!("    {step}"),
            a / r,
            a / b
        );
        by_step.insert(
            step.to_string(),
            json!({ "wasmcell": a, "reference": r, "runc": b }),
        );
    }
    json!({
        "wasmcell": wc.to_json(), "reference": rf.to_json(), "runc": rc.to_json(),
        "ratio_median_wasmcell_over_reference": wc.median / rf.median,
        "ratio_median_wasmcell_over_runc": wc.median / rc.median,
        "median_ms_by_api_call": by_step,
    })
}

/// The shim's isolation figures from the cold starts so far, against runc create + start.
fn isolation(c: &Containerd, rounds: usize) -> Value {
    let (create, join, boundary, total) = isolation::wasmcell_steps(&c.log());
    let runc = {
        let progress = Progress::new("runc create+start (timed directly)", rounds);
        isolation::runc_create_start(rounds, &progress)
    };
    println!(
        "\n{:<34} {:>10} {:>10} {:>10}",
        "isolation at start (ms, median)", "wasmcell", "runc", "wc/runc"
    );
    println!("{:<34} {create:>10.2}", "  cgroup create (shim)");
    println!("{:<34} {join:>10.2}", "  cgroup join (cell, itself)");
    println!(
        "{:<34} {boundary:>10.2}",
        "  cell boundary (ns, pivot, seccomp)"
    );
    println!(
        "{:<34} {total:>10.2} {:>10.2} {:>10.2}",
        "  total vs runc create+start",
        runc.median,
        total / runc.median
    );
    json!({
        "wasmcell_median_ms": {
            "cgroup_create": create, "cgroup_join": join, "cell_boundary": boundary, "total": total,
        },
        "runc_create_start": runc.to_json(),
        "ratio_median_wasmcell_over_runc": total / runc.median,
    })
}

/// Throughput at each parallelism level; one client per worker.
fn throughput(c: &Containerd, sides: &Sides, tasks: usize, levels: &[usize]) -> Value {
    let most = levels.iter().copied().max().unwrap_or(1);
    let apis: Vec<Api> = (0..most).map(|_| c.api()).collect();
    let workloads: Vec<Workload> = sides.all().into_iter().cloned().collect();
    let mut out = Map::new();
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
        format!("throughput, {tasks} hello tasks (/s)"),
        "wasmcell",
        "reference",
        "runc",
        "wc/ref",
        "wc/runc"
    );
    for &p in levels {
        if interrupted() {
            break;
        }
        let rates = throughput::measure(c, &apis, &workloads, tasks, p, &interrupted);
        let [wc, rf, rc] = [0, 1, 2].map(|i| rates[i].per_second());
        println!(
            "{:<34} {wc:>10.1} {rf:>10.1} {rc:>10.1} {:>10.2} {:>10.2}",
            format!("  {p} in parallel"),
            wc / rf,
            wc / rc
        );
        let failures: Vec<usize> = rates.iter().map(|r| r.failures).collect();
        println!(
            "{:<34} {:>10} {:>10} {:>10}",
            "    failures", failures[0], failures[1], failures[2]
        );
        let [mwc, mrf, mrc] = [0, 1, 2].map(|i| rates[i].machine_cpu_ms());
        println!(
            "{:<34} {mwc:>10.1} {mrf:>10.1} {mrc:>10.1} {:>10.2} {:>10.2}",
            "    CPU per task, ms",
            mwc / mrf,
            mwc / mrc
        );
        let [cwc, crf, crc] = [0, 1, 2].map(|i| rates[i].containerd_cpu_ms());
        println!(
            "{:<34} {cwc:>10.1} {crf:>10.1} {crc:>10.1}",
            "      of which containerd"
        );
        for e in rates.iter().flat_map(|r| r.first_errors.iter()) {
            println!("    failed: {e}");
        }
        out.insert(
            format!("parallel_{p}"),
            json!({
                "wasmcell": rates[0].to_json(), "reference": rates[1].to_json(),
                "runc": rates[2].to_json(),
                "ratio_wasmcell_over_reference": wc / rf, "ratio_wasmcell_over_runc": wc / rc,
            }),
        );
    }
    Value::Object(out)
}

/// The idle footprint of each side, one side after the other.
fn footprint(c: &Containerd, api: &Api, sides: &Sides, n: usize) -> Value {
    let shims = [
        "containerd-shim-wasmcell-v1",
        "containerd-shim-wasmref-v1",
        "containerd-shim-runc-v2",
    ];
    let mut measured = Vec::new();
    for (w, shim) in sides.all().into_iter().zip(shims) {
        let settle = Duration::from_secs(2);
        match footprint::measure(c, api, w, shim, n, settle, &interrupted) {
            Ok(f) => measured.push(f),
            Err(e) => {
                eprintln!("wasmcell-bench: footprint of {}: {e}", w.side);
                return json!({ "error": e });
            }
        }
    }
    let [wc, rf, rc] = [0, 1, 2].map(|i| measured[i].clone());
    println!(
        "\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
        format!("footprint, {n} idle containers"),
        "wasmcell",
        "reference",
        "runc",
        "wc/ref",
        "wc/runc"
    );
    let (a, r, b) = (
        wc.per_container_kib(),
        rf.per_container_kib(),
        rc.per_container_kib(),
    );
    println!(
        "{:<34} {a:>10.0} {r:>10.0} {b:>10.0} {:>10.2} {:>10.2}",
        "  PSS per container (KiB)",
        a / r,
        a / b
    );
    let mib = |f: &footprint::Footprint| f.pss_kib as f64 / 1024.0;
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>10.1}",
        "  PSS total (MiB)",
        mib(&wc),
        mib(&rf),
        mib(&rc)
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "  shims / processes",
        format!("{}/{}", wc.shims, wc.processes),
        format!("{}/{}", rf.shims, rf.processes),
        format!("{}/{}", rc.shims, rc.processes)
    );
    json!({
        "wasmcell": wc.to_json(), "reference": rf.to_json(), "runc": rc.to_json(),
        "ratio_per_container_wasmcell_over_reference": a / r,
        "ratio_per_container_wasmcell_over_runc": a / b,
    })
}

/// First start (empty compile cache) and second start of a large program, wasmcell and the
/// reference shim in turn; `path` is the program's path in the image, as the shim logs it.
fn large_start(
    c: &Containerd,
    api: &Api,
    sides: &Sides,
    label: &str,
    path: &str,
    rounds: usize,
) -> Value {
    let mut runs: [Vec<Duration>; 4] = Default::default();
    let progress = Progress::new(label, rounds * 4);
    for _ in 0..rounds {
        std::fs::remove_dir_all(&c.cache).unwrap();
        for (i, w) in [
            &sides.wasmcell,
            &sides.wasmcell,
            &sides.reference,
            &sides.reference,
        ]
        .into_iter()
        .enumerate()
        {
            runs[i].push(w.run_or_panic(api, c));
            progress.advance(1);
        }
        if interrupted() {
            break;
        }
    }
    drop(progress);
    let (compiled, loaded) = prepare_times(&c.log(), path);
    let [first, second, ref_first, ref_second] = runs.map(|r| Summary::of(&r));
    println!(
        "\n{:<34} {:>10} {:>10} {:>10}",
        format!("{label} (ms)"),
        "1st start",
        "2nd start",
        "1st/2nd"
    );
    for (label, a, b) in [
        ("  wasmcell, median", first.median, second.median),
        ("  wasmcell, min", first.min, second.min),
        ("  reference, median", ref_first.median, ref_second.median),
        (
            "  shim prepare, median",
            stats::median(&compiled),
            stats::median(&loaded),
        ),
    ] {
        println!("{label:<34} {a:>10.1} {b:>10.1} {:>10.1}", a / b);
    }
    let ratio = ref_second.median / second.median;
    println!("{:<34} {ratio:>10.1}", "  2nd start, reference/wasmcell");
    json!({
        "first_start": first.to_json(),
        "second_start": second.to_json(),
        "ratio_median_first_over_second": first.median / second.median,
        "reference_first_start": ref_first.to_json(),
        "reference_second_start": ref_second.to_json(),
        "ratio_median_reference_second_over_wasmcell_second": ratio,
        "shim_prepare_ms": { "compiled": compiled, "cache_hit": loaded },
    })
}

/// The shim's own prepare times of the program at `path`, from its log lines
/// `task ID: prepared PATH (...): compiled in X ms` / `cache-hit in X ms`.
fn prepare_times(log: &str, path: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut compiled, mut hit) = (Vec::new(), Vec::new());
    let marker = format!("prepared {path} ");
    for line in log.lines().filter(|l| l.contains(&marker)) {
        let ms = |marker: &str| -> Option<f64> {
            let rest = &line[line.find(marker)? + marker.len()..];
            rest.split(" ms").next()?.trim().parse().ok()
        };
        if let Some(v) = ms("compiled in ") {
            compiled.push(v);
        } else if let Some(v) = ms("cache-hit in ") {
            hit.push(v);
        }
    }
    (compiled, hit)
}

fn print_header(env: &Value) {
    println!(
        "wasmcell bench, {} | {} x {} | kernel {} | {} | {}",
        env["date"].as_str().unwrap_or(""),
        env["cpus"],
        env["cpu"].as_str().unwrap_or(""),
        env["kernel"].as_str().unwrap_or(""),
        env["containerd"].as_str().unwrap_or(""),
        env["runc"].as_str().unwrap_or("")
    );
    println!("driver: containerd's API (create + start + wait + delete per task)");
}

/// Builds and imports (unpacked) an image `bench.wasmcell/NAME:latest` holding `wasm` as
/// `/NAME.wasm`; its name and what a client takes from it.
fn import_wasm(
    c: &Containerd,
    name: &str,
    wasm: &[u8],
) -> (&'static str, wasmcell_e2e::image::ImageDefaults) {
    let file = c.dir.path().join(format!("{name}.wasm"));
    std::fs::write(&file, wasm).unwrap();
    let image: &'static str = format!("bench.wasmcell/{name}:latest").leak();
    let tar = c.build_and_import(&["--name", image, "--wasm", &file.to_string_lossy()]);
    (image, defaults_of(&tar))
}

/// Set when SIGINT or SIGTERM arrives; the scenarios stop after the containers in flight, and
/// returning from `main` drops the API clients (their leases) and the private containerd.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT and SIGTERM in every thread and waits for them in one of its own.
fn watch_interrupts() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().unwrap();
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("\nwasmcell-bench: {sig:?}: stopping after the containers in flight, then removing everything it created");
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
