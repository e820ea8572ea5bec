//! Name lookup in the cell (`wasi:sockets/ip-name-lookup`): from the container's `/etc/hosts`
//! and `/etc/resolv.conf` (bind-mounted as single files, as CRI does), against a nameserver the
//! test starts inside the container's network namespace, with Kubernetes' search list and
//! `ndots:5`; NXDOMAIN, a dead nameserver and hostile answers are bounded, clear failures. And
//! outgoing `wasi:http` to names, over TLS verified against the image's CA bundle.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wasmcell_e2e::dns::{TestDns, Zone, TRUNCATED_ANSWER};
use wasmcell_e2e::netns::NetNs;
use wasmcell_e2e::{fixtures, Containerd, Ran};

const IMG: &str = "wasmcell.test/resolve:latest";

/// The kubelet's resolv.conf for a pod in namespace `ns`, with a nameserver at `server`.
fn kubelet_resolv_conf(server: &str, options: &str) -> String {
    format!(
        "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver {server}\n\
         options ndots:5 {options}\n"
    )
}

/// Runs the resolve fixture on `names` in a cell inside `netns`, with these files mounted at
/// `/etc/resolv.conf` and `/etc/hosts`.
fn resolve(c: &Containerd, netns: &NetNs, resolv_conf: &str, hosts: &str, names: &[&str]) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("resolv.conf");
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&conf, resolv_conf).expect("write resolv.conf");
    std::fs::write(&hosts_file, hosts).expect("write hosts");
    let with_ns = format!("network:{}", netns.path());
    let mount = |src: &std::path::Path, dst: &str| {
        format!("type=bind,src={},dst={dst},options=rbind:ro", src.display())
    };
    let (m1, m2) = (
        mount(&conf, "/etc/resolv.conf"),
        mount(&hosts_file, "/etc/hosts"),
    );
    let mut args = vec!["/resolve.wasm"];
    args.extend_from_slice(names);
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let id = format!("resolve-{}", RUNS.fetch_add(1, Ordering::Relaxed));
    c.run_wasm_with(
        &["--with-ns", &with_ns, "--mount", &m1, "--mount", &m2],
        IMG,
        &id,
        &args,
    )
}

fn lines(r: &Ran) -> Vec<&str> {
    r.stdout.lines().map(str::trim_end).collect()
}

#[test]
fn names_resolve_through_the_hosts_file_and_the_search_list() {
    let c = Containerd::start();
    c.import_wasm(IMG, "resolve.wasm", fixtures::RESOLVE);
    let netns = NetNs::create("names");
    // An IPv6 nameserver: the pod's resolv.conf may name one.
    let dns = TestDns::start(
        &netns,
        "::1".parse().unwrap(),
        Zone::default()
            .with(
                "backend.ns.svc.cluster.local",
                "198.18.5.5".parse().unwrap(),
            )
            .with(
                "backend.ns.svc.cluster.local",
                "2001:db8::5".parse().unwrap(),
            )
            .with("db.example.internal", "198.18.5.6".parse().unwrap()),
    );
    let r = resolve(
        &c,
        &netns,
        &kubelet_resolv_conf("::1", "timeout:2 attempts:2"),
        "127.0.0.1 localhost\n198.18.7.7 alias.local # hostAliases\n",
        &[
            "backend",
            "backend.ns",
            "backend.ns.svc",
            "backend.ns.svc.cluster.local.",
            "alias.local",
            "db.example.internal",
            "198.18.0.9",
            "nothere",
        ],
    );
    let out = lines(&r);
    for name in [
        "backend",
        "backend.ns",
        "backend.ns.svc",
        "backend.ns.svc.cluster.local.",
    ] {
        assert!(
            out.contains(&format!("{name} 198.18.5.5").as_str()),
            "{name}: {r:?}\nqueries: {:?}",
            dns.queries()
        );
        assert!(
            out.contains(&format!("{name} 2001:db8:0:0:0:0:0:5").as_str()),
            "{name} AAAA: {r:?}"
        );
    }
    assert!(out.contains(&"alias.local 198.18.7.7"), "{r:?}");
    assert!(out.contains(&"db.example.internal 198.18.5.6"), "{r:?}");
    assert!(out.contains(&"198.18.0.9 198.18.0.9"), "{r:?}");
    // NXDOMAIN for every name of the search list: name-unresolvable.
    assert!(out.contains(&"nothere error 18"), "{r:?}");
    assert_eq!(r.code, 1, "one name failed: {r:?}");

    let queries = dns.queries();
    // The hosts file answered alias.local: no query for it.
    assert!(
        !queries.iter().any(|q| q.contains("alias.local")),
        "{queries:?}"
    );
    // ndots:5: a name with fewer dots goes through the search list first, in its order.
    let a: Vec<&String> = queries.iter().filter(|q| q.starts_with("A ")).collect();
    let first_backend = a
        .iter()
        .position(|q| q.as_str() == "A backend.ns.svc.cluster.local")
        .expect("backend was asked for");
    assert!(
        !a[..first_backend].iter().any(|q| q.as_str() == "A backend"),
        "the bare name went first: {queries:?}"
    );
    let db = a
        .iter()
        .position(|q| q.as_str() == "A db.example.internal.ns.svc.cluster.local")
        .expect("db went through the search list");
    assert!(
        a.iter()
            .position(|q| q.as_str() == "A db.example.internal")
            .is_some_and(|p| p > db),
        "db.example.internal was tried as it is after the search list: {queries:?}"
    );
}

