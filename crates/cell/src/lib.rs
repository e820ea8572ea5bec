//! The cell: the process that runs one wasm container.
//!
//! Each wasm container runs in a cell process of its own, so a crashing or hostile guest (or a
//! wasmtime bug it triggers) takes down that process only, never the shim or its neighbours, and
//! signals, exit statuses and (in the next layer) namespaces, cgroups and seccomp apply to it as
//! they apply to a runc container's process.
//!
//! The shim starts a cell by executing its own binary with the `cell` argument and these fds:
//!
//! | fd | what |
//! |----|------|
//! | 0, 1, 2 | `/dev/null`, and the guest's stdout and stderr (FIFO, log file or logger pipe; for a terminal, its slave side, from which the guest reads stdin too) |
//! | 3 ([`CONTROL_FD`]) | read: one line of JSON [`Orders`] (cgroup and [`RunSpec`]), later one start byte |
//! | 4 ([`STATUS_FD`]) | write: `ok <how it was loaded>` or `err <message>`, then closed |
//! | 5 ([`PROGRAM_FD`]) | the wasm file, opened inside the rootfs by the shim |
//!
//! Preparing (reading, compiling or loading from the cache, linking) happens before the start
//! byte, so Create reports a bad module and Start only has to instantiate. End of file on the
//! control fd before the start byte means the task was deleted before it started.
//!
//! The cell never logs: its stderr belongs to the guest. The only thing it writes there itself is
//! the message of a trap, as a native program's crash shows on its stderr.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod boundary;
mod capabilities;
pub mod compiler;
mod http_listener;
mod metrics;
mod network;
mod pause;
mod protocol;
pub mod seccomp;
mod settings;
mod supervisor;
mod sys;
pub mod under_runc;

pub use protocol::{
    cut, parse_after_status, parse_metrics, parse_status, write_orders, write_status, AfterStatus,
    Ending, MetricsReport, Orders, Ready, Role, CONTROL_FD, MAX_REASON, OOM_KILLED, PROGRAM_FD,
    START_BYTE, STATUS_FD,
};
use protocol::{CELL_FAILURE, NOT_STARTED};

/// The preopens' mounts as the cell makes them (exposed for the crate's integration tests,
/// which check the kernel's flags on them).
pub use boundary::{seal_preopens, Sealed};

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use wasmcell_engine::http_server::Counters;
use wasmcell_engine::{CompileCache, Exports, Grants, GuestIo, Outcome, Prepared, WasiSetup};

use http_listener::HttpListener;
use wasmcell_oci::stdio::StdinRelay;
use wasmcell_oci::RunSpec;

