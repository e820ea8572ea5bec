//! What the guest sees of the filesystem, and where its output goes.

use std::time::Duration;

use wasmcell_e2e::cri::HANDLER;
use wasmcell_e2e::{fixtures, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";

fn run(c: &Containerd, flags: &[&str], id: &str, args: &[&str]) -> wasmcell_e2e::Ran {
    let mut a = vec!["/probe.wasm"];
    a.extend_from_slice(args);
    c.run_wasm_with(flags, IMG, id, &a)
}

#[test]
fn image_files_and_a_read_only_bind_mount() {
    let c = Containerd::start();
    let d = c.dir.path();
    std::fs::write(d.join("in-image.txt"), "from the image\n").unwrap();
    std::fs::write(d.join("probe.wasm"), fixtures::PROBE).unwrap();
    c.build_and_import(&[
        "--name",
        IMG,
        "--wasm",
        d.join("probe.wasm").to_str().unwrap(),
        "--file",
        &format!("{}:/etc/in-image.txt", d.join("in-image.txt").display()),
    ]);
    let data = d.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("mounted.txt"), "from the mount\n").unwrap();
    // A canary next to the mount source: no path may reach it.
    std::fs::write(d.join("canary.txt"), "host secret\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.display()
    );

    let r = run(
        &c,
        &["--mount", &mount],
        "read",
        &["cat", "/etc/in-image.txt", "/data/mounted.txt"],
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "from the image\nfrom the mount\n"),
        "{r:?}"
    );

    // `ro`, and containerd's recursive `rro` (the guest's write once reached the host).
    let rro = mount.replace("rbind:ro", "rbind:rro");
    for (flags, id) in [(&mount, "write-ro"), (&rro, "write-rro")] {
        let r = run(
            &c,
            &["--mount", flags],
            id,
            &["write", "/data/new.txt", "x"],
        );
        assert_ne!(r.code, 0, "{id}: {r:?}");
        assert!(
            r.stdout.contains("write /data/new.txt: error"),
            "{id}: {r:?}"
        );
        assert!(
            !data.join("new.txt").exists(),
            "{id}: a read-only mount was written"
        );
    }

    for escape in [
        "/data/../../canary.txt",
        "/../canary.txt",
        "../../../../canary.txt",
    ] {
        let r = run(&c, &["--mount", &mount], "escape", &["cat", escape]);
        assert!(!r.stdout.contains("host secret"), "{escape} escaped: {r:?}");
        assert_ne!(r.code, 0, "{escape}: {r:?}");
    }

    let r = run(&c, &[], "write-rootfs", &["write", "/tmp-file.txt", "ok"]);
    assert_eq!(r.code, 0, "the rootfs is writable: {r:?}");
}

#[test]
fn log_uri_file_receives_the_output() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let log = c.dir.path().join("logs/out.log");
    let uri = format!("file://{}", log.display());
    let r = run(&c, &["--log-uri", &uri], "logged", &["bulk", "2000"]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().count(),
        2000,
        "every line reached the log file"
    );
    assert!(text.ends_with("line 001999 of 2000\n"));
}

/// A `binary://` logger in the style of containerd's shims: stdout on fd 3, stderr on fd 4,
/// ready once fd 5 is closed, the container in `CONTAINER_ID` / `CONTAINER_NAMESPACE`. Query
/// parameters arrive as arguments (`dir PATH`).
const LOGGER: &str = r#"#!/bin/sh
exec 5>&-
mkdir -p "$2"
echo "$CONTAINER_NAMESPACE/$CONTAINER_ID $1" > "$2/who"
cat <&3 > "$2/stdout" &
cat <&4 > "$2/stderr" &
wait
"#;

#[test]
fn binary_logger_receives_stdout_and_stderr() {
    use std::os::unix::fs::PermissionsExt;
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let logger = c.dir.path().join("logger.sh");
    std::fs::write(&logger, LOGGER).unwrap();
    std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = c.dir.path().join("logs");
    let uri = |run: &str| format!("binary://{}?dir={}/{run}", logger.display(), logs.display());

    let r = run(
        &c,
        &["--log-uri", &uri("bulk")],
        "bin-bulk",
        &["bulk", "2000"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    // TaskExit waits for the logger to drain, so everything is there once ctr returns.
    let out = std::fs::read_to_string(logs.join("bulk/stdout")).unwrap();
    assert_eq!(out.lines().count(), 2000, "every line reached the logger");
    assert!(out.ends_with("line 001999 of 2000\n"));
    assert_eq!(
        std::fs::read_to_string(logs.join("bulk/who")).unwrap(),
        "default/bin-bulk dir\n"
    );

    let r = run(
        &c,
        &["--log-uri", &uri("err")],
        "bin-err",
        &["stderr", "to the logger's fd 4"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(logs.join("err/stderr")).unwrap(),
        "to the logger's fd 4\n"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("err/stdout")).unwrap(),
        ""
    );

    let r = run(
        &c,
        &["--log-uri", "binary:///no/such/logger"],
        "bin-missing",
        &["hello"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("/no/such/logger"),
        "names the logger: {r:?}"
    );
}

/// Through CRI, as the kubelet asks for `recursiveReadOnly: Enabled`: containerd gives the
/// mount only to a runtime handler whose features list `rro`, and the guest cannot write
/// there, nor in a mount below it.
#[test]
fn a_recursive_read_only_cri_mount_is_read_only_all_the_way_down() {
    let c = Containerd::start_cri_with_env(&[]);
    c.import_wasm_cri(IMG, "probe.wasm", fixtures::PROBE);
    let dir = c.dir.path().join("rro-pod");
    let data = c.dir.path().join("rro-data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    // A writable mount below the directory granted.
    let sub = data.join("sub");
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(sub.clone());
    let write = |name: &str, v: serde_json::Value| c.write_json("rro-pod", name, &v);
    for (name, target) in [("top", "/data/new.txt"), ("below", "/data/sub/new.txt")] {
        let pod = write(
            &format!("pod-{name}.json"),
            serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "log_directory": dir.join("logs").display().to_string(),
                "linux": {"security_context": {"namespace_options": {"network": 2}}}
            }),
        );
        let ctr = write(
            &format!("{name}.json"),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": IMG},
                "args": ["write", target, "x"],
                "log_path": format!("{name}.log"),
                "mounts": [{"container_path": "/data", "host_path": data,
                            "readonly": true, "recursive_read_only": true}],
                "linux": {}
            }),
        );
        let r = c.crictl(&["run", "--no-pull", "--runtime", HANDLER, &ctr, &pod]);
        assert_eq!(r.code, 0, "{name}: {r:?}\n{}", c.log());
        let id = r.stdout.trim().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let exit = loop {
            let r = c.crictl(&["inspect", "-o", "json", &id]);
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            if v["status"]["state"] == "CONTAINER_EXITED" {
                break v["status"]["exitCode"].as_i64().unwrap_or(-1);
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let logs = c.crictl(&["logs", &id]);
        assert_eq!(exit, 1, "{name}: {logs:?}");
        assert!(logs.stdout.contains("error"), "{name}: {logs:?}");
    }
    assert!(!data.join("new.txt").exists(), "the mount was written");
    assert!(!sub.join("new.txt").exists(), "the mount below was written");
    assert_eq!(c.crictl(&["rmp", "-fa"]).code, 0);
}