#[test]
fn a_dead_nameserver_is_a_timeout_error_within_the_configured_bound() {
    let c = Containerd::start();
    c.import_wasm(IMG, "resolve.wasm", fixtures::RESOLVE);
    let netns = NetNs::create("deadns");
    let _dead = TestDns::silent(&netns, "127.0.0.1".parse().unwrap());
    // A cold start first, so the bound below is the lookup's.
    let warm = resolve(&c, &netns, "nameserver 127.0.0.1\n", "", &["198.18.0.1"]);
    assert_eq!(warm.code, 0, "{warm:?}");
    let started = Instant::now();
    let r = resolve(
        &c,
        &netns,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
        "",
        &["service.example"],
    );
    let took = started.elapsed();
    assert!(
        lines(&r).contains(&"service.example error 19"),
        "temporary-resolver-failure: {r:?}"
    );
    // timeout × attempts = 2 s, plus a start; the resolver's own defaults (5 s, 2 attempts)
    // would take 10 s.
    assert!(
        took < Duration::from_secs(8),
        "the lookup took {took:?} with a 2 s bound: {r:?}"
    );
}

#[test]
fn hostile_answers_are_refused_and_the_cell_goes_on() {
    let c = Containerd::start();
    c.import_wasm(IMG, "resolve.wasm", fixtures::RESOLVE);
    let netns = NetNs::create("hostile");
    let dns = TestDns::start(
        &netns,
        "127.0.0.1".parse().unwrap(),
        Zone::default().with("fine.test", "198.18.5.7".parse().unwrap()),
    );
    let r = resolve(
        &c,
        &netns,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        "",
        &[
            "wrongid.test.",
            "loop.test.",
            "huge.test.",
            "truncated.test.",
            "fine.test.",
        ],
    );
    let out = lines(&r);
    // An answer to another query, and one that does not decode, are not answers: the lookup
    // times out.
    assert!(out.contains(&"wrongid.test. error 19"), "{r:?}");
    assert!(
        !out.iter().any(|l| l.starts_with("loop.test. 198")),
        "a compression loop gave an address: {r:?}"
    );
    assert!(
        out.iter().any(|l| l.starts_with("loop.test. error")),
        "{r:?}"
    );
    // Truncated over UDP: asked again over TCP.
    assert!(
        out.contains(&format!("truncated.test. {TRUNCATED_ANSWER}").as_str()),
        "{r:?}\nqueries: {:?}",
        dns.queries()
    );
    assert!(dns
        .queries()
        .iter()
        .any(|q| q.as_str() == "tcp A truncated.test"));
    // 64 KiB of records: answered or refused, but the cell is still there for the next name.
    assert!(out.iter().any(|l| l.starts_with("huge.test. ")), "{r:?}");
    assert!(out.contains(&"fine.test. 198.18.5.7"), "{r:?}");
}

