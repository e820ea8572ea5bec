//! The node users run: a kubelet with `cgroupDriver: systemd` on the unified cgroup v2
//! hierarchy with its QoS slices (`cgroupsPerQOS`), and containerd's runc with `SystemdCgroup =
//! true` ([`CgroupDriver::Systemd`]). That needs systemd as init on cgroup v2, which only the VM
//! tier's machine has: `test/vm/tests/kubelet_systemd.rs` runs this binary there, and on the
//! cgroup v1 hosts it is skipped. One test, so that the control plane starts once under the
//! VM's software emulation. Through kubectl:
//! - a wasm Job runs to completion and its log reads back; a failing pod's exit code;
//! - `OOMKilled` in a Burstable and in a Guaranteed pod, each container given a
//!   `cri-containerd-<id>.scope` of its pod's slice in the kubelet's QoS hierarchy;
//! - a wasi:http handler with a native sidecar (an init container that keeps running), ready by
//!   its httpGet probe, each part in a systemd scope of the pod's slice with its memory limit
//!   and the kubelet's `memory.oom.group`, `kubectl exec` into both;
//! - CRI stats and the kubelet's summary API for the wasm container;
//! - the pod deleted well inside its grace period;
//! - then nothing left: no `cri-containerd-*.scope` and no pod slice among systemd's units, no
//!   shim, no process in a pod's cgroup, no mount.
//!
//! Then `wasmcell doctor` on this node passes its cgroup and kernel checks.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_cluster::{patience, CgroupDriver, ControlPlane, Node, NODE_NAME};
use wasmcell_e2e::{fixtures, Containerd};

const PROBE: &str = "wasmcell.test/probe:1";
const HOG: &str = "wasmcell.test/hog:1";
const HANDLER: &str = "wasmcell.test/http-hello:1";
const BUSYBOX: &str = "wasmcell.test/busybox:1";

/// The RuntimeClass users apply (its text: the VM has no checkout to read it from).
const RUNTIME_CLASS: &str = include_str!("../../../deploy/kubernetes/runtimeclass.yaml");

fn systemctl(args: &[&str]) -> String {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .expect("run systemctl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod of one wasm container.
fn pod(name: &str, image: &str, args: &[&str], resources: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "args": args,
                "resources": resources,
            }],
        }
    })
    .to_string()
}

