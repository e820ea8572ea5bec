//! A real kubelet runs wasm pods on wasmcell: the single-node cluster (`wasmcell_cluster`),
//! the RuntimeClass from `deploy/`, pods with `runtimeClassName: wasmtime` placed by the
//! scheduler on the pod network with their service-account token mounted; kubectl reads their
//! phase, exit code, logs, OOMKilled, restarts and errors, why a wasm container ended (its
//! termination message) and per-pod settings from annotations, and CRI their stats. Images are
//! imported into containerd's `k8s.io` namespace.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wasmcell_cluster::{ControlPlane, Kubelet, Node};
use wasmcell_e2e::fixtures;

const IMAGE: &str = "wasmcell.dev/examples/probe:0.1.0";

const HOG: &str = "wasmcell.test/hog:1";
const TRAP: &str = "wasmcell.test/trap:1";
const GROW: &str = "wasmcell.test/grow:1";

/// The RuntimeClass users apply.
const RUNTIME_CLASS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/kubernetes/runtimeclass.yaml"
);

fn pod(name: &str, args: &[&str]) -> String {
    pod_with(name, IMAGE, args, "Never", None)
}

/// A pod of `image` with `args`, `restart` policy and a memory limit.
fn pod_with(
    name: &str,
    image: &str,
    args: &[&str],
    restart: &str,
    memory_limit: Option<&str>,
) -> String {
    let mut resources = serde_json::json!({});
    if let Some(limit) = memory_limit {
        resources = serde_json::json!({"limits": {"memory": limit}});
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": restart,
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "Never",
                "args": args,
                "resources": resources,
            }],
        }
    })
    .to_string()
}

