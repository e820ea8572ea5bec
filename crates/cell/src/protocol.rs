//! The few bytes the shim and a cell exchange.

use std::io::Write;
use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wasmcell_engine::CacheOutcome;
use wasmcell_oci::RunSpec;

/// Read end of the control pipe: the [`Orders`], then the start byte.
pub const CONTROL_FD: RawFd = 3;
/// Write end of the status pipe: ready or the error.
pub const STATUS_FD: RawFd = 4;
/// The wasm program file.
pub const PROGRAM_FD: RawFd = 5;
/// The byte that tells a prepared cell to run its guest.
pub const START_BYTE: u8 = b'S';

/// A PID namespace's supervisor's fd of the cgroup's OOM kill count, once it is locked down
/// (`crate::supervisor`; its seccomp filter allows reading this fd only).
pub const OOM_KILLS_FD: RawFd = 0;
/// A PID namespace's supervisor's fd of the status pipe, once it is locked down (its filter
/// allows writing this fd only).
pub const REPORT_FD: RawFd = 1;

/// Exit status of a cell whose task was deleted before it started.
pub const NOT_STARTED: i32 = 0;
/// Exit status of a cell that could not prepare or run its guest (runc's, for the same).
pub const CELL_FAILURE: i32 = 125;

/// The one line of JSON the shim sends first: where the cell places itself, and what it runs.
/// Generic so the shim can send a borrowed run spec.
#[derive(Debug, Serialize, Deserialize)]
pub struct Orders<S = RunSpec> {
    /// The files the cell writes `0` into to move itself into the container's cgroup
    /// ([`wasmcell_cgroup::join_self`]).
    pub cgroup_join: Vec<PathBuf>,
    /// What the cell is for.
    #[serde(default)]
    pub role: Role,
    /// The cgroup file counting the OOM killer's kills, which a cell with a PID namespace
    /// reads once its guest is killed, and reports ([`OOM_KILLED`]): with systemd's driver the
    /// cgroup is removed as soon as the last process leaves it, too soon for the shim to read.
    #[serde(default)]
    pub oom_kill_file: Option<PathBuf>,
    /// The run spec.
    pub spec: S,
}

/// What a cell runs once it has put itself inside the boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The wasm program on [`PROGRAM_FD`].
    #[default]
    Guest,
    /// Nothing: the cell holds a pod's namespaces, as the pod's pause container does, reaping
    /// the orphans of its PID namespace until it is told to end (`crate::pause`).
    Pause,
}

/// Sends the orders as one line of JSON.
pub fn write_orders(
    out: &mut impl Write,
    cgroup_join: Vec<PathBuf>,
    role: Role,
    oom_kill_file: Option<PathBuf>,
    spec: &RunSpec,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Orders {
        cgroup_join,
        role,
        oom_kill_file,
        spec,
    })?;
    line.push(b'\n');
    out.write_all(&line)
}

/// What a cell reports once its program is loaded and linked.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// Whether the program came from the compile cache; `None` for a cell with no program (a
    /// [`Role::Pause`] cell).
    pub outcome: Option<CacheOutcome>,
    /// Milliseconds spent preparing (engine, cache, compile, link).
    pub millis: f64,
    /// Size of the wasm.
    pub wasm_bytes: usize,
    /// Milliseconds spent on the kernel boundary (namespaces, the PID namespace's fork, sealing
    /// the preopens, pivoting, lock-down and seccomp): what isolation adds to a start inside the
    /// cell, for the benchmark.
    pub boundary_millis: f64,
    /// Milliseconds the cell took to move itself into its cgroup.
    pub join_millis: f64,
    /// The pid, in the shim's PID namespace, of the process that runs the guest, when that is
    /// not the cell's own: in a PID namespace the guest runs in a child of the cell
    /// (`crate::supervisor`), and it is that child whose namespaces are the container's.
    pub guest_pid: Option<i32>,
}

impl Ready {
    /// How the program was loaded, for the log.
    pub fn loaded(&self) -> String {
        match self.outcome {
            Some(outcome) => outcome.to_string(),
            None => NOTHING_LOADED.to_owned(),
        }
    }
}

/// The line a cell's supervisor writes on the status pipe, after the status line, when the
/// OOM killer has killed its guest (`crate::supervisor`).
pub const OOM_KILLED: &str = "oom";

/// The start of the line a cell writes on the status pipe, after the status line, when its
/// guest ended by a trap or failed after it was started: `end <Ending as JSON>`.
const ENDING: &str = "end ";

