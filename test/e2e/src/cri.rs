//! The CRI tier's harness: a private containerd with its CRI plugin on, driven with `crictl`
//! as the kubelet drives it (RunPodSandbox, CreateContainer, StartContainer...).
//!
//! Pods use the node's network namespace (no CNI here) and a pause image built from
//! `test/fixtures/pause.c`; every image is imported into containerd's `k8s.io` namespace, so
//! nothing is pulled. `restrict_oom_score_adj` is set because these machines refuse a negative
//! `oom_score_adj`, even to root, and the CRI plugin gives its sandboxes -998.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{containerd_major, Containerd, Ran};

/// The pause image the CRI plugin is told to use for sandboxes.
pub const PAUSE_IMAGE: &str = "wasmcell.test/pause:1";

/// The runtime handler name wasmcell is configured under (a RuntimeClass's `handler`).
pub const HANDLER: &str = "wasmtime";

/// `crictl`: `WASMCELL_CRICTL` (`make test` sets it to the pinned build), else `PATH`'s.
pub fn crictl_bin() -> PathBuf {
    std::env::var_os("WASMCELL_CRICTL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "crictl".into())
}

/// Whether this host can run the CRI tier (crictl found).
pub fn available() -> bool {
    Command::new(crictl_bin())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private containerd configuration with the CRI plugin on, for containerd's major
/// version: its own root, state and socket, CNI directories inside `dir` (unused: pods take
/// the node's network), the pause image above, and no NRI socket.
pub fn cri_config(dir: &Path, socket: &Path) -> String {
    let (root, state, sock) = crate::instance_paths(dir, socket);
    let (cni_bin, cni_conf) = (
        dir.join("cni/bin").display().to_string(),
        dir.join("cni/conf").display().to_string(),
    );
    if containerd_major() >= 2 {
        let opt = dir.join("opt").display().to_string();
        format!(
            r#"version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{sock}"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{cni_bin}"]
  conf_dir = "{cni_conf}"
"#
        )
    } else {
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
"#
        )
    }
}

/// The runtime handler [`HANDLER`] running wasmcell, as `wasmcell install` writes it for
/// containerd's major version (the CRI tier configures it directly; the install tests let
/// `wasmcell install` write it).
pub fn handler_section() -> String {
    let plugin = if containerd_major() >= 2 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    format!(
        "\n[plugins.\"{plugin}\".containerd.runtimes.{HANDLER}]\n  runtime_type = \"{}\"\n",
        crate::RUNTIME
    )
}

impl Containerd {
    /// Runs `crictl` against this containerd's CRI endpoint.
    pub fn crictl(&self, args: &[&str]) -> Ran {
        let out = Command::new("timeout")
            .args(["--kill-after=5", "120"])
            .arg(crictl_bin())
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--image-endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--timeout=60s")
            .args(args)
            .output()
            .expect("run crictl");
        out.into()
    }

    /// Builds the pause image and imports it into the `k8s.io` namespace for the CRI plugin.
    pub fn import_pause(&self) {
        let pause = self.dir.path().join("pause");
        std::fs::write(&pause, crate::fixtures::PAUSE).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pause, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = format!("{}:/pause", pause.display());
        let tar = self.build_image(
            "pause.tar",
            &[
                "--name",
                PAUSE_IMAGE,
                "--platform",
                "linux/amd64",
                "--file",
                &file,
                "--entrypoint",
                "/pause",
            ],
        );
        self.import_cri(&tar);
    }

    /// Imports an image tarball into the `k8s.io` namespace (every platform it lists).
    pub fn import_cri(&self, tar: &Path) {
        let r = self.ctr(&[
            "-n",
            "k8s.io",
            "image",
            "import",
            "--all-platforms",
            tar.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "import into k8s.io: {r:?}");
    }

    /// Runs a pod with `handler` whose one container runs `image` with `args`, waits until the
    /// container exits and returns (its exit code, its log). The pod is removed afterwards.
    pub fn run_cri_pod(
        &self,
        handler: &str,
        name: &str,
        image: &str,
        args: &[&str],
    ) -> (i64, String) {
        let dir = self.dir.path().join(format!("cri-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pod = serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "log_directory": dir.join("logs").display().to_string(),
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        });
        let container = serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "args": args,
            "log_path": format!("{name}.log"),
            "linux": {}
        });
        let pod_file = dir.join("pod.json");
        let ctr_file = dir.join("container.json");
        std::fs::write(&pod_file, pod.to_string()).unwrap();
        std::fs::write(&ctr_file, container.to_string()).unwrap();
        let pod_file = pod_file.to_str().unwrap();
        let r = self.crictl(&["runp", "--runtime", handler, pod_file]);
        assert_eq!(r.code, 0, "runp: {r:?}");
        let pod_id = r.stdout.trim().to_owned();
        let r = self.crictl(&["create", &pod_id, ctr_file.to_str().unwrap(), pod_file]);
        assert_eq!(r.code, 0, "create: {r:?}");
        let id = r.stdout.trim().to_owned();
        let r = self.crictl(&["start", &id]);
        assert_eq!(r.code, 0, "start: {r:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let r = self.crictl(&["inspect", "-o", "json", &id]);
            assert_eq!(r.code, 0, "inspect: {r:?}");
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            if v["status"]["state"] == "CONTAINER_EXITED" {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let code = status["status"]["exitCode"].as_i64().unwrap_or(0);
        let logs = self.crictl(&["logs", &id]);
        let r = self.crictl(&["stopp", &pod_id]);
        assert_eq!(r.code, 0, "stopp: {r:?}");
        let r = self.crictl(&["rmp", &pod_id]);
        assert_eq!(r.code, 0, "rmp: {r:?}");
        (code, logs.stdout + &logs.stderr)
    }
}
