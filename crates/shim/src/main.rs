//! `containerd-shim-wasmcell-v1`: the containerd shim (runtime v2) of wasmcell.
//!
//! - `start` / `delete`: containerd's shim protocol, through `containerd-shim`; `start` forks
//!   the daemon that serves the pod (see `daemon`).
//! - `-v`, `-info`: version and RuntimeInfo.
//! - `cell <id>`: internal; the shim runs each wasm container as this binary in cell mode (forked
//!   by the daemon's zygote, see `zygote`, or executed when there is none).
#![deny(unsafe_code)]

mod cell;
mod daemon;
mod error;
mod events;
mod fallback;
mod info;
mod metrics;
mod outstanding;
mod process;
mod proctitle;
mod program;
mod rootfs;
mod rpc;
mod runc;
mod service;
mod shim;
mod stdio;
mod systemd;
mod tasks;
mod zygote;

use std::io::{Read, Write};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(cell::CELL_ARG) => wasmcell_cell::main(),
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
            eprintln!("{}: {e}", info::RUNTIME_ID);
            eprintln!("usage: containerd-shim-wasmcell-v1 [-v] [-info] [-debug] -namespace NS -id ID -address ADDR (start|delete)");
            std::process::exit(2);
        }
    };
    if flags.version {
        print!("{}", info::version_text());
        return;
    }
    if flags.info {
        let mut stdin = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            eprintln!("{}: read stdin: {e}", info::RUNTIME_ID);
            std::process::exit(1);
        }
        match info::runtime_info(&stdin) {
            Ok(bytes) => {
                if std::io::stdout().write_all(&bytes).is_err() {
                    std::process::exit(1);
                }
                return;
            }
            Err(e) => {
                eprintln!("{}: {e}", info::RUNTIME_ID);
                std::process::exit(1);
            }
        }
    }
    if !matches!(flags.action.as_str(), "start" | "delete") {
        eprintln!(
            "{}: unknown action {:?} (expected start or delete)",
            info::RUNTIME_ID,
            flags.action
        );
        std::process::exit(2);
    }
    if let Err(missing) = invoked_by_containerd(&flags) {
        eprintln!(
            "{}: {missing}: containerd runs this binary itself (runtime type {}); to use it, \
             configure containerd and run e.g. `ctr run --runtime {} IMAGE ID`",
            info::RUNTIME_ID,
            info::RUNTIME_ID,
            info::RUNTIME_ID
        );
        std::process::exit(2);
    }
    containerd_shim::run::<shim::WasmcellShim>(info::RUNTIME_ID, None);
}

/// Checks what containerd always passes to `start`, `delete` and the daemon, so a run by hand
/// gets a plain message instead of the framework's terse `Env(NotPresent)`.
fn invoked_by_containerd(flags: &containerd_shim::Flags) -> Result<(), String> {
    if flags.namespace.is_empty() {
        return Err("missing -namespace".into());
    }
    if flags.id.is_empty() {
        return Err("missing -id".into());
    }
    if flags.address.is_empty() {
        return Err("missing -address (containerd's socket)".into());
    }
    if std::env::var_os("TTRPC_ADDRESS").is_none() {
        return Err("TTRPC_ADDRESS is not set".into());
    }
    Ok(())
}
