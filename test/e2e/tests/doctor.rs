//! `wasmcell doctor` on fixture trees of a node (`--node-root`), with the containerd under test
//! reading the configs: a node install set up passes every check, and each check fails on the
//! problem it is there for, with its fix, and a non-zero exit.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use wasmcell_e2e::{bin_dir, containerd_bin, containerd_version, Containerd, Ran};

/// A node tree with what a healthy cgroup v2 node shows doctor: the unified hierarchy with the
/// controllers a cell uses, a kubelet on the cgroupfs driver, a private compile cache, and a
/// kubeadm-style config that install set up (the shim in `dir/bin`).
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = Containerd::new_dir();
        let n = Node { dir };
        n.write(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        n.write(
            "var/lib/kubelet/config.yaml",
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             cgroupDriver: cgroupfs\n",
        );
        let cache = n.root().join("var/lib/wasmcell/cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        n.write("etc/containerd/config.toml", "version = 2\n");
        let r = n.install(&[]);
        assert_eq!(r.code, 0, "{r:?}");
        n
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn install(&self, args: &[&str]) -> Ran {
        wasmcell_e2e::install_on_node(self.dir.path(), args)
    }

    /// Runs doctor with `--json`: its exit status and each check's finding by name; with the
    /// containerd under test unless `args` name another.
    fn doctor(&self, args: &[&str]) -> (i32, Value) {
        let mut cmd = Command::new(bin_dir().join("wasmcell"));
        cmd.arg("doctor")
            .arg("--json")
            .arg("--node-root")
            .arg(self.root());
        if !args.contains(&"--containerd") {
            cmd.arg("--containerd").arg(containerd_bin());
        }
        let r: Ran = cmd.args(args).output().unwrap().into();
        let report: Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("doctor's JSON: {e}: {r:?}"));
        let mut by_name = serde_json::Map::new();
        for c in report["checks"].as_array().unwrap() {
            by_name.insert(c["check"].as_str().unwrap().to_owned(), c.clone());
        }
        assert_eq!(
            report["failures"].as_u64().unwrap() as usize,
            by_name.values().filter(|c| c["status"] == "fail").count()
        );
        (r.code, Value::Object(by_name))
    }

    /// Asserts that check `name` fails saying `says`, with a fix saying `fix`, and the exit
    /// status is 1.
    fn fails(&self, args: &[&str], name: &str, says: &str, fix: &str) {
        let (code, checks) = self.doctor(args);
        let c = &checks[name];
        assert_eq!(c["status"], "fail", "{name}: {checks:#}");
        assert!(
            c["detail"].as_str().unwrap().contains(says),
            "{name}: {c:#}"
        );
        assert!(c["fix"].as_str().unwrap().contains(fix), "{name}: {c:#}");
        assert_eq!(code, 1, "{checks:#}");
    }

    fn config(&self) -> PathBuf {
        self.root().join("etc/containerd/config.toml")
    }
}

