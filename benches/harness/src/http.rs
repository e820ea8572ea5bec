//! `http`: serving `wasi:http/proxy` components. For each handler (the WAT hello handler of the
//! tests, and the componentize-py handler when `make http-handler` has built it):
//!
//! - requests per second and latency (p50, p99) at 1, 16 and 64 connections, HTTP/1.1 with
//!   keep-alive, from `wrk` (Debian's), for 10 s each after a 2 s warm-up: wasmcell (a container
//!   under containerd, `--net-host`, serving on a loopback port; its output to a `file://` log)
//!   against `wasmtime serve` (wasmtime-cli of the same wasmtime version, `WASMCELL_WASMTIME_CLI`;
//!   its output to a file; `-Scli`, the whole of WASI 0.2 as wasmcell gives it) on the same
//!   component, three loads each, interleaved, medians reported;
//! - the same wasmcell container again with the pod's metrics on (`wasmcell.dev/metrics-addr`),
//!   in the same interleaved loads: what counting the requests costs;
//! - the first response after Start: from `ctr task start` returning to the first 200 (the
//!   socket is bound before Start, so no connection is refused), ten times, compile cache warm.
//!
//! The reference shim is not a side here: it does not serve wasi:http (its runwasi engine
//! is a command runner, `benches/reference-shim`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_e2e::{Containerd, RUNTIME};

use crate::stats::Summary;

/// Connection counts of the load.
const CONNECTIONS: [usize; 3] = [1, 16, 64];
/// How long each load runs, after its warm-up.
const LOAD_SECS: u64 = 10;
const WARM_UP_SECS: u64 = 2;
/// Loads per connection count and side, interleaved; the medians are reported (a small
/// machine running wrk beside the server varies much from one load to the next).
const ROUNDS: usize = 3;

/// One handler to serve: its label, its image, its path in the image, its component.
pub struct Handler<'a> {
    pub label: &'a str,
    pub image: &'a str,
    pub path: &'a str,
    pub wasm: &'a [u8],
}

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Load {
    /// The load with the median requests per second of `loads` (its latencies with it), and
    /// the errors of all.
    pub(crate) fn median_of(loads: &[Load]) -> Load {
        let mut sorted = loads.to_vec();
        sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        Load {
            errors: loads.iter().map(|l| l.errors).sum(),
            ..sorted[sorted.len() / 2]
        }
    }

    pub(crate) fn to_json(self) -> Value {
        json!({"requests_per_second": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
               "non_2xx_or_socket_errors": self.errors})
    }
}

