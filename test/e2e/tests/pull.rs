//! What the kubelet does with an image, done through containerd's CRI plugin: pull it from a
//! registry (served on loopback) and run a pod of it with handler `wasmtime`. Every layout
//! `wasmcell image build` writes, with its wasm platform alone and with `--extra-platform
//! linux/amd64` (which Kubernetes images need: the kubelet pulls for the node's platform).
#![allow(clippy::unwrap_used)]

use wasmcell_e2e::cri::{Registry, HANDLER};
use wasmcell_e2e::{fixtures, unpacks_non_tar_layers, Containerd};

/// Builds the probe as `layout` (a component for `runwasi`, as its images usually are),
/// listing linux/amd64 too when `linux`; pushes it; returns the reference.
fn push(c: &Containerd, registry: &Registry, layout: &str, linux: bool) -> String {
    let (file, wasm) = if layout == "runwasi" {
        ("probe-component.wasm", fixtures::PROBE_COMPONENT)
    } else {
        ("probe.wasm", fixtures::PROBE)
    };
    let path = c.dir.path().join(file);
    std::fs::write(&path, wasm).unwrap();
    let name = format!("{layout}-{}:1", if linux { "linux" } else { "wasm" });
    let mut args = vec![
        "--name",
        &name,
        "--layout",
        layout,
        "--wasm",
        path.to_str().unwrap(),
        "--arg",
        "hello",
    ];
    if linux {
        args.extend(["--extra-platform", "linux/amd64"]);
    }
    let tar = c.build_image(&format!("{layout}-{linux}.tar"), &args);
    registry.push(&tar, &name)
}

#[test]
fn every_layout_pulled_through_cri_runs_when_it_lists_the_nodes_platform() {
    let c = Containerd::start_cri();
    let registry = Registry::serve(&c);
    for layout in ["rootfs", "cncf", "runwasi"] {
        // Only the wasm platform: the kubelet's pull finds nothing for linux/amd64.
        let reference = push(&c, &registry, layout, false);
        let r = c.crictl(&["pull", &reference]);
        assert_ne!(r.code, 0, "{reference}: {r:?}");
        assert!(
            r.stderr.contains("no match for platform in manifest"),
            "{reference}: {r:?}"
        );

        // With linux/amd64 listed too.
        let reference = push(&c, &registry, layout, true);
        let r = c.crictl(&["pull", &reference]);
        let runs = unpacks_non_tar_layers() || layout == "rootfs";
        if !runs {
            // containerd 1.6.20 cannot unpack a non-tar layer.
            assert_ne!(r.code, 0, "{reference}: {r:?}");
            assert!(
                r.stderr
                    .contains("mismatched image rootfs and manifest layers"),
                "{reference}: {r:?}"
            );
            continue;
        }
        assert_eq!(r.code, 0, "pull {reference}: {r:?}\n{}", c.log());
        let pod = format!("pulled-{layout}");
        let (code, logs) = c.run_cri_pod(HANDLER, &pod, &reference, &["hello"]);
        assert_eq!(code, 0, "{reference}: {logs}\n{}", c.log());
        assert!(logs.contains("hello from C"), "{reference}: {logs}");
    }
}
