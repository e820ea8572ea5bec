//! What isolation adds to a start: wasmcell's own figures from the shim's log (creating the
//! cgroup, moving the cell into it, and the cell's kernel boundary: namespaces, the PID
//! namespace's fork, sealing the preopens, pivoting, lock-down and seccomp) against runc's own
//! `create` + `start` of a busybox bundle, timed directly (no containerd, no shim, no ctr).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::stats::{self, Summary};

/// The medians of wasmcell's isolation steps, ms: (cgroup create, join, cell boundary, total).
pub fn wasmcell_steps(log: &str) -> (f64, f64, f64, f64) {
    let mut steps: [Vec<f64>; 4] = Default::default();
    for line in log
        .lines()
        .filter(|l| l.contains("isolation: cgroup create"))
    {
        let ms = |marker: &str| -> Option<f64> {
            let rest = &line[line.find(marker)? + marker.len()..];
            rest.split(" ms").next()?.trim().parse().ok()
        };
        if let (Some(a), Some(b), Some(c)) =
            (ms("cgroup create "), ms("join "), ms("cell boundary "))
        {
            steps[0].push(a);
            steps[1].push(b);
            steps[2].push(c);
            steps[3].push(a + b + c);
        }
    }
    (
        stats::median(&steps[0]),
        stats::median(&steps[1]),
        stats::median(&steps[2]),
        stats::median(&steps[3]),
    )
}

/// Runs runc; its stderr goes to a file (a pipe would stay open in the container's init after
/// `create`, so waiting for its end would wait for the container).
fn runc(root: &Path, args: &[&str]) {
    let log = root.with_extension("stderr");
    let status = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("runc stderr file"))
        .status()
        .expect("run runc");
    assert!(
        status.success(),
        "runc {args:?}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// `runc create` + `runc start` of a busybox `true`, `rounds` times (delete not timed), each
/// counted on `progress`.
pub fn runc_create_start(rounds: usize, progress: &Progress) -> Summary {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("bundle");
    let root = dir.path().join("runc");
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox"))
        .expect("copy /bin/busybox (busybox-static)");
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .expect("runc spec");
    assert!(spec.success());
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!(["/bin/busybox", "true"]);
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let bundle_arg = bundle.to_string_lossy().into_owned();

    let mut runs: Vec<Duration> = Vec::new();
    for i in 0..rounds + 2 {
        let id = format!("wasmcell-bench-runc-{}-{i}", std::process::id());
        let started = Instant::now();
        runc(&root, &["create", "--bundle", &bundle_arg, &id]);
        runc(&root, &["start", &id]);
        let took = started.elapsed();
        runc(&root, &["delete", "--force", &id]);
        if i >= 2 {
            // the first two warm the page cache
            runs.push(took);
            progress.advance(1);
        }
    }
    Summary::of(&runs)
}
