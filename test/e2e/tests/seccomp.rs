//! A spec's own seccomp profile: the cell compiles it and installs it beneath its allow-list,
//! so a container with containerd's default profile (what Kubernetes' `RuntimeDefault` and
//! `ctr run --seccomp` give) runs in a cell, not under runc, and a profile's answers reach the
//! guest.
#![allow(clippy::unwrap_used)]

use wasmcell_e2e::cri::HANDLER;
use wasmcell_e2e::{fixtures, proc_status, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";

fn under_runc(c: &Containerd, id: &str) -> bool {
    c.log()
        .lines()
        .any(|l| l.contains(&format!("task {id}:")) && l.contains("under runc"))
}

/// `ctr run`'s flag for the seccomp profile `profile`, written as `name`.
fn profile_flag(c: &Containerd, name: &str, profile: serde_json::Value) -> String {
    format!(
        "--seccomp-profile={}",
        c.write_json("profiles", name, &profile)
    )
}

#[test]
fn containerds_default_profile_runs_in_a_cell_with_both_filters() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let r = c.run_detached(
        &["--seccomp"],
        IMG,
        "sc-default",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let pids = c.guest_pids(&["sc-default".to_owned()]);
    assert_eq!(pids.len(), 1, "one cell runs the guest: {}", c.log());
    assert!(!under_runc(&c, "sc-default"), "{}", c.log());
    assert_eq!(proc_status(pids[0], "Seccomp"), "2");
    assert_eq!(
        proc_status(pids[0], "Seccomp_filters"),
        "2",
        "the profile and the cell's allow-list"
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", "sc-default"]).code, 0);

    let r = c.run_wasm_with(&["--seccomp"], IMG, "sc-hello", &["/probe.wasm", "hello"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "hello from C"), "{r:?}");
}

#[test]
fn a_profiles_answers_reach_the_guest() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    // Everything allowed but opening files, which fails with EACCES.
    let flag = profile_flag(
        &c,
        "no-open.json",
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["openat", "open", "openat2"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": libc::EACCES}]
        }),
    );
    let r = c.run_wasm_with(
        &["--seccomp", &flag],
        IMG,
        "sc-no-open",
        &["/probe.wasm", "write", "/tmp-file.txt", "x"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("Permission denied"),
        "the profile's errno reaches the guest: {r:?}"
    );
    assert!(!under_runc(&c, "sc-no-open"), "{}", c.log());
    // Without the profile the same write succeeds.
    let r = c.run_wasm(
        IMG,
        "sc-open",
        &["/probe.wasm", "write", "/tmp-file.txt", "x"],
    );
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_profile_the_cell_cannot_honour_goes_to_runc_with_the_reason_logged() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    // A user-space notifier: only runc (with a seccomp agent) can carry it out.
    let flag = profile_flag(
        &c,
        "notify.json",
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
        }),
    );
    let r = c.run_wasm_with(
        &["--seccomp", &flag],
        IMG,
        "sc-notify",
        &["/probe.wasm", "hello"],
    );
    // runc refuses a notifier without a listener; what matters here is who was asked.
    assert!(under_runc(&c, "sc-notify"), "{r:?}\n{}", c.log());
    assert!(c.log().contains("SCMP_ACT_NOTIFY"), "{}", c.log());
}

/// Through CRI, as the kubelet asks for it: `seccompProfile: RuntimeDefault`.
#[test]
fn a_runtime_default_pod_runs_its_wasm_container_in_a_cell() {
    let c = Containerd::start_cri_with_env(&[]);
    c.import_wasm_cri(IMG, "probe.wasm", fixtures::PROBE);
    let dir = c.dir.path().join("rd-pod");
    let write = |name: &str, v: serde_json::Value| c.write_json("rd-pod", name, &v);
    let pod = write(
        "pod.json",
        serde_json::json!({
            "metadata": {"name": "rd", "namespace": "default", "uid": "uid-rd"},
            "log_directory": dir.join("logs").display().to_string(),
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        }),
    );
    let ctr = write(
        "wasm.json",
        serde_json::json!({
            "metadata": {"name": "wasm"},
            "image": {"image": IMG},
            "args": ["sleep", "600"],
            "log_path": "wasm.log",
            // RUNTIME_DEFAULT is profile type 0.
            "linux": {"security_context": {"seccomp": {"profile_type": 0}}}
        }),
    );
    let r = c.crictl(&["run", "--no-pull", "--runtime", HANDLER, &ctr, &pod]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    let id = r.stdout.trim().to_owned();
    let r = c.crictl(&["inspect", "-o", "json", &id]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["info"]["runtimeSpec"]["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO",
        "containerd wrote its default profile into the spec"
    );
    let pid = v["info"]["pid"].as_i64().unwrap() as i32;
    assert!(!under_runc(&c, &id), "{}", c.log());
    assert_eq!(proc_status(pid, "Seccomp_filters"), "2", "{}", c.log());
    assert_eq!(c.crictl(&["rmp", "-fa"]).code, 0);
}