#[test]
fn a_node_install_set_up_passes_every_check_and_the_table_says_so() {
    let n = Node::new();
    let (code, checks) = n.doctor(&[]);
    for (name, c) in checks.as_object().unwrap() {
        assert_eq!(c["status"], "ok", "{name}: {checks:#}");
    }
    assert_eq!(code, 0);
    assert!(checks["shim"]["detail"]
        .as_str()
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(bin_dir().join("wasmcell"))
        .arg("doctor")
        .arg("--node-root")
        .arg(n.root())
        .arg("--containerd")
        .arg(containerd_bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("CHECK"), "{text}");
    assert!(text.contains("no problems found"), "{text}");
}

#[test]
fn containerd_its_config_and_the_handler_each_fail_with_their_fix() {
    let n = Node::new();
    n.fails(
        &["--containerd", "/nonexistent/containerd"],
        "containerd",
        "no containerd binary",
        "--containerd",
    );
    let (_, checks) = n.doctor(&["--containerd", "/nonexistent/containerd"]);
    assert_eq!(checks["config"]["status"], "skip", "{checks:#}");
    // A containerd that says it is 1.5, then one that says 1.7 reading a version 3 file (the
    // real one under test loads the configs).
    let fake = n.dir.path().join("containerd");
    for (version, config, check, says) in [
        ("v1.5.9", None, "containerd", "too old"),
        (
            "v1.7.0",
            Some("version = 3\n"),
            "config",
            "which containerd 1.x cannot load",
        ),
    ] {
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\n[ \"$1\" = --version ] && exec echo \"containerd x {version} y\"\n\
                 exec {} \"$@\"\n",
                containerd_bin().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let before = std::fs::read_to_string(n.config()).unwrap();
        if let Some(text) = config {
            std::fs::write(n.config(), text).unwrap();
        }
        n.fails(&["--containerd", fake.to_str().unwrap()], check, says, "");
        std::fs::write(n.config(), before).unwrap();
    }
    let installed = std::fs::read_to_string(n.config()).unwrap();
    n.fails(
        &["--handler", "other"],
        "handler",
        "no CRI runtime handler `other`",
        "wasmcell install",
    );
    std::fs::write(
        n.config(),
        installed.replace("io.containerd.wasmcell.v1", "io.containerd.runc.v2"),
    )
    .unwrap();
    n.fails(
        &[],
        "handler",
        "runs \"io.containerd.runc.v2\", not wasmcell",
        "--handler NAME",
    );
    // A handler that does not pass the settings' annotations: a warning, not a failure.
    let without: String = installed
        .lines()
        .filter(|l| !l.contains("_annotations"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(n.config(), without).unwrap();
    let (code, checks) = n.doctor(&[]);
    let h = &checks["handler"];
    assert_eq!(h["status"], "warn", "{checks:#}");
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("pod_annotations \"wasmcell.dev/*\""),
        "{h:#}"
    );
    assert!(
        h["fix"].as_str().unwrap().contains("wasmcell install"),
        "{h:#}"
    );
    assert_eq!(code, 0, "a warning only: {checks:#}");
    std::fs::write(n.config(), "root = \"/tmp/x\"\n").unwrap();
    n.fails(
        &[],
        "config",
        "config version 1",
        "containerd config migrate",
    );
    std::fs::write(n.config(), "version = 2\n[grpc]\n  address = 5\n").unwrap();
    n.fails(&[], "config", "containerd cannot load", "fix ");
    std::fs::remove_file(n.config()).unwrap();
    n.fails(&[], "config", "does not exist", "wasmcell install");
}

#[test]
fn a_missing_unexecutable_or_other_release_shim_fails() {
    let n = Node::new();
    let shim = n.dir.path().join("bin/containerd-shim-wasmcell-v1");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o644)).unwrap();
    n.fails(&[], "shim", "is not an executable file", "chmod 755");
    std::fs::write(
        &shim,
        "#!/bin/sh\nprintf 'containerd-shim-wasmcell-v1:\\n  Version:  0.0.1\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    n.fails(&[], "shim", "is version 0.0.1", "same release");
    std::fs::remove_file(&shim).unwrap();
    n.fails(&[], "shim", "No such file", "wasmcell install");
}

#[test]
fn containerd_2_3_without_pulls_through_the_client_fails_the_image_check() {
    let n = Node::new();
    if containerd_version() < (2, 3) {
        let (_, checks) = n.doctor(&[]);
        assert_eq!(checks["image unpack"]["status"], "ok", "{checks:#}");
        eprintln!("containerd before 2.3 unpacks wasm images without the setting");
        return;
    }
    let text = std::fs::read_to_string(n.config()).unwrap();
    std::fs::write(
        n.config(),
        text.replace(
            "use_local_image_pull = true",
            "use_local_image_pull = false",
        ),
    )
    .unwrap();
    n.fails(
        &[],
        "image unpack",
        "unpack only images of the host's OS",
        "use_local_image_pull",
    );
}

#[test]
fn disagreeing_cgroup_drivers_and_missing_controllers_fail() {
    let n = Node::new();
    n.write(
        "var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\ncgroupDriver: systemd\n",
    );
    n.fails(
        &[],
        "cgroup driver",
        "they disagree",
        "SystemdCgroup = true",
    );
    // Both on systemd's driver, on a node whose systemd the shim cannot reach.
    let installed = std::fs::read_to_string(n.config()).unwrap();
    std::fs::write(
        n.config(),
        format!(
            "{installed}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  \
             SystemdCgroup = true\n"
        ),
    )
    .unwrap();
    n.fails(
        &[],
        "cgroup driver",
        "systemd is not this node's init",
        "cgroupfs",
    );
    std::fs::create_dir_all(n.root().join("run/systemd/system")).unwrap();
    n.fails(
        &[],
        "cgroup driver",
        "neither a D-Bus system bus",
        "start the system bus",
    );
    // systemd's private socket is enough (the shim falls back to it).
    n.write("run/systemd/private", "");
    let (_, checks) = n.doctor(&[]);
    assert_eq!(checks["cgroup driver"]["status"], "ok", "{checks:#}");
    std::fs::write(n.config(), installed).unwrap();
    n.write(
        "var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\n",
    );
    n.write("sys/fs/cgroup/cgroup.controllers", "cpu io pids\n");
    n.fails(
        &[],
        "cgroup controllers",
        "memory not enabled",
        "cgroup_enable=memory",
    );
    // cgroup v1 whose kernel turned memory off: no memory hierarchy, and /proc/cgroups says so.
    std::fs::remove_file(n.root().join("sys/fs/cgroup/cgroup.controllers")).unwrap();
    for h in ["cpu", "pids"] {
        std::fs::create_dir_all(n.root().join("sys/fs/cgroup").join(h)).unwrap();
    }
    n.write(
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t0\t1\t0\npids\t3\t1\t1\n",
    );
    n.fails(
        &[],
        "cgroup controllers",
        "memory not enabled",
        "cgroup_enable=memory",
    );
    std::fs::remove_dir_all(n.root().join("sys/fs/cgroup")).unwrap();
    n.fails(&[], "cgroup driver", "neither cgroup v2 nor v1", "mount");
}

#[test]
fn a_compile_cache_others_can_write_or_own_or_that_is_full_fails() {
    let n = Node::new();
    let cache = n.root().join("var/lib/wasmcell/cache");
    for mode in [0o777, 0o755] {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).unwrap();
        n.fails(
            &[],
            "compile cache",
            "not 700: the shim refuses it",
            "chmod 700",
        );
    }
    // A symlink to a private directory is refused by the shim, so by doctor.
    let elsewhere = n.dir.path().join("cache-elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(&cache, n.dir.path().join("cache-kept")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
    n.fails(
        &[],
        "compile cache",
        "not a directory",
        "WASMCELL_CACHE_DIR",
    );
    std::fs::remove_file(&cache).unwrap();
    std::fs::rename(n.dir.path().join("cache-kept"), &cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), None).unwrap();
    n.fails(
        &[],
        "compile cache",
        "belongs to uid 65534",
        "chown root:root",
    );
    std::os::unix::fs::chown(&cache, Some(0), None).unwrap();
    // A full filesystem: a 1 MiB tmpfs, mounted in a mount namespace of doctor's own.
    let script = format!(
        "mount -t tmpfs -o size=1m,mode=700 none {c} && exec {w} doctor --json --node-root {r} \
         --containerd {d}",
        c = cache.display(),
        w = bin_dir().join("wasmcell").display(),
        r = n.root().display(),
        d = containerd_bin().display()
    );
    let r: Ran = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{r:?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let cache = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "compile cache")
        .unwrap();
    assert_eq!(cache["status"], "fail", "{cache:#}");
    assert!(
        cache["detail"].as_str().unwrap().contains("MiB free"),
        "{cache:#}"
    );
}

#[test]
fn a_k3s_node_install_has_not_edited_or_that_has_not_restarted_fails_the_layout_check() {
    if wasmcell_e2e::containerd_major() < 2 {
        wasmcell_e2e::skip("k3s renders a version 3 config, which containerd 1.x cannot load");
        return;
    }
    let n = Node::new();
    std::fs::remove_file(n.config()).unwrap();
    let k3s = "var/lib/rancher/k3s/agent/etc/containerd";
    let rendered = "# File generated by k3s. DO NOT EDIT.\nversion = 3\n\n\
                    [plugins.'io.containerd.cri.v1.images']\n  use_local_image_pull = true\n";
    n.write(&format!("{k3s}/config.toml"), rendered);
    n.write("etc/systemd/system/k3s.service", "");
    n.fails(
        &[],
        "layout",
        "k3s: install has not edited this node",
        "wasmcell install",
    );
    let r = n.install(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    n.fails(
        &[],
        "layout",
        "has the handler, but",
        "systemctl restart k3s",
    );
    // k3s restarted: it rendered the template (the base, then install's block).
    let template = std::fs::read_to_string(n.root().join(k3s).join("config-v3.toml.tmpl")).unwrap();
    n.write(
        &format!("{k3s}/config.toml"),
        &template.replace("{{ template \"base\" . }}\n", rendered),
    );
    let (_, checks) = n.doctor(&[]);
    assert_eq!(checks["layout"]["status"], "ok", "{checks:#}");
    assert_eq!(checks["handler"]["status"], "ok", "{checks:#}");
}
