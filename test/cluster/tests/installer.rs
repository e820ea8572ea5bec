//! The node installer of `deploy/kubernetes` on a node without wasmcell: its DaemonSet (the
//! image `make installer-image` builds, imported on the node) installs the shim and the
//! `wasmtime` handler into the node's containerd, restarts it and labels the node, after which
//! a RuntimeClass pod runs; the uninstall kustomization removes the handler, the shim and the
//! label and leaves containerd's config byte for byte as it was.
//!
//! The kustomizations are applied as they are, under an overlay with what differs on a test
//! node: the node's containerd is this test's (its config, shim directory and binary), its
//! "host" mount namespace is this test process's (these machines' PID 1 cannot be entered),
//! containerd is restarted by the test (the restart command asks for it and waits), and the
//! pod reaches the API server on loopback (no kube-proxy runs here).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmcell_cluster::{ControlPlane, Node, NODE_NAME};
use wasmcell_e2e::{bin_dir, containerd_bin, fixtures};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Copies directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_installer_daemonset_installs_on_the_node_and_its_uninstall_restores_the_config() {
    let plane = ControlPlane::start();
    // A node as the installer finds it: containerd with its CRI plugin and no wasmcell.
    let mut node = Node::start(&plane, false, "");
    let d = node.containerd.dir.path().to_owned();
    let config = d.join("config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let shim = d.join("bin/containerd-shim-wasmcell-v1");
    assert!(!shim.exists());

    // The installer's image, as `make installer-image` builds it.
    let image = d.join("installer.tar");
    let out = Command::new("bash")
        .arg(deploy().join("installer/build-image.sh"))
        .arg(bin_dir())
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-image.sh: {out:?}");
    node.containerd.import_cri(&image);
    node.import_wasm("wasmcell.test/probe:1", fixtures::PROBE);

    // The overlay: deploy/kubernetes as it is, and this node's particulars.
    let kustomize = plane.dir.path().join("kustomize");
    copy_dir(&deploy(), &kustomize.join("deploy"));
    let restart_requested = d.join("restart-requested");
    let restart = d.join("restart-containerd.sh");
    std::fs::write(
        &restart,
        format!(
            "#!/bin/sh\n# Asks the test to restart containerd, and waits until it has.\n\
             touch {r}\nwhile [ -e {r} ]; do sleep 0.1; done\n",
            r = restart_requested.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&restart, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = format!(
        "--host-pid {pid} --config {config} --shim-dir {shims} --containerd {containerd} \
         --address {socket} --restart-command {restart}",
        pid = std::process::id(),
        config = config.display(),
        shims = d.join("bin").display(),
        containerd = containerd_bin().display(),
        socket = node.containerd.socket.display(),
        restart = restart.display(),
    );
    let port = plane.api.rsplit(':').next().unwrap().to_owned();
    let patch = serde_json::json!([
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/3/value", "value": args},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "KUBERNETES_SERVICE_PORT", "value": port}},
    ]);
    for (overlay, base) in [("install", "deploy"), ("uninstall", "deploy/uninstall")] {
        std::fs::create_dir_all(kustomize.join(overlay)).unwrap();
        std::fs::write(
            kustomize.join(overlay).join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources:\n  - ../{base}\npatches:\n  - target:\n      kind: DaemonSet\n      \
                 name: wasmcell-installer\n    patch: '{patch}'\n"
            ),
        )
        .unwrap();
    }
    let apply = |overlay: &str| {
        let r = plane.kubectl(&["apply", "-k", kustomize.join(overlay).to_str().unwrap()]);
        assert_eq!(r.code, 0, "apply -k {overlay}: {r:?}");
    };
    let label = |node: &Node| {
        let r = plane.kubectl(&[
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.metadata.labels.wasmcell\\.dev/installed}",
        ]);
        assert_eq!(r.code, 0, "{r:?}\n{}", node.kubelet.log_tail());
        r.stdout
    };
    // The installer's pod of the DaemonSet's current generation has done its work (it is
    // Ready once `wasmcell install` succeeded).
    let settled = || {
        let r = plane.kubectl(&[
            "-n",
            "wasmcell-system",
            "get",
            "daemonset",
            "wasmcell-installer",
            "-o",
            "json",
        ]);
        let ds: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        let status = &ds["status"];
        status["observedGeneration"] == ds["metadata"]["generation"]
            && status["updatedNumberScheduled"] == 1
            && status["numberReady"] == 1
            && status["numberUnavailable"].is_null()
    };
    // Serves the installer's restart requests until `done` holds.
    let serve_restarts = |node: &mut Node, what: &str, done: &dyn Fn(&Node) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut restarts = 0;
        while !done(node) {
            if restart_requested.exists() {
                node.containerd.restart();
                restarts += 1;
                std::fs::remove_file(&restart_requested).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 180 s\n{}\n{}",
                plane
                    .kubectl(&["-n", "wasmcell-system", "describe", "pods"])
                    .stdout,
                plane
                    .kubectl(&[
                        "-n",
                        "wasmcell-system",
                        "logs",
                        "daemonset/wasmcell-installer"
                    ])
                    .stdout
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        restarts
    };

    apply("install");
    let restarts = serve_restarts(&mut node, "installed", &|n| settled() && label(n) == "true");
    assert_eq!(
        restarts, 1,
        "containerd restarted once for the changed config"
    );
    assert!(shim.exists(), "the shim installed");
    let installed = std::fs::read_to_string(&config).unwrap();
    assert!(
        installed.contains("runtimes.wasmtime]") && installed.contains("io.containerd.wasmcell.v1"),
        "{installed}"
    );
    let r = plane.kubectl(&[
        "-n",
        "wasmcell-system",
        "logs",
        "daemonset/wasmcell-installer",
    ]);
    assert!(r.stdout.contains("wasmcell install"), "{r:?}");

    // The RuntimeClass now selects this node, and its pods run on wasmcell.
    let r = plane.kubectl(&[
        "apply",
        "-f",
        deploy().join("runtimeclass.yaml").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    plane.apply(
        "wasm-hello",
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "wasm-hello"},
            "spec": {
                "runtimeClassName": "wasmtime",
                "restartPolicy": "Never",
                "containers": [{
                    "name": "hello",
                    "image": "wasmcell.test/probe:1",
                    "imagePullPolicy": "Never",
                    "args": ["hello"],
                }],
            }
        })
        .to_string(),
    );
    plane.wait_for_output(
        &["get", "pod", "wasm-hello", "-o", "jsonpath={.status.phase}"],
        "Succeeded",
        Duration::from_secs(90),
        "the wasm pod done",
    );
    let r = plane.kubectl(&["logs", "wasm-hello"]);
    assert_eq!(r.stdout, "hello from C\n", "{r:?}");
    let r = plane.kubectl(&[
        "delete",
        "pod",
        "wasm-hello",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");

    // Uninstall: the same DaemonSet, told to; the config is as it was before.
    apply("uninstall");
    let restarts = serve_restarts(&mut node, "uninstalled", &|n| {
        settled() && label(n).is_empty()
    });
    assert_eq!(
        restarts, 1,
        "containerd restarted once for the restored config"
    );
    assert!(!shim.exists(), "the shim removed");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original,
        "containerd's config as it was"
    );
    let r = plane.kubectl(&[
        "delete",
        "namespace",
        "wasmcell-system",
        "--wait=true",
        "--timeout=90s",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}
