//! The cluster tier's harness: a single-node Kubernetes from the pinned builds (`test/tools`),
//! on this machine, with wasmcell as the node's `wasmtime` runtime handler.
//!
//! - [`ControlPlane`]: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
//!   loopback, with a CA, serving certificate, admin and node client certificates and a
//!   service-account key made per run with openssl.
//! - [`PodNetwork`]: a CNI bridge (the pinned bridge, host-local and loopback plugins) on
//!   198.18.64.0/24, a subnet of the 198.18.0.0/15 test range. Pods get no default route, so
//!   nothing they send can leave this machine; the node reaches them (probes) over the bridge.
//! - [`Kubelet`]: the node, on a containerd whose CRI plugin `wasmcell install` configured.
//!
//! Everything lives in temp dirs and is torn down on drop, even when a test fails: processes
//! killed, pods removed through CRI (their shims, cells, mounts, cgroups and network
//! namespaces go with them), the bridge and the node's address deleted, the host settings the
//! kubelet and the bridge plugin change put back. On a panic each component's log is printed.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

pub mod addresses;
pub mod services;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasmcell_e2e::{Containerd, Ran};

/// The name of the test node.
pub const NODE_NAME: &str = "wasmcell-node";

/// The test node's address: on a veth of its own, in the 198.18.0.0/15 test range (a kubelet
/// refuses a loopback node IP). Traffic to it stays on this machine.
pub const NODE_IP: &str = "198.18.0.1";

/// How the node's kubelet and containerd's runc manage cgroups, as a node of this kind is set
/// up in the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// systemd as init on the unified hierarchy (kubeadm's default, every managed cluster):
    /// the kubelet's `cgroupDriver: systemd` with its QoS slices (`kubepods.slice`), runc's
    /// `SystemdCgroup = true`. The VM tier's machine.
    Systemd,
    /// No systemd as init (these cgroup v1 hosts): `cgroupfs`, and no QoS tree of the
    /// kubelet's own, so pods' cgroups are containerd's.
    Cgroupfs,
}

impl CgroupDriver {
    /// The driver for this machine: systemd's where systemd is init on cgroup v2.
    pub fn of_this_machine() -> CgroupDriver {
        let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        if init.trim() == "systemd" && unified {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        }
    }
}

/// How much longer than on the host the harness waits for the cluster's parts: the VM tier
/// runs under software emulation and sets `WASMCELL_TIME_SCALE` (default 1).
pub fn time_scale() -> u32 {
    std::env::var("WASMCELL_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// `secs` seconds, times [`time_scale`].
pub fn patience(secs: u64) -> Duration {
    Duration::from_secs(secs * u64::from(time_scale()))
}

/// The pinned Kubernetes binaries' directory: `WASMCELL_KUBERNETES_DIR`, else the directory of
/// `WASMCELL_KUBECTL`, else PATH.
pub fn kubernetes_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMCELL_KUBERNETES_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join(name);
    }
    if let Some(kubectl) = std::env::var_os("WASMCELL_KUBECTL").filter(|d| !d.is_empty()) {
        if let Some(dir) = Path::new(&kubectl).parent() {
            return dir.join(name);
        }
    }
    name.into()
}

/// etcd: `WASMCELL_ETCD`, else PATH's.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("WASMCELL_ETCD")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "etcd".into())
}

