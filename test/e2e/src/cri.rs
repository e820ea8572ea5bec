//! The CRI tier's harness: a private containerd with its CRI plugin on, driven with `crictl`
//! as the kubelet drives it (RunPodSandbox, CreateContainer, StartContainer...).
//!
//! Pods use the node's network namespace (no CNI here) and a pause image built from
//! `test/fixtures/pause.c`. Images are imported into containerd's `k8s.io` namespace, or pulled
//! from a registry the test serves on loopback ([`Registry`]). `restrict_oom_score_adj` is set because these machines refuse a negative
//! `oom_score_adj`, even to root, and the CRI plugin gives its sandboxes -998.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{bin_dir, containerd_major, Containerd, Ran};

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

/// The file [`crictl_bin`] names, looked up in `PATH` when it is a bare name (to hand to a
/// machine that has no such `PATH`, the VM tier's).
pub fn crictl_bin_path() -> PathBuf {
    let bin = crictl_bin();
    if bin.components().count() > 1 {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} is not in PATH", bin.display()))
}

/// Whether this host can run the CRI tier (crictl found).
pub fn available() -> bool {
    Command::new(crictl_bin())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private containerd configuration with the CRI plugin on, for containerd's major
/// version: its own root, state and socket, CNI directories inside `dir` (the CRI tier's pods
/// take the node's network; the cluster tier writes a bridge network there), the pause image
/// above, and no NRI socket.
pub fn cri_config(dir: &Path, socket: &Path) -> String {
    let (root, state, sock) = crate::instance_paths(dir, socket);
    // Registry hosts (`Registry::serve` adds the loopback one).
    let certs = dir.join("certs.d").display().to_string();
    let (cni_bin, cni_conf) = (
        dir.join("cni/bin").display().to_string(),
        dir.join("cni/conf").display().to_string(),
    );
    let opt = dir.join("opt").display().to_string();
    if containerd_major() >= 2 {
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

{local_pull}[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{certs}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  # Pods' network namespaces below the state dir, so the teardown finds any left.
  netns_mounts_under_state_dir = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{cni_bin}"]
  conf_dir = "{cni_conf}"

{shim_manager}"#,
            shim_manager = crate::shim_manager_section(dir),
            local_pull = local_pull_section()
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

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{certs}"
"#
        )
    }
}

/// What `wasmcell install` sets for containerd 2.3 and later: the CRI plugin pulls through the
/// client's unpacker, which unpacks wasm images (the transfer service unpacks only the host
/// OS's). Empty for earlier releases.
pub fn local_pull_section() -> String {
    if crate::containerd_version() >= (2, 3) {
        "[plugins.\"io.containerd.cri.v1.images\"]\n  use_local_image_pull = true\n\n".to_owned()
    } else {
        String::new()
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
    let mut section = format!(
        "\n[plugins.\"{plugin}\".containerd.runtimes.{HANDLER}]\n  runtime_type = \"{}\"\n",
        crate::RUNTIME
    );
    if containerd_major() < 2 {
        // containerd 1.x drops its built-in runc once a config lists a runtime.
        section.push_str(&format!(
            "\n[plugins.\"{plugin}\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
        ));
    }
    section
}

impl Containerd {
    /// Writes `value` as JSON to `name` in the directory `dir` of this instance's own (created if
    /// need be), as crictl takes pod and container configs; the file's path.
    pub fn write_json(&self, dir: &str, name: &str, value: &serde_json::Value) -> String {
        let dir = self.dir.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.display().to_string()
    }

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
        let mut args = vec!["-n", "k8s.io"];
        args.extend(crate::import_args());
        args.push(tar.to_str().unwrap());
        let r = self.ctr(&args);
        assert_eq!(r.code, 0, "import into k8s.io: {r:?}");
    }

    /// Builds a wasm image of `wasm` (saved as `file`, the image's entrypoint) and imports it
    /// into the `k8s.io` namespace as `name`.
    pub fn import_wasm_cri(&self, name: &str, file: &str, wasm: &[u8]) {
        let src = self.dir.path().join(file);
        std::fs::write(&src, wasm).unwrap();
        let tar = self.build_image(
            &format!("{}.tar", name.replace(['/', ':'], "_")),
            &["--name", name, "--wasm", src.to_str().unwrap()],
        );
        self.import_cri(&tar);
    }

    /// Builds a native busybox image ([`crate::BUSYBOX_BASE_ARGS`]: entrypoint `/bin/busybox`,
    /// no default arguments) and imports it into the `k8s.io` namespace as `name`.
    pub fn import_busybox_cri(&self, name: &str) {
        let mut args = vec!["--name", name];
        args.extend(crate::BUSYBOX_BASE_ARGS);
        let file = format!("{}.tar", name.replace(['/', ':'], "_"));
        let tar = self.build_image(&file, &args);
        self.import_cri(&tar);
    }

    /// Starts a pod with `handler` (host network when `node_network`) whose one container runs
    /// `image` with `args` and `envs`; returns the pod's id and the container's.
    pub fn start_cri_pod(
        &self,
        handler: &str,
        name: &str,
        image: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        node_network: bool,
    ) -> (String, String) {
        let dir = self.dir.path().join(format!("cri-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Network 2 is NODE; 0 is POD.
        let network = if node_network { 2 } else { 0 };
        let pod = serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "log_directory": dir.join("logs").display().to_string(),
            "linux": {"security_context": {"namespace_options": {"network": network}}}
        });
        let envs: Vec<serde_json::Value> = envs
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect();
        let container = serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "args": args,
            "envs": envs,
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
        (pod_id, id)
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
        let (pod_id, id) = self.start_cri_pod(handler, name, image, args, &[], true);
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

/// `crane`: `WASMCELL_CRANE` (`make test` builds the pinned one), else PATH's.
pub fn crane_bin() -> PathBuf {
    std::env::var_os("WASMCELL_CRANE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "crane".into())
}

/// A registry on loopback (`crane registry serve`, in memory) that a CRI containerd pulls from
/// over plain HTTP; stopped on drop.
pub struct Registry {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Registry {
    /// Serves a registry on a free loopback port and tells containerd `c` (its `certs.d`)
    /// to reach it over HTTP.
    pub fn serve(c: &Containerd) -> Registry {
        use std::io::BufRead;
        let mut child = Command::new(crane_bin())
            .args(["registry", "serve", "--address", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "run {}: {e} (make tools builds it, or set WASMCELL_CRANE)",
                    crane_bin().display()
                )
            });
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("crane registry serve said nothing")
                .unwrap();
            if let Some(p) = line.split("serving on port ").nth(1) {
                break p.trim().to_owned();
            }
        };
        // Keep reading so a chatty registry never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let host = format!("127.0.0.1:{port}");
        let dir = c.dir.path().join("certs.d").join(&host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
        Registry { child, host }
    }

    /// Pushes an image tarball made by `wasmcell image build` (its whole index) as `name`;
    /// returns the reference to pull.
    pub fn push(&self, tar: &Path, name: &str) -> String {
        let layout = tar.with_extension("layout");
        std::fs::create_dir_all(&layout).unwrap();
        let out = Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&layout)
            .output()
            .unwrap();
        assert!(out.status.success(), "untar {}: {out:?}", tar.display());
        let reference = format!("{}/{name}", self.host);
        let out = Command::new(crane_bin())
            .args(["push", "--index"])
            .arg(&layout)
            .arg(&reference)
            .output()
            .unwrap();
        assert!(out.status.success(), "crane push {reference}: {out:?}");
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    /// Starts containerd with its CRI plugin on ([`cri_config`]) and wasmcell as runtime
    /// handler [`HANDLER`], the pause image imported.
    pub fn start_cri() -> Containerd {
        Containerd::start_cri_with_env(&[])
    }

    /// [`Containerd::start_cri`] with extra environment variables (which its shims inherit).
    pub fn start_cri_with_env(env: &[(&str, &str)]) -> Containerd {
        let dir = Containerd::new_dir();
        let socket = dir.path().join("containerd.sock");
        std::fs::write(
            dir.path().join("config.toml"),
            cri_config(dir.path(), &socket) + &handler_section(),
        )
        .unwrap();
        let c = Containerd::start_in(dir, env, &[bin_dir()]);
        c.import_pause();
        c
    }
}
