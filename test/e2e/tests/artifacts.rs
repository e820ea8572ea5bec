//! OCI wasm images: every layout `wasmcell image build` makes runs under wasmcell, with wasm
//! layers read from containerd's content store; precompiled claims never load native code; and
//! malformed manifests, configs and layers each fail Create with an error naming the problem.
//!
//! containerd 1.6.20 cannot unpack non-tar layers, so containers are created through its API
//! the way a newer containerd's CRI plugin creates them after a pull: images imported with
//! `--no-unpack`, a snapshot prepared with no parent, the image's filesystem layers applied to it
//! by containerd's diff service.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use wasmcell_e2e::api::{Api, ContainerRequest, Finished};
use wasmcell_e2e::image::defaults_of;
use wasmcell_e2e::{fixtures, Containerd};

const RUNTIME: &str = "io.containerd.wasmcell.v1";
const WASM_LAYER: &str = "application/wasm";
const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Imports a tarball without unpacking (what containerd 1.6.20 can do with non-tar layers).
fn import(c: &Containerd, tar: &Path) {
    let r = c.ctr(&[
        "image",
        "import",
        "--no-unpack",
        "--all-platforms",
        tar.to_str().expect("path"),
    ]);
    assert_eq!(r.code, 0, "import: {r:?}");
}

/// Runs container `id` of image `name` (built as `tar`), with `args` instead of the image's
/// defaults when given.
fn run(
    c: &Containerd,
    api: &Api,
    tar: &Path,
    name: &str,
    id: &str,
    args: Option<&[&str]>,
) -> Result<Finished, String> {
    let d = defaults_of(tar);
    let args = args
        .map(|a| a.iter().map(|s| s.to_string()).collect())
        .unwrap_or(d.args);
    let spec = c.default_spec(id, &args, &d.env, &d.cwd);
    api.run(
        ContainerRequest {
            id,
            image: name,
            runtime: RUNTIME,
            spec,
            parent: String::new(),
            plain_stdio: false,
            layers: d.tar_layers,
        },
        c.dir.path(),
    )
}

fn probe_file(c: &Containerd) -> String {
    let path = c.dir.path().join("probe.wasm");
    std::fs::write(&path, fixtures::PROBE).expect("write probe");
    path.to_string_lossy().into_owned()
}

#[test]
fn every_layout_runs_with_its_entrypoint_args_env_and_exit_status() {
    let c = Containerd::start();
    let api = c.api();
    let probe = probe_file(&c);
    let greeting = c.dir.path().join("greeting");
    std::fs::write(&greeting, "hello from a file of the image\n").expect("write");
    let file_arg = format!("{}:/etc/greeting", greeting.display());
    for layout in ["rootfs", "cncf", "runwasi"] {
        let name = format!("wasmcell.test/{layout}:1");
        let env = format!("LAYOUT={layout}");
        let mut args = vec![
            "--name", &name, "--layout", layout, "--wasm", &probe, "--arg", "env", "--env", &env,
        ];
        if layout != "cncf" {
            args.extend(["--file", &file_arg]);
        }
        let tar = c.build_image(&format!("{layout}.tar"), &args);
        import(&c, &tar);

        let r = run(&c, &api, &tar, &name, &format!("{layout}-env"), None)
            .unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(r.exit, 0, "{layout}: {r:?}");
        assert!(r.stdout.contains(&format!("env:{env}")), "{layout}: {r:?}");

        let id = format!("{layout}-exit");
        let r = run(
            &c,
            &api,
            &tar,
            &name,
            &id,
            Some(&["/probe.wasm", "exit", "5"]),
        )
        .unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(r.exit, 5, "{layout}: {r:?}");

        if layout != "cncf" {
            let id = format!("{layout}-cat");
            let r = run(
                &c,
                &api,
                &tar,
                &name,
                &id,
                Some(&["/probe.wasm", "cat", "/etc/greeting"]),
            )
            .unwrap_or_else(|e| panic!("{layout}: {e}"));
            assert_eq!(
                r.stdout, "hello from a file of the image\n",
                "{layout}: {r:?}"
            );
        }
    }
    let log = c.log();
    for id in ["cncf-env", "runwasi-env"] {
        assert!(
            log.contains(&format!("task {id}: program is wasm layer probe.wasm")),
            "{id} ran its wasm layer"
        );
    }
    // One compile for the three layouts: the same bytes share the host compile cache.
    let compiled = log.matches(": compiled in ").count();
    assert_eq!(compiled, 1, "the probe compiled once: {compiled} times");
}