fn get_pod(plane: &ControlPlane, name: &str) -> Value {
    let r = plane.kubectl(&["get", "pod", name, "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap()
}

/// Waits until pod `name` has ended; the pod.
fn ended(plane: &ControlPlane, node: &Node, name: &str) -> Value {
    let deadline = Instant::now() + patience(90);
    loop {
        let p = get_pod(plane, name);
        let phase = p["status"]["phase"].as_str().unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} did not end within {:?}: {}\n{}\n{}",
            patience(90),
            p["status"],
            node.kubelet.log_tail(),
            node.containerd.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The slice the kubelet's systemd driver gives a pod: below its QoS class's slice, named
/// after its UID with the dashes made underscores.
fn pod_slice(pod: &Value) -> String {
    let uid = pod["metadata"]["uid"].as_str().unwrap().replace('-', "_");
    match pod["status"]["qosClass"].as_str().unwrap() {
        "Guaranteed" => format!("kubepods-pod{uid}.slice"),
        "Burstable" => format!("kubepods-burstable-pod{uid}.slice"),
        _ => format!("kubepods-besteffort-pod{uid}.slice"),
    }
}

/// The cgroup directory of `slice` below `kubepods.slice`.
fn slice_dir(slice: &str) -> String {
    match slice.strip_prefix("kubepods-") {
        Some(rest) if rest.starts_with("burstable-") => {
            format!("/kubepods.slice/kubepods-burstable.slice/{slice}")
        }
        Some(rest) if rest.starts_with("besteffort-") => {
            format!("/kubepods.slice/kubepods-besteffort.slice/{slice}")
        }
        _ => format!("/kubepods.slice/{slice}"),
    }
}

/// The container ids of a pod's status, by container name (init containers too).
fn container_ids(pod: &Value) -> Vec<(String, String)> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|s| {
            let id = s["containerID"].as_str()?.strip_prefix("containerd://")?;
            Some((s["name"].as_str()?.to_owned(), id.to_owned()))
        })
        .collect()
}

/// The sandbox's id of pod `name`.
fn sandbox_id(c: &Containerd, name: &str) -> String {
    let r = c.crictl(&["pods", "--name", name, "-q"]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.lines().next().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "no sandbox of {name}: {r:?}");
    id
}

/// The cgroup path CRI asked the runtime for (its runtime spec's `cgroupsPath`), of a sandbox
/// (`inspectp`) or a container (`inspect`).
fn cgroups_path(c: &Containerd, verb: &str, id: &str) -> String {
    let r = c.crictl(&[verb, "-o", "json", id]);
    assert_eq!(r.code, 0, "{verb} {id}: {r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every sandbox and container id CRI knows now: what must not be left behind later.
fn known_ids(c: &Containerd) -> BTreeSet<String> {
    let pods = c.crictl(&["pods", "-q"]).stdout;
    let containers = c.crictl(&["ps", "-a", "-q"]).stdout;
    pods.lines()
        .chain(containers.lines())
        .map(str::to_owned)
        .collect()
}

fn delete(plane: &ControlPlane, name: &str) -> Duration {
    let started = Instant::now();
    let timeout = format!("--timeout={}s", patience(120).as_secs());
    let r = plane.kubectl(&["delete", "pod", name, "--wait=true", &timeout]);
    assert_eq!(r.code, 0, "delete {name}: {r:?}");
    started.elapsed()
}

/// What of the pods is still on the node: systemd's units for their containers and slices,
/// shims, processes in a pod's cgroup, mounts naming an id CRI gave them.
fn left(c: &Containerd, ids: &BTreeSet<String>) -> Vec<String> {
    let mut left: Vec<String> = systemctl(&[
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "cri-containerd-*.scope",
        "kubepods-*pod*.slice",
    ])
    .lines()
    .map(|l| format!("unit {}", l.trim()))
    .collect();
    for pid in c.shim_pids() {
        left.push(format!("shim process {pid}"));
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains("cri-containerd-")
            || cgroup.contains("pod") && cgroup.contains("kubepods")
        {
            left.push(format!("process {name} in {}", cgroup.trim()));
        }
    }
    for m in c.mounts() {
        if ids.iter().any(|id| m.contains(id.as_str())) {
            left.push(format!("mount {m}"));
        }
    }
    left
}

#[test]
fn a_kubelet_with_systemds_cgroup_driver_runs_wasm_pods_in_its_qos_slices_and_leaves_nothing() {
    if CgroupDriver::of_this_machine() != CgroupDriver::Systemd {
        wasmcell_e2e::skip(
            "needs systemd as init on cgroup v2; the VM tier runs it (test/vm/tests/kubelet_systemd.rs)",
        );
        return;
    }
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    let c = &node.containerd;
    // The kubelet runs on systemd's driver: its QoS slices are systemd's units.
    let state = systemctl(&["show", "-p", "ActiveState", "kubepods.slice"]);
    assert_eq!(
        state.trim(),
        "ActiveState=active",
        "{}",
        node.kubelet.log_tail()
    );

    node.import_wasm(PROBE, fixtures::PROBE);
    // Two linear memories of 20 MiB: past a 32 MiB limit only together.
    node.import_wasm(HOG, fixtures::TWO_MEMORIES);
    let (probe, handler) = (
        c.dir.path().join("probe.wasm"),
        c.dir.path().join("handler.wasm"),
    );
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    std::fs::write(&handler, fixtures::HTTP_HANDLER).unwrap();
    node.import(
        "http-hello.tar",
        &[
            "--name",
            HANDLER,
            "--wasm",
            handler.to_str().unwrap(),
            "--file",
            &format!("{}:/probe.wasm", probe.display()),
        ],
    );
    c.import_busybox_cri(BUSYBOX);
    plane.apply("runtimeclass", RUNTIME_CLASS);
    let mut ids = BTreeSet::new();

    // A Job to completion, its log whole.
    plane.apply(
        "wasm-job",
        &json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "wasm-job"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "runtimeClassName": "wasmtime",
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "hello",
                        "image": PROBE,
                        "imagePullPolicy": "Never",
                        "args": ["hello"],
                    }],
                }},
            }
        })
        .to_string(),
    );
    let timeout = format!("--timeout={}s", patience(120).as_secs());
    let r = plane.kubectl(&["wait", "--for=condition=Complete", "job/wasm-job", &timeout]);
    assert_eq!(r.code, 0, "the Job completes: {r:?}\n{}", c.log());
    let r = plane.kubectl(&["logs", "job/wasm-job"]);
    assert_eq!(r.stdout, "hello from C\n", "every byte of the log: {r:?}");
    ids.extend(known_ids(c));
    let r = plane.kubectl(&[
        "delete",
        "job",
        "wasm-job",
        "--cascade=foreground",
        &timeout,
    ]);
    assert_eq!(r.code, 0, "{r:?}");

    // A failing program's exit code.
    plane.apply(
        "wasm-exit-3",
        &pod("wasm-exit-3", PROBE, &["exit", "3"], json!({})),
    );
    let p = ended(&plane, &node, "wasm-exit-3");
    let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(p["status"]["phase"], "Failed", "{}", p["status"]);
    assert_eq!(terminated["exitCode"], 3, "{}", p["status"]);
    assert_eq!(terminated["reason"], "Error", "{}", p["status"]);
    ids.extend(known_ids(c));
    delete(&plane, "wasm-exit-3");

    // OOMKilled in a Burstable pod (a limit above its request) and in a Guaranteed one
    // (requests equal to limits), each container in a scope of its pod's slice.
    for (name, resources, qos) in [
        (
            "wasm-oom-burstable",
            json!({"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}),
            "Burstable",
        ),
        (
            "wasm-oom-guaranteed",
            json!({
                "requests": {"memory": "32Mi", "cpu": "250m"},
                "limits": {"memory": "32Mi", "cpu": "250m"},
            }),
            "Guaranteed",
        ),
    ] {
        plane.apply(name, &pod(name, HOG, &[], resources));
        let p = ended(&plane, &node, name);
        assert_eq!(p["status"]["qosClass"], qos, "{name}: {}", p["status"]);
        let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            terminated["reason"],
            "OOMKilled",
            "{name}: {}\n{}",
            p["status"],
            c.log()
        );
        assert_eq!(terminated["exitCode"], 137, "{name}: {}", p["status"]);
        let slice = pod_slice(&p);
        let sandbox = sandbox_id(c, name);
        assert_eq!(
            cgroups_path(c, "inspectp", &sandbox),
            format!("{slice}:cri-containerd:{sandbox}"),
            "{name}'s sandbox"
        );
        let (_, id) = &container_ids(&p)[0];
        assert_eq!(
            cgroups_path(c, "inspect", id),
            format!("{slice}:cri-containerd:{id}"),
            "{name}'s container"
        );
        ids.extend(known_ids(c));
        delete(&plane, name);
    }

    // A wasi:http handler behind its httpGet readiness probe, with a native sidecar that
    // reaches it on localhost and keeps running; SIGTERM ends both at once.
    let grace = 90;
    plane.apply(
        "wasm-http",
        &json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "wasm-http"},
            "spec": {
                "runtimeClassName": "wasmtime",
                "terminationGracePeriodSeconds": grace,
                "initContainers": [{
                    "name": "sidecar",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "restartPolicy": "Always",
                    "command": ["/bin/busybox", "sh", "-c"],
                    "args": ["trap 'exit 0' TERM; \
                        until /bin/busybox wget -q -O- http://127.0.0.1:8080/from-the-sidecar; \
                        do /bin/busybox sleep 0.2; done; \
                        while :; do /bin/busybox sleep 1; done"],
                    "resources": {"limits": {"memory": "16Mi"}},
                }],
                "containers": [{
                    "name": "handler",
                    "image": HANDLER,
                    "imagePullPolicy": "Never",
                    "env": [{"name": "WASMCELL_HTTP_ACCESS_LOG", "value": "1"}],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 2,
                    },
                    "resources": {"limits": {"memory": "64Mi"}},
                }],
            }
        })
        .to_string(),
    );
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "wasm-http",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"handler\")].ready}",
        ],
        "true",
        patience(120),
        "the handler ready by its httpGet probe",
    );
    let p = get_pod(&plane, "wasm-http");
    assert_eq!(p["status"]["qosClass"], "Burstable", "{}", p["status"]);
    let slice = pod_slice(&p);
    let sandbox = sandbox_id(c, "wasm-http");
    let mut parts = vec![("sandbox".to_owned(), sandbox)];
    parts.extend(container_ids(&p));
    assert_eq!(parts.len(), 3, "{}", p["status"]);
    // The sandbox (a pause cell), the handler (a cell) and the sidecar (runc) each in a scope
    // systemd made in the pod's slice, active; the containers' scopes hold their memory limit.
    for (name, id) in &parts {
        let unit = format!("cri-containerd-{id}.scope");
        let show = systemctl(&["show", "-p", "ActiveState", "-p", "ControlGroup", &unit]);
        let want = format!("{}/{unit}", slice_dir(&slice));
        assert!(
            show.contains("ActiveState=active") && show.contains(&format!("ControlGroup={want}\n")),
            "{name}: {show}"
        );
        let limit = match name.as_str() {
            "handler" => Some("67108864"),
            "sidecar" => Some("16777216"),
            _ => None,
        };
        if let Some(limit) = limit {
            let file = |f: &str| {
                std::fs::read_to_string(format!("/sys/fs/cgroup{want}/{f}")).unwrap_or_default()
            };
            assert_eq!(file("memory.max").trim(), limit, "{name}'s memory.max");
            // The kubelet's one unified setting, applied by the cell as runc applies it.
            assert_eq!(
                file("memory.oom.group").trim(),
                "1",
                "{name}'s memory.oom.group"
            );
        }
    }
    // Every wasm container ran in a cell: none went to runc for a setting the cell lacked.
    assert!(
        !c.log().contains("runs under runc with the cell"),
        "{}",
        c.log()
    );
    let r = plane.kubectl(&["logs", "wasm-http", "-c", "handler"]);
    assert!(r.stdout.contains("http: GET /ready 200"), "{r:?}");
    // kubectl exec into each: a native program in the sidecar reaching the handler, and a wasm
    // program of the handler's image in the handler's container.
    let r = plane.kubectl(&[
        "exec",
        "wasm-http",
        "-c",
        "sidecar",
        "--",
        "/bin/busybox",
        "wget",
        "-q",
        "-O-",
        "http://127.0.0.1:8080/from-kubectl-exec",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.ends_with(fixtures::HTTP_HELLO), "{r:?}");
    let r = plane.kubectl(&[
        "exec",
        "wasm-http",
        "-c",
        "handler",
        "--",
        "/probe.wasm",
        "args",
        "from",
        "kubectl",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("kubectl"), "{r:?}");
    let r = plane.kubectl(&["logs", "wasm-http", "-c", "handler"]);
    assert!(
        r.stdout.contains("http: GET /from-the-sidecar 200")
            && r.stdout.contains("http: GET /from-kubectl-exec 200"),
        "{r:?}"
    );

    // CRI's stats of the wasm container, and the kubelet's summary API with them.
    let (_, handler_id) = parts.iter().find(|(n, _)| n == "handler").unwrap().clone();
    let number = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or(v.as_u64())
            .unwrap_or(0)
    };
    let r = c.crictl(&["stats", "-o", "json", "--id", &handler_id]);
    let stats: Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    let s = &stats["stats"][0];
    assert!(
        number(&s["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
            && number(&s["memory"]["workingSetBytes"]["value"]) > 0,
        "CRI stats of the wasm container: {r:?}"
    );
    let summary_path = format!("/api/v1/nodes/{NODE_NAME}/proxy/stats/summary");
    let deadline = Instant::now() + patience(90);
    loop {
        let r = plane.kubectl(&["get", "--raw", &summary_path]);
        let summary: Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        let container = summary["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["podRef"]["name"] == "wasm-http")
            .flat_map(|p| p["containers"].as_array().cloned().unwrap_or_default())
            .find(|c| c["name"] == "handler");
        let seen = container.as_ref().is_some_and(|c| {
            number(&c["cpu"]["usageCoreNanoSeconds"]) > 0
                && number(&c["memory"]["workingSetBytes"]) > 0
        });
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the summary API's stats of the wasm container: {container:?}\n{r:?}\n{}",
            node.kubelet.log_tail()
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Deleted well inside its grace period: the handler drains at once on SIGTERM, the
    // sidecar traps it.
    ids.extend(known_ids(c));
    let took = delete(&plane, "wasm-http");
    assert!(
        took < Duration::from_secs(grace),
        "deleting took {took:?}, the grace period is {grace} s"
    );

    // Nothing left: the kubelet removes the pods' slices, the shims their scopes.
    let mut rest = Vec::new();
    let clean = c.wait_until(patience(60), || {
        rest = left(c, &ids);
        rest.is_empty()
    });
    assert!(clean, "left on the node after the pods: {rest:#?}");

    // doctor on this node: its cgroup and kernel checks pass.
    let out = Command::new(wasmcell_e2e::bin_dir().join("wasmcell"))
        .arg("doctor")
        .arg("--json")
        .arg("--config")
        .arg(c.dir.path().join("config.toml"))
        .arg("--kubelet-config")
        .arg(c.dir.path().join("kubelet.yaml"))
        .arg("--containerd")
        .arg(wasmcell_e2e::containerd_bin())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for check in ["cgroup driver", "cgroup controllers", "kernel"] {
        let finding = report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["check"] == check);
        assert!(
            finding.is_some_and(|f| f["status"] == "ok"),
            "doctor's {check:?} on this node: {finding:?}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let driver = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["check"] == "cgroup driver")
        .map(|f| f["detail"].to_string())
        .unwrap_or_default();
    assert!(
        driver.contains("kubelet: systemd") && driver.contains("runc: systemd"),
        "{driver}"
    );
}
