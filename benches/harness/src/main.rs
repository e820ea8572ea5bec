//! `make bench`: wasm containers under wasmcell, side by side with the same program under a
//! reference shim built on runwasi's `containerd-shim-wasm` (`benches/reference-shim`,
//! `io.containerd.wasmref.v1`) and a native busybox under runc, on a private containerd started
//! for the run and driven through its gRPC API (no `ctr` process in any figure).
//!
//! Scenarios (each one run interleaved, so drift of the machine hits every side alike):
//! - cold start: create + start + wait + delete of a hello program, one at a time (snapshot
//!   prepared on the unpacked image, container and task created, waited, removed): a WAT hello
//!   module under wasmcell (compile cache warm, as on a node that ran it before) and under the
//!   reference shim, against a busybox `echo` under `io.containerd.runc.v2`;
//! - isolation: what the kernel boundary adds to a wasmcell start (the shim's own figures for
//!   the cold starts above) against runc's own `create` + `start`, timed directly;
//! - large module: the first start of a large generated module (empty compile cache: it is
//!   compiled) against its second start (cache hit: deserialized), and the same two starts under
//!   the reference shim (which compiles a rootfs module on every start).
//!
//! Not yet measured (issue 5): throughput at 1/4/16 in parallel, the footprint of idle
//! containers, a componentize-py component, wasi:http.
//!
//! Ctrl-C (or SIGTERM) stops after the container in flight and removes everything the run made.
//!
//! Prints a table and writes the figures as JSON (`--json PATH`, default
//! `target/bench/results.json`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is right

mod isolation;
mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use serde_json::json;
use wasmcell_e2e::api::ContainerRequest;
use wasmcell_e2e::image::{defaults_of, ImageDefaults};
use wasmcell_e2e::{fixtures, Containerd, RUNTIME};

use crate::stats::Summary;

const HELLO: &str = "bench.wasmcell/hello:latest";
const BUSYBOX: &str = "bench.wasmcell/busybox:latest";
const LARGE: &str = "bench.wasmcell/large:latest";
/// The reference shim's runtime type (`benches/reference-shim`).
const REFERENCE: &str = "io.containerd.wasmref.v1";
const RUNC: &str = "io.containerd.runc.v2";

struct Options {
    rounds: usize,
    large_rounds: usize,
    json: PathBuf,
}

