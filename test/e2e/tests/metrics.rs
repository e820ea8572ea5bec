//! A pod's Prometheus endpoint against a real containerd: opened by the shim inside the pod's
//! network namespace (a namespace the test made, as a CNI would), it counts a served
//! component's requests by status class, the containers' starts, compile cache lookups and
//! exits by kind, is shared by the pod's containers, refuses a port in use naming it, and
//! closes with the pod.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wasmcell_e2e::netns::NetNs;
use wasmcell_e2e::{fixtures, Containerd, Ran};

const HTTP: &str = "wasmcell.test/http-handler:latest";
const TRAP: &str = "wasmcell.test/trap:latest";
const METRICS: &str = "127.0.0.1:9464";
const SERVED: &str = "127.0.0.1:8080";

/// One HTTP/1.1 GET from inside `ns`: the status and the body.
fn get(ns: &NetNs, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = addr.parse().unwrap();
    let path = path.to_owned();
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(wasmcell_e2e::http_reply(&reply))
    })
}

/// Waits until the pod's series hold every line of `want`; the series.
fn scrape_until(ns: &NetNs, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(ns, METRICS, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the series never held {want:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(c: &Containerd, ns: &NetNs, pod: &str, extra: &[&str], image: &str, id: &str) -> Ran {
    let with_ns = format!("network:{}", ns.path());
    let sandbox = format!("io.kubernetes.cri.sandbox-id={pod}");
    let name = format!("io.kubernetes.cri.container-name={id}");
    let metrics = format!("wasmcell.dev/metrics-addr={METRICS}");
    let mut flags = vec![
        "--with-ns",
        &with_ns,
        "--annotation",
        &sandbox,
        "--annotation",
        &name,
        "--annotation",
        &metrics,
    ];
    flags.extend_from_slice(extra);
    c.run_detached(&flags, image, id, &[])
}

#[test]
fn a_pods_endpoint_counts_its_requests_starts_lookups_and_exits() {
    let c = Containerd::start();
    c.import_wasm(HTTP, "http_handler.wasm", fixtures::HTTP_HANDLER);
    c.import_wasm(TRAP, "trap.wasm", fixtures::TRAP);
    let ns = NetNs::create("metrics");
    let events = c.events();
    let addr = format!("WASMCELL_HTTP_ADDR={SERVED}");

    let r = run(&c, &ns, "pod-a", &["--env", &addr], HTTP, "served");
    assert_eq!(r.code, 0, "{r:?}");
    for _ in 0..5 {
        let (status, _) = get(&ns, SERVED, "/").unwrap();
        assert_eq!(status, 200);
    }
    let (status, _) = get(&ns, METRICS, "/nothing").unwrap();
    assert_eq!(status, 404);
    let text = scrape_until(
        &ns,
        &[
            "wasmcell_http_requests_total{container=\"served\",class=\"2xx\"} 5",
            "wasmcell_http_request_duration_seconds_count{container=\"served\"} 5",
            "wasmcell_http_requests_in_flight{container=\"served\"} 0",
            "wasmcell_container_starts_total{container=\"served\"} 1",
            "wasmcell_compile_cache_lookups_total{container=\"served\",result=\"miss\"} 1",
        ],
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Inside the pod's network namespace, not the host's.
    assert!(
        TcpStream::connect(METRICS).is_err(),
        "the endpoint is not on the host's loopback"
    );

    // A second container of the pod shares the endpoint; its trap is counted.
    let r = run(&c, &ns, "pod-a", &[], TRAP, "trapper");
    assert_eq!(r.code, 0, "{r:?}");
    events
        .wait_for("/tasks/exit", "trapper", Duration::from_secs(30))
        .expect("the trap's exit");
    scrape_until(
        &ns,
        &["wasmcell_container_exits_total{container=\"trapper\",kind=\"trap\"} 1"],
    );

    // Another pod in the same network namespace cannot have the port: Create says which.
    let r = run(
        &c,
        &ns,
        "pod-b",
        &["--env", "WASMCELL_HTTP_ADDR=127.0.0.1:8081"],
        HTTP,
        "other",
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("metrics endpoint cannot listen on port 9464")
            && r.stderr.contains("annotation wasmcell.dev/metrics-addr"),
        "{r:?}"
    );

    // SIGTERM drains the server: its exit is the program's code.
    let r = c.ctr(&["task", "kill", "-s", "SIGTERM", "served"]);
    assert_eq!(r.code, 0, "{r:?}");
    events
        .wait_for("/tasks/exit", "served", Duration::from_secs(30))
        .expect("the server's exit");
    scrape_until(
        &ns,
        &["wasmcell_container_exits_total{container=\"served\",kind=\"code\"} 1"],
    );

    // The pod's last container gone, the endpoint is closed.
    for id in ["served", "trapper"] {
        let r = c.ctr(&["task", "delete", id]);
        assert_eq!(r.code, 0, "{r:?}");
        let r = c.ctr(&["container", "delete", id]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&ns, METRICS, "/metrics").is_ok() {
        assert!(Instant::now() < deadline, "the endpoint outlived its pod");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the endpoint would not be the pod's own: a container on the host's network may not
/// have a port below 1024, and one under the runc fallback has no endpoint (NotImplemented).
#[test]
fn an_endpoint_is_refused_where_it_would_not_be_the_pods() {
    const UIDMAP: &str = "0:100000:65536";
    let c = Containerd::start();
    c.import_wasm(HTTP, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let r = c.run_detached(
        &[
            "--net-host",
            "--env",
            "WASMCELL_HTTP_ADDR=127.0.0.1:0",
            "--annotation",
            "wasmcell.dev/metrics-addr=127.0.0.1:999",
        ],
        HTTP,
        "host-low-port",
        &[],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("port 999") && r.stderr.contains("below 1024"),
        "{r:?}"
    );
    let ns = NetNs::create("fallback");
    let with_ns = format!("network:{}", ns.path());
    let r = c.run_detached(
        &[
            "--with-ns",
            &with_ns,
            "--uidmap",
            UIDMAP,
            "--gidmap",
            UIDMAP,
            "--annotation",
            "wasmcell.dev/metrics-addr=127.0.0.1:9464",
        ],
        HTTP,
        "fallback-metrics",
        &[],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("no metrics endpoint") && r.stderr.contains("runc fallback"),
        "{r:?}"
    );
}
