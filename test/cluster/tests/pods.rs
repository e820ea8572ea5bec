//! A real kubelet runs wasm pods on wasmcell: the single-node cluster (`wasmcell_cluster`),
//! the RuntimeClass from `deploy/`, pods with `runtimeClassName: wasmtime` placed by the
//! scheduler on the pod network with their service-account token mounted; kubectl reads their
//! phase, exit code, logs, OOMKilled, restarts and errors, and CRI their stats. Images are
//! imported into containerd's `k8s.io` namespace.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wasmcell_cluster::{ControlPlane, Kubelet, Node};
use wasmcell_e2e::fixtures;

const IMAGE: &str = "wasmcell.dev/examples/probe:0.1.0";

const HOG: &str = "wasmcell.test/hog:1";

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
    let (c, kubelet) = (&node.containerd, &node.kubelet);

    let runtimeclass = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/runtimeclass.yaml"
    );
    let r = plane.kubectl(&["apply", "-f", runtimeclass]);
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
    // (The kubelet's own summary API fails on these machines as a whole: cAdvisor finds no
    // device for the root filesystem, /dev/vda.)
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
