//! `wasmcell install` against the containerd under test: each test writes a node's config,
//! installs into it (shim into a directory of the test's own), then starts containerd on the
//! result and runs wasm through `ctr` and, where the config has CRI on, a pod with handler
//! `wasmtime` through CRI.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmcell_e2e::cri::{cri_config, HANDLER};
use wasmcell_e2e::{bin_dir, containerd_bin, containerd_major, fixtures, Containerd, Ran};

/// Runs `wasmcell install` on `dir/config.toml`, the shim going to `dir/bin`.
fn install(dir: &Path, args: &[&str]) -> Ran {
    let out = Command::new(bin_dir().join("wasmcell"))
        .arg("install")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("--shim-dir")
        .arg(dir.join("bin"))
        .arg("--containerd")
        .arg(containerd_bin())
        .args(args)
        .output()
        .unwrap();
    out.into()
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
