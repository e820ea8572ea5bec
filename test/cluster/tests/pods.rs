//! A real kubelet runs wasm pods on wasmcell: a control plane (etcd, kube-apiserver v1.36),
//! containerd with its CRI plugin configured by `wasmcell install`, and a kubelet; the
//! RuntimeClass from `deploy/`; pods with `runtimeClassName: wasmtime`; kubectl reads their
//! phase, exit code, logs, OOMKilled, restarts and errors, and CRI their stats.
//!
//! The pods name their node (no scheduler runs here), use the node's network (no CNI here) and
//! mount no service-account token (no controller makes them). Images are imported into
//! containerd's `k8s.io` namespace.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use wasmcell_e2e::cluster::{ControlPlane, Kubelet, NODE_NAME};
use wasmcell_e2e::cri::cri_config;
use wasmcell_e2e::{bin_dir, containerd_bin, fixtures, Containerd};

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
            "nodeName": NODE_NAME,
            "runtimeClassName": "wasmtime",
            // The node has no CNI network yet: the pod takes the node's.
            "hostNetwork": true,
            "restartPolicy": restart,
            "automountServiceAccountToken": false,
            "tolerations": [{"operator": "Exists"}],
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

    // The node: containerd's CRI configured by wasmcell install, the images imported.
    let dir = Containerd::new_dir();
    let socket = dir.path().join("containerd.sock");
    std::fs::write(
        dir.path().join("config.toml"),
        cri_config(dir.path(), &socket),
    )
    .unwrap();
    let out = Command::new(bin_dir().join("wasmcell"))
        .arg("install")
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--shim-dir")
        .arg(dir.path().join("bin"))
        .arg("--containerd")
        .arg(containerd_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "install: {out:?}");
    let bin = dir.path().join("bin");
    let c = Containerd::start_in(dir, &[], &[bin]);
    c.import_pause();
    let probe = c.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    let tar = c.build_image(
        "probe.tar",
        &[
            "--name",
            IMAGE,
            "--wasm",
            probe.to_str().unwrap(),
            "--extra-platform",
            "linux/amd64",
        ],
    );
    c.import_cri(&tar);
    // Two linear memories of 20 MiB: past a 32 MiB limit only together (each alone stays
    // below the cell's per-memory cap), so the kernel's OOM killer ends it.
    let hog = c.dir.path().join("hog.wasm");
    std::fs::write(&hog, fixtures::TWO_MEMORIES).unwrap();
    let tar = c.build_image(
        "hog.tar",
        &[
            "--name",
            HOG,
            "--wasm",
            hog.to_str().unwrap(),
            "--extra-platform",
            "linux/amd64",
        ],
    );
    c.import_cri(&tar);
    let kubelet = Kubelet::start(&plane, &c, "wasmcell.dev/installed=true");

    let runtimeclass = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/runtimeclass.yaml"
    );
    let r = plane.kubectl(&["apply", "-f", runtimeclass]);
    assert_eq!(r.code, 0, "{r:?}");
    // No controller-manager runs to make the namespace's default service account.
    let r = plane.kubectl(&["create", "serviceaccount", "default", "-n", "default"]);
    assert_eq!(r.code, 0, "{r:?}");

    for (name, args, phase, code) in [
        ("wasm-hello", vec!["hello"], "Succeeded", 0),
        ("wasm-exit-3", vec!["exit", "3"], "Failed", 3),
    ] {
        let file = c.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, pod(name, &args)).unwrap();
        let r = plane.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{r:?}");
        let status = ended(&plane, &kubelet, name);
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
    let status = ended(&plane, &kubelet, "wasm-oom");
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
    apply(
        &c,
        &plane,
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
    let tar = c.build_image(
        "junk.tar",
        &[
            "--name",
            "wasmcell.test/junk:1",
            "--file",
            &format!("{}:/junk", junk.display()),
            "--entrypoint",
            "/junk",
            "--extra-platform",
            "linux/amd64",
        ],
    );
    c.import_cri(&tar);
    apply(
        &c,
        &plane,
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
    apply(
        &c,
        &plane,
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
    apply(&c, &plane, "wasm-nohandler", &unhandled.to_string());
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
    drop(kubelet);
}

/// Writes `manifest` next to containerd's files and applies it.
fn apply(c: &Containerd, plane: &ControlPlane, name: &str, manifest: &str) {
    let file = c.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, manifest).unwrap();
    let r = plane.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
}
