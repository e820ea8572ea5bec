//! A pod's Prometheus endpoint: what an operator alerts on, per wasm container, served by the
//! shim from inside the pod's network namespace (so that Prometheus' ordinary pod discovery
//! scrapes it at the pod's IP), when the `metrics-addr` setting asks for it.
//!
//! One endpoint per pod, opened by the pod's first wasm container that asks for it and closed
//! with its last; every wasm container of the pod has its series there, labelled
//! `container`. What the shim sees itself (starts, the compile cache, exits by kind) is counted
//! here; what only the cell sees (a served component's requests) comes from the cell's reports
//! on its status pipe (`wasmcell_cell::MetricsReport`), at most a second old.
//!
//! Encoded by the `prometheus-client` crate (OpenMetrics text); the endpoint itself is a thread
//! that answers `GET /metrics` ([`endpoint`]).

mod endpoint;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use wasmcell_cell::MetricsReport;
use wasmcell_engine::http_server::counters::LATENCY_BUCKETS;

use crate::error::{Error, Result};
use crate::sync::lock;

/// The series of one container.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Container {
    container: String,
}

/// The compile cache's answer for a container's program.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Lookup {
    container: String,
    /// `hit` or `miss`.
    result: String,
}

/// How a container ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Exit {
    container: String,
    /// `code`, `trap`, `oom` or `signal`.
    kind: String,
}

/// Responses of a served component by status class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    container: String,
    /// `1xx` to `5xx`.
    class: String,
}

/// A histogram the cell counts and reports; here it adds up what each report adds.
#[derive(Debug, Clone, Default)]
struct ReportedHistogram(Arc<Mutex<Buckets>>);

#[derive(Debug, Default)]
struct Buckets {
    sum: f64,
    counts: Vec<u64>,
}

