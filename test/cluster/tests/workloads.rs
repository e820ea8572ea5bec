//! The example workloads of `deploy/kubernetes/examples` on the single-node cluster, applied
//! as they are: the wasm Deployment scales 1 → 10 → 0 and leaves nothing on the node; the pod
//! of a wasm TCP service and a native busybox sidecar shares one network (the sidecar reaches
//! the service on localhost, the kubelet's tcpSocket readiness probe reaches it on the pod's
//! address); a wasi:http handler passes its httpGet readiness probe and serves its pod; and
//! deleting pods honours their grace period.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcell_cluster::{ControlPlane, Node};
use wasmcell_e2e::{fixtures, Containerd};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/kubernetes/examples")
        .join(name)
        .display()
        .to_string()
}

/// What the pods of a label left on the node, by the ids CRI gave their sandboxes and
/// containers and the network namespaces it made for them.
struct Footprint {
    ids: Vec<String>,
    netns: Vec<PathBuf>,
}

impl Footprint {
    /// The sandboxes and containers (running or not) of the pods labelled `label`.
    fn of(c: &Containerd, label: &str) -> Footprint {
        let sandboxes = c.crictl(&["pods", "--label", label, "-q"]).stdout;
        let mut ids: Vec<String> = sandboxes.lines().map(str::to_owned).collect();
        let mut netns = Vec::new();
        for sandbox in sandboxes.lines() {
            let r = c.crictl(&["inspectp", sandbox]);
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            let namespaces = &v["info"]["runtimeSpec"]["linux"]["namespaces"];
            for ns in namespaces.as_array().into_iter().flatten() {
                if ns["type"] == "network" {
                    if let Some(path) = ns["path"].as_str().filter(|p| !p.is_empty()) {
                        netns.push(path.into());
                    }
                }
            }
            let containers = c.crictl(&["ps", "-a", "-q", "--pod", sandbox]).stdout;
            ids.extend(containers.lines().map(str::to_owned));
        }
        Footprint { ids, netns }
    }

    /// What of it is still on the node: shim processes of this containerd, processes in a
    /// cgroup named after an id (cells, guests, pause), cgroups named after an id, mounts
    /// below containerd's directory naming an id, and network namespaces.
    fn left(&self, c: &Containerd) -> Vec<String> {
        let mut left = Vec::new();
        for pid in c.shim_pids() {
            left.push(format!("shim process {pid}"));
        }
        let named = |text: &str| self.ids.iter().any(|id| text.contains(id.as_str()));
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_err() {
                continue;
            }
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if named(&cgroup) {
                left.push(format!("process {name} in cgroup {}", cgroup.trim()));
            }
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if named(&e.file_name().to_string_lossy()) {
                        left.push(format!("cgroup {}", e.path().display()));
                    }
                    dirs.push(e.path());
                }
            }
        }
        for m in c.mounts() {
            if named(&m) {
                left.push(format!("mount {m}"));
            }
        }
        for ns in &self.netns {
            if ns.exists() {
                left.push(format!("network namespace {}", ns.display()));
            }
        }
        left
    }
}

