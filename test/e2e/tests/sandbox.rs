//! A pod's sandbox under wasmcell's runtime handler: held by a pause cell (no runc, no pause
//! program), or by runc running the pause image when the shim's `WASMCELL_PAUSE` is `runc`.
//! Either way the pod's containers, native and wasm, share the sandbox's namespaces: its IPC
//! namespace with the pod's sysctls set in it, and the pod's PID namespace, whose init is the
//! sandbox.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmcell_e2e::cri::HANDLER;
use wasmcell_e2e::{cmdline, fixtures, proc_status, Containerd};

const WASM: &str = "wasmcell.test/probe:latest";
const BUSYBOX: &str = "wasmcell.test/busybox:latest";
/// An IPC sysctl the pod sets (the host's default is 4096).
const SHMMNI: &str = "2345";

fn write_json(dir: &std::path::Path, name: &str, value: serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.display().to_string()
}

/// Waits until container `id` has exited; its exit code.
fn wait_exited(c: &Containerd, id: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.crictl(&["inspect", "-o", "json", id]);
        assert_eq!(r.code, 0, "inspect: {r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        if v["status"]["state"] == "CONTAINER_EXITED" {
            return v["status"]["exitCode"].as_i64().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a pod with the node's network, the pod's own IPC and a shared PID namespace, a native
/// sidecar that reports what it sees of them and a wasm container, and removes it.
/// `check_sandbox` gets the sandbox's pid and id while the pod runs; the command line of the
/// PID namespace's init, as the sidecar saw it, is returned.
fn run_pod(c: &Containerd, name: &str, check_sandbox: impl Fn(i32, &str)) -> String {
    let dir = c.dir.path().join(format!("pod-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let pod = write_json(
        &dir,
        "pod.json",
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "log_directory": dir.join("logs").display().to_string(),
            "linux": {
                "sysctls": {"kernel.shmmni": SHMMNI},
                // NODE network (these tests have no CNI), POD IPC and PID.
                "security_context": {"namespace_options": {"network": 2, "pid": 0, "ipc": 0}}
            }
        }),
    );
    let r = c.crictl(&["runp", "--runtime", HANDLER, &pod]);
    assert_eq!(r.code, 0, "runp: {r:?}\n{}", c.log());
    let pod_id = r.stdout.trim().to_owned();
    let r = c.crictl(&["inspectp", "-o", "json", &pod_id]);
    let info: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let sandbox_pid = info["info"]["pid"].as_i64().unwrap() as i32;
    check_sandbox(sandbox_pid, &pod_id);

    let sidecar = write_json(
        &dir,
        "sidecar.json",
        serde_json::json!({
            "metadata": {"name": "sidecar"},
            "image": {"image": BUSYBOX},
            "args": ["sh", "-c",
                "cat /proc/sys/kernel/shmmni; tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"],
            "log_path": "sidecar.log",
            "linux": {}
        }),
    );
    let r = c.crictl(&["create", &pod_id, &sidecar, &pod]);
    assert_eq!(r.code, 0, "create sidecar: {r:?}");
    let sidecar_id = r.stdout.trim().to_owned();
    assert_eq!(c.crictl(&["start", &sidecar_id]).code, 0);
    assert_eq!(wait_exited(c, &sidecar_id), 0);
    let report = c.crictl(&["logs", &sidecar_id]).stdout;
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 3, "{report:?}");
    assert_eq!(
        lines[0], SHMMNI,
        "the pod's sysctl, in the pod's IPC namespace"
    );
    assert_ne!(
        lines[2], "1",
        "the sidecar is a member of the pod's PID namespace"
    );
    let init = lines[1].trim().to_owned();

    let wasm = write_json(
        &dir,
        "wasm.json",
        serde_json::json!({
            "metadata": {"name": "wasm"},
            "image": {"image": WASM},
            "args": ["hello"],
            "log_path": "wasm.log",
            "linux": {}
        }),
    );
    let r = c.crictl(&["create", &pod_id, &wasm, &pod]);
    assert_eq!(r.code, 0, "create wasm: {r:?}");
    let wasm_id = r.stdout.trim().to_owned();
    assert_eq!(c.crictl(&["start", &wasm_id]).code, 0);
    assert_eq!(wait_exited(c, &wasm_id), 0);
    assert!(c.crictl(&["logs", &wasm_id]).stdout.contains("hello"));

    assert_eq!(c.crictl(&["stopp", &pod_id]).code, 0);
    assert_eq!(c.crictl(&["rmp", &pod_id]).code, 0);
    let gone = c.wait_until(Duration::from_secs(10), || {
        !PathBuf::from(format!("/proc/{sandbox_pid}")).exists()
    });
    assert!(gone, "the sandbox's process is gone after rmp");
    init
}

fn start(env: &[(&str, &str)]) -> Containerd {
    let c = Containerd::start_cri_with_env(env);
    c.import_busybox_cri(BUSYBOX);
    c.import_wasm_cri(WASM, "probe.wasm", fixtures::PROBE);
    c
}

#[test]
fn a_wasm_pods_sandbox_is_a_pause_cell_whose_namespaces_the_pod_shares() {
    let c = start(&[]);
    let init = run_pod(&c, "pause-cell", |pid, pod_id| {
        let cmd = cmdline(pid);
        assert_eq!(cmd[1..], ["cell", pod_id], "the sandbox is a cell: {cmd:?}");
        let nspid = proc_status(pid, "NSpid");
        assert_eq!(
            nspid.split_whitespace().nth(1),
            Some("1"),
            "the sandbox's pid is the init of the pod's PID namespace: {nspid}"
        );
        // Nothing of the boundary is dropped for holding a pod: no capability a pause
        // container would not have, no privilege gain, a seccomp filter.
        assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
        assert_eq!(proc_status(pid, "Seccomp"), "2");
        let runc_root = c.dir.path().join("runc/k8s.io");
        let known: Vec<_> = std::fs::read_dir(&runc_root)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !known.iter().any(|n| n.to_string_lossy() == pod_id),
            "runc knows nothing of the sandbox: {known:?}"
        );
    });
    assert!(
        init.contains("containerd-shim-wasmcell-v1 cell "),
        "the sidecar's PID 1 is the pause cell: {init:?}"
    );
    assert!(
        c.log().contains("held by a pause cell"),
        "the shim's log says who holds the sandbox"
    );
}

#[test]
fn with_wasmcell_pause_runc_the_sandbox_runs_the_pause_image_under_runc() {
    let c = start(&[("WASMCELL_PAUSE", "runc")]);
    let init = run_pod(&c, "pause-runc", |pid, _| {
        assert_eq!(cmdline(pid), ["/pause"], "the pause image's program");
    });
    assert_eq!(init, "/pause");
}