/// A layer of a crafted image: media type, bytes, annotations.
type RawLayer<'a> = (&'a str, Vec<u8>, &'a [(&'a str, &'a str)]);

/// A manifest (and image record `name`) built from raw parts, written through the API.
fn put_image(api: &Api, name: &str, config: (&str, Vec<u8>), layers: &[RawLayer<'_>]) -> Value {
    let config = api.put_blob(config.0, &config.1, HashMap::new());
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_owned(),
        config.digest.clone(),
    )]);
    let mut layer_json = Vec::new();
    for (i, (media_type, bytes, annotations)) in layers.iter().enumerate() {
        let d = api.put_blob(media_type, bytes, HashMap::new());
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            d.digest.clone(),
        );
        let annotations: HashMap<&str, &str> = annotations.iter().copied().collect();
        layer_json.push(json!({
            "mediaType": media_type, "digest": d.digest, "size": d.size,
            "annotations": annotations,
        }));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": layer_json,
    });
    let bytes = serde_json::to_vec(&manifest).expect("json");
    let target = api.put_blob(MANIFEST, &bytes, labels);
    api.put_image(name, target);
    manifest
}

fn cncf_config() -> (&'static str, Vec<u8>) {
    (
        WASM_CONFIG,
        br#"{"architecture":"wasm","os":"wasip1"}"#.to_vec(),
    )
}

fn runwasi_config() -> (&'static str, Vec<u8>) {
    (
        IMAGE_CONFIG,
        br#"{"architecture":"wasm","os":"wasip1","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
    )
}

/// Runs a container of a crafted image with the probe's `hello`.
fn run_crafted(c: &Containerd, api: &Api, name: &str, id: &str) -> Result<Finished, String> {
    let args = vec!["/app.wasm".to_owned(), "hello".to_owned()];
    api.run(
        ContainerRequest {
            id,
            image: name,
            runtime: RUNTIME,
            spec: c.default_spec(id, &args, &[], "/"),
            parent: String::new(),
            plain_stdio: false,
            layers: vec![],
        },
        c.dir.path(),
    )
}

