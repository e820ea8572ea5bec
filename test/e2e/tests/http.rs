//! A component exporting `wasi:http/incoming-handler` is an HTTP service: served over HTTP/1.1
//! (keep-alive) and h2c on the address its env names, each request in a fresh instance, a failed
//! request failing alone, SIGTERM draining it, its output in whole lines.
//!
//! The tasks run with `--net-host` and listen on a loopback port of their own, so the test's
//! client reaches them directly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wasmcell_e2e::{fixtures, Containerd, Ran};

const IMG: &str = "wasmcell.test/http-handler:latest";
const BOTH_IMG: &str = "wasmcell.test/http-and-command:latest";

/// A response: status and body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
}

/// An HTTP/1.1 client on one kept-alive connection.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `GET path` and reads the whole response (content-length or chunked).
    fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> std::io::Result<Answer> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("status line {line:?}")))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').ok_or_else(|| bad(header))?;
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad(&line))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// One request on a connection of its own.
fn get(addr: SocketAddr, path: &str) -> Answer {
    Client::connect(addr)
        .and_then(|mut c| c.get(path))
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// A loopback address whose port nothing listens on now.
fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address")
}

/// Runs `image` detached with `--net-host`, serving on `addr`, its output in `log`.
fn serve(c: &Containerd, image: &str, id: &str, addr: SocketAddr, env: &[&str], log: &Path) -> Ran {
    let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
    let uri = format!("file://{}", log.display());
    let mut flags = vec!["--net-host", "--env", &addr_env, "--log-uri", &uri];
    for e in env {
        flags.extend(["--env", e]);
    }
    let program = if image == IMG {
        "/http_handler.wasm"
    } else {
        "/http_and_command.wasm"
    };
    c.run_detached(&flags, image, id, &[program])
}

/// Sends SIGTERM and returns the task's exit status (within `patience`).
fn terminate(c: &Containerd, events: &wasmcell_e2e::Events, id: &str, patience: Duration) -> i64 {
    let r = c.ctr(&["task", "kill", "-s", "SIGTERM", id]);
    assert_eq!(r.code, 0, "{r:?}");
    events
        .wait_for("/tasks/exit", id, patience)
        .unwrap_or_else(|| panic!("{id} did not exit within {patience:?} of SIGTERM"))
        .exit_status()
}

#[test]
fn a_proxy_component_answers_http1_keep_alive_and_h2c_from_a_fresh_instance_each_time() {
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("served.log");
    let r = serve(
        &c,
        IMG,
        "served",
        addr,
        &["WASMCELL_HTTP_ACCESS_LOG=1"],
        &log,
    );
    assert_eq!(r.code, 0, "{r:?}");

    // Bound before the task was reported started: the first request needs no retry.
    let mut kept = Client::connect(addr).expect("the socket is bound once Start returns");
    for path in ["/?q=1", "/again?x=y&z"] {
        let answer = kept
            .get(path)
            .expect("a request on the kept-alive connection");
        assert_eq!(
            answer,
            Answer {
                status: 200,
                body: fixtures::HTTP_HELLO.to_owned()
            },
            "{path}: a fresh instance for each request"
        );
    }

    let url = format!("http://{addr}/h2");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(&url)
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}2 200", fixtures::HTTP_HELLO),
        "h2c with prior knowledge: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A serving task is a task like any other: Stats answers.
    let metrics = c.ctr(&["task", "metrics", "served"]);
    assert_eq!(metrics.code, 0, "{metrics:?}");
    assert!(metrics.stdout.contains("memory"), "{metrics:?}");

    assert_eq!(terminate(&c, &events, "served", Duration::from_secs(10)), 0);
    let output = std::fs::read_to_string(&log).expect("the task's log");
    let handled = output
        .lines()
        .filter(|l| *l == fixtures::HANDLER_LINE)
        .count();
    assert_eq!(handled, 3, "one stdout line per request:\n{output}");
    assert!(
        output.contains("http: GET /?q=1 200") && output.contains("http: GET /h2 200"),
        "the access log has a line per request:\n{output}"
    );
    c.ctr(&["task", "delete", "served"]);
    c.ctr(&["container", "delete", "served"]);
}