impl TypedMetric for ReportedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ReportedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let b = lock(&self.0);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(b.counts.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        if let Some(last) = buckets.last_mut() {
            last.0 = f64::INFINITY;
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(b.sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Buckets of the compile time, in seconds.
const COMPILE_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// The series of one pod.
struct PodMetrics {
    registry: Registry,
    starts: Family<Container, Counter>,
    lookups: Family<Lookup, Counter>,
    compile_seconds: Family<Container, Histogram>,
    exits: Family<Exit, Counter>,
    requests: Family<Class, Counter>,
    latency: Family<Container, ReportedHistogram>,
    in_flight: Family<Container, Gauge>,
    refused: Family<Container, Counter>,
    traps: Family<Container, Counter>,
    deadlines: Family<Container, Counter>,
}

impl PodMetrics {
    fn new() -> PodMetrics {
        let mut registry = Registry::with_prefix("wasmcell");
        let starts = Family::<Container, Counter>::default();
        let lookups = Family::<Lookup, Counter>::default();
        let compile_seconds = Family::<Container, Histogram>::new_with_constructor(|| {
            Histogram::new(COMPILE_BUCKETS.iter().copied())
        });
        let exits = Family::<Exit, Counter>::default();
        let requests = Family::<Class, Counter>::default();
        let latency = Family::<Container, ReportedHistogram>::default();
        let in_flight = Family::<Container, Gauge>::default();
        let refused = Family::<Container, Counter>::default();
        let traps = Family::<Container, Counter>::default();
        let deadlines = Family::<Container, Counter>::default();
        registry.register(
            "container_starts",
            "Wasm containers started",
            starts.clone(),
        );
        registry.register(
            "compile_cache_lookups",
            "Programs looked up in the compile cache at Create, by result (hit, miss)",
            lookups.clone(),
        );
        registry.register(
            "compile_seconds",
            "Time to prepare (read, compile, link) a program the cache did not have",
            compile_seconds.clone(),
        );
        registry.register(
            "container_exits",
            "Wasm containers ended, by kind (code, trap, oom, signal)",
            exits.clone(),
        );
        registry.register(
            "http_requests",
            "Requests a served component answered, by status class",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response's head",
            latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "http_requests_refused",
            "Requests answered 503 because the in-flight limit was reached",
            refused.clone(),
        );
        registry.register(
            "http_request_traps",
            "Requests whose guest trapped",
            traps.clone(),
        );
        registry.register(
            "http_request_deadlines",
            "Requests cut off at their deadline",
            deadlines.clone(),
        );
        PodMetrics {
            registry,
            starts,
            lookups,
            compile_seconds,
            exits,
            requests,
            latency,
            in_flight,
            refused,
            traps,
            deadlines,
        }
    }
}

/// A pod's metrics and its endpoint, shared by its containers.
struct Pod {
    metrics: Arc<PodMetrics>,
    endpoint: endpoint::Endpoint,
    members: usize,
}

/// Every pod of this shim with an endpoint, by pod (sandbox) id.
fn pods() -> &'static Mutex<HashMap<String, Pod>> {
    static PODS: OnceLock<Mutex<HashMap<String, Pod>>> = OnceLock::new();
    PODS.get_or_init(Default::default)
}

/// One container's series in its pod's endpoint; leaves the pod when dropped (the pod's last
/// closes the endpoint).
pub struct ContainerMetrics {
    pod: String,
    container: String,
    metrics: Arc<PodMetrics>,
    /// The cell's last report, from which the next one's increase is counted.
    last: Mutex<MetricsReport>,
}

/// Joins container `container` (its name) to the endpoint of pod `pod`, which listens on
/// `addr` in the network namespace of process `netns_pid`; the first container of a pod opens
/// it. `source`: where the address came from, for the error when it cannot be bound.
pub fn join(
    pod: &str,
    container: &str,
    addr: SocketAddr,
    source: &str,
    netns_pid: i32,
) -> Result<ContainerMetrics> {
    let mut pods = lock(pods());
    let entry = match pods.get_mut(pod) {
        Some(entry) => {
            if entry.endpoint.addr() != addr {
                log::warn!(
                    "pod {pod}: its metrics endpoint listens on {} already; {container}'s \
                     {source}={addr} is not opened as well",
                    entry.endpoint.addr()
                );
            }
            entry
        }
        None => {
            let metrics = Arc::new(PodMetrics::new());
            let serving = Arc::clone(&metrics);
            let endpoint = endpoint::Endpoint::open(addr, netns_pid, move || encode(&serving))
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "setting {source}={addr}: the pod's metrics endpoint cannot listen on \
                         port {} in the pod's network namespace: {e}",
                        addr.port()
                    ))
                })?;
            log::info!("pod {pod}: metrics endpoint on {addr}");
            pods.entry(pod.to_owned()).or_insert(Pod {
                metrics,
                endpoint,
                members: 0,
            })
        }
    };
    entry.members += 1;
    Ok(ContainerMetrics {
        pod: pod.to_owned(),
        container: container.to_owned(),
        metrics: Arc::clone(&entry.metrics),
        last: Mutex::new(MetricsReport::default()),
    })
}

impl Drop for ContainerMetrics {
    fn drop(&mut self) {
        let mut pods = lock(pods());
        let Some(pod) = pods.get_mut(&self.pod) else {
            return;
        };
        pod.members -= 1;
        if pod.members == 0 {
            if let Some(pod) = pods.remove(&self.pod) {
                pod.endpoint.close();
                log::info!("pod {}: metrics endpoint closed", self.pod);
            }
        }
    }
}

/// How a container ended, for its exit's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Its program's exit status.
    Code,
    /// A trap (a CPU deadline included).
    Trap,
    /// The OOM killer, or a trap after its memory limit refused memory.
    Oom,
    /// A signal.
    Signal,
}

impl ExitKind {
    fn label(self) -> &'static str {
        match self {
            ExitKind::Code => "code",
            ExitKind::Trap => "trap",
            ExitKind::Oom => "oom",
            ExitKind::Signal => "signal",
        }
    }
}

impl ContainerMetrics {
    fn me(&self) -> Container {
        Container {
            container: self.container.clone(),
        }
    }

    /// Its program was prepared at Create: from the cache, or compiled in `seconds`.
    pub fn prepared(&self, hit: bool, seconds: f64) {
        let result = if hit { "hit" } else { "miss" };
        self.metrics
            .lookups
            .get_or_create(&Lookup {
                container: self.container.clone(),
                result: result.to_owned(),
            })
            .inc();
        if !hit {
            self.metrics
                .compile_seconds
                .get_or_create(&self.me())
                .observe(seconds);
        }
    }