fn cache_entries(c: &Containerd) -> usize {
    walk_files(&c.cache)
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_wasm_layer_runs_under_the_runc_fallback_too() {
    let c = Containerd::start();
    let api = c.api();
    let probe = probe_file(&c);
    let tar = c.build_image(
        "cncf.tar",
        &[
            "--name",
            "t/fallback:1",
            "--layout",
            "cncf",
            "--wasm",
            &probe,
            "--arg",
            "hello",
        ],
    );
    import(&c, &tar);
    let d = defaults_of(&tar);
    // A hook that runs inside the container is something the cell cannot honour: runc builds
    // the boundary and runs it.
    let mut spec = c.default_spec("fallback", &d.args, &d.env, &d.cwd);
    spec["hooks"] = json!({"createContainer": [{"path": "/bin/true"}]});
    let r = api
        .run(
            ContainerRequest {
                id: "fallback",
                image: "t/fallback:1",
                runtime: RUNTIME,
                spec,
                parent: String::new(),
                plain_stdio: false,
                layers: vec![],
            },
            c.dir.path(),
        )
        .expect("runs");
    assert_eq!((r.exit, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
    assert!(c
        .log()
        .contains("task fallback: the cell under runc loaded its program"));
}

#[test]
fn layers_claiming_precompiled_code_are_never_loaded() {
    let c = Containerd::start();
    let api = c.api();
    // Real native code: an ELF executable, where a .cwasm would be.
    let native = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let claim: &[(&str, &str)] = &[("runwasi.io/precompiled", "true")];

    // Beside the wasm: the wasm runs, the claimed layer is passed over and logged.
    put_image(
        &api,
        "wasmcell.test/precompiled-beside:1",
        runwasi_config(),
        &[
            (COMPONENT_LAYER, native.clone(), claim),
            (COMPONENT_LAYER, fixtures::PROBE.to_vec(), &[]),
        ],
    );
    let r = run_crafted(&c, &api, "wasmcell.test/precompiled-beside:1", "pc-beside")
        .expect("runs from the wasm layer");
    assert_eq!((r.exit, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
    assert!(c.log().contains("claims to be precompiled native code"));
    let entries = cache_entries(&c);

    // Alone (a cwasm media type, or an annotation): refused.
    for (i, (media_type, annotations)) in [
        ("application/vnd.wasmtime.cwasm", &[][..]),
        (WASM_LAYER, claim),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("wasmcell.test/precompiled-only-{i}:1");
        put_image(
            &api,
            &name,
            cncf_config(),
            &[(media_type, native.clone(), annotations)],
        );
        let e = run_crafted(&c, &api, &name, &format!("pc-only-{i}")).expect_err("refused");
        assert!(
            e.contains("claim to be precompiled native code") && e.contains(&name),
            "{e}"
        );
    }

    // No claim, but native code in a wasm layer: refused by its bytes.
    put_image(
        &api,
        "wasmcell.test/native-in-wasm-layer:1",
        cncf_config(),
        &[(WASM_LAYER, native, &[])],
    );
    let e = run_crafted(&c, &api, "wasmcell.test/native-in-wasm-layer:1", "pc-elf")
        .expect_err("refused");
    assert!(
        e.contains("7f 45 4c 46") && e.contains("native code"),
        "{e}"
    );
    assert_eq!(
        cache_entries(&c),
        entries,
        "nothing from those images reached the compile cache"
    );
}

#[test]
fn malformed_images_fail_create_with_the_problem_named() {
    let c = Containerd::start();
    let api = c.api();
    let probe = fixtures::PROBE.to_vec();
    let expect = |name: &str, id: &str, wanted: &[&str]| {
        let e = run_crafted(&c, &api, name, id).expect_err(id);
        for w in wanted {
            assert!(e.contains(w), "{id}: wanted {w:?} in: {e}");
        }
    };

    put_image(
        &api,
        "t/wrong-type:1",
        cncf_config(),
        &[("application/octet-stream", probe.clone(), &[])],
    );
    expect(
        "t/wrong-type:1",
        "wrong-type",
        &[
            "must have one application/wasm layer",
            "application/octet-stream",
        ],
    );

    put_image(
        &api,
        "t/two:1",
        cncf_config(),
        &[
            (WASM_LAYER, probe.clone(), &[]),
            (WASM_LAYER, fixtures::HELLO.to_vec(), &[]),
        ],
    );
    expect(
        "t/two:1",
        "two-layers",
        &["exactly one application/wasm layer; this one has 2"],
    );

    put_image(
        &api,
        "t/empty:1",
        cncf_config(),
        &[(WASM_LAYER, Vec::new(), &[])],
    );
    expect("t/empty:1", "empty-layer", &["is empty"]);

    let truncated = probe[..probe.len() / 2].to_vec();
    put_image(
        &api,
        "t/truncated:1",
        cncf_config(),
        &[(WASM_LAYER, truncated, &[])],
    );
    expect(
        "t/truncated:1",
        "truncated",
        &["wasm layer", "t/truncated:1"],
    );

    put_image(
        &api,
        "t/bad-config:1",
        (WASM_CONFIG, b"{not json".to_vec()),
        &[(WASM_LAYER, probe.clone(), &[])],
    );
    expect(
        "t/bad-config:1",
        "bad-config",
        &["wasm config sha256:", "is malformed"],
    );

    let mut amd64 = runwasi_config();
    amd64.1 = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    put_image(
        &api,
        "t/arch:1",
        amd64,
        &[(COMPONENT_LAYER, probe.clone(), &[])],
    );
    expect("t/arch:1", "arch", &["architecture \"amd64\""]);

    let bad_manifest = api.put_blob(MANIFEST, br#"{"schemaVersion":2,"layers":"#, HashMap::new());
    api.put_image("t/bad-manifest:1", bad_manifest);
    expect(
        "t/bad-manifest:1",
        "bad-manifest",
        &["manifest sha256:", "is malformed"],
    );

    // Content that no longer matches its digest (disk corruption or tampering).
    let manifest = put_image(
        &api,
        "t/corrupt:1",
        cncf_config(),
        &[(WASM_LAYER, fixtures::EXIT7.to_vec(), &[])],
    );
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    let mut bytes = fixtures::EXIT7.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(c.blob_path(&layer), &bytes).expect("corrupt the blob");
    expect(
        "t/corrupt:1",
        "corrupt",
        &["does not match its digest", &layer],
    );

    // After all that, the same containerd and shim binary still run a good image.
    put_image(&api, "t/good:1", cncf_config(), &[(WASM_LAYER, probe, &[])]);
    let r = run_crafted(&c, &api, "t/good:1", "good").expect("good image runs");
    assert_eq!(r.stdout, "hello from C\n");
}

#[test]
fn image_build_is_byte_identical_for_every_layout() {
    let c = Containerd::start();
    let probe = probe_file(&c);
    for layout in ["rootfs", "cncf", "runwasi"] {
        let args = [
            "--name",
            "wasmcell.test/same:1",
            "--layout",
            layout,
            "--wasm",
            &probe,
            "--arg",
            "env",
            "--env",
            "A=1",
            "--extra-platform",
            "linux/amd64",
        ];
        let a = std::fs::read(c.build_image("a.tar", &args)).expect("a");
        let b = std::fs::read(c.build_image("b.tar", &args)).expect("b");
        assert!(a == b, "{layout}: two builds differ");
    }
}

#[test]
fn extra_platforms_let_a_linux_pull_find_a_wasm_image() {
    let c = Containerd::start();
    let probe = probe_file(&c);
    let host = format!(
        "linux/{}",
        if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        }
    );
    // Importing for this node's platform (what CRI does) misses an index of only wasm...
    let only = c.build_image(
        "only.tar",
        &[
            "--name",
            "t/only-wasm:1",
            "--layout",
            "cncf",
            "--wasm",
            &probe,
        ],
    );
    let r = c.ctr(&[
        "image",
        "import",
        "--no-unpack",
        "--platform",
        &host,
        only.to_str().expect("path"),
    ]);
    // (ctr 1.6 says "image might be filtered out"; CRI says "no match for platform in manifest".)
    assert_ne!(
        r.code, 0,
        "an index of only wasm should not serve {host}: {r:?}"
    );
    let listed = c.ctr(&["image", "ls", "-q"]).stdout;
    assert!(!listed.contains("t/only-wasm:1"), "{listed}");

    // ...and finds one that also lists the node's platform, which then runs.
    let both = c.build_image(
        "both.tar",
        &[
            "--name",
            "t/both:1",
            "--layout",
            "cncf",
            "--wasm",
            &probe,
            "--arg",
            "hello",
            "--extra-platform",
            &host,
        ],
    );
    let r = c.ctr(&[
        "image",
        "import",
        "--no-unpack",
        "--platform",
        &host,
        both.to_str().expect("path"),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let api = c.api();
    let r = run(&c, &api, &both, "t/both:1", "both", None).expect("runs");
    assert_eq!(r.stdout, "hello from C\n", "{r:?}");
}

/// The image lookup tells "not found" from a failure (it reads containerd's gRPC status itself,
/// `crates/image/src/grpc.rs`): a container whose image record was removed after it was created
/// runs its rootfs entrypoint, and the shim logs why.
#[test]
fn a_container_whose_image_is_gone_runs_its_rootfs_entrypoint() {
    let c = Containerd::start();
    let image = "wasmcell.test/gone:latest";
    c.import_wasm(image, "probe.wasm", fixtures::PROBE);
    let r = c.ctr(&[
        "container",
        "create",
        "--runtime",
        RUNTIME,
        image,
        "gone",
        "/probe.wasm",
        "hello",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.ctr(&["image", "remove", image]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = c.ctr(&["task", "start", "gone"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("hello"), "{r:?}");
    assert!(
        c.log()
            .contains(&format!("its image {image} is no longer in containerd")),
        "{}",
        c.log()
    );
    // `ctr task start` deletes the task once it has exited.
    assert_eq!(c.ctr(&["container", "delete", "gone"]).code, 0);
}

/// Files the guest creates get the spec's `process.user.umask`, and runc's 0022 when the spec
/// gives none.
#[test]
fn files_the_guest_creates_follow_the_specs_umask() {
    use std::os::unix::fs::PermissionsExt;
    let c = Containerd::start();
    let api = c.api();
    let name = "wasmcell.test/umask:1";
    let d = c.import_probe_unpacked(name);
    let data = c.dir.path().join("umask-data");
    std::fs::create_dir(&data).unwrap();
    for (umask, want) in [(Some(0o077), 0o600), (Some(0o002), 0o664), (None, 0o644)] {
        let id = format!(
            "umask-{}",
            umask.map_or("none".into(), |u| format!("{u:o}"))
        );
        let file = format!("{id}.txt");
        let args = vec![
            "/probe.wasm".to_owned(),
            "write".to_owned(),
            format!("/data/{file}"),
            "x".to_owned(),
        ];
        let mut spec = c.default_spec(&id, &args, &d.env, &d.cwd);
        if let Some(u) = umask {
            spec["process"]["user"]["umask"] = json!(u);
        }
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind",
            "source": data, "options": ["rbind", "rw"]
        }));
        let request = ContainerRequest::wasmcell(&id, name, spec, d.tar_layers.clone());
        let r = api
            .run(request, c.dir.path())
            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", c.log()));
        assert_eq!(r.exit, 0, "{id}: {r:?}");
        let mode = std::fs::metadata(data.join(&file))
            .unwrap_or_else(|e| panic!("{id}: {e}: {r:?}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "{id}: mode {mode:o}, want {want:o}");
    }
}
