//! `containerd-shim-wasmcell-v1`: the containerd shim (runtime v2) of wasmcell.
//!
//! - `start` / `delete` ([`cli`]): containerd's shim protocol; `start` forks the daemon that
//!   serves the pod ([`daemon`]).
//! - `-v`, `-info`: version and RuntimeInfo.
//! - `cell <id>`: internal; the shim runs each wasm container as this binary in cell mode (forked
//!   by the daemon's zygote, see `backend::zygote`, or executed when there is none).
//! - `cell-in-runc <id>`, `compile ...`: internal; the runc fallback's process and compiler
//!   (`backend::fallback`).
//!
//! The layers, each using only those below it: [`cli`] and [`daemon`] → [`service`] (the
//! ttrpc adapter, and events to containerd) → [`task`] (the task core) → [`backend`] (cell,
//! runc) → [`host`]; [`rpc`] (ttrpc), [`error`] and [`sync`] are used throughout. See
//! `docs/design.md` for the path of one request.
#![deny(unsafe_code)]

mod backend;
mod cli;
mod daemon;
mod error;
mod host;
mod rpc;
mod service;
mod sync;
mod task;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(backend::CELL_ARG) => wasmcell_cell::main(),
        Some(wasmcell_cell::under_runc::CELL_IN_RUNC_ARG) => wasmcell_cell::under_runc::main(),
        Some(wasmcell_cell::under_runc::COMPILE_ARG) => {
            let rest: Vec<String> = args[2..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            wasmcell_cell::under_runc::compile_main(&rest)
        }
        _ => {}
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", cli::info::RUNTIME_ID);
            eprintln!("usage: containerd-shim-wasmcell-v1 [-v] [-info] [-debug] -namespace NS -id ID -address ADDR (start|delete)");
            std::process::exit(2);
        }
    };
    std::process::exit(cli::run(flags))
}
