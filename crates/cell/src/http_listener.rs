//! A cell whose component serves HTTP (`wasmcell_engine::http_server`): the engine it needs,
//! and the server's socket, bound inside the container's network namespace before the cell reports
//! that it is ready (so a readiness probe or a first request never finds nothing listening),
//! with SIGTERM and SIGINT turned into a drain.

use std::net::TcpListener;
use std::os::fd::OwnedFd;

use wasmcell_engine::http_server::{self, Settings};
use wasmcell_engine::{memory_cap, Engine, Exports, Mode, Pool};
use wasmcell_oci::RunSpec;

/// The engine a program with `exports` needs (the serving one for any component that can be
/// served, as [`Engine::for_program`] decides from the same exports), and, when `mode` is
/// [`Mode::HttpHandler`], how to serve it, with an instance pool sized by those settings.
pub fn engine_for(
    exports: &Exports,
    mode: Mode,
    spec: &RunSpec,
) -> Result<(Engine, Option<Settings>), String> {
    let options = crate::settings::engine_options(&spec.settings);
    let refused = |e: wasmcell_engine::Error| crate::settings::engine_refused(&spec.settings, e);
    if !exports.handles_http() {
        return Ok((Engine::running(&options).map_err(refused)?, None));
    }
    if mode == Mode::Command {
        return Ok((Engine::serving(None, &options).map_err(refused)?, None));
    }
    let settings = Settings::new(
        &crate::settings::http_asked(&spec.settings),
        cpu_limit(spec),
    );
    let pool = Pool {
        instances: u32::try_from(settings.max_in_flight).unwrap_or(u32::MAX),
        memory_cap: memory_cap(
            spec.resources
                .memory_limit
                .and_then(|l| u64::try_from(l).ok()),
            spec.settings.memory_max,
        ),
    };
    let engine = Engine::serving(Some(pool), &options).map_err(refused)?;
    Ok((engine, Some(settings)))
}

/// The container's CPU limit in CPUs, from its CFS quota and period.
fn cpu_limit(spec: &RunSpec) -> Option<f64> {
    let quota = spec.resources.cpu_quota.filter(|q| *q > 0)?;
    let period = spec.resources.cpu_period.filter(|p| *p > 0)?;
    Some(quota as f64 / period as f64)
}

/// The server's socket and its drain signal, made before the cell reports ready.
pub struct HttpListener {
    /// How to serve.
    pub settings: Settings,
    /// The bound, listening socket.
    pub listener: TcpListener,
    /// Readable once SIGTERM or SIGINT arrived.
    pub drain: OwnedFd,
    /// Whether the server's requests are counted for the pod's metrics.
    pub metrics: bool,
}

impl HttpListener {
    /// Binds the socket and makes SIGTERM and SIGINT start a drain; `metrics`: whether the
    /// requests are counted.
    pub fn open(settings: Settings, metrics: bool) -> Result<HttpListener, String> {
        let listener = http_server::bind(&settings).map_err(|e| e.to_string())?;
        let drain = crate::supervisor::drain_on_terminating_signals()?;
        Ok(HttpListener {
            settings,
            listener,
            drain,
            metrics,
        })
    }
}
