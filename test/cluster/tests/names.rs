//! Names and Services in the cluster: CoreDNS behind the `kube-dns` Service and kube-proxy's
//! ClusterIP routing (`wasmcell_cluster::services`). A wasm pod resolves a Service by each of the
//! names Kubernetes' search path allows, a wasi:http handler calls another wasm Deployment by
//! its Service's short name, `hostAliases` and `dnsPolicy: None` with a `dnsConfig` are the
//! pod's, and `kubectl port-forward` reaches a wasi:http pod. The example application
//! (`deploy/kubernetes/examples/app`: Python frontend and backend in wasm, Redis native) answers
//! end to end.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmcell_cluster::services::ClusterServices;
use wasmcell_cluster::{ControlPlane, Node};
use wasmcell_e2e::fixtures;

fn runtime_class(plane: &ControlPlane) {
    let r = plane.kubectl(&[
        "apply",
        "-f",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/runtimeclass.yaml"
        ),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A pod of the resolve fixture looking `names` up, with `extra` pod spec fields (YAML at the
/// spec's indentation); waits until it ends and returns its log.
fn resolve_in_pod(plane: &ControlPlane, pod: &str, names: &[&str], extra: &str) -> String {
    let args: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    plane.apply(
        pod,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  runtimeClassName: wasmtime
  restartPolicy: Never
{extra}
  containers:
  - name: resolve
    image: wasmcell.test/resolve:1
    imagePullPolicy: Never
    args: [{args}]
"#,
            args = args.join(", ")
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let phase = plane.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        if matches!(phase.stdout.trim(), "Succeeded" | "Failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod} did not end within 90 s: {phase:?}\n{}",
            plane.kubectl(&["describe", "pod", pod]).stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    plane.kubectl(&["logs", pod]).stdout
}

fn pod_ip(plane: &ControlPlane, selector: &str) -> String {
    let r = plane.kubectl(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_owned()
}

/// `GET path` from `addr` over HTTP/1.0: the status code and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    wasmcell_e2e::http_reply(&reply)
}

#[test]
fn wasm_pods_find_services_by_name_through_cluster_dns_and_call_them_over_cluster_ips() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    let _services = ClusterServices::start(&plane, &node);
    runtime_class(&plane);
    node.import_wasm("wasmcell.test/resolve:1", fixtures::RESOLVE);
    node.import_wasm("wasmcell.test/http-hello:1", fixtures::HTTP_HANDLER);
    node.import_wasm("wasmcell.test/http-fetch:1", fixtures::HTTP_FETCH);

    // The backend: a wasm Deployment behind a ClusterIP Service on port 80.
    plane.apply(
        "backend",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
spec:
  replicas: 2
  selector:
    matchLabels: {app: backend}
  template:
    metadata:
      labels: {app: backend}
    spec:
      runtimeClassName: wasmtime
      containers:
      - name: handler
        image: wasmcell.test/http-hello:1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: backend
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: frontend
  labels: {app: frontend}
spec:
  runtimeClassName: wasmtime
  containers:
  - name: fetch
    image: wasmcell.test/http-fetch:1
    imagePullPolicy: Never
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
"#,
    );
    plane.wait_for_output(
        &[
            "get",
            "deployment",
            "backend",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        "2",
        Duration::from_secs(120),
        "the backend's two replicas ready",
    );
    let cluster_ip = plane
        .kubectl(&[
            "get",
            "service",
            "backend",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .stdout
        .trim()
        .to_owned();

    // Each name Kubernetes' search path allows, with the kubelet's ndots:5.
    let log = resolve_in_pod(
        &plane,
        "resolve-search",
        &[
            "backend",
            "backend.default",
            "backend.default.svc",
            "backend.default.svc.cluster.local.",
            "kube-dns.kube-system",
            "nothere",
        ],
        "",
    );
    for name in [
        "backend",
        "backend.default",
        "backend.default.svc",
        "backend.default.svc.cluster.local.",
    ] {
        assert!(
            log.lines()
                .any(|l| l.trim() == format!("{name} {cluster_ip}")),
            "{name} should resolve to {cluster_ip}: {log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.trim() == "kube-dns.kube-system 198.18.128.10"),
        "{log}"
    );
    assert!(log.lines().any(|l| l.trim() == "nothere error 18"), "{log}");

    // A wasi:http handler calls the backend by its Service's short name and port, through
    // the ClusterIP (the handler answers /<authority> with that authority's /upstream).
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "frontend",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ],
        "true",
        Duration::from_secs(90),
        "the frontend ready",
    );
    let frontend = format!("{}:8080", pod_ip(&plane, "app=frontend"));
    for _ in 0..4 {
        let (code, body) = get(&frontend, "/backend:80");
        assert_eq!(code, 200, "{body}\n{}", plane.logs());
        assert!(body.starts_with("hello from request"), "{body}");
    }

    // hostAliases are in the pod's /etc/hosts; a pod with dnsPolicy None has only its
    // dnsConfig: with its search list of svc.cluster.local alone, "backend.default" resolves
    // and the bare "backend" does not.
    let log = resolve_in_pod(
        &plane,
        "resolve-aliases",
        &["foo.local", "bar.local"],
        "  hostAliases:\n  - ip: 198.18.9.9\n    hostnames: [foo.local, bar.local]",
    );
    assert!(log.contains("foo.local 198.18.9.9"), "{log}");
    assert!(log.contains("bar.local 198.18.9.9"), "{log}");
    let log = resolve_in_pod(
        &plane,
        "resolve-dnsconfig",
        &["backend.default", "backend"],
        "  dnsPolicy: None\n  dnsConfig:\n    nameservers: [198.18.128.10]\n    \
         searches: [svc.cluster.local]\n    options: [{name: ndots, value: \"2\"}]",
    );
    assert!(
        log.contains(&format!("backend.default {cluster_ip}")),
        "{log}"
    );
    assert!(log.contains("backend error 18"), "{log}");

    // kubectl port-forward to a wasi:http pod, as users debug.
    let backend = plane
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=backend",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .stdout;
    let mut forward = Command::new(wasmcell_cluster::kubernetes_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .args([
            "port-forward",
            &format!("pod/{}", backend.trim()),
            "18089:8080",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        if let Ok(mut s) = TcpStream::connect("127.0.0.1:18089") {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = write!(s, "GET /via-port-forward HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if !reply.is_empty() {
                break reply;
            }
        }
        assert!(
            Instant::now() < deadline,
            "port-forward gave no answer in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("hello from request"), "{answer}");
}

/// The example application's images (`make example-app`), built if their sources changed.
fn example_app_images() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("make")
        .args(["-s", "-C"])
        .arg(&root)
        .arg("example-app")
        .status()
        .expect("run make");
    assert!(status.success(), "make example-app: {status}");
    ["app-frontend", "app-backend", "app-redis"]
        .iter()
        .map(|name| root.join(format!("target/images/{name}.tar")))
        .collect()
}

#[test]
fn the_example_application_answers_through_cluster_dns_services_and_redis() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    let _services = ClusterServices::start(&plane, &node);
    runtime_class(&plane);
    for image in example_app_images() {
        node.containerd.import_cri(&image);
    }
    let r = plane.kubectl(&[
        "apply",
        "-k",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/examples/app"
        ),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // The first start of each Python component compiles 18 MiB of wasm.
    for (deployment, replicas) in [("redis", "1"), ("backend", "2"), ("frontend", "1")] {
        plane.wait_for_output(
            &[
                "-n",
                "wasm-app",
                "get",
                "deployment",
                deployment,
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
            replicas,
            Duration::from_secs(300),
            &format!("{deployment} ready"),
        );
    }
    // From the node, through the frontend's ClusterIP: frontend -> backend (by name, a
    // ClusterIP) -> redis (by name over wasi:sockets TCP, a ClusterIP).
    let frontend = plane
        .kubectl(&[
            "-n",
            "wasm-app",
            "get",
            "service",
            "frontend",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .stdout;
    let frontend = format!("{}:80", frontend.trim());
    for visit in 1..=3 {
        let (code, body) = get(&frontend, "/");
        assert_eq!(
            (code, body.as_str()),
            (
                200,
                format!("frontend -> backend: visits: {visit}\n").as_str()
            ),
            "{}",
            plane
                .kubectl(&["-n", "wasm-app", "logs", "-l", "app in (frontend,backend)"])
                .stdout
        );
    }
    let r = plane.kubectl(&["delete", "namespace", "wasm-app", "--wait=true"]);
    assert_eq!(r.code, 0, "{r:?}");
}
