//! OCI hooks in a wasm container's spec (nerdctl puts createRuntime and poststop into every
//! spec): the shim runs the runtime-namespace stages for a cell, as runc does, each once, at its
//! point of the lifecycle, with the container's state on stdin; a spec with hooks that run
//! inside the container (createContainer, startContainer) goes to the runc fallback, where runc
//! runs them all.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};
use wasmcell_e2e::api::ContainerRequest;
use wasmcell_e2e::image::defaults_of;
use wasmcell_e2e::{fixtures, Containerd, RUNTIME};

/// Builds an image of the probe with the host's static busybox (for the startContainer hook,
/// which runc runs inside the container), imports and unpacks it; its tarball.
fn image(c: &Containerd) -> std::path::PathBuf {
    let probe = c.dir.path().join("probe.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    c.build_and_import(&[
        "--name",
        "wasmcell.test/hooks:1",
        "--wasm",
        probe.to_str().unwrap(),
        "--file",
        "/bin/busybox:/bin/busybox",
    ])
}

/// Runs container `id` of the hooks image with `spec` on its unpacked rootfs, to its end.
fn run(
    c: &Containerd,
    id: &str,
    spec: Value,
    d: &wasmcell_e2e::image::ImageDefaults,
) -> Result<wasmcell_e2e::api::Finished, String> {
    c.api().run(
        ContainerRequest {
            id,
            image: "wasmcell.test/hooks:1",
            runtime: RUNTIME,
            spec,
            parent: d.chain_id(),
            plain_stdio: false,
            layers: Vec::new(),
        },
        c.dir.path(),
    )
}

/// A host script that appends `<kind> <state JSON>` to `log`, or fails with `fail` on stderr.
/// With `netns`, it also appends `<kind>-netns <the network namespace of the state's pid>`.
fn hook_script(dir: &Path, log: &Path, fail: Option<&str>) -> String {
    hook_script_with(dir, log, fail, false)
}

fn hook_script_with(dir: &Path, log: &Path, fail: Option<&str>, netns: bool) -> String {
    let path = dir.join(if fail.is_some() { "fail-hook" } else { "hook" });
    let netns_line = if netns {
        format!(
            "pid=$(echo \"$state\" | sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p')\n\
             [ -n \"$pid\" ] && echo \"$1-netns $(readlink /proc/$pid/ns/net)\" >> {}\n",
            log.display()
        )
    } else {
        String::new()
    };
    let body = match fail {
        Some(msg) => format!("#!/bin/sh\necho '{msg}' >&2\nexit 3\n"),
        None => format!(
            "#!/bin/sh\nstate=$(cat)\necho \"$1 $state\" >> {}\n{netns_line}",
            log.display()
        ),
    };
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

fn hook(path: &str, kind: &str) -> Value {
    json!({"path": path, "args": [path, kind]})
}

#[test]
fn every_hook_runs_once_in_order_with_the_container_state() {
    let c = Containerd::start();
    let tar = image(&c);
    let d = defaults_of(&tar);
    let logs = c.dir.path().join("hook-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("hooks.log");
    let script = hook_script(c.dir.path(), &log, None);
    let id = "hooked";
    let mut spec = c.default_spec(id, &["/probe.wasm".into(), "hello".into()], &d.env, &d.cwd);
    // startContainer runs inside the container: busybox from the image, the log dir bound in.
    let inside = json!({
        "path": "/bin/busybox",
        "args": ["busybox", "sh", "-c", "echo \"startContainer $(busybox cat)\" >> /hook-logs/hooks.log"]
    });
    spec["hooks"] = json!({
        "createRuntime": [hook(&script, "createRuntime")],
        "createContainer": [hook(&script, "createContainer")],
        "startContainer": [inside],
        "poststart": [hook(&script, "poststart")],
        "poststop": [hook(&script, "poststop")],
    });
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/hook-logs", "type": "bind",
        "source": logs.display().to_string(), "options": ["rbind", "rw"]
    }));
    let finished = run(&c, id, spec, &d).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    assert_eq!(finished.exit, 0, "{finished:?}");
    assert!(finished.stdout.contains("hello from C"), "{finished:?}");
    assert!(
        c.log()
            .contains("the cell cannot honour OCI hooks that run inside the container (createContainer, startContainer); runc runs them"),
        "the shim's log says why it went to runc:\n{}",
        c.log()
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<(&str, Value)> = text
        .lines()
        .map(|l| {
            let (kind, state) = l.split_once(' ').unwrap();
            (kind, serde_json::from_str(state).unwrap())
        })
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
    // runc runs startContainer in the container's process and poststart in `runc start` at the
    // same moment, so those two may come in either order (as with any runc container).
    let mut middle = kinds[2..kinds.len().min(4)].to_vec();
    middle.sort_unstable();
    assert!(
        kinds.len() == 5
            && kinds[..2] == ["createRuntime", "createContainer"]
            && middle == ["poststart", "startContainer"]
            && kinds[4] == "poststop",
        "each once, in order:\n{text}\n{}",
        c.log()
    );
    for (kind, state) in &lines {
        let status = state["status"].as_str().unwrap_or_default();
        let expected: &[&str] = match *kind {
            "createRuntime" | "createContainer" => &["creating"],
            "startContainer" => &["created"],
            "poststart" => &["created", "running"],
            _ => &["stopped"],
        };
        assert!(expected.contains(&status), "{kind}: {state}");
        assert_eq!(state["id"], id, "{kind}: {state}");
        // The bundle runc was given: the fallback's, inside the task's bundle.
        assert!(
            state["bundle"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("/{id}/")),
            "{kind}: {state}"
        );
    }
    assert!(
        lines[0].1["pid"].as_i64().unwrap_or(0) > 0,
        "createRuntime sees the pid"
    );
}

