//! A Kubernetes control plane for the tests, from the pinned builds (`test/tools`): etcd and
//! kube-apiserver on loopback, with a CA, serving certificate, admin client certificate and
//! service-account key made per run with openssl. Everything lives in a temp dir and is torn
//! down on drop (the processes killed); on a panic their logs are printed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Containerd, Ran};

/// The name of the test node.
pub const NODE_NAME: &str = "wasmcell-node";

/// The test node's address: on a veth of its own, in the 198.18.0.0/15 test range (a kubelet
/// refuses a loopback node IP). Traffic to it stays on this machine.
pub const NODE_IP: &str = "198.18.0.1";

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

/// A free TCP port on loopback (bound, then released for the program that takes it).
fn free_port() -> u16 {
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

/// etcd and kube-apiserver on loopback, and a kubeconfig for an admin.
pub struct ControlPlane {
    /// Holds the certificates, data and logs.
    pub dir: tempfile::TempDir,
    /// The admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub api: String,
    children: Vec<(String, Child)>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
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
                // A range of the 198.18.0.0/15 test network: nothing is ever sent there.
                "--service-cluster-ip-range",
                "198.18.128.0/24",
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
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = plane.kubectl(&["get", "--raw", "/readyz"]);
            if r.code == 0 && r.stdout.trim() == "ok" {
                break;
            }
            let exited = plane
                .children
                .iter_mut()
                .find_map(|(name, child)| Some((name.clone(), child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!("{name} exited ({status}):\n{}", plane.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the API server was not ready within 90 s: {r:?}\n{}",
                plane.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        plane
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

/// A kubelet of node [`NODE_NAME`] on a containerd (its CRI plugin), registered with a
/// [`ControlPlane`]. On drop: the kubelet is stopped, the node's host sysctls it changed are
/// put back, and its address goes.
pub struct Kubelet {
    child: Child,
    log: PathBuf,
    sysctls: Vec<(String, String)>,
    /// Host directories the kubelet makes whatever its flags say (its device-plugin socket,
    /// the container log links) that did not exist before it: removed on drop.
    made: Vec<PathBuf>,
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
        std::fs::write(
            &config,
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines: cgroup v1, no swap accounting to fail on, cgroupfs.
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
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
# No QoS cgroup tree of the kubelet's own on the host: pods' cgroups are containerd's.
cgroupsPerQOS: false
enforceNodeAllocatable: []
resolvConf: ""
localStorageCapacityIsolation: false
evictionHard: {{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"}}
"#,
                ca = pd.join("ca.crt").display(),
                sock = c.socket.display(),
                logs = d.join("pod-logs").display(),
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
            .args(["--node-labels", labels])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the kubelet");
        let kubelet = Kubelet {
            child,
            log,
            sysctls,
            made,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while plane.kubectl(&["get", "node", NODE_NAME]).code != 0 {
            assert!(
                Instant::now() < deadline,
                "the node did not register within 60 s:\n{}",
                kubelet.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        kubelet
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
        for (k, v) in &self.sysctls {
            if !v.is_empty() {
                let _ = std::fs::write(format!("/proc/sys/{k}"), v);
            }
        }
        let _ = Command::new("ip").args(["link", "del", "wcnode0"]).output();
        for dir in &self.made {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