#[test]
fn two_thousand_requests_at_fifty_at_once_all_succeed_and_output_lines_stay_whole() {
    const CLIENTS: usize = 50;
    const EACH: usize = 40;
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("load.log");
    let r = serve(&c, IMG, "load", addr, &[], &log);
    assert_eq!(r.code, 0, "{r:?}");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr).expect("connect");
                (0..EACH)
                    .map(|_| client.get("/").expect("a request under load"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<Answer> = clients
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect();
    assert_eq!(answers.len(), CLIENTS * EACH);
    let wrong: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status != 200 || a.body != fixtures::HTTP_HELLO)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answers were not a fresh instance's 200, first {:?}",
        wrong.len(),
        answers.len(),
        wrong.first()
    );

    assert_eq!(terminate(&c, &events, "load", Duration::from_secs(10)), 0);
    let output = std::fs::read_to_string(&log).expect("the task's log");
    let broken: Vec<&str> = output
        .lines()
        .filter(|l| *l != fixtures::HANDLER_LINE && !l.starts_with("wasmcell: serving"))
        .collect();
    assert!(
        broken.is_empty(),
        "{} lines are not whole, first {:?}",
        broken.len(),
        broken.first()
    );
    let handled = output
        .lines()
        .filter(|l| *l == fixtures::HANDLER_LINE)
        .count();
    assert_eq!(handled, CLIENTS * EACH);
    c.ctr(&["task", "delete", "load"]);
    c.ctr(&["container", "delete", "load"]);
}

#[test]
fn a_trap_or_a_request_past_its_deadline_fails_alone_and_the_next_request_succeeds() {
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("failing.log");
    let r = serve(
        &c,
        IMG,
        "failing",
        addr,
        &["WASMCELL_HTTP_TIMEOUT_MS=500"],
        &log,
    );
    assert_eq!(r.code, 0, "{r:?}");

    assert_eq!(get(addr, "/trap").status, 500);
    assert_eq!(get(addr, "/").status, 200, "the request after a trap");
    let asked = Instant::now();
    assert_eq!(get(addr, "/loop").status, 500);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a guest spinning forever was cut off after {took:?} (deadline 500 ms)"
    );
    assert_eq!(get(addr, "/").status, 200, "the request after a deadline");

    assert_eq!(
        terminate(&c, &events, "failing", Duration::from_secs(10)),
        0
    );
    let output = std::fs::read_to_string(&log).expect("the task's log");
    for path in ["GET /trap failed", "GET /loop failed"] {
        assert!(
            output.lines().any(|l| l.contains(path)),
            "a line names the failed request {path:?}:\n{output}"
        );
    }
    c.ctr(&["task", "delete", "failing"]);
    c.ctr(&["container", "delete", "failing"]);
}

#[test]
fn sigterm_refuses_new_connections_lets_a_slow_request_finish_and_exits_0() {
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("drained.log");
    let r = serve(&c, IMG, "drained", addr, &[], &log);
    assert_eq!(r.code, 0, "{r:?}");

    let mut slow_client = Client::connect(addr).expect("connect");
    let slow = std::thread::spawn(move || slow_client.get("/slow"));
    // The slow request sleeps 1.5 s in the guest; give it time to arrive first.
    std::thread::sleep(Duration::from_millis(300));
    let r = c.ctr(&["task", "kill", "-s", "SIGTERM", "drained"]);
    assert_eq!(r.code, 0, "{r:?}");

    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "new connections were still accepted 3 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = slow
        .join()
        .expect("the slow client")
        .expect("the slow request is answered after SIGTERM");
    assert_eq!(answer.status, 200, "{answer:?}");
    let exit = events
        .wait_for("/tasks/exit", "drained", Duration::from_secs(10))
        .expect("the task exits once drained");
    assert_eq!(exit.exit_status(), 0, "{exit:?}");
    c.ctr(&["task", "delete", "drained"]);
    c.ctr(&["container", "delete", "drained"]);
}