fn parse_args() -> Options {
    let mut o = Options {
        rounds: 30,
        large_rounds: 5,
        json: PathBuf::from("target/bench/results.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--rounds" => o.rounds = value().parse().unwrap_or_else(|_| usage("--rounds N")),
            "--large-rounds" => {
                o.large_rounds = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--large-rounds N"))
            }
            "--json" => o.json = PathBuf::from(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if o.rounds == 0 || o.large_rounds == 0 {
        usage("rounds must be at least 1");
    }
    o
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("wasmcell-bench: {problem}");
    }
    eprintln!("usage: wasmcell-bench [--rounds N (30)] [--large-rounds N (5)] [--json PATH]");
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

fn main() {
    let o = parse_args();
    watch_interrupts();
    if std::env::var_os("WASMCELL_BIN_DIR").is_none() {
        // The shim and the CLI sit next to this binary in target/release.
        let exe = std::env::current_exe().unwrap();
        std::env::set_var("WASMCELL_BIN_DIR", exe.parent().unwrap());
    }
    let c = Containerd::start();
    let hello = import(
        &c,
        HELLO,
        &["--wasm", &fixture(&c, "hello.wasm", fixtures::HELLO)],
    );
    let large = import(
        &c,
        LARGE,
        &["--wasm", &fixture(&c, "large.wasm", fixtures::LARGE)],
    );
    let busybox = defaults_of(&c.import_busybox(BUSYBOX));
    let api = c.api();

    let mut seq = 0usize;
    let mut run = |runtime: &str, image: &str, want: &str| -> Duration {
        seq += 1;
        let id = format!("bench-{seq}");
        let defaults = match image {
            HELLO => &hello,
            LARGE => &large,
            _ => &busybox,
        };
        let request = ContainerRequest {
            id: &id,
            image,
            runtime,
            spec: c.default_spec(&id, &defaults.args, &defaults.env, &defaults.cwd),
            parent: defaults.chain_id(),
            layers: vec![],
            plain_stdio: runtime == REFERENCE,
        };
        let started = Instant::now();
        let r = api.run(request, c.dir.path());
        let took = started.elapsed();
        match r {
            Ok(f) if f.exit == 0 && f.stdout.contains(want) => took,
            other => panic!("{runtime} {image}: {other:?}"),
        }
    };

    // Warm-up: the hello module's first start fills the compile cache; page cache for all.
    for _ in 0..3 {
        run(RUNTIME, HELLO, "hello from wasm");
        run(REFERENCE, HELLO, "hello from wasm");
        run(RUNC, BUSYBOX, "hello from busybox");
    }

    let (mut wasm, mut reference, mut native) = (Vec::new(), Vec::new(), Vec::new());
    progress("cold start", o.rounds);
    for _ in 0..o.rounds {
        wasm.push(run(RUNTIME, HELLO, "hello from wasm"));
        reference.push(run(REFERENCE, HELLO, "hello from wasm"));
        native.push(run(RUNC, BUSYBOX, "hello from busybox"));
        tick();
        if interrupted() {
            break;
        }
    }
    eprintln!();

    if interrupted() {
        return;
    }
    let isolation_steps = isolation::wasmcell_steps(&c.log());
    progress("runc create+start", o.rounds);
    let runc_create_start = isolation::runc_create_start(o.rounds);
    eprintln!();

    let (mut first, mut second) = (Vec::new(), Vec::new());
    let (mut ref_first, mut ref_second) = (Vec::new(), Vec::new());
    progress("large module", o.large_rounds);
    for _ in 0..o.large_rounds {
        std::fs::remove_dir_all(&c.cache).unwrap();
        first.push(run(RUNTIME, LARGE, "large module ok"));
        second.push(run(RUNTIME, LARGE, "large module ok"));
        ref_first.push(run(REFERENCE, LARGE, "large module ok"));
        ref_second.push(run(REFERENCE, LARGE, "large module ok"));
        tick();
        if interrupted() {
            break;
        }
    }
    eprintln!();
    if interrupted() {
        return;
    }
    let (compiled_ms, loaded_ms) = prepare_times(&c.log());

    let cold = (Summary::of(&wasm), Summary::of(&native));
    let cold_ref = Summary::of(&reference);
    let large = (Summary::of(&first), Summary::of(&second));
    let large_ref = (Summary::of(&ref_first), Summary::of(&ref_second));
    let env = environment();
    print_table(
        &env,
        &cold,
        &cold_ref,
        &large,
        &large_ref,
        &compiled_ms,
        &loaded_ms,
    );
    let (create, join, boundary, total) = isolation_steps;
    println!(
        "\n{:<34} {:>10} {:>10} {:>10}",
        "isolation at start (ms, median)", "wasmcell", "runc", "wc/runc"
    );
    println!("{:<34} {create:>10.2}", "  cgroup create (shim)");
    println!("{:<34} {join:>10.2}", "  cgroup join (shim)");
    println!(
        "{:<34} {boundary:>10.2}",
        "  cell boundary (ns, pivot, seccomp)"
    );
    println!(
        "{:<34} {total:>10.2} {:>10.2} {:>10.2}",
        "  total vs runc create+start",
        runc_create_start.median,
        total / runc_create_start.median
    );

    let report = json!({
        "environment": env,
        "driver": "containerd's gRPC API: snapshot prepare, container create, task create/start/wait/delete, container delete, snapshot remove",
        "reference": "containerd-shim-wasmref-v1 (benches/reference-shim): containerd-shim-wasm 1.0.1 + wasmtime 48.0.8",
        "cold_start_hello": {
            "wasmcell": cold.0.to_json(),
            "runc": cold.1.to_json(),
            "reference": cold_ref.to_json(),
            "ratio_median_wasmcell_over_runc": cold.0.median / cold.1.median,
            "ratio_median_wasmcell_over_reference": cold.0.median / cold_ref.median,
        },
        "isolation_at_start": {
            "wasmcell_median_ms": {
                "cgroup_create": create, "cgroup_join": join, "cell_boundary": boundary,
                "total": total,
            },
            "runc_create_start": runc_create_start.to_json(),
            "ratio_median_wasmcell_over_runc": total / runc_create_start.median,
        },
        "large_module": {
            "wasm_bytes": fixtures::LARGE.len(),
            "first_start": large.0.to_json(),
            "second_start": large.1.to_json(),
            "ratio_median_first_over_second": large.0.median / large.1.median,
            "reference_first_start": large_ref.0.to_json(),
            "reference_second_start": large_ref.1.to_json(),
            "ratio_median_reference_second_over_wasmcell_second": large_ref.1.median / large.1.median,
            "shim_prepare_ms": { "compiled": compiled_ms, "cache_hit": loaded_ms },
        },
    });
    if let Some(dir) = o.json.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&o.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nwritten: {}", o.json.display());
}

fn progress(what: &str, n: usize) {
    eprint!("{what}: {n} rounds ");
}

fn tick() {
    eprint!(".");
    let _ = std::io::stderr().flush();
}

/// The shim's own prepare times of the large module, from its log lines
/// `task ID: prepared /large.wasm (...): compiled in X ms` / `cache-hit in X ms`.
fn prepare_times(log: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut compiled, mut hit) = (Vec::new(), Vec::new());
    for line in log.lines().filter(|l| l.contains("prepared /large.wasm")) {
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

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

fn environment() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    json!({
        "date": first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": first_line("uname", &["-r"]),
        "containerd": first_line("containerd", &["--version"]),
        "runc": first_line("runc", &["--version"]),
        "wasmcell": env!("CARGO_PKG_VERSION"),
        "wasmtime": "48.0.8",
    })
}

fn print_table(
    env: &serde_json::Value,
    cold: &(Summary, Summary),
    cold_ref: &Summary,
    large: &(Summary, Summary),
    large_ref: &(Summary, Summary),
    compiled_ms: &[f64],
    loaded_ms: &[f64],
) {
    println!(
        "wasmcell bench, {} | {} x {} | kernel {} | {} | {}",
        env["date"].as_str().unwrap_or(""),
        env["cpus"],
        env["cpu"].as_str().unwrap_or(""),
        env["kernel"].as_str().unwrap_or(""),
        env["containerd"].as_str().unwrap_or(""),
        env["runc"].as_str().unwrap_or("")
    );
    println!(
        "driver: containerd's API, one container at a time (create + start + wait + delete)\n"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "cold start, hello (ms)", "wasmcell", "runc", "reference", "wc/runc", "wc/ref"
    );
    for (label, a, b, r) in [
        ("  median", cold.0.median, cold.1.median, cold_ref.median),
        ("  p99", cold.0.p99, cold.1.p99, cold_ref.p99),
        ("  min", cold.0.min, cold.1.min, cold_ref.min),
    ] {
        println!(
            "{label:<34} {a:>10.1} {b:>10.1} {r:>10.1} {:>10.2} {:>10.2}",
            a / b,
            a / r
        );
    }
    println!(
        "\n{:<34} {:>10} {:>10} {:>10}",
        format!("large module, {} KiB (ms)", fixtures::LARGE.len() / 1024),
        "1st start",
        "2nd start",
        "1st/2nd"
    );
    for (label, a, b) in [
        ("  wasmcell, median", large.0.median, large.1.median),
        ("  wasmcell, min", large.0.min, large.1.min),
        (
            "  reference, median",
            large_ref.0.median,
            large_ref.1.median,
        ),
        (
            "  shim prepare, median",
            stats::median(compiled_ms),
            stats::median(loaded_ms),
        ),
    ] {
        println!("{label:<34} {a:>10.1} {b:>10.1} {:>10.1}", a / b);
    }
    println!(
        "{:<34} {:>10.1}",
        "  2nd start, reference/wasmcell",
        large_ref.1.median / large.1.median
    );
}

/// Writes a fixture where `wasmcell image build` can read it.
fn fixture(c: &Containerd, name: &str, bytes: &[u8]) -> String {
    let path = c.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

/// Builds and imports (unpacked) an image; returns what a client takes from it.
fn import(c: &Containerd, name: &str, args: &[&str]) -> ImageDefaults {
    let mut all = vec!["--name", name];
    all.extend(args);
    defaults_of(&c.build_and_import(&all))
}

/// Set when SIGINT or SIGTERM arrives; the scenarios stop after the container in flight, and
/// returning from `main` drops the API client (its lease) and the private containerd, whose drop
/// deletes leftover tasks, kills shims, stops containerd and unmounts everything.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT and SIGTERM in every thread and waits for them in one of its own.
fn watch_interrupts() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().unwrap();
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("\nwasmcell-bench: {sig:?}: stopping after the container in flight, then removing everything it created");
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
