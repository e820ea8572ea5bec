//! A kubelet with systemd's cgroup driver on cgroup v2: the cluster tier's `systemd_node` test
//! (`test/cluster/tests/systemd_node.rs`, built by the same `cargo test`) runs inside the VM,
//! where systemd is init on the unified hierarchy. The whole single-node cluster runs there
//! (etcd, kube-apiserver, controller-manager, scheduler, the kubelet with `cgroupDriver:
//! systemd` and its QoS slices, containerd with runc's `SystemdCgroup = true` and wasmcell's
//! handler, the CNI bridge on the test range), on the VM's own loopback and bridge: the VM has
//! no network card. The test's pods: a wasm Job, exit codes, OOMKilled in Burstable and
//! Guaranteed pods, a wasi:http handler with a native sidecar behind an httpGet probe and
//! `kubectl exec` into both, CRI stats and the summary API, deletion inside the grace period,
//! and nothing left in systemd's units, processes or mounts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wasmcell_cluster::{cni_plugins_dir, etcd_bin, kubernetes_bin};
use wasmcell_vm::{stage, test_binary, Image, Share, BOOT_FACTS};

#[test]
fn a_kubelet_with_systemds_cgroup_driver_runs_wasm_pods_in_the_vm() {
    let containerd = wasmcell_e2e::containerd_dir()
        .expect("WASMCELL_CONTAINERD_DIR: the VM runs the pinned containerd 2.x");
    assert!(
        wasmcell_e2e::containerd_version() >= (2, 2),
        "a v1.37 kubelet needs containerd 2.2 or later"
    );
    let image = Image::get();
    let scratch = tempfile::tempdir().unwrap();
    let bin = wasmcell_e2e::bin_dir();
    let mut files = vec![
        (
            "containerd-shim-wasmcell-v1",
            bin.join("containerd-shim-wasmcell-v1"),
        ),
        ("wasmcell", bin.join("wasmcell")),
        (
            "systemd_node",
            test_binary(&bin.join("deps"), "systemd_node"),
        ),
        ("crictl", wasmcell_e2e::cri::crictl_bin_path()),
        ("etcd", etcd_bin()),
    ];
    for name in [
        "kubectl",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
    ] {
        files.push((name, kubernetes_bin(name)));
    }
    let bin = stage(&scratch.path().join("bin"), &files);
    let plugins = cni_plugins_dir();
    let cni = stage(
        &scratch.path().join("cni"),
        &[
            ("bridge", plugins.join("bridge")),
            ("host-local", plugins.join("host-local")),
            ("loopback", plugins.join("loopback")),
        ],
    );
    let command = r#"
export WASMCELL_BIN_DIR=/mnt/in/bin WASMCELL_CONTAINERD_DIR=/mnt/in/containerd
export WASMCELL_CRICTL=/mnt/in/bin/crictl WASMCELL_KUBERNETES_DIR=/mnt/in/bin
export WASMCELL_ETCD=/mnt/in/bin/etcd WASMCELL_CNI_PLUGINS=/mnt/in/cni
# Software emulation: the harness waits this many times longer for the cluster's parts.
export WASMCELL_TIME_SCALE=5
cd /tmp && timeout 1500 /mnt/in/bin/systemd_node --test-threads=1 --nocapture
"#;
    let share = |name: &str, path| Share {
        name: name.into(),
        path,
    };
    let run = image.run(
        &format!("{BOOT_FACTS}{command}"),
        &[
            share("bin", bin),
            share("cni", cni),
            share("containerd", containerd),
        ],
        Duration::from_secs(1680),
    );
    eprintln!("the VM ran for {:?}", run.took);
    assert_eq!(run.status, Some(0), "{}", run.report());
    let out = &run.output;
    run.assert_systemd_on_cgroup_v2();
    // It ran, rather than skipping for want of systemd.
    assert!(!out.contains("SKIPPED"), "{}", run.report());
    assert!(
        out.contains("test result: ok. 1 passed; 0 failed; 0 ignored"),
        "{}",
        run.report()
    );
}
