//! Exec in wasm pods through a real kubelet: an exec liveness probe that runs a wasm program in
//! the container passes, one that fails makes the kubelet restart its container, and
//! `kubectl exec POD -- /probe.wasm` prints the program's output (through the API server, the
//! kubelet's streaming server and containerd's CRI), and `kubectl exec -it` runs Python's
//! interactive prompt in a terminal.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use wasmcell_cluster::{kubernetes_bin, ControlPlane, Node};
use wasmcell_e2e::terminal::Terminal;
use wasmcell_e2e::{fixtures, workload_component};

const IMAGE: &str = "wasmcell.test/exec-probe:1";

/// The RuntimeClass users apply.
const RUNTIME_CLASS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/kubernetes/runtimeclass.yaml"
);

/// A container of the probe image that sleeps, with an exec liveness probe running `probe`.
fn container(name: &str, probe: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "args": ["sleep", "600"],
        "livenessProbe": {
            "exec": {"command": probe},
            "periodSeconds": 1,
            "failureThreshold": 1,
            "timeoutSeconds": 5
        }
    })
}

#[test]
fn exec_probes_and_kubectl_exec_run_wasm_programs_in_the_pods_containers() {
    let plane = ControlPlane::start();
    let node = Node::start(&plane, true, "wasmcell.dev/installed=true");
    // The probe at /probe.wasm in the image's rootfs, and Python's prompt at /repl.wasm.
    let probe = node.containerd.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    let repl = node.containerd.dir.path().join("repl.wasm");
    std::fs::write(&repl, workload_component("python-repl")).unwrap();
    let repl_file = format!("{}:/repl.wasm", repl.display());
    node.import(
        "exec-probe.tar",
        &[
            "--name",
            IMAGE,
            "--wasm",
            probe.to_str().unwrap(),
            "--file",
            &repl_file,
        ],
    );
    let r = plane.kubectl(&["apply", "-f", RUNTIME_CLASS]);
    assert_eq!(r.code, 0, "{r:?}");
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "exec-probes"},
        "spec": {
            "runtimeClassName": "wasmtime",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                container("alive", &["/probe.wasm", "exit", "0"]),
                container("failing", &["/probe.wasm", "exit", "1"]),
            ]
        }
    });
    plane.apply("exec-probes", &pod.to_string());
    let restarts = |name: &str| {
        let r = plane.kubectl(&[
            "get",
            "pod",
            "exec-probes",
            "-o",
            &format!("jsonpath={{.status.containerStatuses[?(@.name==\"{name}\")].restartCount}}"),
        ]);
        r.stdout.trim().parse::<u32>().unwrap_or(0)
    };
    // The failing probe restarts its container; the passing one leaves its container alone.
    plane.wait_for_output(
        &[
            "get",
            "pod",
            "exec-probes",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"failing\")].lastState.terminated.exitCode}",
        ],
        // The kubelet's SIGTERM ends a wasm guest at once (WASI has no signal handlers).
        "143",
        Duration::from_secs(90),
        "the container whose liveness probe fails restarted",
    );
    assert!(restarts("failing") >= 1);
    let events = plane.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=exec-probes",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.stdout.contains("Liveness probe failed"),
        "the kubelet says why: {events:?}"
    );
    assert_eq!(
        restarts("alive"),
        0,
        "a passing exec probe restarts nothing"
    );

    // kubectl exec: the program's output, and its failure.
    let r = plane.kubectl(&[
        "exec",
        "exec-probes",
        "-c",
        "alive",
        "--",
        "/probe.wasm",
        "args",
        "from",
        "kubectl",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("from") && r.stdout.contains("kubectl"),
        "{r:?}"
    );
    let r = plane.kubectl(&["exec", "exec-probes", "-c", "alive", "--", "sh"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("sh"),
        "the error names the program: {r:?}"
    );
    assert_eq!(restarts("alive"), 0);

    // kubectl exec -it: Python's prompt in a terminal, through the kubelet's streaming server
    // (ResizePty included); a line typed there runs.
    let mut kubectl = Command::new(kubernetes_bin("kubectl"));
    kubectl.arg("--kubeconfig").arg(&plane.kubeconfig).args([
        "exec",
        "-it",
        "exec-probes",
        "-c",
        "alive",
        "--",
        "/repl.wasm",
    ]);
    let mut t = Terminal::spawn(kubectl, 100, 30);
    let at = t
        .expect(">>> ", Duration::from_secs(120))
        .unwrap_or_else(|shown| panic!("Python's prompt: {shown:?}\n{}", node.containerd.log()));
    t.type_in("print(6*7)\r");
    t.expect_after(at, "42\n>>> ", Duration::from_secs(20))
        .unwrap_or_else(|shown| panic!("42 at the next prompt: {shown:?}"));
    t.type_in("exit()\r");
    assert_eq!(t.wait(Duration::from_secs(20)), Some(0), "{:?}", t.shown());
    assert_eq!(restarts("alive"), 0);

    let r = plane.kubectl(&[
        "delete",
        "pod",
        "exec-probes",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}
