//! `shim start`: containerd runs it for every container and reads the address it prints, in
//! the form that containerd's version reads ([`bootstrap`]). All containers of a pod share one
//! shim daemon, found by the pod's socket; the first `start` of a pod launches the daemon
//! (`crate::daemon`).

use std::io::Write;
use std::path::{Path, PathBuf};

use containerd_shim::util::write_address;
use containerd_shim::StartOpts;

use super::bootstrap::{self, Caller};
use crate::rpc::socket_path;

/// The annotation the CRI plugin puts on every container of a pod.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Finds or launches the daemon of the container's pod and prints its address in the form
/// `stdin` and the environment say the caller reads.
pub fn run(flags: &containerd_shim::Flags, stdin: &[u8]) -> Result<(), String> {
    let caller = Caller::detect(
        stdin,
        &flags.id,
        &flags.namespace,
        std::env::var(bootstrap::MAX_SHIM_VERSION_ENV)
            .ok()
            .as_deref(),
    );
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: match caller.ttrpc_address() {
            Some(a) => a.to_owned(),
            None => std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        },
        namespace: flags.namespace.clone(),
        debug: flags.debug,
    };
    let socket_dir = caller.socket_dir()?;
    let address = start(&opts, &socket_dir).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    out.write_all(&caller.reply(&address))
        .and_then(|()| out.flush())
        .map_err(|e| format!("write the address: {e}"))
}

fn start(opts: &StartOpts, socket_dir: &Path) -> containerd_shim::Result<String> {
    let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let grouping = grouping_id(&bundle, &opts.id);
    let address = bootstrap::socket_address(socket_dir, &opts.address, &opts.namespace, &grouping);
    // The pod's shim is already serving: reuse it without starting a process.
    if std::os::unix::net::UnixStream::connect(socket_path(&address)).is_err() {
        crate::daemon::launch(opts, Path::new(socket_path(&address)))?;
    }
    // containerd 1.6 and 1.7 find a running shim again after their own restart by this file.
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