#[test]
fn a_cell_runs_runtime_namespace_hooks_once_in_order_with_its_state() {
    let c = Containerd::start();
    let tar = image(&c);
    let d = defaults_of(&tar);
    let log = c.dir.path().join("cell-hooks.log");
    let script = hook_script_with(c.dir.path(), &log, None, true);
    let id = "hooked-cell";
    let mut spec = c.default_spec(id, &["/probe.wasm".into(), "hello".into()], &d.env, &d.cwd);
    spec["hooks"] = json!({
        "prestart": [hook(&script, "prestart")],
        "createRuntime": [hook(&script, "createRuntime")],
        "poststart": [hook(&script, "poststart")],
        "poststop": [hook(&script, "poststop")],
    });
    spec["annotations"] = json!({"nerdctl/name": "web"});
    let finished = run(&c, id, spec, &d).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    assert_eq!(finished.exit, 0, "{finished:?}");
    assert!(finished.stdout.contains("hello from C"), "{finished:?}");
    assert!(
        c.log().contains(&format!("task {id}: prepared")) && !c.log().contains("cannot honour"),
        "run by a cell, not runc:\n{}",
        c.log()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let states: Vec<(&str, Value)> = text
        .lines()
        .filter(|l| !l.split(' ').next().unwrap_or("").ends_with("-netns"))
        .map(|l| {
            let (kind, state) = l.split_once(' ').unwrap();
            (kind, serde_json::from_str(state).unwrap())
        })
        .collect();
    let kinds: Vec<&str> = states.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{text}"
    );
    for ((kind, state), status) in states
        .iter()
        .zip(["creating", "creating", "running", "stopped"])
    {
        assert_eq!(state["status"], status, "{kind}: {state}");
        assert_eq!(state["id"], id, "{kind}: {state}");
        assert_eq!(
            state["annotations"]["nerdctl/name"], "web",
            "{kind}: {state}"
        );
        assert!(
            state["bundle"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("/{id}")),
            "{kind}: {state}"
        );
        assert_eq!(
            state["pid"].is_null(),
            *kind == "poststop",
            "{kind}: {state}"
        );
    }
    // The pid createRuntime gets is in the container's network namespace, not the host's
    // (nerdctl's CNI setup finds the namespace there).
    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let netns = text
        .lines()
        .find_map(|l| l.strip_prefix("createRuntime-netns "))
        .unwrap_or_else(|| panic!("createRuntime saw no namespace: {text}"));
    assert!(netns.starts_with("net:["), "{text}");
    assert_ne!(Path::new(netns), host_netns, "{text}");
}

#[test]
fn a_failing_create_runtime_hook_fails_create_with_its_message_and_leaves_nothing() {
    let c = Containerd::start();
    let tar = image(&c);
    let d = defaults_of(&tar);
    let script = hook_script(
        c.dir.path(),
        &c.dir.path().join("unused"),
        Some("hook says no"),
    );
    let id = "hook-fails";
    let mut spec = c.default_spec(id, &["/probe.wasm".into(), "hello".into()], &d.env, &d.cwd);
    spec["hooks"] = json!({"createRuntime": [hook(&script, "createRuntime")]});
    let err = run(&c, id, spec, &d).expect_err("a failing createRuntime hook fails Create");
    assert!(err.contains("hook says no"), "the hook's message: {err}");
    assert!(c.runc_containers().is_empty(), "no runc state left");
    assert!(c.bundles().is_empty(), "no bundle left: {:?}", c.bundles());
    let mounts: Vec<String> = c.mounts().into_iter().filter(|m| m.contains(id)).collect();
    assert!(mounts.is_empty(), "no mount left: {mounts:?}");
    assert!(
        !Path::new("/sys/fs/cgroup/memory/default").join(id).exists(),
        "no cgroup left"
    );
    // The shim serves the next task.
    let r = c.run_wasm(
        "wasmcell.test/hooks:1",
        "after-hook",
        &["/probe.wasm", "hello"],
    );
    assert_eq!(r.code, 0, "{r:?}");
}
