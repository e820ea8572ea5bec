//! The shim daemon (`crates/shim/src/daemon`): `shim start` forks it instead of executing
//! the binary again. It must look and behave as an executed daemon would (nothing of `start`'s
//! pipes or command line, signals handled, every exit reaped), and a daemon that cannot start
//! must fail `start` with the reason and leave nothing behind.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmcell_e2e::{bin_dir, cmdline, fixtures, proc_status, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";

/// Whether signal `signal` is in the hex mask of a `/proc/<pid>/status` line such as `SigBlk`.
fn in_mask(pid: i32, field: &str, signal: i32) -> bool {
    let mask = u64::from_str_radix(&proc_status(pid, field), 16).unwrap();
    mask & (1 << (signal - 1)) != 0
}

/// How many of `pid`'s threads are named `name`.
fn threads_named(pid: i32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Context switches of all of `pid`'s threads so far.
fn wakeups(pid: i32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[test]
fn the_forked_daemon_keeps_nothing_of_start_and_reaps_every_exit() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let events = c.events();
    let r = c.run_detached(&[], IMG, "d-sleeper", &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");

    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let daemon = shims[0];
    // An executed daemon's command line, without `start` or `-publish-binary`.
    let args = cmdline(daemon);
    assert!(args[0].ends_with("containerd-shim-wasmcell-v1"), "{args:?}");
    assert_eq!(
        args[1..],
        [
            "-namespace",
            "default",
            "-id",
            "d-sleeper",
            "-address",
            &c.socket.to_string_lossy()
        ],
        "{args:?}"
    );
    // None of containerd's pipes to `start` (ctr returning at all shows stdout and stderr are
    // closed; stdin too must not be held).
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{daemon}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    // The signals it reads from its signalfd are blocked; none of the framework's handlers of
    // `start` is left (SIGTERM is neither caught nor ignored, SIGPIPE is ignored).
    assert!(in_mask(daemon, "SigBlk", libc::SIGCHLD));
    assert!(in_mask(daemon, "SigBlk", libc::SIGTERM));
    assert!(!in_mask(daemon, "SigCgt", libc::SIGTERM));
    assert!(!in_mask(daemon, "SigCgt", libc::SIGCHLD));
    assert!(in_mask(daemon, "SigIgn", libc::SIGPIPE));
    // The cell's mask is empty again, as an executed process's.
    let cells = c.cell_pids(&["d-sleeper".to_owned()]);
    assert_eq!(cells.len(), 1, "{cells:?}");
    assert_eq!(proc_status(cells[0], "SigBlk"), "0000000000000000");
    // Idle, the daemon sleeps: once its request threads have ended (they wait a second for
    // the next request), every thread waits without a timeout (a server or client that polls
    // with a timeout would wake many times in this second).
    assert!(
        c.wait_until(Duration::from_secs(10), || threads_named(daemon, "request")
            == 0),
        "the request threads of an idle daemon end"
    );
    let before = wakeups(daemon);
    std::thread::sleep(Duration::from_secs(1));
    let woke = wakeups(daemon).saturating_sub(before);
    assert!(woke < 20, "the idle daemon woke {woke} times in a second");
    // SIGTERM to the daemon is ignored, as containerd's shims ignore it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.shim_pids(), vec![daemon], "the daemon survives SIGTERM");

    // The exit still arrives (the runc fallback's test covers the children the daemon executes
    // itself, which only its signalfd reaps), and the daemon ends with its last task.
    assert_eq!(
        c.ctr(&["task", "kill", "-s", "SIGKILL", "d-sleeper"]).code,
        0
    );
    let exit = events
        .wait_for("/tasks/exit", "d-sleeper", Duration::from_secs(10))
        .expect("TaskExit");
    assert_eq!(exit.exit_status(), 137);
    assert_eq!(c.ctr(&["task", "delete", "d-sleeper"]).code, 0);
    assert_eq!(c.ctr(&["container", "delete", "d-sleeper"]).code, 0);
    assert!(
        c.wait_until(Duration::from_secs(10), || c.shim_pids().is_empty()),
        "the daemon exits after its last task: {:?}",
        c.shim_pids()
    );
}

/// The socket `shim start` binds for container `id`, as the `containerd-shim` crate names it.
fn pod_socket(address: &str, namespace: &str, id: &str) -> PathBuf {
    pod_socket_in(Path::new("/run/containerd/s"), address, namespace, id)
}

/// The socket `shim start` binds for container `id` in `dir`.
fn pod_socket_in(dir: &Path, address: &str, namespace: &str, id: &str) -> PathBuf {
    let key = PathBuf::from(address).join(namespace).join(id);
    let hash = Sha256::digest(key.display().to_string().as_bytes());
    dir.join(hex::encode(hash))
}

/// A protobuf string field, for lengths below 128 (a one-byte varint).
fn proto_field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 128, "a field of {} bytes", bytes.len());
    let mut out = vec![(tag << 3) | 2, u8::try_from(bytes.len()).unwrap()];
    out.extend_from_slice(bytes);
    out
}

