//! What every cluster has besides its nodes: kube-proxy, so ClusterIP Services route, and
//! cluster DNS, CoreDNS behind the `kube-dns` Service in `kube-system`, as kubeadm sets them up.
//!
//! - kube-proxy runs on the node as kubeadm's DaemonSet would, in iptables mode, with
//!   `masqueradeAll` (pod-to-Service traffic comes back through the node, so these hosts need no
//!   `br_netfilter`), NodePorts on the node's address only and conntrack left as it is. On drop
//!   it is stopped and `kube-proxy --cleanup` removes its rules.
//! - CoreDNS is a Deployment of a native image built here from the pinned CoreDNS, with
//!   kubeadm's Corefile minus `forward` (nothing leaves this machine: names outside the cluster
//!   domain are NXDOMAIN). It runs on the node's network, bound to the node's address, and
//!   watches the API with the admin kubeconfig: the API server listens on loopback only, which
//!   pods cannot reach, where kubeadm's CoreDNS uses its service account through the
//!   `kubernetes` Service.
//! - The kubelet's `clusterDNS` is [`CLUSTER_DNS`] and the pods' routes send the Service range
//!   to the node ([`crate::PodNetwork`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ControlPlane, Node, NODE_IP, NODE_NAME, POD_SUBNET};

pub use crate::addresses::{CLUSTER_DNS, CLUSTER_DOMAIN, SERVICE_SUBNET};
/// The CoreDNS image.
const COREDNS_IMAGE: &str = "wasmcell.test/coredns:v1.15.0";

/// The pinned kube-proxy: `WASMCELL_KUBE_PROXY`, else `kube-proxy` on `PATH`.
fn kube_proxy_bin() -> PathBuf {
    std::env::var_os("WASMCELL_KUBE_PROXY")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "kube-proxy".into())
}

/// The pinned CoreDNS: `WASMCELL_COREDNS`, else `coredns` on `PATH`.
fn coredns_bin() -> PathBuf {
    std::env::var_os("WASMCELL_COREDNS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "coredns".into())
}

/// kube-proxy and CoreDNS for a cluster; torn down on drop.
pub struct ClusterServices {
    kube_proxy: Child,
    log: PathBuf,
    config: PathBuf,
    /// The host setting kube-proxy may change, as it was.
    route_localnet: String,
}

impl ClusterServices {
    /// Starts kube-proxy for `node` and CoreDNS in `plane`, and waits until a name of the
    /// cluster resolves through the `kube-dns` Service.
    pub fn start(plane: &ControlPlane, node: &Node) -> ClusterServices {
        let d = plane.dir.path();
        let route_localnet = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet")
            .unwrap_or_default();
        let config = d.join("kube-proxy.yaml");
        std::fs::write(
            &config,
            format!(
                r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_IP}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
mode: iptables
clusterCIDR: {POD_SUBNET}
nodePortAddresses: ["{NODE_IP}/32"]
iptables:
  masqueradeAll: true
  syncPeriod: 30s
  minSyncPeriod: 0s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
                kubeconfig = plane.kubeconfig.display(),
                healthz = free_port(),
                metrics = free_port(),
            ),
        )
        .unwrap();
        let log = d.join("kube-proxy.log");
        let file = std::fs::File::create(&log).unwrap();
        let kube_proxy = Command::new(kube_proxy_bin())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start kube-proxy");
        let services = ClusterServices {
            kube_proxy,
            log,
            config,
            route_localnet,
        };

        node.import(
            "coredns.tar",
            &[
                "--name",
                COREDNS_IMAGE,
                "--platform",
                "linux/amd64",
                "--file",
                &format!("{}:/coredns", coredns_bin().display()),
                "--entrypoint",
                "/coredns",
            ],
        );
        plane.apply("coredns", &coredns_manifest(plane));
        plane.wait_for_output(
            &[
                "-n",
                "kube-system",
                "get",
                "deployment",
                "coredns",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
            "1",
            Duration::from_secs(120),
            "CoreDNS ready",
        );
        let mut services = services;
        services.wait_for_rules(plane);
        services
    }

    /// Waits until kube-proxy has written the kube-dns Service's rules.
    fn wait_for_rules(&mut self, plane: &ControlPlane) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.kube_proxy.try_wait() {
                panic!("kube-proxy exited ({status}):\n{}", self.log_tail());
            }
            let out = Command::new("iptables")
                .args(["-t", "nat", "-S", "KUBE-SERVICES"])
                .output()
                .expect("run iptables");
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{CLUSTER_DNS}/32")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-proxy wrote no rule for kube-dns within 60 s:\n{}\n{}",
                self.log_tail(),
                plane.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// kube-proxy's last log lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ClusterServices {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== kube-proxy (last 40 lines) =====\n{}",
                self.log_tail()
            );
        }
        let _ = self.kube_proxy.kill();
        let _ = self.kube_proxy.wait();
        let _ = Command::new(kube_proxy_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("--cleanup")
            .output();
        if !self.route_localnet.trim().is_empty() {
            let _ = std::fs::write(
                "/proc/sys/net/ipv4/conf/all/route_localnet",
                self.route_localnet.trim(),
            );
        }
    }
}

/// CoreDNS's Corefile, ConfigMap, Deployment and the `kube-dns` Service.
fn coredns_manifest(plane: &ControlPlane) -> String {
    let dir = plane.dir.path().display();
    let kubeconfig = plane.kubeconfig.display();
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    {CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
        bind {NODE_IP}
        errors
        ready {NODE_IP}:18181
        kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
            kubeconfig {kubeconfig}
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 5
        }}
        cache 5
        loadbalance
    }}
    .:53 {{
        bind {NODE_IP}
        errors
        template ANY ANY {{
            rcode NXDOMAIN
        }}
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      hostNetwork: true
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {COREDNS_IMAGE}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        readinessProbe:
          httpGet: {{path: /ready, port: 18181}}
          periodSeconds: 1
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
        - {{name: cluster, mountPath: {dir}, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: coredns
      - name: cluster
        hostPath: {{path: {dir}, type: Directory}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {CLUSTER_DNS}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
  - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
"#
    )
}