/// How a started guest ended, when not by its own exit: what the termination message says,
/// and whether it was the container's memory limit's doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// The reason, for `kubectl describe`: the cause, then the trap and the top frames.
    pub reason: String,
    /// A `memory.grow` was refused at the container's memory limit before the trap: the shim
    /// reports it as the OOM killer's doing.
    #[serde(default)]
    pub memory_limit: bool,
}

/// The most of a reason that is reported: what the kubelet reads of a termination message.
/// Names in a wasm backtrace come from the program and may be long; cut here, the line stays
/// far below what a pipe holds, so writing it never blocks a cell whose shim reads at exit.
pub const MAX_REASON: usize = 4096;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes the ending line, its reason cut to [`MAX_REASON`].
pub fn write_ending(out: &mut impl Write, ending: &Ending) -> std::io::Result<()> {
    let ending = Ending {
        reason: cut(&ending.reason, MAX_REASON).to_owned(),
        memory_limit: ending.memory_limit,
    };
    let mut line = ENDING.as_bytes().to_vec();
    line.extend(serde_json::to_vec(&ending)?);
    line.push(b'\n');
    out.write_all(&line)
}

/// The start of the line a serving cell writes on the status pipe, now and then while it
/// serves and once at its end, when metrics are on: `metrics <MetricsReport as JSON>`.
const METRICS: &str = "metrics ";

/// A server's counters, as a cell reports them (see
/// `wasmcell_engine::http_server::Snapshot`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Responses by status class, 1xx to 5xx.
    pub by_class: [u64; 5],
    /// Requests answered 503: too many in flight.
    pub refused: u64,
    /// Requests whose guest trapped.
    pub traps: u64,
    /// Requests cut off at their deadline.
    pub deadlines: u64,
    /// Requests running.
    pub in_flight: u64,
    /// Responses by latency bucket (`wasmcell_engine::http_server::counters::LATENCY_BUCKETS`,
    /// then past every bound), not cumulative.
    pub latency: Vec<u64>,
    /// The latencies' sum in seconds.
    pub latency_sum: f64,
}

impl From<wasmcell_engine::http_server::Snapshot> for MetricsReport {
    fn from(s: wasmcell_engine::http_server::Snapshot) -> Self {
        MetricsReport {
            by_class: s.by_class,
            refused: s.refused,
            traps: s.traps,
            deadlines: s.deadlines,
            in_flight: s.in_flight,
            latency: s.latency,
            latency_sum: s.latency_sum,
        }
    }
}

/// Writes a metrics line.
pub fn write_metrics(out: &mut impl Write, report: &MetricsReport) -> std::io::Result<()> {
    let mut line = METRICS.as_bytes().to_vec();
    line.extend(serde_json::to_vec(report)?);
    line.push(b'\n');
    out.write_all(&line)
}

/// The report of a metrics line, if `line` is one.
pub fn parse_metrics(line: &str) -> Option<MetricsReport> {
    serde_json::from_str(line.strip_prefix(METRICS)?).ok()
}

/// What a cell wrote on the status pipe after its status line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfterStatus {
    /// Its supervisor said the OOM killer killed the guest ([`OOM_KILLED`]).
    pub oom_killed: bool,
    /// How the guest ended, if it said.
    pub ending: Option<Ending>,
}

/// Reads what a cell wrote after its status line; an unreadable line is skipped.
pub fn parse_after_status(text: &str) -> AfterStatus {
    let mut after = AfterStatus::default();
    for line in text.lines() {
        if line == OOM_KILLED {
            after.oom_killed = true;
        } else if let Some(json) = line.strip_prefix(ENDING) {
            after.ending = serde_json::from_str(json).ok();
        }
    }
    after
}

/// The status line's word for a cell that loads no program.
const NOTHING_LOADED: &str = "nothing";

/// Writes the status line: `ok <outcome> <millis> <bytes> <boundary millis> <join millis>
/// <guest pid or ->` or `err <message>`.
pub fn write_status(out: &mut impl Write, status: Result<&Ready, &str>) -> std::io::Result<()> {
    let line = match status {
        Ok(r) => format!(
            "ok {} {:.3} {} {:.3} {:.3} {}\n",
            r.loaded(),
            r.millis,
            r.wasm_bytes,
            r.boundary_millis,
            r.join_millis,
            r.guest_pid.map_or("-".to_owned(), |p| p.to_string())
        ),
        Err(message) => format!("err {}\n", message.replace('\n', " ")),
    };
    out.write_all(line.as_bytes())
}

