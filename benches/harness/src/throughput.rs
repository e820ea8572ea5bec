//! Throughput: N short tasks (create + start + wait + delete of the hello program) with P of
//! them in flight at once, for each runtime.
//!
//! The N tasks of a parallelism level are split into chunks that rotate through the runtimes
//! (wasmcell, reference, runc, wasmcell, …), so a drift of the machine during the level hits
//! every side alike. Each worker thread has its own API client, as independent clients would.
//!
//! Beside the rate, each side's chunks are charged the CPU time the whole machine spent while
//! they ran (`/proc/stat`: everything but idle and I/O wait), and the part of it containerd's own
//! process spent (`/proc/<pid>/stat`). On a machine whose cores are busy, a rate is the cores
//! divided by the CPU per task, so these say where a difference in rate comes from. They are
//! counted in clock ticks (10 ms), summed over all of a side's chunks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use wasmcell_e2e::api::Api;
use wasmcell_e2e::Containerd;

use crate::progress::Progress;
use crate::workload::Workload;

/// Tasks per chunk of one runtime before the next runtime's turn.
const CHUNK: usize = 50;

/// What one runtime did at one parallelism level.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    /// Tasks that ran and counted.
    pub ok: usize,
    /// Tasks that failed (an error, a wrong exit status or output).
    pub failures: usize,
    /// Wall time of this runtime's chunks, seconds.
    pub seconds: f64,
    /// The first few failures, for the report.
    pub first_errors: Vec<String>,
    /// CPU time the machine spent during this runtime's chunks, seconds.
    pub machine_cpu: f64,
    /// The part of it containerd's process spent, seconds.
    pub containerd_cpu: f64,
}

impl Rate {
    /// Tasks that counted, per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// Machine CPU per task that counted, milliseconds.
    pub fn machine_cpu_ms(&self) -> f64 {
        self.machine_cpu * 1000.0 / self.ok as f64
    }

    /// containerd's CPU per task that counted, milliseconds.
    pub fn containerd_cpu_ms(&self) -> f64 {
        self.containerd_cpu * 1000.0 / self.ok as f64
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks_ok": self.ok, "failures": self.failures, "seconds": self.seconds,
            "tasks_per_second": self.per_second(), "first_errors": self.first_errors,
            "machine_cpu_ms_per_task": self.machine_cpu_ms(),
            "containerd_cpu_ms_per_task": self.containerd_cpu_ms(),
        })
    }
}

/// Runs `tasks` tasks of each workload with `parallel` in flight; one [`Rate`] per workload, in
/// the order given. `apis` holds at least `parallel` clients. Stops early when `stop()` says so.
pub fn measure(
    c: &Containerd,
    apis: &[Api],
    workloads: &[Workload],
    tasks: usize,
    parallel: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Vec<Rate> {
    let mut rates = vec![Rate::default(); workloads.len()];
    let progress = Progress::new(
        format!("throughput, {parallel} in parallel"),
        tasks * workloads.len(),
    );
    let mut left = tasks;
    while left > 0 && !stop() {
        let n = left.min(CHUNK);
        for (w, rate) in workloads.iter().zip(rates.iter_mut()) {
            chunk(c, &apis[..parallel], w, n, rate, &progress, stop);
        }
        left -= n;
    }
    rates
}

/// Runs `n` tasks of `w` on the clients in `apis`, one worker thread per client.
fn chunk(
    c: &Containerd,
    apis: &[Api],
    w: &Workload,
    n: usize,
    rate: &mut Rate,
    progress: &Progress,
    stop: &(dyn Fn() -> bool + Sync),
) {
    let next = AtomicUsize::new(0);
    let results = Mutex::new((0usize, Vec::<String>::new()));
    let cpu_before = Cpu::now(c);
    let started = Instant::now();
    std::thread::scope(|s| {
        for api in apis {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n && !stop() {
                    let r = w.run_once(api, c);
                    let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(_) => results.0 += 1,
                        Err(e) => results.1.push(e),
                    }
                    drop(results);
                    progress.advance(1);
                }
            });
        }
    });
    rate.seconds += started.elapsed().as_secs_f64();
    let cpu = Cpu::now(c).since(&cpu_before);
    rate.machine_cpu += cpu.machine;
    rate.containerd_cpu += cpu.containerd;
    let (ok, errors) = results.into_inner().unwrap_or_else(|e| e.into_inner());
    rate.ok += ok;
    rate.failures += errors.len();
    for e in errors {
        if rate.first_errors.len() < 5 {
            rate.first_errors.push(e);
        }
    }
}

/// CPU time spent so far, seconds: by the whole machine (all but idle and I/O wait), and by
/// containerd's process.
struct Cpu {
    machine: f64,
    containerd: f64,
}

impl Cpu {
    #[allow(unsafe_code)]
    fn now(c: &Containerd) -> Cpu {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks = |fields: &[u64]| fields.iter().sum::<u64>() as f64 / hz;
        // cpu  user nice system idle iowait irq softirq steal ...
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_owned();
                let f: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                (f.len() >= 8).then(|| ticks(&[f[0], f[1], f[2], f[5], f[6], f[7]]))
            })
            .unwrap_or(0.0);
        // utime and stime are fields 14 and 15, the 12th and 13th after the `(comm)`.
        let containerd = c
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|s| {
                let rest: Vec<u64> = s
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some(ticks(&[*rest.get(10)?, *rest.get(11)?]))
            })
            .unwrap_or(0.0);
        Cpu {
            machine,
            containerd,
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            machine: self.machine - before.machine,
            containerd: self.containerd - before.containerd,
        }
    }
}
