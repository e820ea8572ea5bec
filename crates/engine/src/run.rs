//! Linking and running a guest.
//!
//! [`Prepared::new`] links once (so a missing import is an error at container create, not at
//! start); [`run`] builds the guest's WASI context from exactly what it was granted and runs it
//! on the calling thread.
//!
//! How a guest ends becomes an [`Outcome`]: `proc_exit(n)` and `wasi:cli/exit` are results, not
//! errors (`I32Exit`), a component's `run` returning `Err` is exit 1, and a trap is kept apart so
//! the caller can print it and exit with [`TRAP_EXIT_CODE`].

use std::fs::File;
use std::path::PathBuf;

use wasmtime::component::ResourceTable;
use wasmtime::{InstancePre, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::InputFile;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::{Engine, Error, Program, Result};

/// Exit status of a guest that trapped: 128 + SIGABRT, what a native program that aborts gets
/// and what `wasmtime run` uses.
pub const TRAP_EXIT_CODE: i32 = 134;

/// A linked program, ready to instantiate.
pub struct Prepared {
    name: String,
    engine: Engine,
    kind: PreparedKind,
}

enum PreparedKind {
    Core(InstancePre<CoreState>),
    Component(CommandPre<ComponentState>),
}

/// Store data of a core module guest.
struct CoreState {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// Store data of a component guest.
struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl Prepared {
    /// Links `program` against WASI; fails if it imports anything WASI does not provide or is
    /// not a command (`_start` for a core module, `wasi:cli/run` for a component).
    pub fn new(engine: &Engine, name: &str, program: Program) -> Result<Prepared> {
        let link_err = |reason: String| Error::Link {
            program: name.to_owned(),
            reason,
        };
        let kind = match program {
            Program::Module(module) => {
                let mut linker = wasmtime::Linker::<CoreState>::new(engine.wasmtime());
                wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t| &mut t.wasi)
                    .map_err(|e| Error::Engine(format!("{e:#}")))?;
                exit_with_any_status(&mut linker).map_err(|e| Error::Engine(format!("{e:#}")))?;
                match module.get_export("_start") {
                    Some(wasmtime::ExternType::Func(_)) => {}
                    _ => {
                        return Err(link_err(
                            "it exports no `_start` function (not a WASI command module)".into(),
                        ))
                    }
                }
                let pre = linker
                    .instantiate_pre(&module)
                    .map_err(|e| link_err(format!("{e:#}")))?;
                PreparedKind::Core(pre)
            }
            Program::Component(component) => {
                let mut linker =
                    wasmtime::component::Linker::<ComponentState>::new(engine.wasmtime());
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                    .map_err(|e| Error::Engine(format!("{e:#}")))?;
                let pre = linker
                    .instantiate_pre(&component)
                    .map_err(|e| link_err(format!("{e:#}")))?;
                let pre = CommandPre::new(pre).map_err(|e| {
                    link_err(format!(
                        "it does not export wasi:cli/run (not a command): {e:#}"
                    ))
                })?;
                PreparedKind::Component(pre)
            }
        };
        Ok(Prepared {
            name: name.to_owned(),
            engine: engine.clone(),
            kind,
        })
    }

    /// Whether this is a component.
    pub fn is_component(&self) -> bool {
        matches!(self.kind, PreparedKind::Component(_))
    }
}

/// What the guest is granted, and nothing else.
#[derive(Debug, Clone, Default)]
pub struct WasiSetup {
    /// Arguments, program name first.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Initial working directory (reported through `wasi:cli/environment.initial-cwd`).
    pub cwd: String,
    /// Directories: host path, guest path, read-only.
    pub preopens: Vec<(PathBuf, String, bool)>,
    /// The container's memory limit: no linear memory may grow beyond [`linear_memory_cap`] of
    /// it (`memory.grow` returns -1, which the guest can handle) before the kernel's OOM killer
    /// would end the whole cell.
    pub memory_limit: Option<u64>,
}

/// How large one linear memory may grow under a container memory limit: the limit less a
/// headroom for what the runtime itself keeps in the same cgroup (engine, compiled code, WASI
/// buffers), a quarter of the limit and at most 8 MiB. Without the headroom a guest growing its
/// memory up to the limit would be OOM-killed instead of seeing `memory.grow` fail.
pub fn linear_memory_cap(limit: u64) -> u64 {
    const MAX_HEADROOM: u64 = 8 << 20;
    limit - (limit / 4).min(MAX_HEADROOM)
}

fn limits(setup: &WasiSetup) -> StoreLimits {
    let mut b = StoreLimitsBuilder::new();
    if let Some(limit) = setup.memory_limit {
        let cap = linear_memory_cap(limit);
        b = b.memory_size(usize::try_from(cap).unwrap_or(usize::MAX));
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::linear_memory_cap;

    #[test]
    fn linear_memory_cap_leaves_headroom() {
        assert_eq!(linear_memory_cap(32 << 20), 24 << 20);
        assert_eq!(linear_memory_cap(8 << 20), 6 << 20);
        assert_eq!(linear_memory_cap(1 << 30), (1 << 30) - (8 << 20));
    }
}

/// The guest's stdio: `stdin` `None` is an empty stdin; stdout and stderr are either this
/// process's own fds 1 and 2 (no extra fd is held for them) or discarded.
#[derive(Debug, Default)]
pub struct GuestIo {
    /// Standard input.
    pub stdin: Option<File>,
    /// Whether the guest writes to this process's stdout and stderr (else its output is
    /// discarded).
    pub inherit_output: bool,
}

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this status (returned from its entry point or called exit).
    Exited(i32),
    /// It trapped; the message says why and where.
    Trapped(String),
}

impl Outcome {
    /// The process exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped(_) => TRAP_EXIT_CODE,
        }
    }
}

