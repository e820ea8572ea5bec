//! Every image layout `wasmcell image build` writes, through containerd's own paths: `ctr image
//! import` (which unpacks) and `ctr run`, with no API calls of the test's own; and through the
//! CRI plugin where `ctr` cannot go. Each program runs twice: the second start must be a hit
//! of the compile cache.
//!
//! What each containerd does with each layout (the README's "Which containerd runs which layout" says
//! the same to users):
//! - `rootfs`: every containerd unpacks and runs it.
//! - `runwasi`: containerd 1.7.7+/2.x skip its wasm layer when unpacking and run it; 1.6.20
//!   cannot import it (non-tar layer).
//! - `cncf`: `ctr run` refuses it before containerd is asked (`ctr` reads only OCI and Docker
//!   image configs: "unknown image config media type application/vnd.wasm.config.v0+json");
//!   the CRI plugin of containerd 2.x runs it. 1.6.20 cannot import it.
#![allow(clippy::unwrap_used)]

use wasmcell_e2e::cri::HANDLER;
use wasmcell_e2e::{fixtures, unpacks_non_tar_layers, Containerd, Ran};

struct Program {
    name: &'static str,
    wasm: Vec<u8>,
    says: &'static str,
}

fn programs() -> Vec<Program> {
    vec![
        Program {
            name: "module",
            wasm: fixtures::PROBE.to_vec(),
            says: "hello from C",
        },
        Program {
            name: "component",
            wasm: fixtures::PROBE_COMPONENT.to_vec(),
            says: "hello from C",
        },
        Program {
            name: "big",
            wasm: fixtures::big_module(21),
            says: "hello from a big module",
        },
    ]
}

/// Builds `program` as `layout`, listing linux/amd64 too when `extra` (as Kubernetes images
/// must), imports it with `ctr image import --all-platforms`, and returns the name and the
/// `--platform` to run it with (none for the linux entry).
fn build(
    c: &Containerd,
    layout: &str,
    program: &Program,
    extra: bool,
) -> (String, Ran, Option<&'static str>) {
    let name = format!(
        "wasmcell.test/{layout}-{}{}:1",
        program.name,
        if extra { "-linux" } else { "" }
    );
    let file = c.dir.path().join(format!("{}.wasm", program.name));
    std::fs::write(&file, &program.wasm).unwrap();
    let mut args = vec![
        "--name",
        &name,
        "--layout",
        layout,
        "--wasm",
        file.to_str().unwrap(),
        "--arg",
        "hello",
    ];
    if extra {
        args.extend(["--extra-platform", "linux/amd64"]);
    }
    let tar = c.build_image(&format!("{layout}-{}-{extra}.tar", program.name), &args);
    let mut import = wasmcell_e2e::import_args();
    import.push(tar.to_str().unwrap());
    let r = c.ctr(&import);
    let component = program.name == "component";
    let platform = match (extra, layout) {
        (true, _) => None,
        (false, "rootfs") => Some("wasi/wasm"),
        (false, _) if component => Some("wasip2/wasm"),
        (false, _) => Some("wasip1/wasm"),
    };
    (name, r, platform)
}

/// `ctr run --rm` of `image` under wasmcell.
fn ctr_run(c: &Containerd, image: &str, id: &str, platform: Option<&str>) -> Ran {
    let mut args = vec!["run", "--rm", "--runtime", wasmcell_e2e::RUNTIME];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    args.extend([image, id]);
    c.ctr(&args)
}

fn runs_twice_from_the_cache(c: &Containerd, layout: &str) {
    for program in programs() {
        for extra in [false, true] {
            let (image, imported, platform) = build(c, layout, &program, extra);
            assert_eq!(imported.code, 0, "import {image}: {imported:?}");
            for (round, want) in [(1, "compiled"), (2, "cache-hit")] {
                // The linux-listed image is the same program: already in the cache.
                let want = if extra { "cache-hit" } else { want };
                let id = format!("{layout}-{}-{extra}-{round}", program.name);
                let r = ctr_run(c, &image, &id, platform);
                assert_eq!(r.code, 0, "ctr run {image}: {r:?}\n{}", c.log());
                assert!(r.stdout.contains(program.says), "{image}: {r:?}");
                assert_eq!(c.prepared(&id), want, "{image}, start {round}");
            }
        }
    }
}

#[test]
fn rootfs_images_import_and_run_with_ctr_and_start_again_from_the_cache() {
    let c = Containerd::start();
    runs_twice_from_the_cache(&c, "rootfs");
}

