//! What the workload's settings (`wasmcell_oci::settings`, validated by the shim at Create)
//! configure in the engine and in the server, and the messages that name a setting when what it
//! asked for is refused later.

use std::time::Duration;

use wasmcell_engine::http_server::settings::Asked;
use wasmcell_engine::{EngineOptions, Mode, Trap, TrapCause};
use wasmcell_oci::settings::show_bytes;
use wasmcell_oci::{RunSpec, Settings};

/// What the settings change in the engine's configuration.
pub fn engine_options(settings: &Settings) -> EngineOptions {
    EngineOptions {
        proposals: settings
            .wasm_features
            .iter()
            .map(|t| (t.proposal.name().to_owned(), t.enable))
            .collect(),
        interruptible: settings.cpu_deadline_ms.is_some(),
    }
}

/// An engine the settings' options could not build: the message names the setting.
pub fn engine_refused(settings: &Settings, error: impl std::fmt::Display) -> String {
    if settings.wasm_features.is_empty() {
        return error.to_string();
    }
    format!(
        "setting {} is refused by wasmtime: {error}",
        settings.source_of("wasm-features")
    )
}

/// The CPU deadline of a command; an error for a served component, which has per-request
/// deadlines instead.
pub fn cpu_deadline(settings: &Settings, mode: Mode) -> Result<Option<Duration>, String> {
    match (settings.cpu_deadline_ms, mode) {
        (Some(_), Mode::HttpHandler) => Err(format!(
            "setting {} applies to commands only; this component is served, and each of its \
             requests has a deadline instead (http-timeout-ms)",
            settings.source_of("cpu-deadline-ms")
        )),
        (ms, _) => Ok(ms.map(Duration::from_millis)),
    }
}

/// What the settings ask of the server.
pub fn http_asked(settings: &Settings) -> Asked {
    Asked {
        addr: settings.http_addr,
        deadline: settings.http_timeout_ms.map(Duration::from_millis),
        max_in_flight: settings.http_max_in_flight.map(|n| n as usize),
        access_log: settings.http_access_log,
    }
}

/// What ended the guest, as the termination message says it: the cause in the operator's
/// words, then the trap.
pub fn trap_reason(spec: &RunSpec, trap: &Trap) -> String {
    let settings = &spec.settings;
    match trap.cause {
        TrapCause::Guest => trap.message.clone(),
        TrapCause::CpuDeadline => format!(
            "stopped at its CPU deadline of {} ms ({})\n{}",
            settings.cpu_deadline_ms.unwrap_or_default(),
            settings.source_of("cpu-deadline-ms"),
            trap.message
        ),
        TrapCause::MemoryRefused { desired } => {
            let at = match memory_cap_by(spec) {
                CapBy::Setting(max) => format!(
                    "memory-max ({}, {})",
                    show_bytes(max),
                    settings.source_of("memory-max")
                ),
                CapBy::Limit(limit) => {
                    format!("the container's memory limit ({})", show_bytes(limit))
                }
            };
            format!(
                "memory.grow refused at {at}: a memory of {} was asked for\n{}",
                show_bytes(desired),
                trap.message
            )
        }
    }
}

/// What sets the cap on one linear memory.
enum CapBy {
    /// The container's memory limit, this many bytes (0: none; a growth is then refused only
    /// by the wasm's own maximum, which is no limit's doing).
    Limit(u64),
    /// The memory-max setting, lower than what the limit allows.
    Setting(u64),
}

fn memory_cap_by(spec: &RunSpec) -> CapBy {
    let limit = spec
        .resources
        .memory_limit
        .and_then(|l| u64::try_from(l).ok());
    match (spec.settings.memory_max, limit) {
        (Some(max), Some(limit)) if max < wasmcell_engine::linear_memory_cap(limit) => {
            CapBy::Setting(max)
        }
        (Some(max), None) => CapBy::Setting(max),
        (_, limit) => CapBy::Limit(limit.unwrap_or_default()),
    }
}

/// Whether a trap is the container's memory limit's doing, which the shim reports as the OOM
/// killer's (`OOMKilled`): a cap set by the memory-max setting is not.
pub fn trap_is_memory_limit(spec: &RunSpec, trap: &Trap) -> bool {
    matches!(trap.cause, TrapCause::MemoryRefused { .. })
        && matches!(memory_cap_by(spec), CapBy::Limit(limit) if limit > 0)
}
