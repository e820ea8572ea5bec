//! Footprint: N idle containers (started, then sleeping), and the memory of everything their
//! runtime keeps for them: the shim processes of this containerd and all their descendants
//! (wasmcell's cells, the reference shim's container processes, runc's containers).
//!
//! Memory is PSS (proportional set size, `/proc/PID/smaps_rollup`): a page shared by k
//! processes counts 1/k in each, so the sum over the processes is what they cost together,
//! without counting shared libraries or a shared binary once per process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wasmcell_e2e::api::Api;
use wasmcell_e2e::Containerd;

use crate::progress::Progress;
use crate::workload::{next_id, Workload};

/// The memory of one runtime's idle containers.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Idle containers measured.
    pub containers: usize,
    /// Shim daemons serving the containers (their `-id` is one of them).
    pub shims: usize,
    /// Shims and their descendants.
    pub processes: usize,
    /// Total PSS, KiB.
    pub pss_kib: u64,
    /// Total RSS, KiB (pages shared between processes counted once per process).
    pub rss_kib: u64,
}

impl Footprint {
    /// PSS per container, KiB.
    pub fn per_container_kib(&self) -> f64 {
        self.pss_kib as f64 / self.containers as f64
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "containers": self.containers, "shims": self.shims, "processes": self.processes,
            "pss_kib_total": self.pss_kib, "rss_kib_total": self.rss_kib,
            "pss_kib_per_container": self.per_container_kib(),
        })
    }
}

/// Starts `n` containers of `w` (a program that prints `w.want` and then sleeps), waits until
/// each has printed it and `settle` has passed, measures the processes of the shim binary
/// `shim`, and stops and removes every container again, also when something failed.
pub fn measure(
    c: &Containerd,
    api: &Api,
    w: &Workload,
    shim: &str,
    n: usize,
    settle: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<Footprint, String> {
    let mut started = Vec::new();
    let result = start_and_measure(c, api, w, shim, n, settle, stop, &mut started);
    let progress = Progress::new(
        format!("footprint, stopping {} {}", started.len(), w.side),
        started.len(),
    );
    for id in &started {
        if let Err(e) = api.stop(id) {
            eprintln!("\nwasmcell-bench: stopping {id}: {e}");
        }
        for ext in ["out", "err"] {
            let _ = std::fs::remove_file(c.dir.path().join(format!("{id}.{ext}")));
        }
        progress.advance(1);
    }
    result
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn start_and_measure(
    c: &Containerd,
    api: &Api,
    w: &Workload,
    shim: &str,
    n: usize,
    settle: Duration,
    stop: &dyn Fn() -> bool,
    started: &mut Vec<String>,
) -> Result<Footprint, String> {
    let progress = Progress::new(format!("footprint, starting {n} idle {}", w.side), n);
    for _ in 0..n {
        if stop() {
            return Err("interrupted".to_owned());
        }
        let id = next_id();
        api.start_detached(w.request(c, &id), c.dir.path())
            .map_err(|e| format!("{} {id}: {e}", w.side))?;
        started.push(id);
        progress.advance(1);
    }
    drop(progress);
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in started.iter() {
        let out = c.dir.path().join(format!("{id}.out"));
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(w.want)
        {
            if Instant::now() > deadline || stop() {
                return Err(format!(
                    "{} {id}: did not print {:?} within 60 s",
                    w.side, w.want
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(settle);
    // Only the shims serving these containers: one still shutting down after an earlier
    // scenario is not part of this footprint.
    let shims: Vec<i32> = c
        .shim_pids_of(shim)
        .into_iter()
        .filter(|pid| id_argument(*pid).is_some_and(|id| started.contains(&id)))
        .collect();
    let processes = with_descendants(&shims);
    let (pss_kib, rss_kib) = processes.iter().fold((0, 0), |(p, r), pid| {
        let (pp, rr) = memory_kib(*pid);
        (p + pp, r + rr)
    });
    Ok(Footprint {
        containers: n,
        shims: shims.len(),
        processes: processes.len(),
        pss_kib,
        rss_kib,
    })
}

/// The `-id` a shim was started with (the first container it served).
fn id_argument(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let at = args.iter().position(|a| *a == b"-id")?;
    Some(String::from_utf8_lossy(args.get(at + 1)?).into_owned())
}

/// `roots` and every process descended from them, from the parent pids in `/proc/*/stat`.
pub(crate) fn with_descendants(roots: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    // A root may descend from another root (the reference shim's container processes carry
    // the shim's name): each process counts once.
    let mut seen: std::collections::HashSet<i32> = roots.iter().copied().collect();
    let mut all: Vec<i32> = seen.iter().copied().collect();
    let mut i = 0;
    while i < all.len() {
        for kid in children.get(&all[i]).into_iter().flatten() {
            if seen.insert(*kid) {
                all.push(*kid);
            }
        }
        i += 1;
    }
    all
}

/// The parent pid: the field after the state, which follows the `(comm)` (which may hold
/// spaces and parentheses itself, hence the last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// (PSS, RSS) of a process in KiB; zeros for a process gone meanwhile.
pub(crate) fn memory_kib(pid: i32) -> (u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let (pss, rss) = memory_kib(me);
        assert!(pss > 0 && rss >= pss, "pss {pss} rss {rss}");
        assert_eq!(
            parent_of(me),
            Some(std::os::unix::process::parent_id() as i32)
        );
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let all = with_descendants(&[me]);
        assert!(all.contains(&(child.id() as i32)), "{all:?}");
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}