    /// It started.
    pub fn started(&self) {
        self.metrics.starts.get_or_create(&self.me()).inc();
    }

    /// It ended.
    pub fn exited(&self, kind: ExitKind) {
        self.metrics
            .exits
            .get_or_create(&Exit {
                container: self.container.clone(),
                kind: kind.label().to_owned(),
            })
            .inc();
        self.metrics.in_flight.get_or_create(&self.me()).set(0);
    }

    /// The cell's report of its server's counters: what they grew by since the last one.
    pub fn reported(&self, now: MetricsReport) {
        let mut last = lock(&self.last);
        let grew = |now: u64, before: u64| now.saturating_sub(before);
        let m = &self.metrics;
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let by = grew(now.by_class[i], last.by_class[i]);
            if by > 0 || now.by_class[i] > 0 {
                m.requests
                    .get_or_create(&Class {
                        container: self.container.clone(),
                        class: (*class).to_owned(),
                    })
                    .inc_by(by);
            }
        }
        let me = self.me();
        m.refused
            .get_or_create(&me)
            .inc_by(grew(now.refused, last.refused));
        m.traps
            .get_or_create(&me)
            .inc_by(grew(now.traps, last.traps));
        m.deadlines
            .get_or_create(&me)
            .inc_by(grew(now.deadlines, last.deadlines));
        m.in_flight
            .get_or_create(&me)
            .set(i64::try_from(now.in_flight).unwrap_or(i64::MAX));
        {
            let histogram = m.latency.get_or_create(&me);
            let mut b = lock(&histogram.0);
            if b.counts.len() < now.latency.len() {
                b.counts.resize(now.latency.len(), 0);
            }
            for (i, n) in now.latency.iter().enumerate() {
                let before = last.latency.get(i).copied().unwrap_or(0);
                b.counts[i] += grew(*n, before);
            }
            b.sum += (now.latency_sum - last.latency_sum).max(0.0);
        }
        *last = now;
    }
}

/// The pod's series as the endpoint serves them (OpenMetrics text).
fn encode(metrics: &PodMetrics) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
        log::error!("encoding the pod's metrics: {e}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(metrics: &Arc<PodMetrics>) -> ContainerMetrics {
        ContainerMetrics {
            pod: "p".into(),
            container: "app".into(),
            metrics: Arc::clone(metrics),
            last: Mutex::new(MetricsReport::default()),
        }
    }

    #[test]
    fn reports_add_up_and_encode_as_openmetrics() {
        let metrics = Arc::new(PodMetrics::new());
        let c = container(&metrics);
        c.prepared(false, 0.2);
        c.started();
        let mut report = MetricsReport {
            by_class: [0, 3, 0, 0, 1],
            refused: 1,
            latency: vec![0; LATENCY_BUCKETS.len() + 1],
            latency_sum: 0.25,
            in_flight: 2,
            ..MetricsReport::default()
        };
        report.latency[0] = 3;
        report.latency[LATENCY_BUCKETS.len()] = 1;
        c.reported(report.clone());
        report.by_class[1] = 5;
        report.latency[0] = 5;
        report.latency_sum = 0.5;
        c.reported(report);
        c.exited(ExitKind::Trap);
        let text = encode(&metrics);
        for line in [
            "wasmcell_container_starts_total{container=\"app\"} 1",
            "wasmcell_compile_cache_lookups_total{container=\"app\",result=\"miss\"} 1",
            "wasmcell_http_requests_total{container=\"app\",class=\"2xx\"} 5",
            "wasmcell_http_requests_total{container=\"app\",class=\"5xx\"} 1",
            "wasmcell_http_requests_refused_total{container=\"app\"} 1",
            "wasmcell_http_request_duration_seconds_bucket{le=\"0.005\",container=\"app\"} 5",
            "wasmcell_http_request_duration_seconds_bucket{le=\"+Inf\",container=\"app\"} 6",
            "wasmcell_http_request_duration_seconds_sum{container=\"app\"} 0.5",
            "wasmcell_http_requests_in_flight{container=\"app\"} 0",
            "wasmcell_container_exits_total{container=\"app\",kind=\"trap\"} 1",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