/// Waits until pod `name` has ended; its status.
fn ended(plane: &ControlPlane, kubelet: &Kubelet, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = plane.kubectl(&["get", "pod", name, "-o", "json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let phase = p["status"]["phase"].as_str().unwrap_or_default().to_owned();
        if phase == "Succeeded" || phase == "Failed" {
            return p["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} did not end within 90 s: {}\n{}",
            p["status"],
            kubelet.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_kubelet_runs_runtimeclass_wasm_pods_and_kubectl_reads_exits_logs_oom_and_restarts() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm(IMAGE, fixtures::PROBE);
    // Two linear memories of 20 MiB: past a 32 MiB limit only together (each alone stays
    // below the cell's per-memory cap), so the kernel's OOM killer ends it.
    node.import_wasm(HOG, fixtures::TWO_MEMORIES);
    node.import_wasm(TRAP, fixtures::TRAP);
    node.import_wasm(GROW, fixtures::GROW);
    let (c, kubelet) = (&node.containerd, &node.kubelet);

    let r = plane.kubectl(&["apply", "-f", RUNTIME_CLASS]);
    assert_eq!(r.code, 0, "{r:?}");

    for (name, args, phase, code) in [
        ("wasm-hello", vec!["hello"], "Succeeded", 0),
        ("wasm-exit-3", vec!["exit", "3"], "Failed", 3),
    ] {
        let file = c.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, pod(name, &args)).unwrap();
        let r = plane.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{r:?}");
        let status = ended(&plane, kubelet, name);
        assert_eq!(status["phase"], phase, "{name}: {status}\n{}", c.log());
        let terminated = &status["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["exitCode"], code, "{name}: {status}");
        let reason = if code == 0 { "Completed" } else { "Error" };
        assert_eq!(terminated["reason"], reason, "{name}: {status}");
        if code == 0 {
            let r = plane.kubectl(&["logs", name]);
            assert_eq!(r.code, 0, "{r:?}");
            assert_eq!(r.stdout, "hello from C\n", "every byte of the log: {r:?}");
        }
        let r = plane.kubectl(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
        assert_eq!(r.code, 0, "{r:?}");
    }

    // Past its memory limit: the kubelet reports OOMKilled.
    let file = c.dir.path().join("oom.json");
    std::fs::write(&file, pod_with("wasm-oom", HOG, &[], "Never", Some("32Mi"))).unwrap();
    let r = plane.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let status = ended(&plane, kubelet, "wasm-oom");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{status}\n{}", c.log());
    assert_eq!(terminated["exitCode"], 137, "{status}");
    let r = plane.kubectl(&["delete", "pod", "wasm-oom", "--wait=true", "--timeout=60s"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Why a wasm container ended, in its last state's message (the termination message the
    // shim wrote); `FallbackToLogsOnError` takes the file's message first, as for any container.
    let mut trap: serde_json::Value =
        serde_json::from_str(&pod_with("wasm-trap", TRAP, &[], "Never", None)).unwrap();
    trap["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError".into();
    plane.apply("wasm-trap", &trap.to_string());
    let status = ended(&plane, kubelet, "wasm-trap");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (&terminated["reason"], &terminated["exitCode"]),
        (&"Error".into(), &134.into()),
        "{status}"
    );
    let message = terminated["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("wasm trap: wasm `unreachable` instruction executed"),
        "{status}"
    );
    // A trap after the memory limit refused memory: OOMKilled, with the reason.
    plane.apply(
        "wasm-grow",
        &pod_with("wasm-grow", GROW, &[], "Never", Some("32Mi")),
    );
    let status = ended(&plane, kubelet, "wasm-grow");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (&terminated["reason"], &terminated["exitCode"]),
        (&"OOMKilled".into(), &134.into()),
        "{status}"
    );
    let message = terminated["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("memory.grow refused at the container's memory limit (32Mi)")
            && message.contains("grow!grow_forever"),
        "{status}"
    );
    let described = plane.kubectl(&["describe", "pod", "wasm-grow"]).stdout;
    assert!(
        described.contains("memory.grow refused at the container's memory limit (32Mi)"),
        "kubectl describe shows it: {described}"
    );
    // A setting for one container, through the CRI plugin's pod_annotations as `wasmcell
    // install` set them: the CPU deadline stops a spinning command.
    let mut spin: serde_json::Value =
        serde_json::from_str(&pod_with("wasm-deadline", IMAGE, &["spin"], "Never", None)).unwrap();
    spin["metadata"]["annotations"] =
        serde_json::json!({"probe.wasmcell.dev/cpu-deadline-ms": "500"});
    plane.apply("wasm-deadline", &spin.to_string());
    let status = ended(&plane, kubelet, "wasm-deadline");
    let message = status["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with(
            "stopped at its CPU deadline of 500 ms (annotation probe.wasmcell.dev/cpu-deadline-ms)"
        ),
        "{status}"
    );
    // A setting that names nothing: Create fails, and the pod's events say why.
    let mut unknown: serde_json::Value = serde_json::from_str(&pod_with(
        "wasm-badsetting",
        IMAGE,
        &["hello"],
        "Never",
        None,
    ))
    .unwrap();
    unknown["metadata"]["annotations"] = serde_json::json!({"wasmcell.dev/cpu-deadline": "5"});
    plane.apply("wasm-badsetting", &unknown.to_string());
    let said = c.wait_until(Duration::from_secs(60), || {
        plane
            .kubectl(&["describe", "pod", "wasm-badsetting"])
            .stdout
            .contains("unknown setting annotation \"wasmcell.dev/cpu-deadline\"")
    });
    assert!(
        said,
        "{}",
        plane
            .kubectl(&["describe", "pod", "wasm-badsetting"])
            .stdout
    );
    for name in ["wasm-trap", "wasm-grow", "wasm-deadline", "wasm-badsetting"] {
        let r = plane.kubectl(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
        assert_eq!(r.code, 0, "{r:?}");
    }

    // restartPolicy OnFailure: the failed container is started again, in the same sandbox.
    let file = c.dir.path().join("retry.json");
    std::fs::write(
        &file,
        pod_with("wasm-retry", IMAGE, &["exit", "3"], "OnFailure", None),
    )
    .unwrap();
    let r = plane.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = plane.kubectl(&[
            "get",
            "pod",
            "wasm-retry",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        if r.stdout.trim().parse::<u32>().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted within 90 s: {r:?}\n{}",
            kubelet.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = c.crictl(&["pods", "--name", "wasm-retry", "-q"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "one sandbox for the restarts: {r:?}"
    );
    let r = c.crictl(&["ps", "-a", "--name", "probe", "-q"]);
    assert!(
        r.stdout.lines().count() >= 2,
        "a new container each start: {r:?}"
    );
    let r = plane.kubectl(&[
        "delete",
        "pod",
        "wasm-retry",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");

    // CRI's stats of a running wasm container, as the kubelet reads them: CPU and memory.
    // (The kubelet's own summary API answers an error on this node as a whole: without local
    // storage accounting cAdvisor has no figures for the root filesystem. The VM tier's node
    // accounts it, and reads the summary: `systemd_node.rs`.)
    plane.apply(
        "wasm-spin",
        &pod_with("wasm-spin", IMAGE, &["spin"], "Never", None),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = c.crictl(&[
            "stats",
            "-o",
            "json",
            "--label",
            "io.kubernetes.pod.name=wasm-spin",
        ]);
        let used = serde_json::from_str::<serde_json::Value>(&r.stdout)
            .ok()
            .and_then(|v| v["stats"].as_array()?.first().cloned())
            .is_some_and(|s| {
                let n = |v: &serde_json::Value| {
                    v.as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .or(v.as_u64())
                        .unwrap_or(0)
                };
                n(&s["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
                    && n(&s["memory"]["workingSetBytes"]["value"]) > 0
            });
        if used {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CPU and memory of the running wasm container within 90 s: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = plane.kubectl(&["delete", "pod", "wasm-spin", "--wait=true", "--timeout=60s"]);
    assert_eq!(r.code, 0, "{r:?}");

    // An image whose program is neither wasm nor native: wasmcell's message reaches the pod's
    // events (kubectl describe).
    let junk = c.dir.path().join("junk");
    std::fs::write(&junk, "just some text\n").unwrap();
    node.import(
        "junk.tar",
        &[
            "--name",
            "wasmcell.test/junk:1",
            "--file",
            &format!("{}:/junk", junk.display()),
            "--entrypoint",
            "/junk",
        ],
    );
    plane.apply(
        "wasm-junk",
        &pod_with("wasm-junk", "wasmcell.test/junk:1", &[], "Never", None),
    );
    let seen = c.wait_until(Duration::from_secs(60), || {
        plane
            .kubectl(&["describe", "pod", "wasm-junk"])
            .stdout
            .contains("neither a WebAssembly module")
    });
    assert!(
        seen,
        "{}",
        plane.kubectl(&["describe", "pod", "wasm-junk"]).stdout
    );
    let r = plane.kubectl(&["delete", "pod", "wasm-junk", "--wait=true", "--timeout=60s"]);
    assert_eq!(r.code, 0, "{r:?}");

    // A RuntimeClass whose handler this node's containerd does not have: the kubelet's event
    // says so.
    plane.apply(
        "runtimeclass-nope",
        &serde_json::json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "nope"},
            "handler": "nope",
        })
        .to_string(),
    );
    let mut unhandled: serde_json::Value =
        serde_json::from_str(&pod_with("wasm-nohandler", IMAGE, &[], "Never", None)).unwrap();
    unhandled["spec"]["runtimeClassName"] = "nope".into();
    plane.apply("wasm-nohandler", &unhandled.to_string());
    let said = c.wait_until(Duration::from_secs(60), || {
        plane
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=wasm-nohandler",
            ])
            .stdout
            .contains("no runtime for \"nope\" is configured")
    });
    assert!(
        said,
        "{}",
        plane.kubectl(&["describe", "pod", "wasm-nohandler"]).stdout
    );
    let r = plane.kubectl(&[
        "delete",
        "pod",
        "wasm-nohandler",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A wasm pod's sandbox is a pause cell, and the pod's containers see what a runc-held sandbox
/// gives them: the pod's hostname, its sysctls (the pod's own and the CRI plugin's
/// unprivileged-port one) in the pod's network and IPC namespaces, and with
/// `shareProcessNamespace` one PID namespace whose init is the sandbox.
#[test]
fn a_wasm_pods_sandbox_is_a_pause_cell_with_the_pods_hostname_sysctls_and_pid_namespace() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm(IMAGE, fixtures::PROBE);
    let c = &node.containerd;
    c.import_busybox_cri("wasmcell.dev/examples/busybox:0.1.0");
    let r = plane.kubectl(&["apply", "-f", RUNTIME_CLASS]);
    assert_eq!(r.code, 0, "{r:?}");
    let report = "hostname; cat /proc/sys/kernel/shm_rmid_forced \
                  /proc/sys/net/ipv4/ip_local_port_range \
                  /proc/sys/net/ipv4/ip_unprivileged_port_start; \
                  tr '\\0' ' ' < /proc/1/cmdline";
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "wasm-shared"},
        "spec": {
            "runtimeClassName": "wasmtime",
            "restartPolicy": "Never",
            "shareProcessNamespace": true,
            "securityContext": {"sysctls": [
                {"name": "kernel.shm_rmid_forced", "value": "1"},
                {"name": "net.ipv4.ip_local_port_range", "value": "40000 40100"}
            ]},
            "containers": [
                {
                    "name": "report",
                    "image": "wasmcell.dev/examples/busybox:0.1.0",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "sh", "-c", report],
                },
                {
                    "name": "probe",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["hello"],
                }
            ],
        }
    });
    plane.apply("wasm-shared", &manifest.to_string());
    let status = ended(&plane, &node.kubelet, "wasm-shared");
    assert_eq!(status["phase"], "Succeeded", "{status}");
    let sandbox = c.crictl(&["pods", "--name", "wasm-shared", "-q"]).stdout;
    let sandbox = sandbox.trim();
    let r = plane.kubectl(&["logs", "wasm-shared", "-c", "report"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[..lines.len().min(4)],
        ["wasm-shared", "1", "40000\t40100", "0"],
        "the pod's hostname and sysctls: {r:?}"
    );
    // (The cell's name is written over the zygote's, padded with NULs, which `tr` made spaces.)
    let init = lines.get(4).copied().unwrap_or_default().trim_end();
    assert!(
        init.contains("containerd-shim-wasmcell-v1 cell ")
            && init.ends_with(&format!(" {sandbox}")),
        "the PID namespace's init is the sandbox's pause cell: {init:?}, sandbox {sandbox}"
    );
    let r = plane.kubectl(&["logs", "wasm-shared", "-c", "probe"]);
    assert!(r.stdout.contains("hello"), "{r:?}");
    let r = plane.kubectl(&[
        "delete",
        "pod",
        "wasm-shared",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}
