//! What the guest reaches by name and whom it trusts there, from the container's own files,
//! read while the cell still sees the host (the kubelet's `/etc/resolv.conf` and `/etc/hosts`
//! are mounts of host files; see `wasmcell_oci::container_files`).

use std::sync::Arc;

use wasmcell_engine::NetworkGrant;
use wasmcell_net::trust::{bundle_candidates, MAX_BUNDLE_BYTES};
use wasmcell_net::{Resolver, Trust};
use wasmcell_oci::RunSpec;

/// The most a resolv.conf may hold (libc reads a few lines; this is far past any real one).
const MAX_RESOLV_CONF_BYTES: usize = 64 << 10;
/// The most a hosts file may hold.
const MAX_HOSTS_BYTES: usize = 4 << 20;

/// The container's resolver, and, when the guest links `wasi:http` (`links_http`), its TLS
/// roots. A file the container lacks is libc's default; one that cannot be read fails Create
/// with its path.
pub(crate) fn grant(spec: &RunSpec, links_http: bool) -> Result<NetworkGrant, String> {
    let resolv_conf = spec
        .read_file("/etc/resolv.conf", MAX_RESOLV_CONF_BYTES)
        .map_err(|e| e.to_string())?;
    let hosts = spec
        .read_file("/etc/hosts", MAX_HOSTS_BYTES)
        .map_err(|e| e.to_string())?;
    let resolver = Arc::new(Resolver::new(resolv_conf.as_deref(), hosts.as_deref()));
    let trust = if links_http {
        Some(Arc::new(Trust::new(ca_bundle(spec)?)))
    } else {
        None
    };
    Ok(NetworkGrant { resolver, trust })
}

/// The container's CA bundle, as its path and bytes: `SSL_CERT_FILE`, or the first of the
/// usual paths the image has.
fn ca_bundle(spec: &RunSpec) -> Result<Option<(String, Vec<u8>)>, String> {
    for path in bundle_candidates(&spec.env) {
        if let Some(bytes) = spec
            .read_file(&path, MAX_BUNDLE_BYTES)
            .map_err(|e| e.to_string())?
        {
            return Ok(Some((path, bytes)));
        }
    }
    Ok(None)
}
