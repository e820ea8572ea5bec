//! Driving containerd through its gRPC API, as kubelet's CRI plugin and nerdctl do, instead of
//! through `ctr` processes: content, images, snapshots, containers and tasks.
//!
//! The containerd here (1.6.20) cannot unpack images with non-tar layers, so a container of an
//! OCI wasm artifact is created the way the CRI plugin of a newer containerd creates it after a
//! pull: a snapshot prepared with no parent, with the image's filesystem layers (if any) applied
//! by containerd's diff service, and the container record naming the image, whose wasm layers
//! the shim then reads from the content store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    snapshots_client::SnapshotsClient, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, leases_client::LeasesClient, tasks_client::TasksClient,
    ApplyRequest, Container, CreateContainerRequest, CreateImageRequest, CreateRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteImageRequest, DeleteRequest,
    DeleteTaskRequest, GetRequest, Image, KillRequest, StartRequest, WaitRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::{transport::Channel, Code, Request, Status};
use containerd_client::types::Descriptor;

/// The snapshotter the private containerd uses.
pub const SNAPSHOTTER: &str = "overlayfs";

/// A client of one containerd, in one namespace.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    namespace: String,
    /// A lease that holds what this client writes, so that containerd's garbage collector (which
    /// runs after deletions) cannot take a blob between its write and the image that names it.
    lease: String,
    /// How long each call of [`Api::run`], [`Api::start_detached`], [`Api::stop`] and
    /// [`Api::wait`] took, by step, since the last [`Api::take_steps`] (for the benchmark's
    /// breakdown of a start).
    steps: std::sync::Mutex<Vec<(&'static str, Duration)>>,
}

/// How a container ended, and what it printed.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit status.
    pub exit: u32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// A container to create through the API.
#[derive(Debug, Clone)]
pub struct ContainerRequest<'a> {
    /// Container (and task) id.
    pub id: &'a str,
    /// Image name recorded on the container ("" for none).
    pub image: &'a str,
    /// Runtime type, for example `io.containerd.wasmcell.v1`.
    pub runtime: &'a str,
    /// The OCI runtime spec.
    pub spec: serde_json::Value,
    /// The snapshot the container's rootfs is prepared on: an unpacked image's chain id, or ""
    /// for an empty one.
    pub parent: String,
    /// Filesystem layers to apply to the prepared snapshot, in order (for images containerd
    /// could not unpack).
    pub layers: Vec<Descriptor>,
    /// Pass stdout/stderr as plain file paths instead of `file://` URIs (runwasi's shims open
    /// the path as given and know no URIs).
    pub plain_stdio: bool,
}

impl<'a> ContainerRequest<'a> {
    /// A wasmcell container of `image` with `spec`, its rootfs the image's filesystem `layers`
    /// applied to an empty snapshot (how the tests run images imported with `--no-unpack`).
    pub fn wasmcell(
        id: &'a str,
        image: &'a str,
        spec: serde_json::Value,
        layers: Vec<Descriptor>,
    ) -> ContainerRequest<'a> {
        ContainerRequest {
            id,
            image,
            runtime: crate::RUNTIME,
            spec,
            parent: String::new(),
            layers,
            plain_stdio: false,
        }
    }
}

/// Clients made by this process, to name their leases apart.
static CLIENTS: AtomicUsize = AtomicUsize::new(0);

fn failed(what: &str, s: Status) -> String {
    format!("{what}: {:?}: {}", s.code(), s.message())
}

impl Api {
    /// Connects to the containerd at `socket`, namespace `default`.
    pub fn connect(socket: &Path) -> Api {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let channel = runtime
            .block_on(containerd_client::connect(socket))
            .expect("connect to containerd's API");
        let mut api = Api {
            runtime,
            channel,
            namespace: "default".to_owned(),
            lease: String::new(),
            steps: std::sync::Mutex::new(Vec::new()),
        };
        let mut leases = LeasesClient::new(api.channel.clone());
        let lease = api
            .runtime
            .block_on(leases.create(api.req(CreateRequest {
                // One lease per client: a process may hold several (one per worker thread).
                id: format!(
                    "wasmcell-e2e-{}-{}",
                    std::process::id(),
                    CLIENTS.fetch_add(1, Ordering::Relaxed)
                ),
                labels: HashMap::new(),
            })))
            .map_err(|s| failed("create lease", s))
            .expect("lease")
            .into_inner()
            .lease
            .expect("lease")
            .id;
        api.lease = lease;
        api
    }