#[test]
fn the_wasm_deployment_scales_to_ten_and_to_zero_leaving_nothing_behind() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm("wasmcell.dev/examples/probe:0.1.0", fixtures::PROBE);
    let c = &node.containerd;
    let r = plane.kubectl(&[
        "apply",
        "-f",
        &format!("{}/../runtimeclass.yaml", example("")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = plane.kubectl(&["apply", "-f", &example("deployment.yaml")]);
    assert_eq!(r.code, 0, "{r:?}");

    let ready = |n: &str, timeout| {
        plane.wait_for_output(
            &[
                "get",
                "deployment",
                "wasm-sleeper",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
            n,
            timeout,
            &format!("{n} ready replicas of wasm-sleeper"),
        )
    };
    ready("1", Duration::from_secs(90));
    let r = plane.kubectl(&["scale", "deployment", "wasm-sleeper", "--replicas", "10"]);
    assert_eq!(r.code, 0, "{r:?}");
    ready("10", Duration::from_secs(180));
    let r = plane.kubectl(&["get", "pods", "-l", "app=wasm-sleeper", "-o", "json"]);
    let pods: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 10, "{r:?}");
    for p in pods {
        assert_eq!(p["spec"]["runtimeClassName"], "wasmtime", "{p}");
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        assert!(ip.starts_with("198.18.64."), "on the pod network: {ip}");
    }
    let footprint = Footprint::of(c, "app=wasm-sleeper");
    assert!(footprint.ids.len() >= 20, "{:?}", footprint.ids);
    assert_eq!(footprint.netns.len(), 10, "{:?}", footprint.netns);
    assert!(
        !footprint.left(c).is_empty(),
        "the footprint check sees the pods"
    );

    let r = plane.kubectl(&["scale", "deployment", "wasm-sleeper", "--replicas", "0"]);
    assert_eq!(r.code, 0, "{r:?}");
    plane.wait_for_output(
        &["get", "pods", "-l", "app=wasm-sleeper", "-o", "name"],
        "",
        Duration::from_secs(120),
        "the pods of wasm-sleeper gone",
    );
    let mut left = Vec::new();
    let clean = c.wait_until(Duration::from_secs(60), || {
        left = footprint.left(c);
        left.is_empty()
    });
    assert!(clean, "left on the node after scaling to 0: {left:#?}");
}

#[test]
fn a_native_sidecar_reaches_the_wasm_service_on_localhost_and_the_readiness_probe_passes() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm("wasmcell.dev/examples/server:0.1.0", fixtures::SERVER);
    let c = &node.containerd;
    c.import_busybox_cri("wasmcell.dev/examples/busybox:0.1.0");
    let r = plane.kubectl(&[
        "apply",
        "-f",
        &format!("{}/../runtimeclass.yaml", example("")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = plane.kubectl(&["apply", "-f", &example("sidecar-pod.yaml")]);
    assert_eq!(r.code, 0, "{r:?}");

    // The kubelet's tcpSocket probe connects to the pod's address from the node.
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "wasm-with-sidecar",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"server\")].ready}",
        ],
        "true",
        Duration::from_secs(90),
        "the wasm server ready",
    );
    // The sidecar got the service's greeting over localhost, and ended.
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "wasm-with-sidecar",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"sidecar\")].state.terminated.exitCode}",
        ],
        "0",
        Duration::from_secs(60),
        "the sidecar done",
    );
    // (Before the service listened, its tries were refused: those lines come first.)
    let r = plane.kubectl(&["logs", "wasm-with-sidecar", "-c", "sidecar"]);
    assert!(r.stdout.ends_with(fixtures::LISTENER_REPLY), "{r:?}");
    let r = plane.kubectl(&["get", "pod", "wasm-with-sidecar", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(pod["status"]["phase"], "Running", "{}", pod["status"]);
    let ip = pod["status"]["podIP"].as_str().unwrap();
    assert!(ip.starts_with("198.18.64."), "{ip}");

    // One sandbox, one network namespace: the wasm container (a cell) and the sidecar (runc)
    // are both in it.
    let sandbox = c
        .crictl(&["pods", "--name", "wasm-with-sidecar", "-q"])
        .stdout;
    assert_eq!(sandbox.lines().count(), 1, "{sandbox}");

    let started = Instant::now();
    let r = plane.kubectl(&[
        "delete",
        "pod",
        "wasm-with-sidecar",
        "--wait=true",
        "--timeout=90s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // A wasm guest cannot catch SIGTERM (WASI has no signals): the kubelet's SIGTERM ends it
    // at once, well inside the pod's 30 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "deleting took {:?}",
        started.elapsed()
    );
}

#[test]
fn deleting_a_pod_honours_its_grace_period() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm("wasmcell.test/probe:1", fixtures::PROBE);
    let c = &node.containerd;
    c.import_busybox_cri("wasmcell.test/busybox:1");
    let r = plane.kubectl(&[
        "apply",
        "-f",
        &format!("{}/../runtimeclass.yaml", example("")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let pod = |name: &str, grace: u32, image: &str, args: &[&str]| {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "runtimeClassName": "wasmtime",
                "terminationGracePeriodSeconds": grace,
                "containers": [{
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": args,
                }],
            }
        })
        .to_string()
    };
    // A wasm guest spinning in a loop and one sleeping in a host call end on SIGTERM (exit
    // 143), long before a 60 s grace period is over.
    plane.apply(
        "wasm-spin",
        &pod("wasm-spin", 60, "wasmcell.test/probe:1", &["spin"]),
    );
    plane.apply(
        "wasm-sleep",
        &pod(
            "wasm-sleep",
            60,
            "wasmcell.test/probe:1",
            &["sleep", "3600"],
        ),
    );
    // A native program that ignores SIGTERM, in a wasmtime pod (its container goes to runc):
    // killed when its 4 s grace period ends.
    plane.apply(
        "native-stubborn",
        &pod(
            "native-stubborn",
            4,
            "wasmcell.test/busybox:1",
            &[
                "sh",
                "-c",
                "trap '' TERM; while :; do /bin/busybox sleep 1; done",
            ],
        ),
    );
    for name in ["wasm-spin", "wasm-sleep", "native-stubborn"] {
        plane.wait_for_output(
            &[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.containerStatuses[0].started}",
            ],
            "true",
            Duration::from_secs(90),
            &format!("{name} started"),
        );
    }
    for (name, at_least, below) in [
        ("wasm-spin", 0, 30),
        ("wasm-sleep", 0, 30),
        ("native-stubborn", 4, 30),
    ] {
        let started = Instant::now();
        let r = plane.kubectl(&["delete", "pod", name, "--wait=true", "--timeout=90s"]);
        assert_eq!(r.code, 0, "{r:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(at_least) && took < Duration::from_secs(below),
            "deleting {name} took {took:?}\n{}",
            node.kubelet.log_tail()
        );
    }
}

#[test]
fn a_wasi_http_handler_passes_its_http_readiness_probe_serves_its_pod_and_drains_on_delete() {
    let mut plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm(
        "wasmcell.dev/examples/http-hello:0.1.0",
        fixtures::HTTP_HANDLER,
    );
    let c = &node.containerd;
    c.import_busybox_cri("wasmcell.dev/examples/busybox:0.1.0");
    let r = plane.kubectl(&[
        "apply",
        "-f",
        &format!("{}/../runtimeclass.yaml", example("")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = plane.kubectl(&["apply", "-f", &example("http-pod.yaml")]);
    assert_eq!(r.code, 0, "{r:?}");

    // The kubelet's httpGet probe reaches the handler on the pod's address from the node.
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "wasm-http",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"handler\")].ready}",
        ],
        "true",
        Duration::from_secs(90),
        "the handler ready",
    );
    // The client in the same pod got an answer over localhost, and ended.
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "wasm-http",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"client\")].state.terminated.exitCode}",
        ],
        "0",
        Duration::from_secs(60),
        "the client done",
    );
    let r = plane.kubectl(&["logs", "wasm-http", "-c", "client"]);
    assert!(r.stdout.ends_with(fixtures::HTTP_HELLO), "{r:?}");
    // The handler's output and access log reach `kubectl logs`.
    let r = plane.kubectl(&["logs", "wasm-http", "-c", "handler"]);
    for line in [
        "http: GET /ready 200",
        "http: GET /from-the-client 200",
        fixtures::HANDLER_LINE,
    ] {
        assert!(r.stdout.contains(line), "{line:?} in {r:?}");
    }

    // Deleting the pod sends SIGTERM: the handler, idle, drains at once, well inside the grace
    // period (that a drain lets a request in flight finish and exits 0 is `test/e2e`'s
    // http.rs, through ctr and CRI).
    let started = Instant::now();
    let r = plane.kubectl(&["delete", "pod", "wasm-http", "--wait=true", "--timeout=90s"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "deleting took {:?}",
        started.elapsed()
    );

    // A pod with a metrics endpoint, scraped by a real Prometheus through its ordinary pod
    // discovery (the example scrape job, given the admin's kubeconfig from outside the
    // cluster): a PromQL query returns the number of requests sent.
    let r = plane.kubectl(&["apply", "-f", &example("metrics-pod.yaml")]);
    assert_eq!(r.code, 0, "{r:?}");
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "wasm-metrics",
            "-o",
            "jsonpath={.status.phase}",
        ],
        "Running",
        Duration::from_secs(90),
        "the metrics pod running",
    );
    let job = std::fs::read_to_string(example("prometheus.yml")).unwrap();
    let config = job
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "      - role: pod\n",
            "      - role: pod\n        kubeconfig_file: {kubeconfig}\n",
        );
    assert!(config.contains("kubeconfig_file"), "{config}");
    let prometheus = plane.start_prometheus(&config);
    let r = plane.kubectl(&[
        "get",
        "pod",
        "wasm-metrics",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    let ip = r.stdout.trim().to_owned();
    assert!(!ip.is_empty(), "{r:?}");
    const SENT: u32 = 7;
    for i in 0..SENT {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "10", &format!("http://{ip}:8080/{i}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "request {i}: {out:?}");
    }
    let query =
        "sum(wasmcell_http_requests_total{job=\"wasm-pods\",pod=\"wasm-metrics\",class=\"2xx\"})";
    let counted = c.wait_until(Duration::from_secs(90), || {
        wasmcell_cluster::promql(&prometheus, query) == Some(f64::from(SENT))
    });
    assert!(
        counted,
        "Prometheus counted {:?} of {SENT} requests; targets: {}\n{}",
        wasmcell_cluster::promql(&prometheus, query),
        std::process::Command::new("curl")
            .args(["-s", &format!("{prometheus}/api/v1/targets")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default(),
        plane.logs()
    );
    let started = wasmcell_cluster::promql(
        &prometheus,
        "wasmcell_container_starts_total{pod=\"wasm-metrics\",container=\"handler\"}",
    );
    assert_eq!(started, Some(1.0));
    let r = plane.kubectl(&[
        "delete",
        "pod",
        "wasm-metrics",
        "--wait=true",
        "--timeout=90s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}
