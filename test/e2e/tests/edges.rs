//! Bad input, native containers through runc, the compile cache, and clean-up.

use std::time::Duration;

use wasmcell_e2e::{fixtures, Containerd, RUNTIME};

const POD: &str = "io.kubernetes.cri.sandbox-id=pod-one";

fn run_in_pod(
    c: &Containerd,
    image: &str,
    id: &str,
    detach: bool,
    args: &[&str],
) -> wasmcell_e2e::Ran {
    let mut a = vec![
        "run",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasi/wasm",
        "--annotation",
        POD,
    ];
    a.push(if detach { "-d" } else { "--rm" });
    a.extend([image, id]);
    a.extend_from_slice(args);
    c.ctr(&a)
}

#[test]
fn bad_programs_fail_clearly_and_the_shim_serves_the_next_task() {
    let c = Containerd::start();
    let d = c.dir.path();
    std::fs::write(d.join("garbage.wasm"), b"this is not wasm at all").unwrap();
    c.build_and_import(&[
        "--name",
        "wasmcell.test/garbage:latest",
        "--wasm",
        d.join("garbage.wasm").to_str().unwrap(),
    ]);
    std::fs::write(d.join("other.txt"), b"x").unwrap();
    c.build_and_import(&[
        "--name",
        "wasmcell.test/missing:latest",
        "--entrypoint",
        "/nope.wasm",
        "--file",
        &format!("{}:/other.txt", d.join("other.txt").display()),
    ]);
    c.import_wasm(
        "wasmcell.test/import:latest",
        "import.wasm",
        fixtures::MISSING_IMPORT,
    );
    std::fs::write(d.join("truncated.wasm"), &fixtures::HELLO[..20]).unwrap();
    c.build_and_import(&[
        "--name",
        "wasmcell.test/truncated:latest",
        "--wasm",
        d.join("truncated.wasm").to_str().unwrap(),
    ]);
    c.import_wasm("wasmcell.test/probe:latest", "probe.wasm", fixtures::PROBE);

    // A long-running neighbour in the same pod, hence the same shim.
    let r = run_in_pod(
        &c,
        "wasmcell.test/probe:latest",
        "neighbour",
        true,
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");

    for (image, id, want) in [
        (
            "wasmcell.test/garbage:latest",
            "garbage",
            "neither a WebAssembly module or component",
        ),
        (
            "wasmcell.test/missing:latest",
            "missing",
            "\"/nope.wasm\" not found in the container rootfs",
        ),
        (
            "wasmcell.test/import:latest",
            "import",
            "nobody_provides_this",
        ),
        (
            "wasmcell.test/truncated:latest",
            "truncated",
            "is not valid WebAssembly",
        ),
    ] {
        let r = run_in_pod(&c, image, id, false, &[]);
        assert_ne!(r.code, 0, "{id}: {r:?}");
        assert!(r.stderr.contains(want), "{id}: expected {want:?} in {r:?}");
        let _ = c.ctr(&["container", "delete", id]);
    }

    // A FIFO as the entrypoint (a rootfs given as a directory): refused at once, never opened
    // (opening it for reading would wait for a writer forever).
    let rootfs = d.join("fifo-rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    nix::unistd::mkfifo(
        &rootfs.join("app.wasm"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let r = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        POD,
        "--rootfs",
        rootfs.to_str().unwrap(),
        "fifo",
        "/app.wasm",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("\"/app.wasm\" is a FIFO, not a regular file"),
        "{r:?}"
    );
    let _ = c.ctr(&["container", "delete", "fifo"]);

    assert_eq!(
        c.shim_pids(),
        shims,
        "the pod's shim is still the same process"
    );
    let r = run_in_pod(
        &c,
        "wasmcell.test/probe:latest",
        "after",
        false,
        &["/probe.wasm", "hello"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello from C\n"), "{r:?}");
    assert!(
        c.ctr(&["task", "ls"]).stdout.contains("RUNNING"),
        "the neighbour still runs"
    );

    assert_eq!(
        c.ctr(&["task", "kill", "--signal", "SIGKILL", "neighbour"])
            .code,
        0
    );
    assert!(c.wait_until(Duration::from_secs(5), || c
        .ctr(&["task", "ls"])
        .stdout
        .contains("STOPPED")));
    assert_eq!(c.ctr(&["task", "delete", "neighbour"]).code, 0);
    assert_eq!(c.ctr(&["container", "delete", "neighbour"]).code, 0);
    assert!(
        c.wait_until(Duration::from_secs(5), || c.shim_pids().is_empty()),
        "the shim exits when idle"
    );
    assert!(c.mounts().is_empty(), "no mounts left: {:?}", c.mounts());
}

#[test]
fn busybox_runs_through_runc_under_the_same_runtime() {
    let c = Containerd::start();
    c.import_busybox("wasmcell.test/busybox:latest");
    let r = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "wasmcell.test/busybox:latest",
        "bb",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "hello from busybox\n"),
        "{r:?}"
    );
    let r = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "wasmcell.test/busybox:latest",
        "bb2",
        "/bin/busybox",
        "sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(r.code, 9, "{r:?}");
    assert!(c
        .log()
        .contains("task bb: native entrypoint /bin/busybox, created with runc"));
    assert!(c.wait_until(Duration::from_secs(5), || c.shim_pids().is_empty()));
    assert!(c.mounts().is_empty(), "no mounts left: {:?}", c.mounts());
}

#[test]
fn second_start_of_a_large_module_is_a_cache_hit() {
    let c = Containerd::start();
    c.import_wasm("wasmcell.test/large:latest", "large.wasm", fixtures::LARGE);
    for id in ["large1", "large2"] {
        let r = c.run_wasm("wasmcell.test/large:latest", id, &[]);
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "large module ok\n"),
            "{r:?}"
        );
    }
    let log = c.log();
    let line = |id: &str| {
        log.lines()
            .find(|l| l.contains(&format!("task {id}: prepared")))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        line("large1").contains(": compiled in"),
        "{}",
        line("large1")
    );
    assert!(
        line("large2").contains(": cache-hit in"),
        "{}",
        line("large2")
    );
    // The cache is private to root.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&c.cache).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}

/// A program that takes longer to compile than the prepare deadline fails Create with the
/// deadline named, and nothing of its cell is left: not the cell, not its compiler.
#[test]
fn a_compile_past_the_prepare_deadline_fails_create_and_leaves_no_process() {
    let c = Containerd::start_with_env(&[("WASMCELL_PREPARE_TIMEOUT_SECS", "1")]);
    c.import_wasm("wasmcell.test/large:latest", "large.wasm", fixtures::LARGE);
    let started = std::time::Instant::now();
    let r = c.run_wasm("wasmcell.test/large:latest", "too-slow", &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("took longer than the 1s deadline"),
        "{r:?}\n{}",
        c.log()
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{r:?}");
    let gone = c.wait_until(Duration::from_secs(5), || {
        c.cell_pids(&["too-slow".to_owned()]).is_empty()
    });
    assert!(gone, "a cell or its compiler still runs");
    let _ = c.ctr(&["container", "delete", "too-slow"]);
}

/// Two Creates of one id sent at once to a shim: one creates the task, the other answers
/// AlreadyExists at once, and after Delete nothing of either is left (no cell, no cgroup).
#[test]
fn two_creates_of_one_id_make_one_task_and_orphan_nothing() {
    use containerd_shim_protos::api::{CreateTaskRequest, DeleteRequest, KillRequest};
    use containerd_shim_protos::ttrpc::context;

    let c = Containerd::start();
    let probe = "wasmcell.test/probe:latest";
    c.import_wasm(probe, "probe.wasm", fixtures::PROBE);
    let r = run_in_pod(&c, probe, "anchor", true, &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");
    let client = c.shim_client("anchor");
    let args = vec!["/large.wasm".to_owned()];
    let spec = c.default_spec("twin", &args, &[], "/");
    let bundle = c.dir.path().join("bundles").join("twin");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    // Slow to compile, so the two Creates overlap.
    std::fs::write(bundle.join("rootfs/large.wasm"), fixtures::LARGE).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let mut req = CreateTaskRequest::new();
    req.id = "twin".into();
    req.bundle = bundle.to_string_lossy().into_owned();
    let creates: Vec<_> = (0..2)
        .map(|_| {
            let (client, req) = (client.clone(), req.clone());
            std::thread::spawn(move || {
                client
                    .create(context::with_timeout(120_000_000_000), &req)
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            })
        })
        .collect();
    let answers: Vec<Result<(), String>> = creates.into_iter().map(|t| t.join().unwrap()).collect();
    let created = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(created, 1, "{answers:?}\n{}", c.log());
    assert!(
        answers
            .iter()
            .any(|a| a.as_ref().is_err_and(|e| e.contains("already exists"))),
        "{answers:?}"
    );
    let mut kill = KillRequest::new();
    kill.id = "twin".into();
    kill.signal = 9;
    let _ = client.kill(context::with_timeout(10_000_000_000), &kill);
    let mut del = DeleteRequest::new();
    del.id = "twin".into();
    client
        .delete(context::with_timeout(30_000_000_000), &del)
        .unwrap_or_else(|e| panic!("delete: {e:?}\n{}", c.log()));
    let gone = c.wait_until(Duration::from_secs(5), || {
        c.cell_pids(&["twin".to_owned()]).is_empty()
    });
    assert!(gone, "a cell of twin is left\n{}", c.log());
    let cgroups = [
        "/sys/fs/cgroup/memory/default/twin",
        "/sys/fs/cgroup/default/twin",
    ];
    assert!(
        cgroups.iter().all(|p| !std::path::Path::new(p).exists()),
        "a cgroup of twin is left"
    );
}
