//! Throughput: N short tasks (create + start + wait + delete of the hello program) with P of
//! them in flight at once, for each runtime.
//!
//! The N tasks of a parallelism level are split into chunks that rotate through the runtimes
//! (wasmcell, reference, runc, wasmcell, …), so a drift of the machine during the level hits
//! every side alike. Each worker thread has its own API client, as independent clients would.

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
}

impl Rate {
    /// Tasks that counted, per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks_ok": self.ok, "failures": self.failures, "seconds": self.seconds,
            "tasks_per_second": self.per_second(), "first_errors": self.first_errors,
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
    let (ok, errors) = results.into_inner().unwrap_or_else(|e| e.into_inner());
    rate.ok += ok;
    rate.failures += errors.len();
    for e in errors {
        if rate.first_errors.len() < 5 {
            rate.first_errors.push(e);
        }
    }
}
