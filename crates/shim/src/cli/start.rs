//! `shim start`: containerd runs it for every container and reads the address it prints. All
//! containers of a pod share one shim daemon, found by the pod's socket; the first `start` of a
//! pod launches the daemon (`crate::daemon`).

use std::io::Write;
use std::path::{Path, PathBuf};

use containerd_shim::util::write_address;
use containerd_shim::StartOpts;

use crate::rpc::socket_path;

/// The annotation the CRI plugin puts on every container of a pod.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Finds or launches the daemon of the container's pod and prints its address.
pub fn run(flags: &containerd_shim::Flags) -> Result<(), String> {
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
    };
    let address = start(&opts).map_err(|e| e.to_string())?;
    std::io::stdout()
        .lock()
        .write_all(address.as_bytes())
        .map_err(|e| format!("write the address: {e}"))
}

fn start(opts: &StartOpts) -> containerd_shim::Result<String> {
    let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let grouping = grouping_id(&bundle, &opts.id);
    let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
    // The pod's shim is already serving: reuse it without starting a process.
    if std::os::unix::net::UnixStream::connect(socket_path(&address)).is_err() {
        crate::daemon::launch(opts, Path::new(socket_path(&address)))?;
    }
    write_address(&address)?;
    Ok(address)
}

/// The id that decides which shim serves a container: its pod's sandbox id, so that all
/// containers of a pod share one shim; a container outside Kubernetes gets a shim of its own.
pub fn grouping_id(bundle: &Path, id: &str) -> String {
    wasmcell_oci::Bundle::read(bundle)
        .ok()
        .and_then(|bundle| {
            bundle
                .spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_owned())
}