/// The value of the PromQL `query` (an instant vector of one sample, or a scalar) at the
/// Prometheus at `url` now; `None` while it has none.
pub fn promql(url: &str, query: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sf", "-G", &format!("{url}/api/v1/query")])
        .arg("--data-urlencode")
        .arg(format!("query={query}"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let result = &v["data"]["result"];
    let value = match result.as_array() {
        Some(samples) => samples.first()?["value"][1].clone(),
        None => result[1].clone(),
    };
    value.as_str()?.parse().ok()
}

/// A free TCP port on loopback (bound, then released for the program that takes it).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback, and a
/// kubeconfig for an admin.
pub struct ControlPlane {
    /// Holds the certificates, data and logs.
    pub dir: tempfile::TempDir,
    /// The admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub api: String,
    children: Vec<(String, Child)>,
    /// One cluster at a time in a test process: the node's name, address, bridge and kubelet
    /// port are the machine's.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits until the API server is ready, then starts the
    /// controller-manager and the scheduler and waits until the controllers work.
    pub fn start() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("wasmcell-cluster-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_owned();
        let d = d.as_path();
        Self::make_certificates(d);
        let mut plane = ControlPlane {
            kubeconfig: d.join("admin.kubeconfig"),
            api: String::new(),
            dir,
            children: Vec::new(),
            // A test that failed while holding it left nothing (its drops ran): go on.
            _one_at_a_time: ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner()),
        };
        let (client, peer, secure) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        plane.spawn(
            "etcd",
            Command::new(etcd_bin()).args([
                "--name",
                "default",
                "--data-dir",
                &d.join("etcd").display().to_string(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("default={peer_url}"),
            ]),
        );
        let p = |f: &str| d.join(f).display().to_string();
        plane.spawn(
            "kube-apiserver",
            Command::new(kubernetes_bin("kube-apiserver")).args([
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                // kube-apiserver 1.37 refuses a loopback address for the `kubernetes` Service's
                // endpoints; no pod here reaches the API through that Service (the ones that
                // talk to it run on the node's network and are given its address), so it gets
                // none.
                "--endpoint-reconciler-type",
                "none",
                "--secure-port",
                &secure.to_string(),
                "--cert-dir",
                &p("apiserver-certs"),
                "--tls-cert-file",
                &p("apiserver.crt"),
                "--tls-private-key-file",
                &p("apiserver.key"),
                "--client-ca-file",
                &p("ca.crt"),
                "--service-account-key-file",
                &p("sa.pub"),
                "--service-account-signing-key-file",
                &p("sa.key"),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                // A range of the 198.18.0.0/15 test network (kube-proxy routes it on the node
                // when a test starts it: `services`).
                "--service-cluster-ip-range",
                addresses::SERVICE_SUBNET,
                "--authorization-mode",
                "Node,RBAC",
                "--enable-admission-plugins",
                "NodeRestriction",
                // As kubeadm and kind set it: the node installer is a privileged pod.
                "--allow-privileged=true",
                // Reach kubelets at their InternalIP, never by looking their names up in DNS,
                // as the admin (whom the kubelets' client CA signed).
                "--kubelet-preferred-address-types",
                "InternalIP",
                "--kubelet-client-certificate",
                &p("admin.crt"),
                "--kubelet-client-key",
                &p("admin.key"),
            ]),
        );
        plane.api = format!("https://127.0.0.1:{secure}");
        std::fs::write(
            &plane.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    \
                 server: https://127.0.0.1:{secure}\n    certificate-authority: {ca}\n\
                 users:\n- name: admin\n  user:\n    client-certificate: {crt}\n    \
                 client-key: {key}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    \
                 user: admin\ncurrent-context: local\n",
                ca = p("ca.crt"),
                crt = p("admin.crt"),
                key = p("admin.key"),
            ),
        )
        .unwrap();
        let deadline = Instant::now() + patience(90);
        loop {
            let r = plane.kubectl(&["get", "--raw", "/readyz"]);
            if r.code == 0 && r.stdout.trim() == "ok" {
                break;
            }
            plane.assert_running();
            assert!(
                Instant::now() < deadline,
                "the API server was not ready within {:?}: {r:?}\n{}",
                patience(90),
                plane.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The controllers a single node needs (Deployments, ReplicaSets, service accounts and
        // their tokens, namespaces, garbage collection, node lifecycle: it lifts the not-ready
        // taint a kubelet registers with), without the one that allocates pod CIDRs (the CNI
        // bridge has its own range). Kubernetes 1.37 no longer has the cloud controllers
        // (routes, load balancers, cloud node lifecycle) in the controller-manager.
        let controllers = "*,-node-ipam-controller";
        let kubeconfig = plane.kubeconfig.display().to_string();
        plane.spawn(
            "kube-controller-manager",
            Command::new(kubernetes_bin("kube-controller-manager")).args([
                "--kubeconfig",
                &kubeconfig,
                "--controllers",
                controllers,
                "--leader-elect=false",
                "--secure-port",
                "0",
                "--service-account-private-key-file",
                &p("sa.key"),
                "--root-ca-file",
                &p("ca.crt"),
                "--use-service-account-credentials=false",
            ]),
        );
        plane.spawn(
            "kube-scheduler",
            Command::new(kubernetes_bin("kube-scheduler")).args([
                "--kubeconfig",
                &kubeconfig,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &free_port().to_string(),
            ]),
        );
        // The controller-manager is running when it has made the default service account
        // (pods cannot be admitted before).
        let deadline = Instant::now() + patience(60);
        while plane.kubectl(&["get", "serviceaccount", "default"]).code != 0 {
            plane.assert_running();
            assert!(
                Instant::now() < deadline,
                "no default service account within {:?}\n{}",
                patience(60),
                plane.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        plane
    }

    /// Panics with the logs if a component has exited.
    pub fn assert_running(&mut self) {
        let exited = self
            .children
            .iter_mut()
            .find_map(|(name, child)| Some((name.clone(), child.try_wait().ok()??)));
        if let Some((name, status)) = exited {
            panic!("{name} exited ({status}):\n{}", self.logs());
        }
    }

    /// Waits until `kubectl args` prints `want` (trimmed); panics with `what` and the logs
    /// after `timeout`.
    pub fn wait_for_output(&self, args: &[&str], want: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.kubectl(args);
            if r.code == 0 && r.stdout.trim() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; kubectl {args:?} says {r:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Applies a manifest (JSON or YAML text) through a file in the control plane's directory.
    pub fn apply(&self, name: &str, manifest: &str) {
        let file = self.dir.path().join(format!("{name}.manifest"));
        std::fs::write(&file, manifest).unwrap();
        let r = self.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "apply {name}: {r:?}");
    }

    /// A CA, the API server's serving certificate (loopback and the service IP), an admin
    /// client certificate (group system:masters) and the service-account key pair.
    fn make_certificates(d: &Path) {
        openssl(d, &["genrsa", "-out", "ca.key", "2048"]);
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-days",
                "2",
                "-subj",
                "/CN=wasmcell-test-ca",
                "-out",
                "ca.crt",
            ],
        );
        let sign = |name: &str, subject: &str, ext: Option<&str>| {
            openssl(d, &["genrsa", "-out", &format!("{name}.key"), "2048"]);
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    subject,
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            let mut args = vec![
                "x509".to_owned(),
                "-req".into(),
                "-in".into(),
                format!("{name}.csr"),
                "-CA".into(),
                "ca.crt".into(),
                "-CAkey".into(),
                "ca.key".into(),
                "-CAcreateserial".into(),
                "-days".into(),
                "2".into(),
                "-out".into(),
                format!("{name}.crt"),
            ];
            if let Some(ext) = ext {
                std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
                args.extend(["-extfile".into(), format!("{name}.ext")]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            openssl(d, &args);
        };
        sign(
            "apiserver",
            "/CN=kube-apiserver",
            Some(
                "subjectAltName=IP:127.0.0.1,IP:198.18.128.1,DNS:localhost,DNS:kubernetes,\
                 DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
            ),
        );
        sign("admin", "/O=system:masters/CN=admin", None);
        sign(
            "node",
            &format!("/O=system:nodes/CN=system:node:{NODE_NAME}"),
            None,
        );
        openssl(d, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {name}: {e} (make tools builds it; see test/tools/versions.env)")
            });
        self.children.push((name.to_owned(), child));
    }

    /// Starts Prometheus (`WASMCELL_PROMETHEUS`, which `make tools` builds: Debian's package
    /// leaves out Kubernetes service discovery) beside the control plane, with the YAML
    /// `config` in which `{kubeconfig}` stands for the admin's kubeconfig (for
    /// `kubernetes_sd_configs`), on a free loopback port; its URL, once it is ready. It ends
    /// with the control plane, and its log is among the plane's.
    pub fn start_prometheus(&mut self, config: &str) -> String {
        let dir = self.dir.path().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prometheus.yml");
        let kubeconfig = self.kubeconfig.display().to_string();
        std::fs::write(&file, config.replace("{kubeconfig}", &kubeconfig)).unwrap();
        let url = format!("127.0.0.1:{}", free_port());
        self.spawn(
            "prometheus",
            Command::new(
                std::env::var_os("WASMCELL_PROMETHEUS")
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "prometheus".into()),
            )
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={url}"))
            .current_dir(&dir),
        );
        let url = format!("http://{url}");
        let deadline = Instant::now() + patience(60);
        loop {
            let ready = Command::new("curl")
                .args(["-sf", &format!("{url}/-/ready")])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 60 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Ran {
        Command::new(kubernetes_bin("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
            .into()
    }

    /// The control plane's logs so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (name, _) in &self.children {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            all.push_str(&format!("===== {name} (last 60 lines) =====\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pinned CNI plugins' directory: `WASMCELL_CNI_PLUGINS`, else `/opt/cni/bin`.
pub fn cni_plugins_dir() -> PathBuf {
    std::env::var_os("WASMCELL_CNI_PLUGINS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/cni/bin".into())
}

/// The pod network's bridge.
pub const BRIDGE: &str = "wcbr0";

/// The pod network's subnet (of the 198.18.0.0/15 test range); the bridge is its `.1`.
pub const POD_SUBNET: &str = "198.18.64.0/24";

/// The node's pod network: a CNI configuration in containerd's CNI directories (as
/// [`wasmcell_e2e::cri::cri_config`] names them) for a bridge on [`POD_SUBNET`], with the
/// pinned plugins linked beside it. Write it before the kubelet starts (the node is Ready
/// once containerd reports its network ready). On drop the bridge is deleted and the host's
/// IPv4 forwarding setting (which the bridge plugin turns on for a gateway) put back.
pub struct PodNetwork {
    forwarding: String,
}

impl PodNetwork {
    /// Writes the network into containerd directory `dir` (`cni/conf`, `cni/bin`); its address
    /// allocations go to `cni/ipam` there.
    pub fn install(dir: &Path) -> PodNetwork {
        let forwarding =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        let bin = dir.join("cni/bin");
        let conf = dir.join("cni/conf");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        for plugin in ["bridge", "host-local", "loopback"] {
            let src = cni_plugins_dir().join(plugin);
            assert!(
                src.exists(),
                "no CNI plugin {} (make tools builds it; WASMCELL_CNI_PLUGINS names the directory)",
                src.display()
            );
            std::os::unix::fs::symlink(&src, bin.join(plugin)).unwrap();
        }
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "wasmcell-test",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                // The bridge takes the subnet's first address, so the node reaches its pods.
                "isGateway": true,
                // No default route in the pods and no masquerading: pod traffic has nowhere
                // to go but this bridge.
                "isDefaultGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    // Services are reached through the node, where kube-proxy's rules are.
                    "routes": [{"dst": addresses::SERVICE_SUBNET}],
                    "dataDir": dir.join("cni/ipam"),
                },
            }, {
                "type": "loopback",
            }],
        });
        std::fs::write(
            conf.join("10-wasmcell-test.conflist"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        PodNetwork { forwarding }
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
        if !self.forwarding.trim().is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forwarding.trim());
        }
    }
}

/// A kubelet of node [`NODE_NAME`] on a containerd (its CRI plugin), registered with a
/// [`ControlPlane`]. On drop: the kubelet is stopped, the node's host sysctls it changed are
/// put back, and its address goes.
pub struct Kubelet {
    child: Child,
    log: PathBuf,
    /// containerd's CRI socket: on drop, every pod the kubelet left is removed through it.
    cri: PathBuf,
    sysctls: Vec<(String, String)>,
    /// Host directories the kubelet makes whatever its flags say (its device-plugin socket,
    /// the container log links) that did not exist before it: removed on drop.
    made: Vec<PathBuf>,
    /// The host's iptables chains before it started: those it (or kube-proxy) made go too.
    chains: wasmcell_e2e::firewall::Chains,
    /// With systemd's driver the kubelet's QoS slices (`kubepods.slice` and below) are
    /// systemd units: stopped on drop, unless they were there before this kubelet started.
    stop_kubepods: bool,
}

/// Host paths a kubelet writes below whatever its root and log directories are.
const KUBELET_HOST_DIRS: [&str; 2] = ["/var/lib/kubelet", "/var/log/containers"];

/// The host settings a kubelet changes when it starts (its "kernel tunables").
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

impl Kubelet {
    /// Starts a kubelet on containerd `c`'s CRI socket (its state below `c`'s directory, so
    /// `c`'s teardown unmounts what it mounted) and waits until its node is registered.
    pub fn start(plane: &ControlPlane, c: &Containerd, labels: &str) -> Kubelet {
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .map(|k| {
                let v = std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default();
                ((*k).to_owned(), v.trim().to_owned())
            })
            .collect();
        let chains = wasmcell_e2e::firewall::Chains::snapshot("KUBE-");
        let made = KUBELET_HOST_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = Command::new("ip").args(["link", "del", "wcnode0"]).output();
        run(&[
            "link", "add", "wcnode0", "type", "veth", "peer", "name", "wcnode1",
        ]);
        run(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "wcnode0"]);
        run(&["link", "set", "wcnode0", "up"]);
        run(&["link", "set", "wcnode1", "up"]);

        let d = c.dir.path();
        let pd = plane.dir.path();
        let kubeconfig = d.join("node.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    \
                 server: {api}\n    certificate-authority: {ca}\nusers:\n- name: node\n  user:\n    \
                 client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: local\n  \
                 context:\n    cluster: local\n    user: node\ncurrent-context: local\n",
                api = plane.api,
                ca = pd.join("ca.crt").display(),
                crt = pd.join("node.crt").display(),
                key = pd.join("node.key").display(),
            ),
        )
        .unwrap();
        let config = d.join("kubelet.yaml");
        let driver = CgroupDriver::of_this_machine();
        let stop_kubepods = driver == CgroupDriver::Systemd
            && Command::new("systemctl")
                .args(["is-active", "--quiet", "kubepods.slice"])
                .status()
                .is_ok_and(|s| !s.success());
        let cgroups = match driver {
            // As kubeadm sets a node up: systemd's driver, the QoS slices under
            // kubepods.slice, allocatable enforced on them.
            // Its disk accounted (the default), which the summary API's figures need.
            CgroupDriver::Systemd => {
                "cgroupDriver: systemd\ncgroupsPerQOS: true\nenforceNodeAllocatable: [\"pods\"]\n\
                 localStorageCapacityIsolation: true\n"
            }
            // These hosts: cgroup v1 and cgroupfs, and no QoS cgroup tree of the kubelet's
            // own on the host: pods' cgroups are containerd's. No local storage accounting
            // (cAdvisor then collects no disk figures, and the summary API, which needs them,
            // answers an error: the tests there read CRI's stats).
            CgroupDriver::Cgroupfs => {
                "cgroupDriver: cgroupfs\nfailCgroupV1: false\ncgroupsPerQOS: false\n\
                 enforceNodeAllocatable: []\nlocalStorageCapacityIsolation: false\n"
            }
        };
        std::fs::write(
            &config,
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
{cgroups}failSwapOn: false
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: unix://{sock}
podLogsDir: {logs}
resolvConf: ""
# No KUBE-FIREWALL of the kubelet's on the host: kube-proxy (`services`) keeps the Services'
# rules. What chains the kubelet still makes (its canaries) go with it (wasmcell_e2e::firewall).
makeIPTablesUtilChains: false
# The kube-dns Service (`services`; when a test has not started it, lookups in pods fail).
clusterDNS: ["{cluster_dns}"]
clusterDomain: {cluster_domain}
evictionHard: {{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"}}
"#,
                ca = pd.join("ca.crt").display(),
                sock = c.socket.display(),
                logs = d.join("pod-logs").display(),
                cluster_dns = addresses::CLUSTER_DNS,
                cluster_domain = addresses::CLUSTER_DOMAIN,
            ),
        )
        .unwrap();
        let log = d.join("kubelet.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(kubernetes_bin("kubelet"))
            .arg("--config")
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--root-dir")
            .arg(d.join("kubelet"))
            .arg("--cert-dir")
            .arg(d.join("kubelet-pki"))
            .args(["--hostname-override", NODE_NAME, "--node-ip", NODE_IP])
            .args(
                Some(["--node-labels", labels])
                    .filter(|_| !labels.is_empty())
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the kubelet");
        let kubelet = Kubelet {
            child,
            log,
            cri: c.socket.clone(),
            sysctls,
            made,
            chains,
            stop_kubepods,
        };
        let deadline = Instant::now() + patience(60);
        while plane.kubectl(&["get", "node", NODE_NAME]).code != 0 {
            assert!(
                Instant::now() < deadline,
                "the node did not register within {:?}:\n{}",
                patience(60),
                kubelet.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        kubelet
    }

    /// Waits until the node reports Ready (containerd's runtime and network ready).
    pub fn wait_ready(&self, plane: &ControlPlane) {
        let deadline = Instant::now() + patience(90);
        loop {
            let r = plane.kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if r.stdout.trim() == "True" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {NODE_NAME} not Ready within {:?}: {r:?}\n{}",
                patience(90),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The kubelet's last log lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== kubelet (last 40 lines) =====\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pods it left: stopped and removed through CRI, so their shims delete cells,
        // mounts, cgroups and network namespaces as they would for the kubelet.
        let crictl = |args: &[&str]| {
            Command::new(wasmcell_e2e::cri::crictl_bin())
                .arg("--runtime-endpoint")
                .arg(format!("unix://{}", self.cri.display()))
                .arg("--timeout=60s")
                .args(args)
                .output()
        };
        let _ = crictl(&["rmp", "--force", "--all"]);
        if self.stop_kubepods {
            // The QoS slices, and any pod slice a failed test left below them.
            let _ = Command::new("systemctl")
                .args(["stop", "kubepods.slice"])
                .output();
        }
        for (k, v) in &self.sysctls {
            if !v.is_empty() {
                let _ = std::fs::write(format!("/proc/sys/{k}"), v);
            }
        }
        let _ = Command::new("ip").args(["link", "del", "wcnode0"]).output();
        for dir in &self.made {
            let _ = std::fs::remove_dir_all(dir);
        }
        self.chains.remove_new();
    }
}

/// Writes a CRI configuration for a containerd in `dir` (its `config.toml`) and, with
/// `install`, has `wasmcell install` (the product's own installer) add the `wasmtime` handler
/// to it and put the shim into `dir/bin`. Returns `dir/bin`, the directory for the head of
/// containerd's `PATH`.
pub fn configure(dir: &Path, install: bool) -> PathBuf {
    let config = dir.join("config.toml");
    let socket = dir.join("containerd.sock");
    let mut text = wasmcell_e2e::cri::cri_config(dir, &socket);
    if CgroupDriver::of_this_machine() == CgroupDriver::Systemd {
        // runc in systemd's driver, as kubeadm's nodes have it: containerd reports its default
        // runtime's driver to the kubelet (CRI's RuntimeConfig), and the kubelet takes that
        // one over its own `cgroupDriver`.
        let plugin = if wasmcell_e2e::containerd_major() >= 2 {
            "io.containerd.cri.v1.runtime"
        } else {
            "io.containerd.grpc.v1.cri"
        };
        text.push_str(&format!(
            "\n[plugins.\"{plugin}\".containerd.runtimes.runc]\n  \
             runtime_type = \"io.containerd.runc.v2\"\n\
             [plugins.\"{plugin}\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let shims = dir.join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    if install {
        let out = Command::new(wasmcell_e2e::bin_dir().join("wasmcell"))
            .arg("install")
            .arg("--config")
            .arg(&config)
            .arg("--shim-dir")
            .arg(&shims)
            .arg("--containerd")
            .arg(wasmcell_e2e::containerd_bin())
            .output()
            .unwrap();
        assert!(out.status.success(), "wasmcell install: {out:?}");
    }
    shims
}

/// The test node whole: containerd with its CRI plugin (configured by `wasmcell install`
/// unless told otherwise) and the pause image, the pod network, and a Ready kubelet.
/// Dropped in the order that leaves nothing: the kubelet and its pods, containerd, the network.
pub struct Node {
    /// The kubelet.
    pub kubelet: Kubelet,
    /// The node's containerd.
    pub containerd: Containerd,
    /// The pod network.
    pub network: PodNetwork,
}

impl Node {
    /// Brings up the node for `plane` with node `labels`. With `install`, `wasmcell install`
    /// (the product's own installer) adds the `wasmtime` handler to containerd's config and
    /// puts the shim into the directory at the head of containerd's `PATH` first; without it
    /// the node is as a node installer finds it.
    pub fn start(plane: &ControlPlane, install: bool, labels: &str) -> Node {
        let dir = Containerd::new_dir();
        let shims = configure(dir.path(), install);
        let network = PodNetwork::install(dir.path());
        let containerd = Containerd::start_in(dir, &[], &[shims]);
        containerd.import_pause();
        let kubelet = Kubelet::start(plane, &containerd, labels);
        kubelet.wait_ready(plane);
        Node {
            kubelet,
            containerd,
            network,
        }
    }

    /// Builds an image with `wasmcell image build ARGS` (for the node's platform too, as the
    /// kubelet asks for it) and imports it into containerd's `k8s.io` namespace.
    pub fn import(&self, file: &str, args: &[&str]) {
        let mut all = args.to_vec();
        all.extend(["--extra-platform", "linux/amd64"]);
        let tar = self.containerd.build_image(file, &all);
        self.containerd.import_cri(&tar);
    }

    /// Writes `wasm` beside containerd's files and imports it as image `name` (entrypoint
    /// the wasm program).
    pub fn import_wasm(&self, name: &str, wasm: &[u8]) {
        let file = name.replace(['/', ':'], "_");
        let path = self.containerd.dir.path().join(format!("{file}.wasm"));
        std::fs::write(&path, wasm).unwrap();
        self.import(
            &format!("{file}.tar"),
            &["--name", name, "--wasm", path.to_str().unwrap()],
        );
    }
}