#[test]
fn runwasi_images_import_and_run_with_ctr_on_containerd_2() {
    let c = Containerd::start();
    if !unpacks_non_tar_layers() {
        // containerd 1.6.20 cannot unpack a non-tar layer: the import fails, plainly.
        let (image, imported, _) = build(&c, "runwasi", &programs()[0], false);
        assert_ne!(imported.code, 0, "{image}: {imported:?}");
        return;
    }
    runs_twice_from_the_cache(&c, "runwasi");
}

#[test]
fn cncf_artifacts_run_through_cri_on_containerd_2_and_ctr_says_why_it_cannot() {
    if !unpacks_non_tar_layers() {
        let c = Containerd::start();
        let (image, imported, _) = build(&c, "cncf", &programs()[0], false);
        assert_ne!(imported.code, 0, "{image}: {imported:?}");
        return;
    }
    let c = Containerd::start_cri();
    for program in programs() {
        let (image, imported, platform) = build(&c, "cncf", &program, false);
        assert_eq!(imported.code, 0, "import {image}: {imported:?}");
        let r = ctr_run(&c, &image, &format!("cncf-ctr-{}", program.name), platform);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            r.stderr
                .contains("unknown image config media type application/vnd.wasm.config.v0+json"),
            "{r:?}"
        );

        let file = c.dir.path().join(format!("cri-{}.wasm", program.name));
        std::fs::write(&file, &program.wasm).unwrap();
        let name = format!("wasmcell.test/cri-cncf-{}:1", program.name);
        let tar = c.build_image(
            &format!("cri-cncf-{}.tar", program.name),
            &[
                "--name",
                &name,
                "--layout",
                "cncf",
                "--wasm",
                file.to_str().unwrap(),
                "--arg",
                "hello",
                "--extra-platform",
                "linux/amd64",
            ],
        );
        c.import_cri(&tar);
        for round in 1..=2 {
            let pod = format!("cncf-{}-{round}", program.name);
            let (code, logs) = c.run_cri_pod(HANDLER, &pod, &name, &["hello"]);
            assert_eq!(code, 0, "{name}: {logs}\n{}", c.log());
            assert!(logs.contains(program.says), "{name}: {logs}");
        }
    }
    // Every CRI start after the first of each program was a cache hit.
    let log = c.log();
    let hits = log.matches("): cache-hit in").count();
    assert!(hits >= 3, "cache hits in the log: {hits}\n{log}");
}

/// A wasm layer streams from containerd's content store into the anonymous file the cell
/// maps: the shim never holds the layer in its own memory, so a large layer costs the shim
/// (which lives outside the pod's cgroup) no more than a small one.
#[test]
fn a_large_wasm_layer_streams_through_the_shim_without_being_held() {
    const MIB: usize = 96;
    let c = Containerd::start();
    if !unpacks_non_tar_layers() {
        return; // containerd 1.6.20 cannot import the runwasi layout (see above).
    }
    let program = Program {
        name: "large",
        wasm: fixtures::big_module(MIB),
        says: "hello from a big module",
    };
    let (image, imported, platform) = build(&c, "runwasi", &program, false);
    assert_eq!(imported.code, 0, "import {image}: {imported:?}");
    let mut args = vec!["run", "-d", "--runtime", wasmcell_e2e::RUNTIME];
    args.extend(["--platform", platform.expect("a wasm platform")]);
    args.extend([image.as_str(), "large"]);
    let r = c.ctr(&args);
    assert_eq!(r.code, 0, "ctr run -d {image}: {r:?}\n{}", c.log());
    let stopped = c.wait_until(std::time::Duration::from_secs(60), || {
        c.ctr(&["task", "ls"])
            .stdout
            .lines()
            .any(|l| l.starts_with("large ") && l.contains("STOPPED"))
    });
    assert!(stopped, "the task did not run to its end\n{}", c.log());
    // The peak resident memory of each shim process, in KiB.
    let peaks: Vec<u64> = c
        .shim_pids()
        .iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmHWM")
        })
        .collect();
    assert!(!peaks.is_empty(), "no shim is running\n{}", c.log());
    let limit_kib = ((MIB as u64) << 10) / 3;
    eprintln!("shim peaks (KiB): {peaks:?}");
    assert!(
        peaks.iter().all(|&p| p < limit_kib),
        "a shim's peak resident memory (KiB) reached a third of the {MIB} MiB layer: {peaks:?}"
    );
    assert_eq!(c.ctr(&["task", "delete", "large"]).code, 0);
}
