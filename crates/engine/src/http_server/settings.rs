//! How a served component is served: from the workload's settings (its env and annotations,
//! resolved and validated by `wasmcell_oci::settings`), with the defaults here.
//!
//! The settings steer only the guest's own server inside its own network namespace, never the
//! host: where it listens, how long a request may take, how many run at once.

use std::net::SocketAddr;
use std::time::Duration;

/// Where a served component listens unless its settings say otherwise (what `wasmtime serve`
/// and runwasi use).
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";
/// A request's deadline unless the settings say otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight per CPU of the container's limit (or of the host, without one), unless
/// the settings say otherwise: a request waiting on its body or on an outgoing call holds no
/// CPU.
pub const IN_FLIGHT_PER_CPU: usize = 64;

/// How to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The address to listen on, inside the container's network namespace.
    pub addr: SocketAddr,
    /// How long one request may run, from its arrival to its response body's end.
    pub deadline: Duration,
    /// How many requests may run at once.
    pub max_in_flight: usize,
    /// Whether each request gets a line on stderr.
    pub access_log: bool,
    /// Worker threads of the server: the container's CPU limit, rounded up, at most the host's.
    pub workers: usize,
}

/// What the workload's settings ask for; `None`: the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// Where to listen.
    pub addr: Option<SocketAddr>,
    /// A request's deadline.
    pub deadline: Option<Duration>,
    /// Requests at once.
    pub max_in_flight: Option<usize>,
    /// One line on stderr per request.
    pub access_log: bool,
}

impl Settings {
    /// The settings `asked` for, with the defaults for the rest; `cpus`: the container's CPU
    /// limit, if it has one.
    pub fn new(asked: &Asked, cpus: Option<f64>) -> Settings {
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = cpus
            .filter(|c| c.is_finite() && *c > 0.0)
            .map_or(host_cpus, |c| (c.ceil() as usize).clamp(1, host_cpus));
        Settings {
            addr: asked
                .addr
                .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("the default address parses")),
            deadline: asked.deadline.unwrap_or(DEFAULT_TIMEOUT),
            max_in_flight: asked.max_in_flight.unwrap_or(cpus * IN_FLIGHT_PER_CPU),
            access_log: asked.access_log,
            workers: cpus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::new(&Asked::default(), Some(1.0));
        assert_eq!(s.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.deadline, DEFAULT_TIMEOUT);
        assert_eq!((s.max_in_flight, s.workers), (IN_FLIGHT_PER_CPU, 1));
        assert!(!s.access_log);

        let asked = Asked {
            addr: Some("[::]:9000".parse().unwrap()),
            deadline: Some(Duration::from_millis(250)),
            max_in_flight: Some(3),
            access_log: true,
        };
        let s = Settings::new(&asked, None);
        assert_eq!(s.addr, "[::]:9000".parse().unwrap());
        assert_eq!(s.deadline, Duration::from_millis(250));
        assert_eq!(s.max_in_flight, 3);
        assert!(s.access_log);
    }
}