#[test]
fn a_component_that_is_both_runs_as_a_command_unless_its_env_asks_for_serving() {
    let c = Containerd::start();
    c.import_wasm(
        BOTH_IMG,
        "http_and_command.wasm",
        fixtures::HTTP_AND_COMMAND,
    );
    let r = c.run_wasm(BOTH_IMG, "as-command", &["/http_and_command.wasm"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, fixtures::RAN_AS_COMMAND),
        "{r:?}"
    );

    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("both.log");
    let r = serve(
        &c,
        BOTH_IMG,
        "as-server",
        addr,
        &["WASMCELL_HTTP_SERVE=1"],
        &log,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(get(addr, "/").body, fixtures::HTTP_HELLO);
    assert_eq!(
        terminate(&c, &events, "as-server", Duration::from_secs(10)),
        0
    );
    c.ctr(&["task", "delete", "as-server"]);
    c.ctr(&["container", "delete", "as-server"]);
}

#[test]
fn create_fails_naming_the_problem_for_a_component_of_neither_world_or_a_bad_address() {
    const NONE_IMG: &str = "wasmcell.test/no-world:latest";
    let c = Containerd::start();
    c.import_wasm(NONE_IMG, "no_world.wasm", fixtures::NO_WORLD);
    let r = c.run_wasm(NONE_IMG, "no-world", &["/no_world.wasm"]);
    assert_ne!(r.code, 0, "{r:?}");
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("exports neither wasi:cli/run")
            && said.contains("wasi:http/incoming-handler")
            && said.contains("greet"),
        "the error names what it exports: {said}"
    );
    // A handler whose env names no address fails Create naming the variable.
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let r = c.run_wasm_with(
        &["--env", "WASMCELL_HTTP_ADDR=8080"],
        IMG,
        "bad-addr",
        &["/http_handler.wasm"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("env WASMCELL_HTTP_ADDR=\"8080\" is not allowed")
            && r.stderr.contains("an IP address and port"),
        "{r:?}"
    );
    // The shim serves the next task.
    c.import_wasm("wasmcell.test/hello:latest", "hello.wasm", fixtures::HELLO);
    let r = c.run_wasm("wasmcell.test/hello:latest", "after", &["/hello.wasm"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_handler_whose_spec_sends_it_to_runc_is_served_and_drained_there_too() {
    // User-namespace mappings are a spec the cell leaves to runc; the container gets a network
    // namespace of its own, which the client joins.
    const UIDMAP: &str = "0:100000:65536";
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let r = c.run_detached(
        &["--uidmap", UIDMAP, "--gidmap", UIDMAP],
        IMG,
        "under-runc",
        &["/http_handler.wasm"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        c.log()
            .contains("runs under runc with the cell as its process"),
        "the task went to runc"
    );
    let ls = c.ctr(&["task", "ls"]).stdout;
    let pid = ls
        .lines()
        .find(|l| l.starts_with("under-runc"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the task's pid")
        .to_owned();
    let in_container = move |path: &'static str| {
        let ns = format!("/proc/{pid}/ns/net");
        std::thread::spawn(move || {
            let ns = std::fs::File::open(ns).expect("the container's network namespace");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            // Under runc nothing waits for the cell to report ready: retry while it binds.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Client::connect(addr).and_then(|mut client| client.get(path)) {
                    Ok(answer) => break answer,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "no answer under runc: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .join()
        .expect("the client thread")
    };
    assert_eq!(in_container("/").body, fixtures::HTTP_HELLO);
    assert_eq!(in_container("/trap").status, 500);
    assert_eq!(in_container("/").status, 200);
    assert_eq!(
        terminate(&c, &events, "under-runc", Duration::from_secs(10)),
        0
    );
    c.ctr(&["task", "delete", "under-runc"]);
    c.ctr(&["container", "delete", "under-runc"]);
}

/// The largest resident set (`VmHWM`, KiB) of the processes of task `id`'s cell.
fn cell_peak_kib(id: &str) -> u64 {
    let mut peak = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) != Some(&&b"cell"[..]) || args.get(2) != Some(&id.as_bytes()) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        peak = peak.max(hwm);
    }
    peak
}

/// `curl` with `args`; its stdout, after checking it succeeded.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-sS")
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where [`post_echo`] posts, and what.
const ECHO_PATH: &str = "/echo?q=1&r=two";
const ECHO_BODY: &str = "a body\nof two lines";

/// POSTs [`ECHO_BODY`] to [`ECHO_PATH`] of `addr` with the header `x-test: hello there`;
/// asserts a 200 and returns a lookup of the response's headers, and its body.
fn post_echo(addr: SocketAddr) -> (impl Fn(&str) -> Option<String>, String) {
    let url = format!("http://{addr}{ECHO_PATH}");
    let answer = curl(&[
        "-D",
        "-",
        "-H",
        "x-test: hello there",
        "--data-binary",
        ECHO_BODY,
        &url,
    ]);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .expect("headers, then the body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_owned();
    let header = move |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    };
    (header, body.to_owned())
}

#[test]
fn bodies_and_headers_stream_both_ways_and_a_100_mib_upload_is_never_held() {
    const ECHO_IMG: &str = "wasmcell.test/http-echo:latest";
    let c = Containerd::start();
    c.import_wasm(ECHO_IMG, "http_echo.wasm", fixtures::HTTP_ECHO);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("echo.log");
    let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
    let uri = format!("file://{}", log.display());
    let r = c.run_detached(
        &["--net-host", "--env", &addr_env, "--log-uri", &uri],
        ECHO_IMG,
        "echo",
        &["/http_echo.wasm"],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // A POST with a query and a header: the body and both come back.
    let (header, body) = post_echo(addr);
    assert_eq!(header("x-path").as_deref(), Some(ECHO_PATH));
    assert_eq!(header("x-echo").as_deref(), Some("hello there"));
    assert_eq!(body, ECHO_BODY);
    let url = format!("http://{addr}{ECHO_PATH}");

    // 1 MiB through HTTP/2 with prior knowledge.
    let mib: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let small = c.dir.path().join("one-mib");
    std::fs::write(&small, &mib).expect("write 1 MiB");
    let back = c.dir.path().join("one-mib-back");
    let said = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &format!("@{}", small.display()),
        "-o",
        back.to_str().unwrap(),
        "-w",
        "%{http_version} %{http_code}",
        &url,
    ]);
    assert_eq!(said, "2 200");
    assert!(
        std::fs::read(&back).expect("read it back") == mib,
        "1 MiB echoed over h2c"
    );

    // 100 MiB up and back: it streams, so the cell never holds it, and the shim never sees it.
    let shim = c.shim_pid_of("echo").expect("the task's shim");
    let shim_rss = || {
        std::fs::read_to_string(format!("/proc/{shim}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("the shim's VmRSS")
    };
    let shim_before = shim_rss();
    let before = cell_peak_kib("echo");
    assert!(before > 0, "the cell's processes are found");
    let big = c.dir.path().join("hundred-mib");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
        for _ in 0..100 {
            f.write_all(&mib).expect("write");
        }
    }
    let big_back = c.dir.path().join("hundred-mib-back");
    let said = curl(&[
        "--data-binary",
        &format!("@{}", big.display()),
        "-o",
        big_back.to_str().unwrap(),
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(said, format!("200 {}", 100u64 << 20));
    let same = std::fs::read(&big).expect("read") == std::fs::read(&big_back).expect("read back");
    assert!(same, "100 MiB echoed byte for byte");
    let after = cell_peak_kib("echo");
    let shim_after = shim_rss();
    eprintln!(
        "cell peak RSS: {before} KiB before the 100 MiB upload, {after} KiB after; shim RSS \
         {shim_before} KiB, then {shim_after} KiB"
    );
    assert!(
        shim_after < shim_before + 4 * 1024,
        "the shim's RSS grew from {shim_before} KiB to {shim_after} KiB"
    );
    assert!(
        after < before + 32 * 1024,
        "the cell's peak RSS grew from {before} KiB to {after} KiB for a 100 MiB upload"
    );

    assert_eq!(terminate(&c, &events, "echo", Duration::from_secs(10)), 0);
    c.ctr(&["task", "delete", "echo"]);
    c.ctr(&["container", "delete", "echo"]);
}

#[test]
fn a_proxy_component_is_served_in_a_cri_pod_and_drained_by_its_stop() {
    use wasmcell_e2e::cri::HANDLER;
    const CRI_IMG: &str = "wasmcell.test/cri-http-handler:1";
    let c = Containerd::start_cri();
    c.import_wasm_cri(CRI_IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let addr = free_addr();
    // The node's network, so that the test reaches the pod's port directly.
    let addr_text = addr.to_string();
    let (pod_id, id) = c.start_cri_pod(
        HANDLER,
        "http",
        CRI_IMG,
        &[],
        &[("WASMCELL_HTTP_ADDR", &addr_text)],
        true,
    );

    // Started means listening.
    assert_eq!(
        get(addr, "/?from=cri"),
        Answer {
            status: 200,
            body: fixtures::HTTP_HELLO.to_owned()
        }
    );
    let mut kept = Client::connect(addr).expect("connect");
    assert_eq!(kept.get("/second").expect("keep-alive").status, 200);

    // Stop sends SIGTERM and waits up to the grace period: the drain ends the task with 0.
    let stopping = Instant::now();
    let r = c.crictl(&["stop", "--timeout", "20", &id]);
    assert_eq!(r.code, 0, "stop: {r:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stopped by the drain, not the grace period's SIGKILL"
    );
    let r = c.crictl(&["inspect", "-o", "json", &id]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    assert_eq!(v["status"]["exitCode"].as_i64(), Some(0), "{v}");
    let logs = c.crictl(&["logs", &id]);
    assert!(
        logs.stdout.contains(fixtures::HANDLER_LINE),
        "the handler's output reaches the container's log: {logs:?}"
    );
    let r = c.crictl(&["stopp", &pod_id]);
    assert_eq!(r.code, 0, "stopp: {r:?}");
    let r = c.crictl(&["rmp", &pod_id]);
    assert_eq!(r.code, 0, "rmp: {r:?}");
}

#[test]
fn a_handler_makes_outgoing_requests_from_its_network() {
    const FETCH_IMG: &str = "wasmcell.test/http-fetch:latest";
    const UPSTREAM: &str = "the upstream's answer\n";
    // The upstream: one loopback server answering every GET /upstream.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in upstream.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let wanted = line.starts_with("GET /upstream ");
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = if wanted {
                ("200 OK", UPSTREAM)
            } else {
                ("404 Not Found", "")
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = reader.get_mut().write_all(reply.as_bytes());
        }
    });

    let c = Containerd::start();
    c.import_wasm(FETCH_IMG, "http_fetch.wasm", fixtures::HTTP_FETCH);
    let events = c.events();
    let addr = free_addr();
    let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
    let r = c.run_detached(
        &["--net-host", "--env", &addr_env],
        FETCH_IMG,
        "fetch",
        &["/http_fetch.wasm"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let answer = get(addr, &format!("/{upstream_addr}"));
    assert_eq!(
        answer,
        Answer {
            status: 200,
            body: UPSTREAM.to_owned()
        },
        "{}",
        c.log()
    );
    // A port nothing listens on: that outgoing request fails, and only its own request.
    let closed = free_addr();
    assert_eq!(get(addr, &format!("/{closed}")).status, 500);
    assert_eq!(get(addr, &format!("/{upstream_addr}")).status, 200);
    assert_eq!(terminate(&c, &events, "fetch", Duration::from_secs(10)), 0);
    c.ctr(&["task", "delete", "fetch"]);
    c.ctr(&["container", "delete", "fetch"]);
}

#[test]
fn past_the_in_flight_limit_a_request_gets_503_at_once_and_pipelined_requests_are_answered_in_order(
) {
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("limited.log");
    let r = serve(
        &c,
        IMG,
        "limited",
        addr,
        &["WASMCELL_HTTP_MAX_IN_FLIGHT=1"],
        &log,
    );
    assert_eq!(r.code, 0, "{r:?}");

    // Two requests in one write on one connection: both answered, in order.
    let mut pipelined = Client::connect(addr).expect("connect");
    pipelined
        .reader
        .get_mut()
        .write_all(
            b"GET /first HTTP/1.1\r\nHost: test\r\n\r\nGET /second HTTP/1.1\r\nHost: test\r\n\r\n",
        )
        .expect("write two requests at once");
    for _ in 0..2 {
        let answer = pipelined.read_answer().expect("a pipelined answer");
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let output = || std::fs::read_to_string(&log).unwrap_or_default();

    // One slow request holds the only permit; another request meanwhile is refused at once.
    // Which of the two takes the permit is a race: when the other one wins, it is served and
    // the slow one refused, and the pair is tried again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let mut slow_client = Client::connect(addr).expect("connect");
        let slow = std::thread::spawn(move || slow_client.get("/slow"));
        std::thread::sleep(Duration::from_millis(200));
        let mut client = Client::connect(addr).expect("connect");
        client
            .reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("write");
        let asked = Instant::now();
        let mut head = String::new();
        client.reader.read_line(&mut head).expect("a status line");
        if head.starts_with("HTTP/1.1 503") {
            let took = asked.elapsed();
            let mut headers = String::new();
            while client.reader.read_line(&mut head).is_ok_and(|n| n > 2) {
                headers.push_str(&head);
                head.clear();
            }
            assert_eq!(slow.join().unwrap().expect("the slow request").status, 200);
            break (took, headers);
        }
        let _ = slow.join();
        assert!(
            Instant::now() < deadline,
            "no 503 while /slow was in flight: {head}"
        );
    };
    assert!(
        refused.0 < Duration::from_millis(500),
        "the 503 came after {:?}, not at once",
        refused.0
    );
    assert!(
        refused.1.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        refused.1
    );
    assert_eq!(
        get(addr, "/").status,
        200,
        "served again once the permit is back"
    );
    assert_eq!(
        terminate(&c, &events, "limited", Duration::from_secs(10)),
        0
    );
    assert!(output().contains(fixtures::HANDLER_LINE));
    c.ctr(&["task", "delete", "limited"]);
    c.ctr(&["container", "delete", "limited"]);
}

#[test]
fn sigkill_ends_a_server_at_once_with_a_request_in_flight() {
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("killed.log");
    let r = serve(&c, IMG, "killed", addr, &[], &log);
    assert_eq!(r.code, 0, "{r:?}");
    let mut slow_client = Client::connect(addr).expect("connect");
    let slow = std::thread::spawn(move || slow_client.get("/slow"));
    // Give /slow (1.5 s in the guest) time to arrive.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    let r = c.ctr(&["task", "kill", "-s", "SIGKILL", "killed"]);
    assert_eq!(r.code, 0, "{r:?}");
    let exit = events
        .wait_for("/tasks/exit", "killed", Duration::from_secs(5))
        .expect("the task exits after SIGKILL");
    assert_eq!(exit.exit_status(), 137, "{exit:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "SIGKILL took {:?}, not at once (the slow request would have taken 1.2 s more)",
        killed.elapsed()
    );
    assert!(
        slow.join().expect("the slow client").is_err(),
        "the request in flight gets no answer"
    );
    // The guest, in the cell's PID namespace, dies by its parent-death signal a moment after
    // its supervisor, whose end is the task's exit.
    assert!(
        c.wait_until(Duration::from_secs(1), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
        }),
        "the port is closed within a second of the task's exit"
    );
    c.ctr(&["task", "delete", "killed"]);
    c.ctr(&["container", "delete", "killed"]);
}

#[test]
fn handlers_made_by_componentize_py_and_componentize_js_echo_queries_bodies_and_headers() {
    let c = Containerd::start();
    let events = c.events();
    for (workload, hello, line) in [
        ("http-handler", "hello from python\n", None),
        (
            "js-handler",
            "hello from javascript\n",
            Some("js handler: POST /echo"),
        ),
    ] {
        let image = format!("wasmcell.test/{workload}:latest");
        let program = format!("{workload}.wasm");
        c.import_wasm(
            &image,
            &program,
            &wasmcell_e2e::workload_component(workload),
        );
        let addr = free_addr();
        let log = c.dir.path().join(format!("{workload}.log"));
        let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
        let uri = format!("file://{}", log.display());
        let r = c.run_detached(
            &["--net-host", "--env", &addr_env, "--log-uri", &uri],
            &image,
            workload,
            &[&format!("/{program}")],
        );
        assert_eq!(r.code, 0, "{workload}: {r:?}");

        assert_eq!(
            get(addr, "/?from=test"),
            Answer {
                status: 200,
                body: hello.to_owned()
            },
            "{workload}"
        );
        // A POST with a query and a header, twice: each comes back whole, from a fresh instance.
        for _ in 0..2 {
            let (header, body) = post_echo(addr);
            assert_eq!(header("x-path").as_deref(), Some(ECHO_PATH), "{workload}");
            assert_eq!(
                header("x-echo").as_deref(),
                Some("hello there"),
                "{workload}"
            );
            assert_eq!(header("x-served").as_deref(), Some("1"), "{workload}");
            assert_eq!(body, ECHO_BODY, "{workload}");
        }
        let url = format!("http://{addr}{ECHO_PATH}");
        // 1 MiB through HTTP/2 with prior knowledge, streamed through the guest.
        let mib: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = c.dir.path().join(format!("{workload}-one-mib"));
        std::fs::write(&sent, &mib).expect("write 1 MiB");
        let back = c.dir.path().join(format!("{workload}-one-mib-back"));
        curl(&[
            "--http2-prior-knowledge",
            "--data-binary",
            &format!("@{}", sent.display()),
            "-o",
            back.to_str().unwrap(),
            &url,
        ]);
        assert!(
            std::fs::read(&back).expect("the echoed MiB") == mib,
            "{workload}: 1 MiB came back changed"
        );

        assert_eq!(
            terminate(&c, &events, workload, Duration::from_secs(10)),
            0,
            "{workload}"
        );
        if let Some(line) = line {
            let output = std::fs::read_to_string(&log).expect("the task's log");
            assert!(
                output.lines().any(|l| l == line),
                "{workload}: the handler's console.log reaches the task's stdout:\n{output}"
            );
        }
        c.ctr(&["task", "delete", workload]);
        c.ctr(&["container", "delete", workload]);
    }
}

#[test]
fn requests_in_flight_share_one_memory_budget_so_growing_requests_fail_alone_not_the_server() {
    // 96 MiB for the container: each /grow request writes 16 MiB of new memory and holds it for
    // 1.5 s. Eight at once would need 128 MiB: without one budget for all requests the kernel's
    // OOM killer would end the server; with it, the requests past the budget fail with 500.
    const AT_ONCE: usize = 8;
    let c = Containerd::start();
    c.import_wasm(IMG, "http_handler.wasm", fixtures::HTTP_HANDLER);
    let events = c.events();
    let addr = free_addr();
    let log = c.dir.path().join("budget.log");
    let addr_env = format!("WASMCELL_HTTP_ADDR={addr}");
    let uri = format!("file://{}", log.display());
    let r = c.run_detached(
        &[
            "--net-host",
            "--memory-limit",
            "100663296",
            "--env",
            &addr_env,
            "--log-uri",
            &uri,
        ],
        IMG,
        "budget",
        &["/http_handler.wasm"],
    );
    assert_eq!(r.code, 0, "{r:?}");

    let statuses: Vec<u16> = std::thread::scope(|s| {
        let requests: Vec<_> = (0..AT_ONCE)
            .map(|_| s.spawn(move || get(addr, "/grow").status))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let failed = statuses.iter().filter(|s| **s == 500).count();
    assert_eq!(ok + failed, AT_ONCE, "only 200 and 500: {statuses:?}");
    assert!(ok >= 1, "some requests fit in the budget: {statuses:?}");
    assert!(
        failed >= 1 && ok <= 5,
        "96 MiB holds at most five 16 MiB requests: {statuses:?}"
    );
    // The server lives on, and has its memory back.
    assert_eq!(get(addr, "/").status, 200, "the request after the flood");
    assert_eq!(get(addr, "/grow").status, 200, "a growing request alone");
    let output = std::fs::read_to_string(&log).expect("the task's log");
    let refused = output
        .lines()
        .filter(|l| l.contains("GET /grow failed") && l.contains("memory budget"))
        .count();
    assert_eq!(
        refused, failed,
        "each failed request's line names the memory budget:\n{output}"
    );
    assert_eq!(
        terminate(&c, &events, "budget", Duration::from_secs(10)),
        0,
        "the server ends by its drain, not the OOM killer"
    );
    c.ctr(&["task", "delete", "budget"]);
    c.ctr(&["container", "delete", "budget"]);
}
