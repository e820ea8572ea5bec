//! The machine and the versions a run is on, for its header and its JSON.

use std::process::Command;

use serde_json::{json, Value};

/// The first line `cmd args` prints on stdout; empty if it cannot run.
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

/// The machine: date, CPU, kernel, containerd, runc and the versions measured.
pub fn environment() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    json!({
        "date": first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": first_line("uname", &["-r"]),
        "containerd": first_line(&wasmcell_e2e::containerd_bin().to_string_lossy(), &["--version"]),
        "runc": first_line("runc", &["--version"]),
        "wasmcell": env!("CARGO_PKG_VERSION"),
        "wasmtime": "48.0.8",
    })
}
