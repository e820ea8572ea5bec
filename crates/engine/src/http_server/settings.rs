//! How a served component is served, from the container's env (its `process.env`).
//!
//! The env steers only the guest's own server inside its own network namespace, never the host:
//! where it listens, how long a request may take, how many run at once.

use std::net::SocketAddr;
use std::time::Duration;

/// wasmcell's variable for the address to listen on.
pub const ADDR_ENV: &str = "WASMCELL_HTTP_ADDR";
/// runwasi's variable for the same, honoured so that its images run unchanged.
pub const RUNWASI_ADDR_ENV: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/// A request's deadline in milliseconds.
pub const TIMEOUT_ENV: &str = "WASMCELL_HTTP_TIMEOUT_MS";
/// How many requests may run at once; more are answered 503.
pub const MAX_IN_FLIGHT_ENV: &str = "WASMCELL_HTTP_MAX_IN_FLIGHT";
/// `1`: one line on stderr per request.
pub const ACCESS_LOG_ENV: &str = "WASMCELL_HTTP_ACCESS_LOG";
/// `1`: serve a component that exports both `wasi:http/incoming-handler` and `wasi:cli/run`
/// (which otherwise runs as a command).
pub const SERVE_ENV: &str = "WASMCELL_HTTP_SERVE";

/// Where a served component listens unless the env says otherwise (what `wasmtime serve` and
/// runwasi use).
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";
/// A request's deadline unless the env says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight per CPU of the container's limit (or of the host, without one), unless
/// the env says otherwise: a request waiting on its body or on an outgoing call holds no CPU.
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

fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether the env asks to serve a component that could also run as a command.
pub fn serve_requested(env: &[(String, String)]) -> bool {
    matches!(lookup(env, SERVE_ENV), Some("1" | "true"))
}

impl Settings {
    /// The settings `env` asks for; `cpus`: the container's CPU limit, if it has one. A value
    /// that does not parse is an error naming the variable.
    pub fn from_env(env: &[(String, String)], cpus: Option<f64>) -> Result<Settings, String> {
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = cpus
            .filter(|c| c.is_finite() && *c > 0.0)
            .map_or(host_cpus, |c| (c.ceil() as usize).clamp(1, host_cpus));
        let (addr_var, addr) = match (lookup(env, ADDR_ENV), lookup(env, RUNWASI_ADDR_ENV)) {
            (Some(a), _) => (ADDR_ENV, a),
            (None, Some(a)) => (RUNWASI_ADDR_ENV, a),
            (None, None) => ("the default address", DEFAULT_ADDR),
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("{addr_var}={addr:?} is not an address and port: {e}"))?;
        let number = |name: &str| -> Result<Option<u64>, String> {
            lookup(env, name)
                .map(|v| match v.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name}={v:?} is not a positive whole number")),
                })
                .transpose()
        };
        let deadline = number(TIMEOUT_ENV)?.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let max_in_flight = number(MAX_IN_FLIGHT_ENV)?
            .map_or(cpus * IN_FLIGHT_PER_CPU, |n| n.min(1 << 16) as usize);
        Ok(Settings {
            addr,
            deadline,
            max_in_flight,
            access_log: matches!(lookup(env, ACCESS_LOG_ENV), Some("1" | "true")),
            workers: cpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_env(&[], Some(1.0)).expect("defaults");
        assert_eq!(s.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.deadline, DEFAULT_TIMEOUT);
        assert_eq!((s.max_in_flight, s.workers), (IN_FLIGHT_PER_CPU, 1));
        assert!(!s.access_log);

        let runwasi = env(&[(RUNWASI_ADDR_ENV, "127.0.0.1:3000")]);
        let s = Settings::from_env(&runwasi, None).expect("runwasi's variable");
        assert_eq!(s.addr, "127.0.0.1:3000".parse().unwrap());

        let both = env(&[
            (RUNWASI_ADDR_ENV, "127.0.0.1:3000"),
            (ADDR_ENV, "[::]:9000"),
            (TIMEOUT_ENV, "250"),
            (MAX_IN_FLIGHT_ENV, "3"),
            (ACCESS_LOG_ENV, "1"),
        ]);
        let s = Settings::from_env(&both, None).expect("wasmcell's variables");
        assert_eq!(s.addr, "[::]:9000".parse().unwrap());
        assert_eq!(s.deadline, Duration::from_millis(250));
        assert_eq!(s.max_in_flight, 3);
        assert!(s.access_log);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = Settings::from_env(&env(&[(ADDR_ENV, "8080")]), None).expect_err("no host");
        assert!(e.contains(ADDR_ENV), "{e}");
        let e = Settings::from_env(&env(&[(TIMEOUT_ENV, "0")]), None).expect_err("zero");
        assert!(e.contains(TIMEOUT_ENV), "{e}");
        let e = Settings::from_env(&env(&[(MAX_IN_FLIGHT_ENV, "x")]), None).expect_err("x");
        assert!(e.contains(MAX_IN_FLIGHT_ENV), "{e}");
    }

    #[test]
    fn serving_a_command_component_is_asked_for_explicitly() {
        assert!(!serve_requested(&[]));
        assert!(serve_requested(&env(&[(SERVE_ENV, "1")])));
        assert!(!serve_requested(&env(&[(SERVE_ENV, "0")])));
    }
}
