//! `wasmcell install` against the containerd under test: each test writes a node's config,
//! installs into it (shim into a directory of the test's own), then starts containerd on the
//! result and runs wasm through `ctr` and, where the config has CRI on, a pod with handler
//! `wasmtime` through CRI.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmcell_e2e::cri::{cri_config, HANDLER};
use wasmcell_e2e::{
    bin_dir, containerd_bin, containerd_major, fixtures, install_on_node, Containerd, Ran,
};

/// Runs `wasmcell install` on `dir/config.toml`, the shim going to `dir/bin`.
fn install(dir: &Path, args: &[&str]) -> Ran {
    wasmcell_e2e::wasmcell_install(dir, ("--config", &dir.join("config.toml")), args)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files in `dir` whose name starts with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// A CRI-enabled config of the containerd under test, rewritten as config `version` (the CRI
/// sections of version 3 exist only on containerd 2.x).
fn node_config(dir: &Path, version: i64) -> String {
    let socket = dir.join("containerd.sock");
    // A node's config has none of what install adds (containerd 2.3+'s pulls through the
    // client: the harness's config has it, as install writes it).
    let text = cri_config(dir, &socket).replace(&wasmcell_e2e::cri::local_pull_section(), "");
    if version == 3 || containerd_major() < 2 {
        return text;
    }
    // containerd 2.x reading a node's old version 2 config: the same settings, old names.
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/conf"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = socket.display(),
        opt = dir.join("opt").display(),
        pause = wasmcell_e2e::cri::PAUSE_IMAGE,
        cni = dir.join("cni").display(),
    )
}

/// Starts containerd on `dir/config.toml` with only `dir/bin` (where install put the shim)
/// ahead of the system's PATH, and runs a wasm image through `ctr` and through a CRI pod.
fn runs_wasm_after_install(dir: tempfile::TempDir) -> Containerd {
    let bin = dir.path().join("bin");
    // Tests run side by side, and a container's cgroup path is its id: one id per test.
    let id = format!(
        "after-install-{}",
        dir.path().file_name().unwrap().to_string_lossy()
    );
    let c = Containerd::start_in(dir, &[], &[bin]);
    c.import_wasm("wasmcell.test/hello:1", "probe.wasm", fixtures::PROBE);
    let r = c.run_wasm("wasmcell.test/hello:1", &id, &["/probe.wasm", "hello"]);
    assert_eq!(r.code, 0, "ctr run after install: {r:?}\n{}", c.log());
    assert!(r.stdout.contains("hello from C"), "{r:?}");
    c
}

fn runs_a_cri_pod(c: &Containerd) {
    c.import_pause();
    let wasm = c.dir.path().join("probe.wasm");
    std::fs::write(&wasm, fixtures::PROBE).unwrap();
    let tar = c.build_image(
        "probe-cri.tar",
        &[
            "--name",
            "wasmcell.test/probe:1",
            "--wasm",
            wasm.to_str().unwrap(),
            "--extra-platform",
            "linux/amd64",
        ],
    );
    c.import_cri(&tar);
    let (code, logs) = c.run_cri_pod(HANDLER, "installed", "wasmcell.test/probe:1", &["hello"]);
    assert_eq!(code, 0, "{logs}\n{}", c.log());
    assert!(logs.contains("hello from C"), "{logs}");
}

fn config_version_runs_through_ctr_and_cri(version: i64) {
    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, node_config(dir.path(), version)).unwrap();
    let r = install(dir.path(), &[]);
    assert_eq!(r.code, 0, "install: {r:?}");
    assert!(r.stdout.contains("adds the runtime handler"), "{r:?}");
    let plugin = if version == 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    let text = read(&config);
    assert!(
        text.contains(&format!(
            "[plugins.\"{plugin}\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmcell.v1\"\nruntime_path = \"{}\"",
            dir.path().join("bin/containerd-shim-wasmcell-v1").display()
        )),
        "{text}"
    );
    // containerd 2.3+: the CRI plugin pulls through the client, which unpacks wasm images.
    if wasmcell_e2e::containerd_version() >= (2, 3) {
        assert!(text.contains("use_local_image_pull = true"), "{text}");
        assert!(
            r.stdout
                .contains("sets the CRI plugin's `use_local_image_pull`"),
            "{r:?}"
        );
    }
    let c = runs_wasm_after_install(dir);
    runs_a_cri_pod(&c);
}