/// A CA of the test's: its PEM goes in the image's bundle, its certificates to the upstreams.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA");
        TestCa { cert, key }
    }

    /// A server certificate for `names`; with `expired`, one whose validity ended in 2021.
    fn issue(
        &self,
        names: &[&str],
        expired: bool,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("server params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let leaf = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        (
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

/// A TLS server configuration for `chain`, offering `alpn`.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    // ring, as the shim uses.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Answers every request on `listener` over TLS that offers HTTP/2 alone, with the HTTP version
/// the request came in: a client that did not pick h2 by ALPN gets no answer at all.
fn h2_upstream(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(|request: hyper::Request<_>| async move {
                        let body = format!("hello over {:?}\n", request.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
}

/// Accepts connections on `listener` and never answers; sends on `closed` when the client
/// closes one.
fn silent_upstream(listener: TcpListener, closed: std::sync::mpsc::Sender<()>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let closed = closed.clone();
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = closed.send(());
            });
        }
    });
}

/// Answers every request on `listener` with `body`, over TLS when `tls` is given.
fn upstream(listener: TcpListener, body: &'static str, tls: Option<Arc<rustls::ServerConfig>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = [0u8; 4096];
                match tls {
                    None => {
                        let mut s = stream;
                        let _ = s.read(&mut head);
                        let _ = s.write_all(reply.as_bytes());
                    }
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let mut s = rustls::StreamOwned::new(conn, stream);
                        if s.read(&mut head).is_ok() {
                            let _ = s.write_all(reply.as_bytes());
                            s.conn.send_close_notify();
                            let _ = s.flush();
                        }
                    }
                }
            });
        }
    });
}

/// `GET path` from `addr` inside `netns`: the status line's code and the body.
fn get_in(netns: &NetNs, addr: SocketAddr, path: &str) -> (u16, String) {
    // HTTP/1.0: the body comes whole, not chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    netns.enter(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("connect to {addr}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        wasmcell_e2e::http_reply(&reply)
    })
}

