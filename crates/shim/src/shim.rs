//! The shim binary's lifecycle: `start` (find or launch the pod's shim), the daemon, and
//! `delete` (clean up after a shim that died).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{ExitSignal, Flags, StartOpts};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::events::{timestamp, RemoteEvents};
use crate::service::Service;
use crate::tasks::{Config, Tasks, CELL_PID_FILE};

/// The annotation the CRI plugin puts on every container of a pod.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The wasmcell shim.
pub struct WasmcellShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
    socket: String,
    /// containerd's gRPC address (`-address`).
    address: String,
}

/// The id that decides which shim serves a container: its pod's sandbox id, so that all
/// containers of a pod share one shim; a container outside Kubernetes gets a shim of its own.
pub fn grouping_id(bundle: &Path, id: &str) -> String {
    wasmcell_task::runspec::load_spec(bundle)
        .ok()
        .and_then(|spec| {
            spec.annotations()
                .as_ref()
                .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_owned())
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Removes the socket of a shim that died without cleaning up (its `address` file is in the
/// bundle). A socket that still answers belongs to a live shim of the same pod and stays.
fn remove_stale_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = socket_path(address.trim());
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        .unwrap_or(false);
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

impl containerd_shim::Shim for WasmcellShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut containerd_shim::Config) -> Self {
        WasmcellShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            socket: args.socket.clone(),
            address: args.address.clone(),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let grouping = grouping_id(&bundle, &opts.id);
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        // The pod's shim is already serving: reuse it without starting a process.
        if std::os::unix::net::UnixStream::connect(socket_path(&address)).is_ok() {
            write_address(&address)?;
            return Ok(address);
        }
        crate::daemon::launch(&opts, Path::new(socket_path(&address)))?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let mut pid = 0;
        // A cell left behind: kill it, after checking the pid is still that cell.
        if let Ok(text) = std::fs::read_to_string(bundle.join(CELL_PID_FILE)) {
            if let Ok(p) = text.trim().parse::<i32>() {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                if args.get(1) == Some(&crate::cell::CELL_ARG.as_bytes())
                    && args.get(2) == Some(&self.id.as_bytes())
                {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                pid = p as u32;
            }
            let _ = std::fs::remove_file(bundle.join(CELL_PID_FILE));
            crate::tasks::remove_cell_cgroup(&bundle, &self.id);
        }
        // A native container left behind. containerd runs `shim delete` after every task, so
        // runc (3 ms of CPU) is started only when it has state for this id.
        let config = Config::from_env(&self.namespace);
        if config.runc.knows(&self.id) {
            if let Err(e) = config.runc.delete(&self.id) {
                log::warn!("shim delete {}: {e}", self.id);
            }
        }
        let rootfs = bundle.join("rootfs");
        crate::rootfs::unmount(&rootfs);
        remove_stale_socket(&bundle);
        let mut resp = DeleteResponse::new();
        resp.pid = pid;
        resp.exit_status = 128 + libc::SIGKILL as u32;
        resp.exited_at = Some(timestamp(std::time::SystemTime::now())).into();
        Ok(resp)
    }

    fn wait(&mut self) {
        self.exit.wait();
        let _ = std::fs::remove_file(socket_path(&self.socket));
    }

    fn create_task_service(&self, _publisher: RemotePublisher) -> Service {
        // The framework calls this only in a daemon it executed, and `main` refuses that mode:
        // wasmcell's daemon is forked by `start` and builds its service with `task_service`
        // (`crate::daemon`). The trait requires the method; it does the same thing.
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        self.task_service(&address).unwrap_or_else(|e| {
            log::error!("cannot start the task service: {e}");
            std::process::exit(1)
        })
    }
}

impl WasmcellShim {
    /// The task service, publishing its events to containerd's ttrpc address.
    pub fn task_service(&self, ttrpc_address: &str) -> Result<Service, String> {
        let events = RemoteEvents::connect(ttrpc_address, self.namespace.clone())
            .map_err(|e| format!("connect to containerd's events at {ttrpc_address}: {e}"))?;
        let exit = Arc::clone(&self.exit);
        let mut config = Config::from_env(&self.namespace);
        config.containerd_address = Some(self.address.clone()).filter(|a| !a.is_empty());
        log::info!(
            "wasmcell shim {} serving namespace {} (cache {}, runc root {})",
            env!("CARGO_PKG_VERSION"),
            self.namespace,
            config.cache_dir.display(),
            config.runc.root.display()
        );
        Tasks::new(config, Arc::new(events), Box::new(move || exit.signal()))
            .map(Service::new)
            .map_err(|e| format!("cannot start the task service: {e}"))
    }
}
