//! The cell as the process of a runc container: the fallback for specs the cell cannot honour
//! itself (an AppArmor or SELinux label, a seccomp profile of the spec, user-namespace mappings,
//! cgroup settings it does not implement). runc builds the whole kernel boundary as it does for
//! any container; this process only loads the guest and runs it, with the cell's seccomp
//! allow-list stacked on whatever runc applied.
//!
//! Two modes of the shim binary serve it:
//!
//! - [`compile_main`] (`compile <cache-dir> <program> <container pid> <settings>`), run by the
//!   shim once
//!   `runc create` has made the container and before `runc start`: joins the container's
//!   cgroups and namespaces (its compiler child the mount namespace too), loads the wasm on fd
//!   [`PROGRAM_FD`] from the compile cache or compiles it into the cache, and prints the
//!   entry's path, then on a second line which engine it was compiled for ([`SERVING`] or
//!   [`RUNNING`]). Bad wasm fails here, so Create reports it.
//! - [`main`] (`cell-in-runc <id>`), the container's process: fds 0-2 are the container's stdio
//!   (runc's), [`CONTROL_FD`] carries the orders with the run spec (paths as the container sees them), the
//!   status goes to [`STATUS_FD`] as for a cell, and [`PROGRAM_FD`] is a unix socket on which
//!   the shim sends the compiled program, opened from the cache once compiled (the container
//!   cannot see the cache), with one byte: 1 if it was compiled for the serving engine. There is
//!   no start byte: `runc start` is the start. A component that serves HTTP binds its socket
//!   before it reports ready, but nothing waits for that report here: a client may find the
//!   port closed for the first milliseconds after Start.
//!
//! [`CONTROL_FD`]: crate::CONTROL_FD
//! [`STATUS_FD`]: crate::STATUS_FD
//! [`PROGRAM_FD`]: crate::PROGRAM_FD

use std::io::{BufReader, Write};

use wasmcell_engine::http_server::settings::Settings as HttpSettings;
use wasmcell_engine::{
    CacheOutcome, CompileCache, Engine, Exports, Grants, GuestIo, Mode, Prepared, WasiSetup,
};
use wasmcell_oci::isolation::NamespaceKind;
use wasmcell_oci::{RunSpec, Settings};

use crate::http_listener::HttpListener;
use crate::protocol::CELL_FAILURE;
use crate::{protocol, read_orders, run_guest, serve_guest, settings, sys, wasi_setup, Ready};
use crate::{CONTROL_FD, PROGRAM_FD, STATUS_FD};

/// The argument that makes the shim binary the process of a runc container.
pub const CELL_IN_RUNC_ARG: &str = "cell-in-runc";
/// The argument that makes the shim binary compile a program into the cache.
pub const COMPILE_ARG: &str = "compile";
/// `compile`'s second line for a program compiled for the serving engine.
pub const SERVING: &str = "serving";
/// `compile`'s second line for a program compiled for the engine of programs that run.
pub const RUNNING: &str = "running";

/// `compile <cache-dir> <program> [<container pid> [<settings>]]`: with a pid (the init of a
/// container runc has created but not started), first joins that container's cgroups and
/// namespaces, so the compile is charged to the container and runs where its guest will; then
/// loads or compiles for the engine the workload's settings (JSON) configure; see the module
/// documentation. Never returns.
pub fn compile_main(args: &[String]) -> ! {
    let result = (|| -> Result<String, String> {
        let usage =
            || format!("usage: {COMPILE_ARG} <cache-dir> <program> [<container pid> [<settings>]]");
        let (dir, program, rest) = match args {
            [dir, program, rest @ ..] if rest.len() <= 2 => (dir, program, rest),
            _ => return Err(usage()),
        };
        let container = match rest.first() {
            Some(pid) => Some(
                pid.parse::<i32>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("not a container pid: {pid:?}"))?,
            ),
            None => None,
        };
        let settings: Settings = match rest.get(1) {
            Some(json) => serde_json::from_str(json).map_err(|e| format!("settings: {e}"))?,
            None => Settings::default(),
        };
        let mount = match container {
            Some(pid) => enter_container(pid)?,
            None => None,
        };
        let mut file = sys::take_inherited(PROGRAM_FD).map_err(|e| format!("program fd: {e}"))?;
        let wasm = wasmcell_engine::read_wasm(&mut file, program).map_err(|e| e.to_string())?;
        // Checked here, at Create: the cell itself prepares only at `runc start`.
        let mode = Exports::of(&wasm).mode(settings.http_serve);
        settings::cpu_deadline(&settings, mode)?;
        let engine = Engine::for_program(&wasm, &settings::engine_options(&settings))
            .map_err(|e| settings::engine_refused(&settings, e))?;
        let cache = CompileCache::open(dir.as_ref(), &engine).map_err(|e| e.to_string())?;
        cache
            .load(&engine, program, &wasm, |w| {
                crate::compiler::compile_locked_down_in(&engine, program, w, mount.as_ref())
            })
            .map_err(|e| e.to_string())?;
        let kind = if engine.serves() { SERVING } else { RUNNING };
        Ok(format!(
            "{}\n{kind}",
            cache.entry_for(&wasm).to_string_lossy()
        ))
    })();
    match result {
        Ok(path) => {
            println!("{path}");
            std::process::exit(0)
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1)
        }
    }
}

