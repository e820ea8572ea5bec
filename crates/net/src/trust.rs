//! Whom outgoing TLS trusts: the CA bundle the container's own programs would use, as a native
//! client of the image finds it, and the public web PKI's roots only when the image has none.
//!
//! The bundle is `SSL_CERT_FILE` from the container's env when set, else the first of
//! [`BUNDLE_PATHS`] the image has (Debian, Ubuntu and Alpine; Fedora and RHEL; openSUSE; …, the
//! list Go's crypto/x509 reads). A bundle that holds no certificate rustls can use is an error
//! of every https request (naming the file), never a silent fall back to other roots.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Where images keep their CA bundle, in the order they are looked for.
pub const BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The variable that names a bundle of the container's own.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// The most a CA bundle may hold (Debian's is about 220 KiB).
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;

/// Where the roots came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The container's bundle at this path, with this many certificates.
    Bundle {
        /// Its path in the container.
        path: String,
        /// Certificates rustls took from it.
        certificates: usize,
    },
    /// The image has no bundle: the public web PKI's roots (webpki-roots).
    WebPki,
}

/// TLS for outgoing requests, made on the first https request (parsing a bundle of a hundred
/// and more certificates is not free, and most guests never make one).
pub struct Trust {
    bundle: Option<(String, Vec<u8>)>,
    made: OnceLock<Made>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("bundle", &self.bundle.as_ref().map(|(path, _)| path))
            .finish()
    }
}

impl Trust {
    /// Trust in the container's bundle, `bundle` being its path and bytes, or in the public
    /// web PKI when the image carries none (`None`).
    pub fn new(bundle: Option<(String, Vec<u8>)>) -> Trust {
        Trust {
            bundle,
            made: OnceLock::new(),
        }
    }

    /// The client configuration (ALPN offers HTTP/2 and HTTP/1.1), or why there is none.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        self.made().0.clone()
    }

    /// Where the roots came from (`None` when there is no configuration).
    pub fn roots(&self) -> Option<&Roots> {
        self.made().1.as_ref()
    }

    fn made(&self) -> &Made {
        self.made.get_or_init(|| make(self.bundle.as_ref()))
    }
}

/// The client configuration or why there is none, and where its roots came from.
type Made = (Result<Arc<ClientConfig>, String>, Option<Roots>);

fn make(bundle: Option<&(String, Vec<u8>)>) -> Made {
    let mut store = RootCertStore::empty();
    let roots = match bundle {
        None => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Roots::WebPki
        }
        Some((path, bytes)) => {
            let certs = CertificateDer::pem_slice_iter(bytes).filter_map(Result::ok);
            let (certificates, _unusable) = store.add_parsable_certificates(certs);
            if certificates == 0 {
                let why = format!("the container's CA bundle {path} holds no usable certificate");
                return (Err(why), None);
            }
            Roots::Bundle {
                path: path.clone(),
                certificates,
            }
        }
    };
    // ring rather than aws-lc-rs: no C toolchain build, links statically; rustls deprecates
    // its provider only because it lacks post-quantum key exchange (see docs/security.md).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            let mut config = b.with_root_certificates(store).with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .map_err(|e| format!("cannot configure TLS: {e}"));
    (config, Some(roots))
}

/// The container path of its CA bundle: `SSL_CERT_FILE` from its env if set, else each of
/// [`BUNDLE_PATHS`] for the caller to try in turn.
pub fn bundle_candidates(env: &[(String, String)]) -> Vec<String> {
    match env.iter().rev().find(|(k, _)| k == SSL_CERT_FILE) {
        Some((_, path)) if !path.is_empty() => vec![path.clone()],
        _ => BUNDLE_PATHS.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_s_certificates_are_the_roots() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).expect("cert");
        let mut pem = ca.cert.pem();
        pem.push_str("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
        let trust = Trust::new(Some(("/etc/ssl/cert.pem".into(), pem.into_bytes())));
        assert!(trust.client_config().is_ok());
        assert_eq!(
            trust.roots(),
            Some(&Roots::Bundle {
                path: "/etc/ssl/cert.pem".into(),
                certificates: 1
            })
        );
        let config = trust.client_config().expect("config");
        assert_eq!(config.alpn_protocols[0], b"h2");
    }

    #[test]
    fn a_bundle_without_certificates_is_an_error_not_the_web_pki() {
        let trust = Trust::new(Some(("/etc/ssl/cert.pem".into(), b"garbage".to_vec())));
        let err = trust.client_config().expect_err("no roots");
        assert!(err.contains("/etc/ssl/cert.pem"), "{err}");
        let none = Trust::new(None);
        assert_eq!(none.roots(), Some(&Roots::WebPki));
    }

    #[test]
    fn ssl_cert_file_replaces_the_usual_paths() {
        let env = vec![("SSL_CERT_FILE".into(), "/app/ca.pem".into())];
        assert_eq!(bundle_candidates(&env), vec!["/app/ca.pem"]);
        assert_eq!(bundle_candidates(&[]).len(), BUNDLE_PATHS.len());
    }
}
