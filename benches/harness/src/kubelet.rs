//! Pods through the kubelet: the cluster tier's one-node Kubernetes (`wasmcell-cluster`), a
//! wasm pod (`runtimeClassName: wasmtime`, the probe sleeping) against the same pod shape on
//! runc (busybox sleeping), both from images imported on the node.
//!
//! - **Pod start**: `kubectl apply` of the pod until `kubectl wait --for=condition=Ready`
//!   returns (a watch, so no polling interval in the figure; kubectl's own start is in both
//!   sides alike), the sides in turn each round.
//! - **Many at once**: a Deployment of `n` replicas applied at once, until all are Ready.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasmcell_cluster::{kubernetes_bin, ControlPlane, Node};
use wasmcell_e2e::fixtures;

use crate::progress::Progress;
use crate::stats::Summary;

const WASM_IMAGE: &str = "bench.wasmcell/probe:1";
const RUNC_IMAGE: &str = "bench.wasmcell/busybox:1";

/// The pod template of a side: (labels and spec).
fn template(wasm: bool, app: &str) -> Value {
    let container = if wasm {
        json!({"name": "main", "image": WASM_IMAGE, "imagePullPolicy": "Never",
               "args": ["sleep", "3600"]})
    } else {
        json!({"name": "main", "image": RUNC_IMAGE, "imagePullPolicy": "Never",
               "command": ["/bin/busybox", "sleep", "3600"]})
    };
    let mut spec = json!({"terminationGracePeriodSeconds": 0, "containers": [container]});
    if wasm {
        spec["runtimeClassName"] = "wasmtime".into();
    }
    json!({"metadata": {"labels": {"app": app}}, "spec": spec})
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<String, String> {
    let out = Command::new(kubernetes_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .args(args)
        .output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Applies `manifest` (JSON) through a file.
fn apply(plane: &ControlPlane, name: &str, manifest: &Value) -> Result<(), String> {
    let file = plane.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, manifest.to_string()).map_err(|e| e.to_string())?;
    kubectl(plane, &["apply", "-f", &file.display().to_string()]).map(drop)
}

/// Pod start through the kubelet, and `n` pods at once, for wasm and runc pods.
pub fn measure(rounds: usize, n: usize, stop: &dyn Fn() -> bool) -> Value {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    node.import_wasm(WASM_IMAGE, fixtures::PROBE);
    node.containerd.import_busybox_cri(RUNC_IMAGE);
    match measure_on(&plane, rounds, n, stop) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("wasmcell-bench: kubelet: {e}\n{}", node.kubelet.log_tail());
            json!({ "error": e })
        }
    }
}

fn measure_on(
    plane: &ControlPlane,
    rounds: usize,
    n: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Value, String> {
    let runtimeclass =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/runtimeclass.yaml");
    kubectl(plane, &["apply", "-f", &runtimeclass.display().to_string()])?;
    let sides = [("wasmcell", true), ("runc", false)];

    let start_pod = |name: &str, wasm: bool| -> Result<Duration, String> {
        let mut pod = template(wasm, name);
        pod["apiVersion"] = "v1".into();
        pod["kind"] = "Pod".into();
        pod["metadata"]["name"] = name.into();
        let started = Instant::now();
        apply(plane, name, &pod)?;
        kubectl(
            plane,
            &[
                "wait",
                "--for=condition=Ready",
                &format!("pod/{name}"),
                "--timeout=120s",
            ],
        )?;
        let took = started.elapsed();
        kubectl(
            plane,
            &["delete", "pod", name, "--wait=true", "--timeout=120s"],
        )?;
        Ok(took)
    };
    // Warm-up: the first wasm start fills the compile cache.
    for (side, wasm) in sides {
        start_pod(&format!("warm-{side}"), wasm)?;
    }
    let mut times = [Vec::new(), Vec::new()];
    let progress = Progress::new("pods through the kubelet".to_owned(), rounds * 2);
    for round in 0..rounds {
        if stop() {
            return Err("interrupted".to_owned());
        }
        for (i, (side, wasm)) in sides.iter().enumerate() {
            times[i].push(start_pod(&format!("{side}-{round}"), *wasm)?);
            progress.advance(1);
        }
    }
    drop(progress);
    let [wc, rc] = [Summary::of(&times[0]), Summary::of(&times[1])];

    let mut all_ready = Vec::new();
    for (side, wasm) in sides {
        if stop() {
            return Err("interrupted".to_owned());
        }
        let name = format!("many-{side}");
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": n, "selector": {"matchLabels": {"app": name}},
                     "template": template(wasm, &name)},
        });
        eprint!("\r{n} {side} pods at once...");
        let started = Instant::now();
        apply(plane, &name, &deployment)?;
        kubectl(
            plane,
            &[
                "wait",
                &format!("--for=jsonpath={{.status.readyReplicas}}={n}"),
                &format!("deployment/{name}"),
                "--timeout=900s",
            ],
        )?;
        all_ready.push(started.elapsed().as_secs_f64());
        kubectl(plane, &["delete", "deployment", &name, "--wait=true"])?;
        kubectl(
            plane,
            &[
                "wait",
                "--for=delete",
                "pod",
                "-l",
                &format!("app={name}"),
                "--timeout=900s",
            ],
        )?;
        eprint!("\r{:40}\r", "");
    }

    println!(
        "\n{:<34} {:>10} {:>10} {:>10}",
        "pods through the kubelet", "wasmcell", "runc", "wc/runc"
    );
    println!(
        "{:<34} {:>10.0} {:>10.0} {:>10.2}",
        "  created → Ready, median (ms)",
        wc.median,
        rc.median,
        wc.median / rc.median
    );
    println!(
        "{:<34} {:>10.0} {:>10.0}",
        "  created → Ready, p99 (ms)", wc.p99, rc.p99
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>10.2}",
        format!("  {n} pods at once, all Ready (s)"),
        all_ready[0],
        all_ready[1],
        all_ready[0] / all_ready[1]
    );
    Ok(json!({
        "pod_shape": "one container sleeping (probe.wasm with runtimeClassName wasmtime; busybox on runc), images imported",
        "start": {"wasmcell": wc.to_json(), "runc": rc.to_json(),
                  "ratio_median_wasmcell_over_runc": wc.median / rc.median},
        "many": {"pods": n, "wasmcell_s": all_ready[0], "runc_s": all_ready[1],
                 "ratio_wasmcell_over_runc": all_ready[0] / all_ready[1]},
    }))
}
