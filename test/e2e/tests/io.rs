//! What the guest sees of the filesystem, and where its output goes.

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

    let r = run(
        &c,
        &["--mount", &mount],
        "write-ro",
        &["write", "/data/new.txt", "x"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("write /data/new.txt: error"), "{r:?}");
    assert!(
        !data.join("new.txt").exists(),
        "a read-only mount was written"
    );

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
