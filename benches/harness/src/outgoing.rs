//! `outgoing`: a wasi:http handler's outgoing requests (the fetch fixture: each request it
//! serves makes one `GET` upstream and streams the answer back) under wasmcell to a Service's
//! name, resolved through the container's resolv.conf (the kubelet's search list, `ndots:5`) by
//! a nameserver on loopback, against the same under wasmcell to the upstream's address, and
//! `wasmtime serve` of the same component to the address (its resolver would ask the host's
//! libc). Requests per second from wrk, HTTP/1.1 keep-alive to the handler; each upstream
//! request is a new connection on every side; three loads each, interleaved, medians.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_e2e::dns::{TestDns, Zone};
use wasmcell_e2e::{Containerd, RUNTIME};

use crate::http::{free_addr, wasmtime_serve, wrk_path, Load};

/// Waits until something accepts connections on `addr` (a GET of `/` would make the fetch
/// handler fetch nothing and fail).
fn wait_until_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CONNECTIONS: [usize; 2] = [1, 16];
const LOAD_SECS: u64 = 10;
const WARM_UP_SECS: u64 = 2;
const ROUNDS: usize = 3;
/// The nameserver's loopback address (one nothing on these machines uses).
const NAMESERVER: &str = "127.0.0.53";

/// An upstream on loopback answering every request with a short body, a thread per connection.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut head = [0u8; 2048];
                let _ = conn.read(&mut head);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nupstream ok\n",
                );
            });
        }
    });
    addr
}

/// Measures the scenario with the fetch fixture's image `image` (program `/http-fetch.wasm`)
/// and its bytes `wasm`.
pub fn measure(c: &Containerd, image: &str, wasm: &[u8], interrupted: &dyn Fn() -> bool) -> Value {
    let cli = std::env::var_os("WASMCELL_WASMTIME_CLI").map(PathBuf::from);
    let Some(cli) = cli.filter(|p| p.is_file()) else {
        eprintln!(
            "wasmcell-bench: outgoing skipped: WASMCELL_WASMTIME_CLI names no wasmtime binary"
        );
        return json!({"skipped": "no wasmtime-cli"});
    };
    let up = upstream();
    let _dns = TestDns::start_here(
        NAMESERVER.parse().expect("address"),
        Zone::default().with("upstream.ns.svc.cluster.local", up.ip()),
    );
    let conf = c.dir.path().join("outgoing-resolv.conf");
    std::fs::write(
        &conf,
        format!(
            "search ns.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver {NAMESERVER}\noptions ndots:5\n"
        ),
    )
    .expect("write resolv.conf");
    let cell_addr = free_addr();
    let addr_env = format!("WASMCELL_HTTP_ADDR={cell_addr}");
    let mount = format!(
        "type=bind,src={},dst=/etc/resolv.conf,options=rbind:ro",
        conf.display()
    );
    let r = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasi/wasm",
        // This process's network (the host's), joined by path: `--net-host` would also bind the host's own
        // resolv.conf over the one given here.
        "--with-ns",
        &format!("network:/proc/{}/ns/net", std::process::id()),
        "--env",
        &addr_env,
        "--mount",
        &mount,
        "--log-uri",
        &format!("file://{}", c.dir.path().join("outgoing.log").display()),
        image,
        "outgoing",
        "/http-fetch.wasm",
    ]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    wait_until_listening(cell_addr, "wasmcell");
    let component = c.dir.path().join("outgoing.wasm");
    std::fs::write(&component, wasm).expect("write the component");
    let serve_addr = free_addr();
    let mut serve = wasmtime_serve(
        &cli,
        &component,
        serve_addr,
        &c.dir.path().join("outgoing-serve.log"),
    );
    wait_until_listening(serve_addr, "wasmtime serve");
    let by_name = format!("/upstream:{}", up.port());
    let by_address = format!("/{up}");

    println!("\n## outgoing wasi:http: requests/s through the fetch handler (wrk)");
    println!("| connections | wasmcell to the name | wasmcell to the address | `wasmtime serve` to the address | name / `wasmtime serve` |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for conns in CONNECTIONS {
        if interrupted() {
            break;
        }
        let sides = [
            (cell_addr, by_name.as_str()),
            (cell_addr, by_address.as_str()),
            (serve_addr, by_address.as_str()),
        ];
        let mut loads: [Vec<Load>; 3] = Default::default();
        for _ in 0..ROUNDS {
            for ((addr, path), runs) in sides.iter().zip(loads.iter_mut()) {
                wrk_path(*addr, path, conns, WARM_UP_SECS);
                runs.push(wrk_path(*addr, path, conns, LOAD_SECS));
            }
        }
        let [name, address, engine] = loads.map(|l| Load::median_of(&l));
        println!(
            "| {conns} | {:.0} | {:.0} | {:.0} | {:.2}x |",
            name.rps,
            address.rps,
            engine.rps,
            name.rps / engine.rps
        );
        rows.push(json!({
            "connections": conns,
            "wasmcell_by_name": name.to_json(),
            "wasmcell_by_address": address.to_json(),
            "wasmtime_serve_by_address": engine.to_json(),
            "ratio_name_to_wasmtime_serve": name.rps / engine.rps,
        }));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    c.ctr(&["task", "kill", "-s", "SIGKILL", "outgoing"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.ctr(&["task", "delete", "outgoing"]).code != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    c.ctr(&["container", "delete", "outgoing"]);
    let log = std::fs::read_to_string(c.dir.path().join("outgoing.log")).unwrap_or_default();
    let failed = log
        .lines()
        .filter(|l| l.contains("outgoing request to"))
        .count();
    json!({"load_seconds": LOAD_SECS, "rows": rows, "failed_outgoing_requests": failed})
}
