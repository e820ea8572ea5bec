//! What a server counts for the operator's metrics: responses by status class, a latency
//! histogram, requests in flight, refused (503), traps and deadlines. Kept only when metrics are
//! on (a `None` costs a branch per request); read as a [`Snapshot`], which the cell reports to
//! the shim, where the pod's Prometheus endpoint serves it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histogram's buckets (Prometheus' client defaults),
/// then `+Inf`.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A server's counters.
#[derive(Debug, Default)]
pub struct Counters {
    by_class: [AtomicU64; 5],
    refused: AtomicU64,
    traps: AtomicU64,
    deadlines: AtomicU64,
    in_flight: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Responses with status 1xx, 2xx, 3xx, 4xx, 5xx (the host's own 503 and 500 included).
    pub by_class: [u64; 5],
    /// Requests answered 503 because `max_in_flight` were running.
    pub refused: u64,
    /// Requests whose guest trapped.
    pub traps: u64,
    /// Requests cut off at their deadline.
    pub deadlines: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Responses by latency bucket (not cumulative), the last one past every bound.
    pub latency: Vec<u64>,
    /// The latencies' sum, in seconds.
    pub latency_sum: f64,
}

impl Counters {
    /// A response with `status`, `latency` after its request arrived.
    pub(crate) fn responded(&self, status: u16, latency: Duration) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            self.by_class[usize::from(class)].fetch_add(1, Ordering::Relaxed);
        }
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn trapped(&self) {
        self.traps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn past_deadline(&self) {
        self.deadlines.fetch_add(1, Ordering::Relaxed);
    }

    /// One request more in flight, until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            by_class: std::array::from_fn(|i| load(&self.by_class[i])),
            refused: load(&self.refused),
            traps: load(&self.traps),
            deadlines: load(&self.deadlines),
            in_flight: load(&self.in_flight),
            latency: self.latency.iter().map(load).collect(),
            latency_sum: load(&self.latency_sum_micros) as f64 / 1e6,
        }
    }
}

/// A request in flight; ends when dropped.
pub(crate) struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_bucket() {
        let c = Counters::default();
        c.responded(200, Duration::from_millis(3));
        c.responded(204, Duration::from_millis(30));
        c.responded(503, Duration::from_secs(60));
        c.responded(99, Duration::ZERO);
        c.refused();
        {
            let _one = c.in_flight();
            assert_eq!(c.snapshot().in_flight, 1);
        }
        let s = c.snapshot();
        assert_eq!(s.by_class, [0, 2, 0, 0, 1]);
        assert_eq!((s.refused, s.in_flight), (1, 0));
        assert_eq!(s.latency[0], 2, "3 ms and the out-of-range status's 0 s");
        assert_eq!(s.latency[3], 1, "30 ms is within 50 ms");
        assert_eq!(
            s.latency[LATENCY_BUCKETS.len()],
            1,
            "60 s is past every bound"
        );
        assert!((s.latency_sum - 60.033).abs() < 1e-6, "{}", s.latency_sum);
    }
}