#[test]
fn a_version_2_config_runs_wasm_through_ctr_and_a_cri_pod() {
    config_version_runs_through_ctr_and_cri(2);
}

#[test]
fn a_version_3_config_runs_wasm_through_ctr_and_a_cri_pod() {
    if containerd_major() < 2 {
        // Install refuses to write version 3 for 1.x (below).
        wasmcell_e2e::skip("containerd 1.x has no config version 3");
        return;
    }
    config_version_runs_through_ctr_and_cri(3);
}

#[test]
fn a_second_install_changes_nothing_and_says_so() {
    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, node_config(dir.path(), 2)).unwrap();
    assert_eq!(install(dir.path(), &[]).code, 0);
    let once = read(&config);
    let backups = files_starting(dir.path(), "config.toml.wasmcell-backup");
    assert_eq!(backups.len(), 1, "one backup of the original");
    let r = install(dir.path(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    assert_eq!(read(&config), once);
    assert_eq!(
        files_starting(dir.path(), "config.toml.wasmcell-backup"),
        backups,
        "no second backup"
    );
    let c = runs_wasm_after_install(dir);
    runs_a_cri_pod(&c);
}

const USERS_PART: &str = r#"
# Our node's containerd. Keep these comments.
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"   # the default

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
    runtime_type = "io.containerd.kata.v2"
"#;

#[test]
fn comments_and_other_runtimes_are_kept_byte_for_byte_and_uninstall_restores_the_file() {
    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    let original = node_config(dir.path(), 2) + USERS_PART;
    std::fs::write(&config, &original).unwrap();
    let r = install(dir.path(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let installed = read(&config);
    assert!(
        installed.starts_with(&original),
        "the user's text changed:\n{installed}"
    );
    let backup = &files_starting(dir.path(), "config.toml.wasmcell-backup")[0];
    assert_eq!(read(backup), original, "the backup is the original");
    let c = runs_wasm_after_install(dir);
    runs_a_cri_pod(&c);
    drop(c);

    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &original).unwrap();
    assert_eq!(install(dir.path(), &[]).code, 0);
    assert!(dir.path().join("bin/containerd-shim-wasmcell-v1").exists());
    let r = install(dir.path(), &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(read(&config), original, "uninstall gives back the file");
    assert!(
        !dir.path().join("bin/containerd-shim-wasmcell-v1").exists(),
        "uninstall removes the shim"
    );
    let r = install(dir.path(), &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
}

#[test]
fn a_missing_config_gets_a_minimal_one_that_uninstall_removes() {
    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    let r = install(dir.path(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let text = read(&config);
    let version = if containerd_major() >= 2 { 3 } else { 2 };
    assert!(text.contains(&format!("version = {version}\n")), "{text}");
    // containerd loads it and its CRI plugin has the handler (install checked it too).
    let dump = Command::new(containerd_bin())
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{dump:?}");
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("runtimes.wasmtime]") && dump.contains("io.containerd.wasmcell.v1"),
        "{dump}"
    );
    // containerd runs wasm with it: a private wrapper config imports the written file and
    // keeps root, state and socket in the test's directory.
    let node = dir.path().join("node.toml");
    std::fs::rename(&config, &node).unwrap();
    let socket = dir.path().join("containerd.sock");
    let wrapper = format!(
        "imports = [\"{}\"]\n{}",
        node.display(),
        wasmcell_e2e::private_config(dir.path(), &socket)
    );
    std::fs::write(&config, wrapper).unwrap();
    let c = runs_wasm_after_install(dir);
    std::fs::rename(&node, &config).unwrap();
    let r = install(c.dir.path(), &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!config.exists(), "the file install wrote is removed: {r:?}");
}

#[test]
fn imports_get_a_drop_in_file_and_the_root_config_is_not_touched() {
    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    let version = if containerd_major() >= 2 { 3 } else { 2 };
    let root = format!(
        "imports = [\"conf.d/*.toml\"]\n{}",
        node_config(dir.path(), version)
    );
    std::fs::write(&config, &root).unwrap();
    std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-debug.toml"),
        format!("version = {version}\n[debug]\n  level = \"info\"\n"),
    )
    .unwrap();
    let r = install(dir.path(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let drop_in = dir.path().join("conf.d/wasmcell.toml");
    if containerd_major() >= 2 {
        assert_eq!(read(&config), root, "the root config is not touched");
        let text = read(&drop_in);
        assert!(text.contains("runtimes.wasmtime]"), "{text}");
    } else {
        // containerd 1.x would replace the root's whole CRI section with the drop-in's:
        // install edits the root instead.
        assert!(!drop_in.exists());
        assert!(read(&config).starts_with(&root));
    }
    let r = install(dir.path(), &[]);
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    let c = runs_wasm_after_install(dir);
    runs_a_cri_pod(&c);
    let dir = c.dir.path();
    let r = install(dir, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !drop_in.exists(),
        "uninstall removes the drop-in it wrote: {r:?}"
    );
    assert!(dir.join("conf.d/10-debug.toml").exists());
    assert_eq!(read(&dir.join("config.toml")), root);
}

#[test]
fn a_config_containerd_cannot_load_is_refused_and_nothing_is_written() {
    for (name, broken, says) in [
        ("toml", "version = 2\n[plugins\n", "is not valid TOML"),
        // Valid TOML that containerd itself refuses: `[grpc] address` must be a string.
        (
            "type",
            "version = 2\n[grpc]\n  address = 5\n",
            "containerd cannot load the new configuration",
        ),
        ("version", "version = 7\n", "unknown config version 7"),
        ("v1", "root = \"/tmp/x\"\n", "config version 1"),
    ] {
        let dir = Containerd::new_dir();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, broken).unwrap();
        let r = install(dir.path(), &[]);
        assert_ne!(r.code, 0, "{name}: refused: {r:?}");
        assert!(r.stderr.contains(says), "{name}: {r:?}");
        assert_eq!(read(&config), broken, "{name}: nothing written");
        assert!(files_starting(dir.path(), "config.toml.").is_empty());
        assert!(files_starting(dir.path(), ".config.toml").is_empty());
        assert!(
            !dir.path().join("bin").exists(),
            "{name}: no shim installed"
        );
    }
}

#[test]
fn dry_run_prints_the_diff_and_writes_nothing() {
    let dir = Containerd::new_dir();
    let config = dir.path().join("config.toml");
    let original = node_config(dir.path(), 2);
    std::fs::write(&config, &original).unwrap();
    let r = install(dir.path(), &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"),
        "{r:?}"
    );
    assert!(r.stdout.contains("nothing was written"), "{r:?}");
    assert_eq!(read(&config), original);
    assert!(!dir.path().join("bin").exists());
}

#[test]
fn clear_errors_for_a_missing_containerd_a_non_root_user_and_a_version_containerd_lacks() {
    let dir = Containerd::new_dir();
    std::fs::write(dir.path().join("config.toml"), "version = 2\n").unwrap();
    let out = Command::new(bin_dir().join("wasmcell"))
        .args([
            "install",
            "--containerd",
            "/nonexistent/containerd",
            "--config",
        ])
        .arg(dir.path().join("config.toml"))
        .output()
        .unwrap();
    let r: Ran = out.into();
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("no containerd binary at /nonexistent/containerd"),
        "{r:?}"
    );

    // Not root: setpriv drops to nobody.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_dir().join("wasmcell"))
        .args(["install", "--config", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    let r: Ran = out.into();
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("must run as root"), "{r:?}");

    if containerd_major() < 2 {
        // containerd 1.6 loads a version 3 file but reads no CRI settings from it: the check
        // sees that the handler would not be there and refuses; 1.7 refuses to load it at
        // all, and install says so.
        std::fs::write(dir.path().join("config.toml"), "version = 3\n").unwrap();
        let r = install(dir.path(), &[]);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            r.stderr
                .contains("its CRI plugin would not have handler `wasmtime`")
                || (r
                    .stderr
                    .contains("containerd cannot load the new configuration")
                    && r.stderr.contains("unsupported config version `3`")),
            "{r:?}"
        );
        assert_eq!(read(&dir.path().join("config.toml")), "version = 3\n");
    }
}

#[test]
fn restart_runs_the_command_and_waits_until_containerd_answers() {
    let c = Containerd::start();
    let dir = Containerd::new_dir();
    std::fs::write(dir.path().join("config.toml"), node_config(dir.path(), 2)).unwrap();
    let marker = dir.path().join("restarted");
    let cmd = format!("touch {}", marker.display());
    let socket = c.socket.to_str().unwrap().to_owned();
    let r = install(
        dir.path(),
        &["--restart", "--restart-command", &cmd, "--address", &socket],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(marker.exists(), "the restart command ran");
    assert!(r.stdout.contains("answers at"), "{r:?}");

    // Nothing changed: no restart.
    std::fs::remove_file(&marker).unwrap();
    let r = install(
        dir.path(),
        &["--restart", "--restart-command", &cmd, "--address", &socket],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!marker.exists(), "not restarted: {r:?}");
    assert!(r.stdout.contains("containerd not restarted"), "{r:?}");

    // A restart that fails is an error (the change needs one: an uninstall).
    let r = install(
        dir.path(),
        &[
            "--restart",
            "--restart-command",
            "exit 3",
            "--address",
            &socket,
            "--uninstall",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("restarting containerd failed"), "{r:?}");
}

#[test]
fn enter_host_reads_the_shim_in_the_pod_then_edits_the_nodes_files() {
    // The installer pod's view: a mount namespace of its own in which the node's directory is
    // hidden under an empty tmpfs holding only the shim to install. With --enter-host,
    // install reads the shim there, then edits the node's files in PID 1's namespace.
    let dir = Containerd::new_dir();
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("config.toml"), node_config(dir.path(), 2)).unwrap();
    let script = format!(
        "mount -t tmpfs none {d} && cp {shim} {d}/shim && exec {wasmcell} install --enter-host \
         --host-pid {pid} --shim {d}/shim --config {d}/config.toml --shim-dir {d}/bin --containerd {containerd}",
        shim = bin_dir().join("containerd-shim-wasmcell-v1").display(),
        wasmcell = bin_dir().join("wasmcell").display(),
        containerd = containerd_bin().display(),
        pid = std::process::id(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let r: Ran = out.into();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        read(&dir.path().join("config.toml")).contains("runtimes.wasmtime]"),
        "the node's config has the handler"
    );
    assert_eq!(
        std::fs::read(dir.path().join("bin/containerd-shim-wasmcell-v1")).unwrap(),
        std::fs::read(bin_dir().join("containerd-shim-wasmcell-v1")).unwrap(),
        "the shim read in the pod is on the node"
    );
    assert!(
        !dir.path().join("shim").exists(),
        "the pod's tmpfs stayed the pod's"
    );

    // Without --enter-host the same command sees only the pod's tmpfs.
    let script = script
        .replace(" --enter-host", "")
        .replace(&format!("--host-pid {} ", std::process::id()), "");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let r: Ran = out.into();
    assert!(
        r.stdout.contains("--- /dev/null"),
        "it wrote a new config into the pod's tmpfs: {r:?}"
    );
}

#[test]
fn the_installer_image_has_the_shell_and_tools_its_daemonset_runs() {
    let c = Containerd::start();
    let tar = c.dir.path().join("installer.tar");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/installer/build-image.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .arg(bin_dir())
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let name = String::from_utf8_lossy(&out.stdout);
    assert!(name.contains(&tar.display().to_string()), "{name}");
    let r = c.ctr(&["image", "import", tar.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let image = format!(
        "wasmcell.dev/wasmcell-installer:{}",
        env!("CARGO_PKG_VERSION")
    );
    // What daemonset.yaml's command and readiness probe use, under runc.
    let r = c.ctr(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,src=tmpfs,dst=/run/wasmcell,options=rw:nosuid",
        &image,
        "installer-smoke",
        "/bin/sh",
        "-c",
        "set -e; wasmcell --version; test -x /usr/local/bin/containerd-shim-wasmcell-v1; \
         [ install = install ] && echo ok; touch /run/wasmcell/done; cat /run/wasmcell/done; sleep 0",
    ]);
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    assert!(
        r.stdout.contains("wasmcell 0.1.0") && r.stdout.contains("ok"),
        "{r:?}"
    );
}

// ---- The distributions' layouts, as fixture trees of a node under `dir/node`. ----

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const K3S_DIR: &str = "node/var/lib/rancher/k3s/agent/etc/containerd";

/// What k3s's agent renders as containerd's config on a default node (its base template:
/// single-quoted plugin names, the image plugin pulling through the client, runc listed),
/// with this test's paths so that the containerd under test can run it. `imports`: the
/// drop-in directory line newer k3s releases render.
fn k3s_rendered(dir: &Path, imports: bool) -> String {
    let harness = cri_config(dir, &dir.join("containerd.sock"))
        .replace(&wasmcell_e2e::cri::local_pull_section(), "")
        .replace(
            "\"io.containerd.cri.v1.images\"",
            "'io.containerd.cri.v1.images'",
        )
        .replace(
            "\"io.containerd.cri.v1.runtime\"",
            "'io.containerd.cri.v1.runtime'",
        );
    let images = "[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"overlayfs\"\n  \
                  disable_snapshot_annotations = true\n  use_local_image_pull = true\n\n\
                  [plugins.'io.containerd.cri.v1.images'.pinned_images]";
    let mut text = format!(
        "# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.\n{}\
         \n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = \
         \"io.containerd.runc.v2\"\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.\
         runc.options]\n  SystemdCgroup = false\n",
        harness.replace(
            "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
            images
        )
    );
    if imports {
        // As k3s writes it: a path on the node.
        let line =
            "imports = [\"/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.d/*.toml\"]\n";
        text = text.replacen("version = 3\n", &format!("version = 3\n{line}"), 1);
    }
    text
}

/// k3s's renderer as far as install relies on it, standing in for k3s (whose releases the Go
/// module proxy does not serve): the user's template with `{{ template "base" . }}` replaced
/// by the base, then blank lines dropped and one put before each table header.
fn k3s_render(template: &str, base: &str) -> String {
    let text = template.replace("{{ template \"base\" . }}", base);
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('[') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Skips a test of a layout whose config is version 3 on containerd 1.x.
fn needs_containerd_2(what: &str) -> bool {
    if containerd_major() < 2 {
        wasmcell_e2e::skip(&format!(
            "{what} renders a version 3 config, which containerd 1.x cannot load"
        ));
        return false;
    }
    true
}

#[test]
fn k3s_without_a_template_gets_one_that_renders_its_base_then_the_handler() {
    if !needs_containerd_2("k3s") {
        return;
    }
    let dir = Containerd::new_dir();
    let d = dir.path().to_owned();
    let k3s = d.join(K3S_DIR);
    let base = k3s_rendered(&d, false);
    write(&k3s.join("config.toml"), &base);
    write(&d.join("node/etc/systemd/system/k3s.service"), "");
    let r = install_on_node(&d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("k3s node"), "{r:?}");
    assert!(r.stdout.contains("systemctl restart k3s,"), "{r:?}");
    assert_eq!(
        read(&k3s.join("config.toml")),
        base,
        "the rendered file is k3s's"
    );
    let template = read(&k3s.join("config-v3.toml.tmpl"));
    assert!(
        template.starts_with("{{ template \"base\" . }}\n"),
        "{template}"
    );
    // k3s's base already pulls through the client: only the handler is added.
    assert!(!template.contains("use_local_image_pull"), "{template}");
    // Run again before k3s restarted: nothing to change, but the restart is still due, and
    // --restart makes it.
    let marker = d.join("restarted");
    let restart = format!("touch {}", marker.display());
    let socket = d.join("nothing-here.sock");
    let r = install_on_node(
        &d,
        &[
            "--restart",
            "--restart-command",
            &restart,
            "--address",
            socket.to_str().unwrap(),
            "--wait",
            "1",
        ],
    );
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    assert!(r.stdout.contains("has not rendered"), "{r:?}");
    assert!(marker.exists(), "the restart command ran: {r:?}");

    // k3s restarts: it renders the template, and containerd runs wasm pods from the result.
    let rendered = k3s_render(&template, &base);
    write(&k3s.join("config.toml"), &rendered);
    write(&d.join("config.toml"), &rendered);
    let c = runs_wasm_after_install(dir);
    runs_a_cri_pod(&c);
    let d = c.dir.path();
    let r = install_on_node(d, &[]);
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    assert!(!r.stdout.contains("has not rendered"), "{r:?}");
    let r = install_on_node(d, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("(install had written it)"),
        "the template install wrote is removed: {r:?}"
    );
    assert!(!k3s.join("config-v3.toml.tmpl").exists());
    assert!(
        files_starting(&k3s, "config-v3.toml.tmpl").is_empty(),
        "no backup of it"
    );
    // The check loaded what k3s renders without the block: its base.
    assert!(r.stdout.contains("loads the result"), "{r:?}");

    // A template install wrote and the admin added to since stays, with their addition.
    let r = install_on_node(d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let added = format!(
        "{}[plugins.'io.containerd.cri.v1.images'.registry.mirrors]\n",
        read(&k3s.join("config-v3.toml.tmpl"))
    );
    write(&k3s.join("config-v3.toml.tmpl"), &added);
    let r = install_on_node(d, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        read(&k3s.join("config-v3.toml.tmpl")),
        "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors]\n"
    );
}

#[test]
fn a_k3s_template_of_the_users_gets_a_block_uninstall_takes_back_byte_for_byte() {
    if !needs_containerd_2("k3s") {
        return;
    }
    let dir = Containerd::new_dir();
    let d = dir.path();
    let k3s = d.join(K3S_DIR);
    // The user's template: the base, a runtime of their own, and no newline at the end.
    let users = "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd.\
                 runtimes.'crun']\n  runtime_type = \"io.containerd.runc.v2\"";
    write(&k3s.join("config-v3.toml.tmpl"), users);
    let base = k3s_rendered(d, false);
    write(&k3s.join("config.toml"), &k3s_render(users, &base));
    let r = install_on_node(d, &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("+# wasmcell install: begin"), "{r:?}");
    assert_eq!(read(&k3s.join("config-v3.toml.tmpl")), users);
    // No unit to restart k3s with: --restart changes nothing rather than leave it half done.
    let r = install_on_node(d, &["--restart"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("cannot be restarted"), "{r:?}");
    assert_eq!(read(&k3s.join("config-v3.toml.tmpl")), users);
    assert!(!d.join("bin").exists(), "no shim installed: {r:?}");
    let r = install_on_node(d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("no systemd unit k3s or k3s-agent"),
        "{r:?}"
    );
    let template = read(&k3s.join("config-v3.toml.tmpl"));
    assert!(template.starts_with(users), "{template}");
    // Rendered with the block, then uninstalled: the template is the user's again, byte for
    // byte, and so is what k3s renders.
    write(&k3s.join("config.toml"), &k3s_render(&template, &base));
    let r = install_on_node(d, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(read(&k3s.join("config-v3.toml.tmpl")), users);
    assert!(files_starting(&k3s, "config-v3.toml.tmpl.wasmcell-backup").len() == 2);
}

#[test]
fn a_handler_k3s_made_itself_is_not_overwritten_and_another_name_works() {
    if !needs_containerd_2("k3s") {
        return;
    }
    let dir = Containerd::new_dir();
    let d = dir.path();
    let k3s = d.join(K3S_DIR);
    // k3s found runwasi's containerd-shim-wasmtime-v1 on its PATH.
    let base = format!(
        "{}\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'wasmtime']\n  \
         runtime_type = \"io.containerd.wasmtime.v1\"\n",
        k3s_rendered(d, false)
    );
    write(&k3s.join("config.toml"), &base);
    let r = install_on_node(d, &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("already has a runtime handler `wasmtime`"),
        "{r:?}"
    );
    assert!(r.stderr.contains("--handler"), "{r:?}");
    assert!(!k3s.join("config-v3.toml.tmpl").exists());
    let r = install_on_node(d, &["--handler", "wasmcell"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(read(&k3s.join("config-v3.toml.tmpl")).contains("runtimes.wasmcell]"));
}

#[test]
fn k3s_that_imports_a_drop_in_directory_gets_a_file_there_and_nothing_else_changes() {
    if !needs_containerd_2("k3s") {
        return;
    }
    let dir = Containerd::new_dir();
    let d = dir.path().to_owned();
    let k3s = d.join(K3S_DIR);
    let rendered = k3s_rendered(&d, true);
    write(&k3s.join("config.toml"), &rendered);
    let r = install_on_node(&d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let drop_in = k3s.join("config-v3.toml.d/wasmcell.toml");
    assert!(read(&drop_in).contains("runtimes.wasmtime]"));
    assert!(!k3s.join("config-v3.toml.tmpl").exists());
    assert_eq!(read(&k3s.join("config.toml")), rendered);
    // containerd loads k3s's file and the drop-in it imports (the node's path, in the
    // fixture).
    write(
        &d.join("config.toml"),
        &rendered.replace("\"/var/lib/", &format!("\"{}/node/var/lib/", d.display())),
    );
    let c = runs_wasm_after_install(dir);
    runs_a_cri_pod(&c);
    let r = install_on_node(c.dir.path(), &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !k3s.join("config-v3.toml.d").exists(),
        "the directory install made goes too: {r:?}"
    );
    assert_eq!(read(&k3s.join("config.toml")), rendered);
}

#[test]
fn rke2_names_the_unit_that_is_enabled_and_says_when_it_has_not_started_yet() {
    if !needs_containerd_2("RKE2") {
        return;
    }
    let dir = Containerd::new_dir();
    let d = dir.path();
    let rke2 = d.join("node/var/lib/rancher/rke2/agent/etc/containerd");
    std::fs::create_dir_all(&rke2).unwrap();
    let r = install_on_node(d, &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("RKE2 has not written"), "{r:?}");
    assert!(r.stderr.contains("start it once"), "{r:?}");
    write(&rke2.join("config.toml"), &k3s_rendered(d, false));
    for unit in ["rke2-server", "rke2-agent"] {
        write(
            &d.join(format!("node/usr/local/lib/systemd/system/{unit}.service")),
            "",
        );
    }
    std::fs::create_dir_all(d.join("node/etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/local/lib/systemd/system/rke2-agent.service",
        d.join("node/etc/systemd/system/multi-user.target.wants/rke2-agent.service"),
    )
    .unwrap();
    let r = install_on_node(d, &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("RKE2 node"), "{r:?}");
    assert!(!rke2.join("config-v3.toml.tmpl").exists());
    let r = install_on_node(d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("systemctl restart rke2-agent"), "{r:?}");
    assert!(read(&rke2.join("config-v3.toml.tmpl")).contains("runtimes.wasmtime]"));
}

/// MicroK8s's `containerd-template.toml` as the snap ships it: version 2, placeholders that
/// its start script replaces in strings.
const MICROK8S_TEMPLATE: &str = r#"# Use config version 2 to enable new configuration fields.
version = 2
oom_score = 0

[grpc]
  uid = 0
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216

[metrics]
  address = "127.0.0.1:1338"
  grpc_histogram = false


# The 'plugins."io.containerd.grpc.v1.cri"' table contains all of the server options.
[plugins."io.containerd.grpc.v1.cri"]

  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  sandbox_image = "registry.k8s.io/pause:3.10"
  stats_collect_period = 10
  enable_tls_streaming = false
  max_container_log_line_size = 16384

  # 'plugins."io.containerd.grpc.v1.cri".containerd' contains config related to containerd
  [plugins."io.containerd.grpc.v1.cri".containerd]

    # snapshotter is the snapshotter used by containerd.
    snapshotter = "${SNAPSHOTTER}"
    no_pivot = false
    default_runtime_name = "${RUNTIME}"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "${RUNTIME_TYPE}"

   [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
        BinaryName = "kata-runtime"

  # 'plugins."io.containerd.grpc.v1.cri".cni' contains config related to cni
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${SNAP_DATA}/opt/cni/bin"
    conf_dir = "${SNAP_DATA}/args/cni-network"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "${SNAP_DATA}/args/certs.d"
"#;

#[test]
fn microk8s_gets_its_template_edited_and_back_byte_for_byte() {
    let dir = Containerd::new_dir();
    let d = dir.path();
    let template = d.join("node/var/snap/microk8s/current/args/containerd-template.toml");
    write(&template, MICROK8S_TEMPLATE);
    let r = install_on_node(d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("MicroK8s node"), "{r:?}");
    assert!(
        r.stdout
            .contains("systemctl restart snap.microk8s.daemon-containerd"),
        "{r:?}"
    );
    let text = read(&template);
    assert!(text.starts_with(MICROK8S_TEMPLATE), "{text}");
    assert!(
        text.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"),
        "{text}"
    );
    let r = install_on_node(d, &[]);
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    let r = install_on_node(d, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(read(&template), MICROK8S_TEMPLATE);
}

/// `/etc/k0s/containerd.toml` as k0s 1.36 writes it.
const K0S_MANAGED: &str = r#"# k0s_managed=true
# This is a placeholder configuration for k0s managed containerd.
# If you wish to override the config, remove the first line and replace this file with your custom configuration.
# For reference see https://github.com/containerd/containerd/blob/main/docs/man/containerd-config.toml.5.md
imports = ["/etc/k0s/containerd.d/*.toml"]
version = 3

[plugins]

  [plugins."io.containerd.cri.v1.images"]

    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "quay.io/k0sproject/pause:3.10.2-0"

  [plugins."io.containerd.cri.v1.runtime"]
"#;

#[test]
fn k0s_gets_a_drop_in_it_restarts_containerd_for_and_its_own_file_is_untouched() {
    if !needs_containerd_2("k0s 1.36") {
        return;
    }
    let dir = Containerd::new_dir();
    let d = dir.path();
    let node = d.join("node");
    // As k0s writes it: its import is a path on the node.
    let managed = K0S_MANAGED.to_owned();
    let config = node.join("etc/k0s/containerd.toml");
    write(&config, &managed);
    std::fs::create_dir_all(node.join("etc/k0s/containerd.d")).unwrap();
    let r = install_on_node(d, &["--restart"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("k0s restarts containerd by itself"),
        "{r:?}"
    );
    assert_eq!(read(&config), managed);
    let drop_in = read(&node.join("etc/k0s/containerd.d/wasmcell.toml"));
    // k0s refuses drop-ins of another version or with the old CRI plugin.
    assert!(drop_in.contains("version = 3"), "{drop_in}");
    assert!(!drop_in.contains("io.containerd.grpc.v1.cri"), "{drop_in}");
    let r = install_on_node(d, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!node.join("etc/k0s/containerd.d/wasmcell.toml").exists());
    assert!(
        node.join("etc/k0s/containerd.d").is_dir(),
        "k0s's own directory stays"
    );
    assert_eq!(read(&config), managed);

    // A file the admin took over (no marker line) is theirs, edited where it is.
    let own = node_config(d, 3);
    write(&config, &own);
    let r = install_on_node(d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(read(&config).contains("runtimes.wasmtime]"), "{r:?}");
    let r = install_on_node(d, &["--uninstall"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(read(&config), own);
}

#[test]
fn two_distributions_on_one_node_are_refused_until_one_is_chosen() {
    let dir = Containerd::new_dir();
    let d = dir.path();
    write(
        &d.join("node/var/snap/microk8s/current/args/containerd-template.toml"),
        MICROK8S_TEMPLATE,
    );
    write(&d.join("node/etc/k0s/containerd.toml"), K0S_MANAGED);
    let r = install_on_node(d, &["--dry-run"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("more than one distribution"), "{r:?}");
    let r = install_on_node(d, &["--dry-run", "--layout", "microk8s"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("MicroK8s node"), "{r:?}");
}