/// Entry point of the cell process; never returns.
pub fn main() -> ! {
    let code = match run_cell() {
        Ok(code) => code,
        Err(code) => code,
    };
    // `exit` skips the flush a return from `main` would do; the guest's last line may sit in
    // the stdout buffer.
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn run_cell() -> Result<i32, i32> {
    // Only the fds of the protocol stay open; anything else the shim leaked would reach the guest's
    // process.
    sys::close_fds_from(PROGRAM_FD + 1);
    let control = sys::take_inherited(CONTROL_FD).map_err(|_| CELL_FAILURE)?;
    let mut status = sys::take_inherited(STATUS_FD).map_err(|_| CELL_FAILURE)?;
    let mut control = BufReader::new(control);

    let prepared = match prepare(&mut control) {
        Ok(p) => p,
        Err(message) => {
            let _ = protocol::write_status(&mut status, Err(&message));
            return Err(CELL_FAILURE);
        }
    };
    let (work, ready) = prepared;
    if protocol::write_status(&mut status, Ok(&ready)).is_err() {
        return Err(CELL_FAILURE);
    }
    // Kept: how the guest ends, and a server's metrics, are reported on it too.
    let status = std::sync::Arc::new(status);

    let mut byte = [0u8; 1];
    match control.read(&mut byte) {
        Ok(1) if byte[0] == START_BYTE => {}
        _ => return Ok(NOT_STARTED),
    }
    drop(control);

    match work {
        Work::Guest(guest) => {
            let (prepared, grants, spec) = *guest;
            run_guest(&prepared, grants, &spec, &status)
        }
        Work::Serve(served) => {
            let (prepared, grants, server) = *served;
            serve_guest(prepared, grants, server, status)
        }
        Work::Pause => pause::hold(),
    }
}

/// What a prepared cell runs once it is started.
enum Work {
    /// The wasm program, loaded and linked, what it is granted, and its spec (for the reason
    /// it may end with).
    Guest(Box<(Prepared, Grants, RunSpec)>),
    /// An HTTP handler, loaded and linked, what each request is granted, and its server's
    /// socket (bound already).
    Serve(Box<(Prepared, Grants, HttpListener)>),
    /// Nothing: see [`Role::Pause`].
    Pause,
}

/// Runs the guest; its exit status, or 134 with the trap's reason on stderr and on the status
/// pipe (`status`), from which the shim writes it to the termination message.
fn run_guest(
    prepared: &Prepared,
    grants: Grants,
    spec: &RunSpec,
    status: &File,
) -> Result<i32, i32> {
    match wasmcell_engine::run(prepared, grants) {
        Ok(Outcome::Exited(code)) => Ok(code),
        Ok(outcome @ Outcome::Trapped(_)) => {
            if let Outcome::Trapped(trap) = &outcome {
                let reason = settings::trap_reason(spec, trap);
                let _ = writeln!(std::io::stderr(), "{reason}");
                let _ = protocol::write_ending(
                    &mut &*status,
                    &protocol::Ending {
                        memory_limit: settings::trap_is_memory_limit(spec, trap),
                        reason,
                    },
                );
            }
            Ok(outcome.exit_code())
        }
        Err(e) => Err(failed(status, &e.to_string())),
    }
}

/// Reports a guest that could not run past its start: on stderr and on the status pipe.
fn failed(status: &File, message: &str) -> i32 {
    let reason = format!("wasmcell: {message}");
    let _ = writeln!(std::io::stderr(), "{reason}");
    let _ = protocol::write_ending(
        &mut &*status,
        &protocol::Ending {
            reason,
            memory_limit: false,
        },
    );
    CELL_FAILURE
}

/// Serves until drained; 0, or 125 with the reason on stderr and the status pipe. With
/// metrics on, the server's counters go to the status pipe now and then, and once at the end.
fn serve_guest(
    prepared: Prepared,
    grants: Grants,
    server: HttpListener,
    status: Arc<File>,
) -> Result<i32, i32> {
    let HttpListener {
        settings,
        listener,
        drain,
        metrics,
    } = server;
    let _ = writeln!(
        std::io::stderr(),
        "wasmcell: serving wasi:http on {}",
        settings.addr
    );
    let counters = metrics.then(|| Arc::new(Counters::default()));
    let reporting = match &counters {
        Some(c) => Some(
            metrics::report_now_and_then(Arc::clone(c), Arc::clone(&status))
                .map_err(|e| failed(&status, &e))?,
        ),
        None => None,
    };
    let served = prepared.serve(grants, settings, listener, drain, counters);
    if let Some(reporting) = reporting {
        reporting.finish();
    }
    served.map_err(|e| failed(&status, &e.to_string()))
}

/// Reads the one line of JSON orders from the control pipe.
fn read_orders(control: &mut BufReader<File>) -> Result<Orders, String> {
    let mut line = String::new();
    control
        .read_line(&mut line)
        .map_err(|e| format!("read the cell's orders: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("malformed cell orders: {e}"))
}

/// Reads the orders, joins the cgroup, enters the namespaces, loads and links the program, opens
/// what the guest is granted, and locks the cell down.
fn prepare(control: &mut BufReader<File>) -> Result<(Work, Ready), String> {
    let orders = read_orders(control)?;
    // First, while the cell is still single-threaded and has loaded nothing: everything after
    // this is charged to the container's cgroup.
    let joining = Instant::now();
    wasmcell_cgroup::join_self(&orders.cgroup_join).map_err(|e| e.to_string())?;
    let join_time = joining.elapsed();
    let spec = orders.spec;
    let program = if spec.program.is_empty() {
        spec.args.first().cloned().unwrap_or_default()
    } else {
        spec.program.clone()
    };
    // Opened while the host's cgroup filesystem is in view, for the supervisor.
    let oom_kills = orders
        .oom_kill_file
        .as_ref()
        .and_then(|p| File::open(p).ok());
    let entering = Instant::now();
    boundary::enter_namespaces(&spec.isolation)?;
    let guest_pid = match boundary::pid_namespace(&spec.isolation) {
        Some(init) => {
            // Only the child returns; the parent supervises it.
            supervisor::fork_into_namespace(init, oom_kills)?;
            Some(sys::pid_in_host_proc()?)
        }
        None => {
            drop(oom_kills);
            None
        }
    };
    let mut boundary_time = entering.elapsed();
    if orders.role == Role::Pause {
        drop(sys::take_inherited(PROGRAM_FD));
        let locking = Instant::now();
        boundary::seal_root(&spec)?;
        boundary::lock_down(&spec, boundary::Filter::Later)?;
        boundary_time += locking.elapsed();
        let ready = Ready {
            outcome: None,
            millis: 0.0,
            wasm_bytes: 0,
            boundary_millis: boundary_time.as_secs_f64() * 1000.0,
            join_millis: join_time.as_secs_f64() * 1000.0,
            guest_pid,
        };
        return Ok((Work::Pause, ready));
    }

    let started = Instant::now();
    let mut file = sys::take_inherited(PROGRAM_FD).map_err(|e| format!("program fd: {e}"))?;
    let wasm = wasmcell_engine::read_wasm(&mut file, &program).map_err(|e| e.to_string())?;
    drop(file);
    let exports = Exports::of(&wasm);
    let mode = exports.mode(spec.settings.http_serve);
    let cpu_deadline = settings::cpu_deadline(&spec.settings, mode)?;
    let (engine, serve_settings) = http_listener::engine_for(&exports, mode, &spec)?;
    let cache = CompileCache::open(&spec.cache_dir, &engine).map_err(|e| e.to_string())?;
    let (compiled, outcome) = cache
        .load(&engine, &program, &wasm, |w| {
            compiler::compile_locked_down(&engine, &program, w)
        })
        .map_err(|e| e.to_string())?;
    let prepared = Prepared::new(&engine, &program, compiled, mode).map_err(|e| e.to_string())?;
    let sealing = Instant::now();
    let sealed = boundary::seal_preopens(&spec)?;
    boundary_time += sealing.elapsed();
    let (io, stdin_relay) = guest_io(&spec)?;
    let setup = WasiSetup {
        cpu_deadline,
        ..wasi_setup(&spec, Some(&sealed), exports.handles_http())?
    };
    let grants = wasmcell_engine::grant(&setup, io).map_err(|e| e.to_string())?;
    // The runtime holds its own handles now.
    drop(sealed);
    let locking = Instant::now();
    boundary::lock_down(&spec, boundary::Filter::Guest)?;
    boundary_time += locking.elapsed();
    // Bound with exactly the spec's user and capabilities, in the container's network
    // namespace, before the cell reports ready.
    let metrics = spec.settings.metrics_addr.is_some();
    let server = serve_settings
        .map(|s| HttpListener::open(s, metrics))
        .transpose()?;
    // The cell's first thread: created after the lock-down, so it inherits all of it.
    if let Some(relay) = stdin_relay {
        relay.start().map_err(|e| e.to_string())?;
    }
    let ready = Ready {
        outcome: Some(outcome),
        millis: started.elapsed().as_secs_f64() * 1000.0,
        wasm_bytes: wasm.len(),
        boundary_millis: boundary_time.as_secs_f64() * 1000.0,
        join_millis: join_time.as_secs_f64() * 1000.0,
        guest_pid,
    };
    let work = match server {
        Some(server) => Work::Serve(Box::new((prepared, grants, server))),
        None => Work::Guest(Box::new((prepared, grants, spec))),
    };
    Ok((work, ready))
}

/// What the guest is granted: its command line, env, preopens and network; `sealed`: the
/// preopens' own handles (a cell under runc, whose mounts runc made, has none); `links_http`:
/// whether it may make outgoing `wasi:http` requests, which need the container's TLS roots.
fn wasi_setup(
    spec: &RunSpec,
    sealed: Option<&boundary::Sealed>,
    links_http: bool,
) -> Result<WasiSetup, String> {
    Ok(WasiSetup {
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        preopens: spec
            .preopens
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let host = sealed
                    .and_then(|s| s.path(i))
                    .unwrap_or_else(|| p.host.clone());
                (host, p.guest.clone(), p.read_only)
            })
            .collect(),
        memory_limit: spec
            .resources
            .memory_limit
            .and_then(|l| u64::try_from(l).ok()),
        memory_max: spec.settings.memory_max,
        cpu_deadline: None,
        network: network::grant(spec, links_http)?,
    })
}

/// Opens the guest's stdio: stdout and stderr are the cell's own fds 1 and 2 (written directly,
/// so the cell holds no second fd for them); stdin is relayed from the client's FIFO (see
/// `wasmcell_oci::stdio::StdinRelay`), whose thread is started only after the lock-down.
fn guest_io(spec: &RunSpec) -> Result<(GuestIo, Option<StdinRelay>), String> {
    let (relay, stdin) = match &spec.stdin {
        // The terminal's slave side, which fd 1 is, opened for reading and writing.
        None if spec.terminal => {
            let slave = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("stdin from the terminal: {e}"))?;
            (None, Some(File::from(slave)))
        }
        Some(path) => {
            let (relay, read_end) = StdinRelay::open(path).map_err(|e| e.to_string())?;
            (Some(relay), Some(read_end))
        }
        None => (None, None),
    };
    Ok((
        GuestIo {
            stdin,
            inherit_output: true,
        },
        relay,
    ))
}