/// Parses a status line; `Err` carries the cell's error message.
pub fn parse_status(line: &str) -> Result<Ready, String> {
    let line = line.trim_end();
    if let Some(message) = line.strip_prefix("err ") {
        return Err(message.to_owned());
    }
    if line == OOM_KILLED {
        return Err(
            "the cell was killed by the OOM killer before its program was ready: the \
            container's memory limit is too low to load or compile it"
                .to_owned(),
        );
    }
    let mut parts = line.strip_prefix("ok ").unwrap_or_default().split(' ');
    let outcome = match parts.next() {
        Some("cache-hit") => Some(CacheOutcome::Hit),
        Some("compiled") => Some(CacheOutcome::Compiled),
        Some(NOTHING_LOADED) => None,
        _ if line.is_empty() => {
            return Err("the cell exited before reporting (see the shim log)".to_owned())
        }
        _ => return Err(format!("unreadable cell status {line:?}")),
    };
    let millis = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0.0);
    let wasm_bytes = parts.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    let boundary_millis = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0.0);
    let join_millis = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0.0);
    let guest_pid = parts.next().and_then(|p| p.parse().ok());
    Ok(Ready {
        outcome,
        millis,
        wasm_bytes,
        boundary_millis,
        join_millis,
        guest_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        let ready = Ready {
            outcome: Some(CacheOutcome::Hit),
            millis: 1.5,
            wasm_bytes: 42,
            boundary_millis: 0.25,
            join_millis: 0.5,
            guest_pid: None,
        };
        let mut buf = Vec::new();
        write_status(&mut buf, Ok(&ready)).expect("write");
        assert_eq!(parse_status(&String::from_utf8_lossy(&buf)), Ok(ready));
        let pause = Ready {
            outcome: None,
            millis: 0.0,
            wasm_bytes: 0,
            boundary_millis: 0.75,
            join_millis: 0.5,
            guest_pid: Some(4242),
        };
        let mut buf = Vec::new();
        write_status(&mut buf, Ok(&pause)).expect("write");
        assert_eq!(parse_status(&String::from_utf8_lossy(&buf)), Ok(pause));
        let mut buf = Vec::new();
        write_status(&mut buf, Err("bad\nthing")).expect("write");
        assert_eq!(
            parse_status(&String::from_utf8_lossy(&buf)),
            Err("bad thing".into())
        );
        assert!(parse_status("")
            .unwrap_err()
            .contains("exited before reporting"));
        assert!(parse_status("what").unwrap_err().contains("unreadable"));
        assert!(parse_status("oom\n").unwrap_err().contains("OOM killer"));
    }

    #[test]
    fn endings_round_trip_beside_the_oom_line() {
        let ending = Ending {
            reason: "memory.grow refused\n    0: m!f".into(),
            memory_limit: true,
        };
        let mut buf = Vec::new();
        write_ending(&mut buf, &ending).expect("write");
        buf.extend_from_slice(b"oom\n");
        let after = parse_after_status(&String::from_utf8_lossy(&buf));
        assert_eq!(
            after,
            AfterStatus {
                oom_killed: true,
                ending: Some(ending)
            }
        );
        assert_eq!(parse_after_status("end {garbage\n"), AfterStatus::default());
        // A long reason is cut on a character boundary.
        let long = Ending {
            reason: "é".repeat(MAX_REASON),
            memory_limit: false,
        };
        let mut buf = Vec::new();
        write_ending(&mut buf, &long).expect("write");
        let reason = parse_after_status(&String::from_utf8_lossy(&buf))
            .ending
            .expect("ending")
            .reason;
        assert_eq!(reason.len(), MAX_REASON);
        assert_eq!(cut("aé", 2), "a");
    }

    #[test]
    fn metrics_lines_round_trip_and_are_not_endings() {
        let report = MetricsReport {
            by_class: [0, 3, 0, 1, 2],
            refused: 1,
            latency: vec![2, 0, 4],
            latency_sum: 0.5,
            ..MetricsReport::default()
        };
        let mut buf = Vec::new();
        write_metrics(&mut buf, &report).expect("write");
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(parse_metrics(text.trim_end()), Some(report));
        assert_eq!(parse_after_status(&text), AfterStatus::default());
        assert_eq!(parse_metrics("end {}"), None);
    }
}