    fn req<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.set_timeout(Duration::from_secs(120));
        r.metadata_mut()
            .insert("containerd-namespace", self.namespace.parse().expect("ns"));
        if !self.lease.is_empty() {
            r.metadata_mut()
                .insert("containerd-lease", self.lease.parse().expect("lease"));
        }
        r
    }

    /// Runs one API call to its end and records how long it took as `step`.
    fn timed<T>(&self, step: &'static str, call: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = self.runtime.block_on(call);
        let took = started.elapsed();
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((step, took));
        out
    }

    /// The steps recorded since the last call, in order, and forgets them.
    pub fn take_steps(&self) -> Vec<(&'static str, Duration)> {
        std::mem::take(&mut *self.steps.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes a blob into the content store (a no-op when it is there already), with labels
    /// (for example `containerd.io/gc.ref.content.*` so the garbage collector keeps children).
    pub fn put_blob(
        &self,
        media_type: &str,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Descriptor {
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
        );
        let write = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: format!("wasmcell-e2e-{digest}"),
            total: bytes.len() as i64,
            expected: digest.clone(),
            offset: 0,
            data: bytes.to_vec(),
            labels,
        };
        let mut client = ContentClient::new(self.channel.clone());
        let stream = tokio_stream::iter(vec![write]);
        let result = self.runtime.block_on(async {
            let mut responses = client.write(self.req(stream)).await?.into_inner();
            while responses.message().await?.is_some() {}
            Ok::<_, Status>(())
        });
        match result {
            Ok(()) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => panic!("{}", failed("write blob", s)),
        }
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size: bytes.len() as i64,
            annotations: HashMap::new(),
        }
    }

    /// Creates (or replaces) the image record `name` pointing at `target`.
    pub fn put_image(&self, name: &str, target: Descriptor) {
        let mut client = ImagesClient::new(self.channel.clone());
        let _ = self
            .runtime
            .block_on(client.delete(self.req(DeleteImageRequest {
                name: name.to_owned(),
                ..Default::default()
            })));
        let image = Image {
            name: name.to_owned(),
            target: Some(target),
            ..Default::default()
        };
        self.runtime
            .block_on(client.create(self.req(CreateImageRequest {
                image: Some(image),
                ..Default::default()
            })))
            .map_err(|s| failed("create image", s))
            .expect("image");
    }

    /// Creates the container and its task, runs it to the end and removes everything again.
    /// `Err` carries the error of the step that failed (Create's names the problem).
    pub fn run(&self, req: ContainerRequest<'_>, dir: &Path) -> Result<Finished, String> {
        let stdout = dir.join(format!("{}.out", req.id));
        let stderr = dir.join(format!("{}.err", req.id));
        let result = self
            .create_and_start(&req, &stdout, &stderr)
            .and_then(|()| self.wait(req.id));
        self.remove(req.id);
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        result.map(|exit| Finished {
            exit,
            stdout: read(&stdout),
            stderr: read(&stderr),
        })
    }

    /// Creates the container and starts its task, and leaves it running (its output goes to
    /// `dir/ID.out` and `dir/ID.err`). On failure everything made so far is removed again.
    pub fn start_detached(&self, req: ContainerRequest<'_>, dir: &Path) -> Result<(), String> {
        let stdout = dir.join(format!("{}.out", req.id));
        let stderr = dir.join(format!("{}.err", req.id));
        let result = self.create_and_start(&req, &stdout, &stderr);
        if result.is_err() {
            self.remove(req.id);
        }
        result
    }

    /// Kills a running task with SIGKILL, waits for it, and removes it with its container and
    /// snapshot.
    pub fn stop(&self, id: &str) -> Result<(), String> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let killed = self
            .timed(
                "task kill",
                tasks.kill(self.req(KillRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                    signal: 9,
                    all: false,
                })),
            )
            .map_err(|s| failed("kill task", s))
            .and_then(|_| self.wait(id).map(drop));
        self.remove(id);
        killed
    }

    /// The status of a task as its shim's State answers it (containerd's task Get), by name:
    /// `CREATED`, `RUNNING`, `STOPPED`, `PAUSED`...
    pub fn status(&self, id: &str) -> Result<String, String> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let got = self
            .timed(
                "task get",
                tasks.get(self.req(GetRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                })),
            )
            .map_err(|s| failed("get task", s))?;
        let process = got.into_inner().process.unwrap_or_default();
        Ok(process.status().as_str_name().to_owned())
    }

    /// Waits for a task to exit; its exit status.
    pub fn wait(&self, id: &str) -> Result<u32, String> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let waited = self
            .timed(
                "task wait",
                tasks.wait(self.req(WaitRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                })),
            )
            .map_err(|s| failed("wait task", s))?;
        Ok(waited.into_inner().exit_status)
    }

    fn create_and_start(
        &self,
        req: &ContainerRequest<'_>,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<(), String> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mounts = self
            .timed(
                "snapshot prepare",
                snapshots.prepare(self.req(PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    key: req.id.to_owned(),
                    parent: req.parent.clone(),
                    labels: HashMap::new(),
                })),
            )
            .map_err(|s| failed("prepare snapshot", s))?
            .into_inner()
            .mounts;
        let mut diff = DiffClient::new(self.channel.clone());
        for layer in &req.layers {
            self.timed(
                "layer apply",
                diff.apply(self.req(ApplyRequest {
                    diff: Some(layer.clone()),
                    mounts: mounts.clone(),
                    payloads: HashMap::new(),
                    sync_fs: false,
                })),
            )
            .map_err(|s| failed("apply layer", s))?;
        }
        let spec = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_owned(),
            value: serde_json::to_vec(&req.spec).expect("spec"),
        };
        let container = Container {
            id: req.id.to_owned(),
            image: req.image.to_owned(),
            runtime: Some(Runtime {
                name: req.runtime.to_owned(),
                options: None,
            }),
            spec: Some(spec),
            snapshotter: SNAPSHOTTER.to_owned(),
            snapshot_key: req.id.to_owned(),
            ..Default::default()
        };
        let mut containers = ContainersClient::new(self.channel.clone());
        self.timed(
            "container create",
            containers.create(self.req(CreateContainerRequest {
                container: Some(container),
            })),
        )
        .map_err(|s| failed("create container", s))?;
        let mut tasks = TasksClient::new(self.channel.clone());
        let uri = |p: &Path| {
            if req.plain_stdio {
                let _ = std::fs::File::create(p);
                p.display().to_string()
            } else {
                format!("file://{}", p.display())
            }
        };
        self.timed(
            "task create",
            tasks.create(self.req(CreateTaskRequest {
                container_id: req.id.to_owned(),
                rootfs: mounts.clone(),
                stdout: uri(stdout),
                stderr: uri(stderr),
                ..Default::default()
            })),
        )
        .map_err(|s| failed("create task", s))?;
        self.timed(
            "task start",
            tasks.start(self.req(StartRequest {
                container_id: req.id.to_owned(),
                exec_id: String::new(),
            })),
        )
        .map_err(|s| failed("start task", s))?;
        Ok(())
    }

    /// Deletes the task, the container and its snapshot, whichever exist.
    pub fn remove(&self, id: &str) {
        let mut tasks = TasksClient::new(self.channel.clone());
        let _ = self.timed(
            "task delete",
            tasks.delete(self.req(DeleteTaskRequest {
                container_id: id.to_owned(),
            })),
        );
        let mut containers = ContainersClient::new(self.channel.clone());
        let _ = self.timed(
            "container delete",
            containers.delete(self.req(DeleteContainerRequest { id: id.to_owned() })),
        );
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let _ = self.timed(
            "snapshot remove",
            snapshots.remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: id.to_owned(),
            })),
        );
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let mut leases = LeasesClient::new(self.channel.clone());
        let _ = self.runtime.block_on(leases.delete(self.req(DeleteRequest {
            id: self.lease.clone(),
            sync: false,
        })));
    }
}

impl crate::Containerd {
    /// A client of this containerd's gRPC API.
    pub fn api(&self) -> Api {
        Api::connect(&self.socket)
    }
}
