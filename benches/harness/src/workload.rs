//! What the scenarios run: one program in one image under one runtime, and running it once
//! through containerd's API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmcell_e2e::api::{Api, ContainerRequest};
use wasmcell_e2e::image::ImageDefaults;
use wasmcell_e2e::Containerd;

/// The reference shim's runtime type (`benches/reference-shim`).
pub const REFERENCE: &str = "io.containerd.wasmref.v1";
/// runc's shim.
pub const RUNC: &str = "io.containerd.runc.v2";

/// A program in an unpacked image, run under one runtime.
#[derive(Clone)]
pub struct Workload {
    /// Short name for tables: `wasmcell`, `reference` or `runc`.
    pub side: &'static str,
    /// Runtime type.
    pub runtime: &'static str,
    /// Image name.
    pub image: &'static str,
    /// The image's entrypoint, env, working directory and layers.
    pub defaults: ImageDefaults,
    /// Arguments that replace the image's (empty: the image's own).
    pub args: Vec<String>,
    /// What its stdout must contain for a run to count.
    pub want: &'static str,
}

/// Container ids of this run: `bench-1`, `bench-2`, …, unique across threads.
pub fn next_id() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!("bench-{}", SEQ.fetch_add(1, Ordering::Relaxed) + 1)
}

impl Workload {
    /// The API request that creates a container of this workload.
    pub fn request<'a>(&'a self, c: &Containerd, id: &'a str) -> ContainerRequest<'a> {
        let d = &self.defaults;
        let args = if self.args.is_empty() {
            &d.args
        } else {
            &self.args
        };
        ContainerRequest {
            id,
            image: self.image,
            runtime: self.runtime,
            spec: c.default_spec(id, args, &d.env, &d.cwd),
            parent: d.chain_id(),
            layers: vec![],
            // runwasi's shims open stdio paths as given and know no `file://` URIs.
            plain_stdio: self.runtime == REFERENCE,
        }
    }

    /// Creates, starts, waits for and removes one container; how long that took, or why the
    /// run does not count (an error, a non-zero exit, output without [`Workload::want`]).
    pub fn run_once(&self, api: &Api, c: &Containerd) -> Result<Duration, String> {
        let id = next_id();
        let started = Instant::now();
        let r = api.run(self.request(c, &id), c.dir.path());
        let took = started.elapsed();
        // The output files are per container; a long run would otherwise fill the temp dir.
        for ext in ["out", "err"] {
            let _ = std::fs::remove_file(c.dir.path().join(format!("{id}.{ext}")));
        }
        match r {
            Ok(f) if f.exit == 0 && f.stdout.contains(self.want) => Ok(took),
            Ok(f) => Err(format!(
                "{} {id}: exit {}, stdout {:?}, stderr {:?}",
                self.side, f.exit, f.stdout, f.stderr
            )),
            Err(e) => Err(format!("{} {id}: {e}", self.side)),
        }
    }

    /// [`Workload::run_once`] where a failure ends the benchmark (the scenarios whose figures
    /// mean nothing with a failed run in them).
    pub fn run_or_panic(&self, api: &Api, c: &Containerd) -> Duration {
        self.run_once(api, c).unwrap_or_else(|e| panic!("{e}"))
    }
}
