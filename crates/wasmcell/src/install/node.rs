//! What `install` does when it runs in the node installer's pod (`deploy/kubernetes/installer`)
//! rather than on the node itself: it reads what it needs from the pod (the shim to install,
//! the pod's service account), enters the node's mount namespace, and labels its node through
//! the Kubernetes API so that the RuntimeClass schedules wasm pods there.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The label the installer sets on its node, and the RuntimeClass selects.
pub const INSTALLED_LABEL: &str = "wasmcell.dev/installed";

/// Where a pod finds its service account.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long one call to the API server may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Joins the mount namespace of process `pid`; PID 1 in a pod with `hostPID: true` is the
/// node's init, and from then on paths, the containerd binary and systemd are the node's.
/// Must run before the program starts a thread (the kernel refuses `setns` into a mount
/// namespace otherwise).
pub fn enter_host_mounts(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/ns/mnt");
    let ns = std::fs::File::open(&path).with_context(|| {
        format!("open {path} (the installer pod needs hostPID: true and privileges)")
    })?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS)
        .context("enter the node's mount namespace (setns; the pod must be privileged)")?;
    std::env::set_current_dir("/").context("chdir / in the node's mount namespace")?;
    Ok(())
}

/// The API server as a pod sees it: its address and the pod's service account.
#[derive(Clone)]
pub struct Cluster {
    host: String,
    port: u16,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Reads the in-cluster configuration a pod is given: `KUBERNETES_SERVICE_HOST` and
    /// `_PORT`, and the service account's token and CA certificate.
    pub fn in_cluster() -> Result<Cluster> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .context("KUBERNETES_SERVICE_HOST is not set: --label-node works in a pod only")?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .unwrap_or_else(|_| "443".into())
            .parse()
            .context("KUBERNETES_SERVICE_PORT is not a port")?;
        let dir = Path::new(SERVICE_ACCOUNT);
        let token = std::fs::read_to_string(dir.join("token"))
            .with_context(|| format!("read the service account token in {}", dir.display()))?;
        Cluster::new(&host, port, token.trim(), &dir.join("ca.crt"))
    }

    /// An API server at `host:port` trusted through the PEM certificates in `ca`, called with
    /// the bearer `token`.
    pub fn new(host: &str, port: u16, token: &str, ca: &Path) -> Result<Cluster> {
        let mut roots = rustls::RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).with_context(|| format!("read {}", ca.display()))?;
        for cert in certs {
            let cert = cert.with_context(|| format!("a certificate in {}", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {}", ca.display()))?;
        }
        // ring, as the shim uses (see docs/security.md for why).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Cluster {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            token: token.to_owned(),
            tls: Arc::new(tls),
        })
    }

    /// Sets (`Some`) or removes (`None`) label `key` on node `node`.
    pub fn label_node(&self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        let label = match value {
            Some(v) => serde_json::Value::String(v.to_owned()),
            None => serde_json::Value::Null,
        };
        let body = serde_json::json!({"metadata": {"labels": {key: label}}}).to_string();
        let (status, answer) = self
            .call(
                "PATCH",
                &format!("/api/v1/nodes/{node}"),
                "application/merge-patch+json",
                &body,
            )
            .with_context(|| format!("label node {node} through {}:{}", self.host, self.port))?;
        if !(200..300).contains(&status) {
            bail!(
                "label node {node}: the API server answered {status}: {}",
                answer.trim()
            );
        }
        Ok(())
    }

    /// One HTTP/1.1 request over TLS; the status and the body of the answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<(u16, String)> {
        let name = ServerName::try_from(self.host.clone())
            .with_context(|| format!("{} is not a host name or address", self.host))?;
        let conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name)?;
        let sock = TcpStream::connect((self.host.as_str(), self.port))
            .with_context(|| format!("connect to {}:{}", self.host, self.port))?;
        sock.set_read_timeout(Some(API_TIMEOUT))?;
        sock.set_write_timeout(Some(API_TIMEOUT))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nAccept: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        tls.write_all(request.as_bytes())?;
        tls.flush()?;
        let mut answer = Vec::new();
        match tls.read_to_end(&mut answer) {
            Ok(_) => {}
            // A server that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(e) => return Err(e).context("read the answer"),
        }
        parse_answer(&answer)
    }
}

/// The status code and body of an HTTP/1.1 answer (chunked bodies are joined).
fn parse_answer(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the answer has no end of headers")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("the answer has no status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A TLS server on loopback with a certificate for 127.0.0.1 from a CA of its own; it
    /// answers one request with `status` and returns what it was sent.
    fn server(status: u16) -> (u16, tempfile::TempDir, std::thread::JoinHandle<String>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        // ring, as the shim uses (see docs/security.md for why).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = tls.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n{{\"a\"\r\n2\r\n:1\r\n1\r\n}}\r\n0\r\n\r\n"
            );
            tls.write_all(answer.as_bytes()).unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            String::from_utf8_lossy(&got).into_owned()
        });
        (port, dir, handle)
    }

    #[test]
    fn labels_a_node_with_a_merge_patch_over_verified_tls() {
        let (port, dir, server) = server(200);
        let cluster = Cluster::new(
            "127.0.0.1",
            port,
            "secret-token",
            &dir.path().join("ca.crt"),
        )
        .unwrap();
        cluster
            .label_node("node-1", INSTALLED_LABEL, Some("true"))
            .unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("PATCH /api/v1/nodes/node-1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Authorization: Bearer secret-token\r\n"));
        assert!(request.contains("Content-Type: application/merge-patch+json\r\n"));
        assert!(request.ends_with(r#"{"metadata":{"labels":{"wasmcell.dev/installed":"true"}}}"#));
    }

    #[test]
    fn removing_a_label_sends_null_and_a_refusal_is_an_error_with_the_answer() {
        let (port, dir, server) = server(403);
        let cluster = Cluster::new("127.0.0.1", port, "t", &dir.path().join("ca.crt")).unwrap();
        let err = cluster
            .label_node("node-1", INSTALLED_LABEL, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered 403: {\"a\":1}"), "{err}");
        let request = server.join().unwrap();
        assert!(request.ends_with(r#"{"metadata":{"labels":{"wasmcell.dev/installed":null}}}"#));
    }

    #[test]
    fn a_server_whose_certificate_the_ca_did_not_sign_is_refused() {
        let (port, _dir, _server) = server(200);
        let (_, other, _other_server) = server(200);
        let cluster = Cluster::new("127.0.0.1", port, "t", &other.path().join("ca.crt")).unwrap();
        let err = format!(
            "{:#}",
            cluster
                .label_node("node-1", INSTALLED_LABEL, Some("true"))
                .unwrap_err()
        );
        assert!(err.contains("certificate"), "{err}");
    }
}