/// A free loopback address.
pub(crate) fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// One GET on a new connection; whether it got a 200.
fn get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn wait_until_serving(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !get_ok(addr) {
        assert!(Instant::now() < deadline, "{what} did not serve on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A duration of wrk's output (`812.00us`, `1.20ms`, `2.00s`) in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn wrk(addr: SocketAddr, connections: usize, secs: u64) -> Load {
    wrk_path(addr, "/", connections, secs)
}

/// wrk's load on `path` of `addr`.
pub(crate) fn wrk_path(addr: SocketAddr, path: &str, connections: usize, secs: u64) -> Load {
    let out = Command::new("wrk")
        .arg(format!("-t{}", connections.min(2)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run wrk (apt install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("wrk said:\n{text}"));
    let p50_ms = field("50%").and_then(|v| millis(&v)).unwrap_or(f64::NAN);
    let p99_ms = field("99%").and_then(|v| millis(&v)).unwrap_or(f64::NAN);
    let non_2xx = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let socket: u64 = field("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Load {
        rps,
        p50_ms,
        p99_ms,
        errors: non_2xx + socket,
    }
}

/// `wasmtime serve` of `component` on `addr`, its output to `log`.
pub(crate) fn wasmtime_serve(cli: &Path, component: &Path, addr: SocketAddr, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(cli)
        .arg("serve")
        // The whole of WASI 0.2, as wasmcell gives a served component (componentize-py's
        // components import wasi:cli/environment, which the proxy world lacks).
        .arg("-Scli")
        .arg("--addr")
        .arg(addr.to_string())
        .arg(component)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {} serve: {e}", cli.display()))
}

/// Measures `handlers`; a `skipped` entry (with a message) when wrk or wasmtime-cli is missing.
pub fn measure(c: &Containerd, handlers: &[Handler<'_>], interrupted: &dyn Fn() -> bool) -> Value {
    let cli = std::env::var_os("WASMCELL_WASMTIME_CLI").map(PathBuf::from);
    let Some(cli) = cli.filter(|p| p.is_file()) else {
        eprintln!("wasmcell-bench: http skipped: WASMCELL_WASMTIME_CLI names no wasmtime binary (`make bench` builds it)");
        return json!({"skipped": "no wasmtime-cli"});
    };
    if Command::new("wrk").arg("-v").output().is_err() {
        eprintln!("wasmcell-bench: http skipped: no wrk (apt install wrk)");
        return json!({"skipped": "no wrk"});
    }
    let version = crate::machine::first_line(cli.to_str().unwrap(), &["--version"]);
    let mut results = serde_json::Map::new();
    for (n, h) in handlers.iter().enumerate() {
        if interrupted() {
            break;
        }
        let component = c.dir.path().join(format!("http-{n}.wasm"));
        std::fs::write(&component, h.wasm).unwrap();
        let id = format!("http-bench-{n}");
        let cell_addr = free_addr();
        serve_in_container(c, h, &id, cell_addr, None);
        wait_until_serving(cell_addr, "wasmcell");
        let metered_id = format!("http-bench-{n}-metrics");
        let metered_addr = free_addr();
        let metrics_addr = free_addr();
        serve_in_container(c, h, &metered_id, metered_addr, Some(metrics_addr));
        wait_until_serving(metered_addr, "wasmcell with metrics");
        let serve_addr = free_addr();
        let mut serve = wasmtime_serve(
            &cli,
            &component,
            serve_addr,
            &c.dir.path().join(format!("wasmtime-serve-{n}.log")),
        );
        wait_until_serving(serve_addr, "wasmtime serve");

        let mut rows = Vec::new();
        println!(
            "\n## wasi:http, {}: requests/s and latency, HTTP/1.1 keep-alive (wrk)",
            h.label
        );
        println!("| connections | wasmcell req/s | `wasmtime serve` req/s | ratio | wasmcell p50 / p99 ms | `wasmtime serve` p50 / p99 ms | errors | metrics on req/s | on / off |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for conns in CONNECTIONS {
            if interrupted() {
                break;
            }
            let (mut cells, mut engines, mut metered) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                wrk(cell_addr, conns, WARM_UP_SECS);
                cells.push(wrk(cell_addr, conns, LOAD_SECS));
                wrk(serve_addr, conns, WARM_UP_SECS);
                engines.push(wrk(serve_addr, conns, LOAD_SECS));
                wrk(metered_addr, conns, WARM_UP_SECS);
                metered.push(wrk(metered_addr, conns, LOAD_SECS));
            }
            let (cell, engine) = (Load::median_of(&cells), Load::median_of(&engines));
            let on = Load::median_of(&metered);
            println!(
                "| {conns} | {:.0} | {:.0} | {:.2}x | {:.3} / {:.3} | {:.3} / {:.3} | {} / {} | {:.0} | {:.3} |",
                cell.rps,
                engine.rps,
                cell.rps / engine.rps,
                cell.p50_ms,
                cell.p99_ms,
                engine.p50_ms,
                engine.p99_ms,
                cell.errors,
                engine.errors,
                on.rps,
                on.rps / cell.rps
            );
            rows.push(json!({"connections": conns, "wasmcell": cell.to_json(),
                             "wasmtime_serve": engine.to_json(), "ratio_rps": cell.rps / engine.rps,
                             "wasmcell_metrics_on": on.to_json(),
                             "metrics_on_over_off_rps": on.rps / cell.rps}));
        }
        let counted = scrape(metrics_addr);
        println!(
            "metrics on: the endpoint counted {counted} responses of {}",
            h.label
        );
        let _ = serve.kill();
        let _ = serve.wait();
        for id in [&id, &metered_id] {
            c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.ctr(&["task", "delete", id]).code != 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            c.ctr(&["container", "delete", id]);
        }

        let first = first_response(c, h, n);
        println!(
            "first response after Start ({}): median {:.2} ms, max {:.2} ms",
            h.label, first.median, first.max
        );
        results.insert(
            h.label.to_owned(),
            json!({"load": rows, "first_response_after_start": first.to_json()}),
        );
    }
    json!({"wasmtime_cli": version, "load_seconds": LOAD_SECS, "handlers": results})
}

/// Runs handler `h` as container `id` serving on `addr` (`--net-host`, its output to a
/// `file://` log), with the pod's metrics endpoint on `metrics` when given.
fn serve_in_container(
    c: &Containerd,
    h: &Handler<'_>,
    id: &str,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
) {
    let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
    let log = format!(
        "file://{}",
        c.dir.path().join(format!("{id}.log")).display()
    );
    let metrics = metrics.map(|m| format!("wasmcell.dev/metrics-addr={m}"));
    let mut args = vec![
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasi/wasm",
        "--net-host",
        "--env",
        &addr_env,
        "--log-uri",
        &log,
    ];
    if let Some(m) = &metrics {
        args.extend(["--annotation", m]);
    }
    args.extend([h.image, id, h.path]);
    let r = c.ctr(&args);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
}

/// The responses the metrics endpoint at `addr` counted (every status class).
fn scrape(addr: SocketAddr) -> u64 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("wasmcell_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Ten times: a container created, then the time from `ctr task start` returning to its first
/// 200 (no retry is needed: the socket is bound at Create).
fn first_response(c: &Containerd, h: &Handler<'_>, n: usize) -> Summary {
    let mut runs = Vec::new();
    for round in 0..10 {
        let id = format!("http-first-{n}-{round}");
        let addr = free_addr();
        let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
        let r = c.ctr(&[
            "container",
            "create",
            "--runtime",
            RUNTIME,
            "--net-host",
            "--env",
            &addr_env,
            h.image,
            &id,
            h.path,
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        let r = c.ctr(&["task", "start", "-d", "--null-io", &id]);
        let started = Instant::now();
        assert_eq!(r.code, 0, "{r:?}");
        while !get_ok(addr) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no first response"
            );
        }
        runs.push(started.elapsed());
        c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.ctr(&["task", "delete", &id]).code != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        c.ctr(&["container", "delete", &id]);
    }
    Summary::of(&runs)
}
