//! The cgroup v2 suite: the end-to-end cgroup tests (`test/e2e/tests/cgroups.rs`, built by the
//! same `cargo test`) run inside the VM, against the pinned containerd 2.x, on the unified
//! hierarchy with systemd as PID 1: limits in `memory.max`, `cpu.max`, `cpu.weight`,
//! `cpuset.cpus`; OOM kills from `memory.events` with one TaskOOM; v2 metrics; Pause/Resume
//! through `cgroup.freeze`; Update; the cgroup removed at delete and after a killed shim; a
//! pod under a slice through the CRI plugin, each container in a scope systemd made; a
//! path with `..` never a cell's; no device node openable by a guest (v2 has no devices
//! controller: the cell's mounts are `nodev`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wasmcell_vm::{stage, test_binary, Image, Share, BOOT_FACTS};

#[test]
fn the_cgroup_tests_pass_on_the_unified_hierarchy_with_systemd_as_init() {
    let containerd = wasmcell_e2e::containerd_dir()
        .expect("WASMCELL_CONTAINERD_DIR: the VM runs the pinned containerd 2.x");
    assert!(
        wasmcell_e2e::containerd_major() >= 2,
        "the VM tier runs containerd 2.x"
    );
    let image = Image::get();
    let scratch = tempfile::tempdir().unwrap();
    let bin = wasmcell_e2e::bin_dir();
    let bin = stage(
        &scratch.path().join("bin"),
        &[
            (
                "containerd-shim-wasmcell-v1",
                bin.join("containerd-shim-wasmcell-v1"),
            ),
            ("wasmcell", bin.join("wasmcell")),
            ("cgroups", test_binary(&bin.join("deps"), "cgroups")),
            // For the pods under a slice, through the CRI plugin.
            ("crictl", wasmcell_e2e::cri::crictl_bin_path()),
        ],
    );
    let command = r#"
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
export WASMCELL_BIN_DIR=/mnt/in/bin WASMCELL_CONTAINERD_DIR=/mnt/in/containerd
export WASMCELL_CRICTL=/mnt/in/bin/crictl
# One test at a time: libtest names each as it starts, so a run that hangs shows where.
cd /tmp && timeout 600 /mnt/in/bin/cgroups --test-threads=1
"#;
    let run = image.run(
        &format!("{BOOT_FACTS}{command}"),
        &[
            Share {
                name: "bin".into(),
                path: bin,
            },
            Share {
                name: "containerd".into(),
                path: containerd,
            },
        ],
        Duration::from_secs(720),
    );
    eprintln!("the VM ran for {:?}", run.took);
    assert_eq!(run.status, Some(0), "{}", run.report());
    let out = &run.output;
    run.assert_systemd_on_cgroup_v2();
    let controllers = out
        .lines()
        .find_map(|l| l.strip_prefix("controllers: "))
        .unwrap_or_default();
    for c in ["cpuset", "cpu", "memory", "pids"] {
        assert!(
            controllers.split_whitespace().any(|x| x == c),
            "{c} available: {controllers}"
        );
    }
    // Every test of the file ran, none was skipped.
    let tests = include_str!("../../e2e/tests/cgroups.rs")
        .matches("#[test]")
        .count();
    assert!(
        out.contains(&format!(
            "test result: ok. {tests} passed; 0 failed; 0 ignored"
        )),
        "{}",
        run.report()
    );
}
