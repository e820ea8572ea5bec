//! The cell as the process of a runc container: the fallback for specs the cell cannot honour
//! itself (an AppArmor or SELinux label, a seccomp profile of the spec, user-namespace mappings,
//! cgroup settings it does not implement). runc builds the whole kernel boundary as it does for
//! any container; this process only loads the guest and runs it, with the cell's seccomp
//! allow-list stacked on whatever runc applied.
//!
//! Two modes of the shim binary serve it:
//!
//! - [`compile_main`] (`compile <cache-dir> <program>`), run by the shim on the host before
//!   `runc create`: loads the wasm on fd [`PROGRAM_FD`] from the compile cache or compiles it
//!   into the cache, and prints the entry's path. Bad wasm fails here, so Create reports it.
//! - [`main`] (`cell-in-runc <id>`), the container's process: fds 0-2 are the container's stdio
//!   (runc's), [`CONTROL_FD`] carries the orders with the run spec (paths as the container sees them), the
//!   status goes to [`STATUS_FD`] as for a cell, and [`PROGRAM_FD`] is the compiled program,
//!   opened by the shim from the cache (the container cannot see the cache). There is no start
//!   byte: `runc start` is the start.
//!
//! [`CONTROL_FD`]: crate::CONTROL_FD
//! [`STATUS_FD`]: crate::STATUS_FD
//! [`PROGRAM_FD`]: crate::PROGRAM_FD

use std::io::{BufReader, Write};

use wasmcell_engine::{CacheOutcome, CompileCache, Engine, Grants, GuestIo, Prepared};

use crate::{protocol, read_orders, run_guest, sys, wasi_setup, Ready, CELL_FAILURE};
use crate::{CONTROL_FD, PROGRAM_FD, STATUS_FD};

/// The argument that makes the shim binary the process of a runc container.
pub const CELL_IN_RUNC_ARG: &str = "cell-in-runc";
/// The argument that makes the shim binary compile a program into the cache.
pub const COMPILE_ARG: &str = "compile";

/// `compile <cache-dir> <program> [<cgroup file>...]`: joins the cgroup through the files
/// given (the container's, which the shim made), then loads or compiles; see the module
/// documentation. Never returns.
pub fn compile_main(args: &[String]) -> ! {
    let result = (|| -> Result<String, String> {
        let [dir, program, join @ ..] = args else {
            return Err(format!(
                "usage: {COMPILE_ARG} <cache-dir> <program> [<cgroup file>...]"
            ));
        };
        let join: Vec<std::path::PathBuf> = join.iter().map(Into::into).collect();
        crate::cgroup::join_self(&join).map_err(|e| e.to_string())?;
        let engine = Engine::new().map_err(|e| e.to_string())?;
        let cache = CompileCache::open(dir.as_ref(), &engine).map_err(|e| e.to_string())?;
        let mut file = sys::take_inherited(PROGRAM_FD).map_err(|e| format!("program fd: {e}"))?;
        let wasm = wasmcell_engine::read_wasm(&mut file, program).map_err(|e| e.to_string())?;
        cache
            .load(&engine, program, &wasm, |w| {
                crate::compiler::compile_locked_down(&engine, program, w)
            })
            .map_err(|e| e.to_string())?;
        Ok(cache.entry_for(&wasm).to_string_lossy().into_owned())
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
    let (prepared, grants, ready) = match prepare(control) {
        Ok(p) => p,
        Err(message) => {
            // Also on stderr: nobody waits for the status of a cell under runc.
            eprintln!("wasmcell: {message}");
            let _ = protocol::write_status(&mut status, Err(&message));
            return Err(CELL_FAILURE);
        }
    };
    let _ = protocol::write_status(&mut status, Ok(&ready));
    drop(status);
    run_guest(&prepared, grants)
}

fn prepare(control: std::fs::File) -> Result<(Prepared, Grants, Ready), String> {
    let started = std::time::Instant::now();
    // runc has put the process in its cgroup already; the orders name no files to join.
    let spec = read_orders(&mut BufReader::new(control))?.spec;
    let program = spec.args.first().cloned().unwrap_or_default();
    let engine = Engine::new().map_err(|e| e.to_string())?;
    let compiled = sys::take_inherited(PROGRAM_FD).map_err(|e| format!("program fd: {e}"))?;
    let compiled = wasmcell_engine::load_cache_entry(&engine, &program, compiled)
        .map_err(|e| e.to_string())?;
    let prepared = Prepared::new(&engine, &program, compiled).map_err(|e| e.to_string())?;
    let stdin = sys::take_inherited(0).map_err(|e| format!("stdin: {e}"))?;
    let grants = wasmcell_engine::grant(
        &wasi_setup(&spec, None),
        GuestIo {
            stdin: Some(stdin),
            inherit_output: true,
        },
    )
    .map_err(|e| e.to_string())?;
    // The container's init: the terminating signals end it as they end a cell.
    crate::supervisor::exit_on_terminating_signals()?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    crate::seccomp::install()?;
    Ok((
        prepared,
        grants,
        Ready {
            outcome: Some(CacheOutcome::Hit),
            millis: started.elapsed().as_secs_f64() * 1000.0,
            wasm_bytes: 0,
            // runc built the boundary.
            boundary_millis: 0.0,
            join_millis: 0.0,
            guest_pid: None,
        },
    ))
}