#[test]
fn outgoing_wasi_http_reaches_names_and_verifies_tls_against_the_image_s_ca_bundle() {
    const HTTP_IMG: &str = "wasmcell.test/http-fetch-names:latest";
    const HTTPS_IMG: &str = "wasmcell.test/https-fetch:latest";
    let c = Containerd::start();
    c.import_wasm(HTTP_IMG, "http_fetch.wasm", fixtures::HTTP_FETCH);
    c.import_wasm(HTTPS_IMG, "https_fetch.wasm", fixtures::HTTPS_FETCH);
    let netns = NetNs::create("outgoing");
    let _dns = TestDns::start(
        &netns,
        "127.0.0.1".parse().unwrap(),
        Zone::default().with(
            "upstream.ns.svc.cluster.local",
            "127.0.0.1".parse().unwrap(),
        ),
    );
    // Inside the pod's network: a plain upstream, one with a certificate of the image's CA, one
    // with a certificate of another CA, one with an expired certificate of the image's CA, one
    // that speaks HTTP/2 alone, and one that never answers.
    let ca = TestCa::new("the image's CA");
    let (chain, key) = ca.issue(&["upstream", "upstream.ns.svc.cluster.local"], false);
    let (other_chain, other_key) = TestCa::new("another CA").issue(&["upstream"], false);
    let (expired_chain, expired_key) = ca.issue(&["upstream"], true);
    let (h2_chain, h2_key) = ca.issue(&["upstream"], false);
    let (plain, good, bad, expired, h2, silent) = netns.enter(|| {
        let bind = |port| TcpListener::bind(("127.0.0.1", port)).expect("bind an upstream");
        (
            bind(18080),
            bind(18443),
            bind(18444),
            bind(18445),
            bind(18446),
            bind(18081),
        )
    });
    let http11: &[&[u8]] = &[b"http/1.1"];
    upstream(plain, "hello over http\n", None);
    upstream(
        good,
        "hello over tls\n",
        Some(server_config(chain, key, http11)),
    );
    upstream(
        bad,
        "should not be read\n",
        Some(server_config(other_chain, other_key, http11)),
    );
    upstream(
        expired,
        "should not be read\n",
        Some(server_config(expired_chain, expired_key, http11)),
    );
    h2_upstream(h2, server_config(h2_chain, h2_key, &[b"h2"]));
    let (closed_tx, closed) = std::sync::mpsc::channel();
    silent_upstream(silent, closed_tx);

    // The image's CA bundle, where Debian keeps it (a directory mount, as a ConfigMap is).
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    std::fs::write(certs.join("ca-certificates.crt"), ca.cert.pem()).expect("write the bundle");
    let conf = dir.path().join("resolv.conf");
    std::fs::write(&conf, kubelet_resolv_conf("127.0.0.1", "timeout:2")).expect("write");
    let log = dir.path().join("fetch.log");
    let with_ns = format!("network:{}", netns.path());
    let flags = |addr: &str, timeout_ms: u32| {
        vec![
            "--with-ns".to_owned(),
            with_ns.clone(),
            "--env".to_owned(),
            format!("WASMCELL_HTTP_ADDR={addr}"),
            "--env".to_owned(),
            format!("WASMCELL_HTTP_TIMEOUT_MS={timeout_ms}"),
            "--mount".to_owned(),
            format!(
                "type=bind,src={},dst=/etc/resolv.conf,options=rbind:ro",
                conf.display()
            ),
            "--mount".to_owned(),
            format!(
                "type=bind,src={},dst=/etc/ssl/certs,options=rbind:ro",
                certs.display()
            ),
            "--log-uri".to_owned(),
            format!("file://{}", log.display()),
        ]
    };
    let events = c.events();
    // The third serves with a short request deadline.
    for (image, id, program, addr, timeout_ms) in [
        (
            HTTP_IMG,
            "fetch-http",
            "/http_fetch.wasm",
            "127.0.0.1:8081",
            30_000,
        ),
        (
            HTTPS_IMG,
            "fetch-https",
            "/https_fetch.wasm",
            "127.0.0.1:8443",
            30_000,
        ),
        (
            HTTP_IMG,
            "fetch-short",
            "/http_fetch.wasm",
            "127.0.0.1:8082",
            1_500,
        ),
    ] {
        let f = flags(addr, timeout_ms);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        let r = c.run_detached(&f, image, id, &[program]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let http: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let https: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    // A short name through the search list, and the full name.
    assert_eq!(
        get_in(&netns, http, "/upstream:18080"),
        (200, "hello over http\n".to_owned()),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        get_in(&netns, http, "/upstream.ns.svc.cluster.local:18080"),
        (200, "hello over http\n".to_owned())
    );
    assert_eq!(
        get_in(&netns, https, "/upstream:18443"),
        (200, "hello over tls\n".to_owned()),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Another CA's certificate: refused, the reason in the container's log; and a name no one
    // has: a DNS error. Each fails its own request only.
    assert_eq!(get_in(&netns, https, "/upstream:18444").0, 500);
    assert_eq!(get_in(&netns, http, "/nothere:18080").0, 500);
    assert_eq!(get_in(&netns, https, "/upstream:18443").0, 200);
    // HTTP/2, picked by ALPN, from a server that speaks nothing else.
    assert_eq!(
        get_in(&netns, https, "/upstream:18446"),
        (200, "hello over HTTP/2.0\n".to_owned()),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // An expired certificate of the right CA: refused, and the log says it expired.
    assert_eq!(get_in(&netns, https, "/upstream:18445").0, 500);
    // An upstream that never answers: the request ends at its deadline, and so does the
    // connection to the upstream (it would otherwise wait out the 600 s first-byte default).
    let short: SocketAddr = "127.0.0.1:8082".parse().unwrap();
    assert_eq!(get_in(&netns, short, "/upstream:18081").0, 500);
    assert_eq!(
        closed.recv_timeout(Duration::from_secs(30)),
        Ok(()),
        "the connection to the silent upstream outlived the request's deadline"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged
            .contains("outgoing request to https://upstream:18444: TLS: invalid peer certificate: UnknownIssuer"),
        "{logged}"
    );
    assert!(
        logged.contains("outgoing request to https://upstream:18445: TLS: invalid peer certificate: certificate expired"),
        "{logged}"
    );
    assert!(
        logged.contains("request GET /upstream:18081 failed: its deadline of 1500 ms passed"),
        "{logged}"
    );
    assert!(
        logged.contains("outgoing request to http://nothere:18080: nothere: no such host"),
        "{logged}"
    );
    for id in ["fetch-http", "fetch-https", "fetch-short"] {
        c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        events.wait_for("/tasks/exit", id, Duration::from_secs(10));
        c.ctr(&["task", "delete", id]);
        c.ctr(&["container", "delete", id]);
    }
}