/// Joins the cgroups and the namespaces of the container whose init is `pid`, all but its
/// mount namespace, which only the compiler child joins (this process keeps the host's to
/// reach the compile cache); returns that one. Everything is opened before anything is joined.
fn enter_container(pid: i32) -> Result<Option<std::fs::File>, String> {
    let join = wasmcell_cgroup::join_files_of(pid).map_err(|e| e.to_string())?;
    let mut namespaces = crate::boundary::namespaces_of(pid)?;
    wasmcell_cgroup::join_self(&join).map_err(|e| e.to_string())?;
    let mount = namespaces
        .iter()
        .position(|(kind, _)| *kind == NamespaceKind::Mount)
        .map(|i| namespaces.remove(i).1);
    crate::boundary::join_namespaces(&namespaces)?;
    Ok(mount)
}

/// `cell-in-runc <id>`: see the module documentation. Never returns.
pub fn main() -> ! {
    let code = run().unwrap_or_else(|code| code);
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn run() -> Result<i32, i32> {
    sys::close_fds_from(PROGRAM_FD + 1);
    let control = sys::take_inherited(CONTROL_FD).map_err(|_| CELL_FAILURE)?;
    let mut status = sys::take_inherited(STATUS_FD).map_err(|_| CELL_FAILURE)?;
    let (prepared, grants, server, ready, spec) = match prepare(control) {
        Ok(p) => p,
        Err(message) => {
            // Also on stderr: nobody waits for the status of a cell under runc.
            eprintln!("wasmcell: {message}");
            let _ = protocol::write_status(&mut status, Err(&message));
            return Err(CELL_FAILURE);
        }
    };
    let _ = protocol::write_status(&mut status, Ok(&ready));
    let status = std::sync::Arc::new(status);
    match server {
        Some(server) => serve_guest(prepared, grants, server, status),
        None => run_guest(&prepared, grants, &spec, &status),
    }
}

type Prepare = (Prepared, Grants, Option<HttpListener>, Ready, RunSpec);

fn prepare(control: std::fs::File) -> Result<Prepare, String> {
    let started = std::time::Instant::now();
    // runc has put the process in its cgroup already; the orders name no files to join.
    let spec = read_orders(&mut BufReader::new(control))?.spec;
    let program = spec.args.first().cloned().unwrap_or_default();
    let socket = sys::take_inherited(PROGRAM_FD).map_err(|e| format!("program fd: {e}"))?;
    let (compiled, serving_engine) =
        sys::receive_file(&socket).map_err(|e| format!("receive the compiled program: {e}"))?;
    drop(socket);
    // The program was compiled for the engine its bytes ask for (`Engine::for_program`); a
    // serving one here has no instance pool.
    let options = settings::engine_options(&spec.settings);
    let engine = if serving_engine == 1 {
        Engine::serving(None, &options)
    } else {
        Engine::running(&options)
    }
    .map_err(|e| settings::engine_refused(&spec.settings, e))?;
    let compiled = wasmcell_engine::load_cache_entry(&engine, &program, compiled)
        .map_err(|e| e.to_string())?;
    let exports = compiled.exports(&engine);
    let mode = exports.mode(spec.settings.http_serve);
    let cpu_deadline = settings::cpu_deadline(&spec.settings, mode)?;
    let prepared = Prepared::new(&engine, &program, compiled, mode).map_err(|e| e.to_string())?;
    let stdin = sys::take_inherited(0).map_err(|e| format!("stdin: {e}"))?;
    let grants = wasmcell_engine::grant(
        &WasiSetup {
            cpu_deadline,
            ..wasi_setup(&spec, None, exports.handles_http())?
        },
        GuestIo {
            stdin: Some(stdin),
            inherit_output: true,
        },
    )
    .map_err(|e| e.to_string())?;
    // The container's init: the terminating signals end it as they end a cell (SIGTERM and
    // SIGINT drain a server first).
    crate::supervisor::exit_on_terminating_signals()?;
    let server = match mode {
        Mode::HttpHandler => Some(HttpListener::open(
            HttpSettings::new(&settings::http_asked(&spec.settings), None),
            spec.settings.metrics_addr.is_some(),
        )?),
        Mode::Command => None,
    };
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    crate::seccomp::install()?;
    Ok((
        prepared,
        grants,
        server,
        Ready {
            outcome: Some(CacheOutcome::Hit),
            millis: started.elapsed().as_secs_f64() * 1000.0,
            wasm_bytes: 0,
            // runc built the boundary.
            boundary_millis: 0.0,
            join_millis: 0.0,
            guest_pid: None,
        },
        spec,
    ))
}