fn build_ctx(setup: &WasiSetup, io: GuestIo) -> Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    b.args(&setup.args)
        .envs(&setup.env)
        .initial_cwd(&setup.cwd)
        .allow_blocking_current_thread(true)
        // The cell is in the container's network namespace: the guest reaches what a native
        // process of the container would (WASI sockets, TCP and UDP), nothing from the host's.
        // Name lookup stays off: the C library's resolver would load NSS modules, executable
        // mappings the cell's seccomp filter refuses.
        .inherit_network()
        .allow_tcp(true)
        .allow_udp(true);
    if let Some(f) = io.stdin {
        b.stdin(InputFile::new(f));
    }
    if io.inherit_output {
        b.inherit_stdout().inherit_stderr();
    }
    for (host, guest, read_only) in &setup.preopens {
        let perms = if *read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(host, guest, perms).map_err(|e| {
            Error::Wasi(format!(
                "cannot preopen {} as {guest}: {e:#}",
                host.display()
            ))
        })?;
    }
    Ok(b)
}

/// Replaces WASI preview 1's `proc_exit` with one that exits with any status the guest asks
/// for. wasmtime's own traps on 126 and above (a convention of its command line, which keeps
/// those for itself), so `exit(127)` in a guest would end as a trap; a container's exit status
/// is the program's, 0 to 255, as for a native process (the kernel keeps the low 8 bits).
fn exit_with_any_status(linker: &mut wasmtime::Linker<CoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "proc_exit",
        |_: wasmtime::Caller<'_, CoreState>, status: i32| -> wasmtime::Result<()> {
            Err(I32Exit(status).into())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Sorts a guest failure into an exit or a trap.
fn outcome_of(err: wasmtime::Error) -> Outcome {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    Outcome::Trapped(format!("{err:?}"))
}

/// What a guest is granted, opened: its preopened directories and stdio are held as open
/// handles, so the cell can give up its view of the host's filesystem (pivot into the rootfs)
/// between [`grant`] and [`run`].
pub struct Grants {
    builder: WasiCtxBuilder,
    limits: StoreLimits,
}

/// Opens what `setup` and `io` grant the guest.
pub fn grant(setup: &WasiSetup, io: GuestIo) -> Result<Grants> {
    Ok(Grants {
        builder: build_ctx(setup, io)?,
        limits: limits(setup),
    })
}

/// Instantiates and runs the guest to completion on this thread.
///
/// WASI's synchronous host calls run their futures on the tokio runtime of the calling thread's
/// context, and without one on a process-wide runtime of wasmtime-wasi's with a worker thread
/// per core. A guest is one thread, so this gives it a runtime with one worker: a thread fewer
/// to start and end per cell on a two-core node, more on larger ones.
pub fn run(prepared: &Prepared, grants: Grants) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("start the runtime of the guest's host calls", e))?;
    let outcome = {
        let _context = runtime.enter();
        run_in_context(prepared, grants)
    };
    // A host call may have left a blocking read (of stdin, say) behind; the process is about to
    // end, so do not wait for it.
    runtime.shutdown_background();
    outcome
}

fn run_in_context(prepared: &Prepared, grants: Grants) -> Result<Outcome> {
    let Grants {
        mut builder,
        limits,
    } = grants;
    match &prepared.kind {
        PreparedKind::Core(pre) => {
            let state = CoreState {
                wasi: builder.build_p1(),
                limits,
            };
            let mut store = Store::new(prepared.engine.wasmtime(), state);
            store.limiter(|s| &mut s.limits);
            let instance = match pre.instantiate(&mut store) {
                Ok(i) => i,
                Err(e) => return Ok(outcome_of(e)),
            };
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| Error::Link {
                    program: prepared.name.clone(),
                    reason: format!("`_start` has the wrong type: {e:#}"),
                })?;
            Ok(match start.call(&mut store, ()) {
                Ok(()) => Outcome::Exited(0),
                Err(e) => outcome_of(e),
            })
        }
        PreparedKind::Component(pre) => {
            let state = ComponentState {
                ctx: builder.build(),
                table: ResourceTable::new(),
                limits,
            };
            let mut store = Store::new(prepared.engine.wasmtime(), state);
            store.limiter(|s| &mut s.limits);
            let command = match pre.instantiate(&mut store) {
                Ok(c) => c,
                Err(e) => return Ok(outcome_of(e)),
            };
            Ok(match command.wasi_cli_run().call_run(&mut store) {
                Ok(Ok(())) => Outcome::Exited(0),
                Ok(Err(())) => Outcome::Exited(1),
                Err(e) => outcome_of(e),
            })
        }
    }
}
