//! `deploy/kubernetes` against a real kube-apiserver (the pinned Kubernetes, on loopback):
//! every kustomization applies, and what the API server stores is what the manifests say (the
//! RuntimeClass's handler, scheduling and overhead; the installer DaemonSet's privileges).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use wasmcell_cluster::ControlPlane;

fn kustomization(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/kubernetes")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_deploy_manifests_apply_to_a_kube_apiserver_and_read_back_as_written() {
    let plane = ControlPlane::start();
    let r = plane.kubectl(&["version", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|s| s.starts_with("v1.37.")),
        "{v}"
    );

    for name in ["", "examples", "examples/app"] {
        let r = plane.kubectl(&["apply", "-k", &kustomization(name)]);
        assert_eq!(r.code, 0, "apply -k {name}: {r:?}");
    }
    let r = plane.kubectl(&["get", "runtimeclass", "wasmtime", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rc["handler"], "wasmtime");
    assert_eq!(
        rc["scheduling"]["nodeSelector"]["wasmcell.dev/installed"],
        "true"
    );
    assert_eq!(rc["overhead"]["podFixed"]["memory"], "4Mi");

    let r = plane.kubectl(&[
        "-n",
        "wasmcell-system",
        "get",
        "daemonset",
        "wasmcell-installer",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let ds: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["serviceAccountName"], "wasmcell-installer");
    assert_eq!(pod["containers"][0]["securityContext"]["privileged"], true);

    // The installer's service account may patch nodes and nothing else of interest.
    let sa = "system:serviceaccount:wasmcell-system:wasmcell-installer";
    for (verb, resource, allowed) in [
        ("patch", "nodes", "yes"),
        ("get", "nodes", "yes"),
        ("delete", "nodes", "no"),
        ("get", "secrets", "no"),
    ] {
        let r = plane.kubectl(&["auth", "can-i", verb, resource, "--as", sa]);
        assert_eq!(r.stdout.trim(), allowed, "{verb} {resource}: {r:?}");
    }

    // The pods of the examples name the RuntimeClass; the API server admitted them.
    let r = plane.kubectl(&["get", "pod", "wasm-with-sidecar", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let p: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(p["spec"]["runtimeClassName"], "wasmtime");
    assert_eq!(
        p["spec"]["overhead"]["memory"], "4Mi",
        "the RuntimeClass's overhead was applied at admission"
    );

    // The uninstall kustomization applies over it (the same DaemonSet, told to uninstall).
    let r = plane.kubectl(&["apply", "-k", &kustomization("uninstall")]);
    assert_eq!(r.code, 0, "apply -k uninstall: {r:?}");
    let r = plane.kubectl(&[
        "-n",
        "wasmcell-system",
        "get",
        "daemonset",
        "wasmcell-installer",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[1].value}",
    ]);
    assert_eq!(r.stdout, "uninstall", "{r:?}");
}
