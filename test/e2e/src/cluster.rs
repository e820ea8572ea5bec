//! A Kubernetes control plane for the tests, from the pinned builds (`test/tools`): etcd and
//! kube-apiserver on loopback, with a CA, serving certificate, admin client certificate and
//! service-account key made per run with openssl. Everything lives in a temp dir and is torn
//! down on drop (the processes killed); on a panic their logs are printed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Ran;

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
            ]),
        );
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
