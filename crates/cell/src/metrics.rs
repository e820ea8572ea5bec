//! A serving cell's metrics, reported to the shim: a thread writes the server's counters on the
//! status pipe when they changed, at most once a second, and once more when the server has
//! ended. The shim serves them from the pod's Prometheus endpoint, so a scrape sees requests at
//! most a second old and costs the cell nothing.

use std::fs::File;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmcell_engine::http_server::Counters;

use crate::protocol::{write_metrics, MetricsReport};

/// How often, at most, the counters are reported.
const EVERY: Duration = Duration::from_secs(1);

/// The reporting thread; [`Reporting::finish`] reports the last counters and ends it.
pub struct Reporting {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

/// Starts reporting `counters` on `status`.
pub fn report_now_and_then(
    counters: Arc<Counters>,
    status: Arc<File>,
) -> Result<Reporting, String> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut last = None;
            loop {
                let ended = !matches!(stopped.recv_timeout(EVERY), Err(RecvTimeoutError::Timeout));
                let now = MetricsReport::from(counters.snapshot());
                if last.as_ref() != Some(&now) {
                    // A shim that stopped reading is no reason to stop serving.
                    let _ = write_metrics(&mut &*status, &now);
                    last = Some(now);
                }
                if ended {
                    return;
                }
            }
        })
        .map_err(|e| format!("start the metrics thread: {e}"))?;
    Ok(Reporting { stop, thread })
}

impl Reporting {
    /// Reports the last counters and ends the thread.
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