/// `shim start` as each generation of containerd runs it, against a real containerd's event
/// socket: 1.6 (no `MAX_SHIM_VERSION`, runtime options or nothing on stdin) reads a bare
/// address; 1.7 to 2.2 (`MAX_SHIM_VERSION=2`) read JSON; 2.3 and later write bootstrap params
/// on stdin and read a protobuf `BootstrapResult`, the socket in the directory they name.
/// The suites' runs against each containerd prove that each reads its form.
#[test]
fn start_answers_each_containerd_in_the_form_it_reads() {
    let c = Containerd::start();
    let address = c.socket.display().to_string();
    let ttrpc = format!("{address}.ttrpc");
    let sockets = tempfile::tempdir().unwrap();
    let socket_dir = sockets.path().join("s");
    let pid = std::process::id();
    let start = |id: &str, max_shim_version: Option<&str>, stdin: &[u8]| {
        use std::io::Write;
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(bundle.path().join("config.json"), "{}").unwrap();
        nix::unistd::mkfifo(
            &bundle.path().join("log"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(bundle.path().join("log"))
            .unwrap();
        let mut cmd = Command::new(bin_dir().join("containerd-shim-wasmcell-v1"));
        cmd.args(["-namespace", "default", "-id", id, "-address", &address])
            .args(["-publish-binary", "/bin/false", "start"])
            .current_dir(bundle.path())
            .env("TTRPC_ADDRESS", &ttrpc)
            .env_remove("MAX_SHIM_VERSION")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(v) = max_shim_version {
            cmd.env("MAX_SHIM_VERSION", v);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}\n{}", c.log());
        // containerd reads stdout and stderr together: nothing may be on stderr.
        assert!(out.stderr.is_empty(), "{out:?}");
        (out.stdout, bundle, log)
    };

    // 1.6: runtime options (an `Any`) on stdin, a bare address back.
    let id = format!("form-bare-{pid}");
    let options = proto_field(1, b"containerd.runc.v1.Options");
    let (reply, _bundle, _log) = start(&id, None, &options);
    let bare = pod_socket(&address, "default", &id);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        format!("unix://{}", bare.display())
    );
    assert!(bare.exists());

    // 1.7 to 2.2: JSON.
    let id = format!("form-json-{pid}");
    let (reply, _bundle, _log) = start(&id, Some("2"), &options);
    let json = pod_socket(&address, "default", &id);
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({
            "version": 2,
            "address": format!("unix://{}", json.display()),
            "protocol": "ttrpc",
        })
    );

    // 2.3 and later: BootstrapParams for this container, with a socket directory.
    let id = format!("form-proto-{pid}");
    let params = [
        proto_field(1, id.as_bytes()),
        proto_field(2, b"default"),
        proto_field(4, b"v2.3.7"),
        proto_field(5, ttrpc.as_bytes()),
        proto_field(6, address.as_bytes()),
        proto_field(9, socket_dir.display().to_string().as_bytes()),
    ]
    .concat();
    let (reply, _bundle, _log) = start(&id, Some("2"), &params);
    let proto = pod_socket_in(&socket_dir, &address, "default", &id);
    let expected = [
        vec![1 << 3, 2],
        proto_field(2, format!("unix://{}", proto.display()).as_bytes()),
        proto_field(3, b"ttrpc"),
    ]
    .concat();
    assert_eq!(reply, expected, "{}", String::from_utf8_lossy(&reply));
    assert!(
        proto.exists(),
        "the socket is in the directory containerd named"
    );

    // The daemons serve no task: end them and their sockets.
    for form in ["bare", "json", "proto"] {
        if let Some(daemon) = c.shim_pid_of(&format!("form-{form}-{pid}")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_file(&bare);
    let _ = std::fs::remove_file(&json);
}

/// Runs `shim start` by hand in `bundle` with events at a socket that does not exist.
fn start_without_events(bundle: &Path, id: &str) -> (std::process::Output, String) {
    let address = bundle
        .join("containerd.sock")
        .to_string_lossy()
        .into_owned();
    let missing = bundle.join("no-such.sock.ttrpc");
    let out = Command::new(bin_dir().join("containerd-shim-wasmcell-v1"))
        .args(["-namespace", "default", "-id", id, "-address", &address])
        .args(["-publish-binary", "/bin/false", "start"])
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", &missing)
        .output()
        .unwrap();
    (out, address)
}

/// Checks that a failed `start` printed no address and left no socket, address file or
/// process of container `id`.
fn assert_nothing_left(bundle: &Path, address: &str, id: &str, out: &std::process::Output) {
    assert!(out.stdout.is_empty(), "no address printed: {out:?}");
    assert!(
        !pod_socket(address, "default", id).exists(),
        "the socket is removed"
    );
    assert!(
        !bundle.join("address").exists(),
        "no address file is written"
    );
    let left = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| cmdline(*pid).iter().any(|a| a == id))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(left().is_empty(), "processes left: {:?}", left());
}

#[test]
fn a_daemon_that_cannot_start_fails_start_with_the_reason_and_leaves_nothing() {
    let bundle = tempfile::tempdir().unwrap();
    let b = bundle.path();
    std::fs::write(b.join("config.json"), "{}").unwrap();
    let id = format!("no-events-{}", std::process::id());

    // containerd makes the log FIFO before `start`; without it the daemon cannot log.
    let (out, address) = start_without_events(b, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("the shim daemon could not start: open the shim log"),
        "{stderr}"
    );
    assert_nothing_left(b, &address, &id, &out);

    // With the FIFO (read here, as containerd reads it), it fails at containerd's events socket.
    nix::unistd::mkfifo(
        &b.join("log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(b.join("log"))
        .unwrap();
    let (out, address) = start_without_events(b, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("the shim daemon could not start")
            && stderr.contains("connect to containerd's events")
            && stderr.contains("no-such.sock.ttrpc"),
        "{stderr}"
    );
    assert_nothing_left(b, &address, &id, &out);
}

/// Requests that wait (here a Start whose `runc start` hangs) are answered off the daemon's
/// serving thread: the State of another container of the same pod's shim is answered while
/// that Start still hangs.
#[test]
fn a_hung_runc_holds_up_no_other_containers_state() {
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use wasmcell_e2e::api::ContainerRequest;

    let dir = tempfile::tempdir().unwrap();
    let runc = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v runc"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let hung = dir.path().join("hung");
    let wrapper = dir.path().join("runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             case \" $* \" in *\" start hung \"*) touch {hung}; sleep 8; touch {hung}.done;; esac\n\
             exec {runc} \"$@\"\n",
            hung = hung.display(),
            runc = runc.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let c = Containerd::start_with_env(&[("WASMCELL_RUNC", wrapper.to_str().unwrap())]);
    let name = "wasmcell.test/probe-unpacked:1";
    let d = c.import_probe_unpacked(name);
    let spec = |id: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut spec = c.default_spec(id, &args, &d.env, &d.cwd);
        spec["annotations"] = json!({"io.kubernetes.cri.sandbox-id": "one-pod"});
        spec
    };
    let api = c.api();
    let running = spec("running", &["/probe.wasm", "sleep", "600"]);
    api.start_detached(
        ContainerRequest::wasmcell("running", name, running, d.tar_layers.clone()),
        c.dir.path(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    // Under runc (a hook that runs inside the container, which only runc runs), started through
    // the wrapper that hangs.
    let mut under_runc = spec("hung", &["/probe.wasm", "hello"]);
    under_runc["hooks"] = json!({"createContainer": [{"path": "/bin/true"}]});
    let started = std::sync::Arc::new(AtomicBool::new(false));
    let starting = {
        let (started, socket) = (started.clone(), c.socket.clone());
        let (layers, out) = (d.tar_layers.clone(), c.dir.path().to_owned());
        std::thread::spawn(move || {
            let api = wasmcell_e2e::api::Api::connect(&socket);
            let r = api.start_detached(
                ContainerRequest::wasmcell("hung", name, under_runc, layers),
                &out,
            );
            started.store(true, Ordering::SeqCst);
            r
        })
    };
    assert!(
        c.wait_until(Duration::from_secs(30), || hung.exists()),
        "runc start of the hung container never ran\n{}",
        c.log()
    );
    let status = api.status("running");
    let answered_while_hung = !dir.path().join("hung.done").exists();
    assert_eq!(status.as_deref(), Ok("RUNNING"), "{}", c.log());
    assert!(answered_while_hung, "State waited for the hung runc start");
    assert!(!started.load(Ordering::SeqCst));
    starting.join().unwrap().unwrap();
    api.stop("running").unwrap();
    let _ = api.stop("hung");
}
