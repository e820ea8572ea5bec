//! Linking and running a guest.
//!
//! [`Prepared::new`] links once (so a missing import is an error at container create, not at
//! start); [`run`] builds the guest's WASI context from exactly what it was granted and runs it
//! on the calling thread.
//!
//! How a guest ends becomes an [`Outcome`]: `proc_exit(n)` and `wasi:cli/exit` are results, not
//! errors (`I32Exit`), a component's `run` returning `Err` is exit 1, and a trap is kept apart so
//! the caller can print it and exit with [`TRAP_EXIT_CODE`].

use wasmtime::component::ResourceTable;
use wasmtime::{InstancePre, Store, StoreLimits};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::grants::Grants;
use crate::http_server::{self, RequestState};
use crate::name_lookup::{self, NameLookup, NamesView};
use crate::outgoing::Outgoing;
use crate::world::{Mode, CLI_RUN, HTTP_HANDLER};
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
    Proxy(ProxyPre<RequestState>),
}

/// Store data of a core module guest.
struct CoreState {
    wasi: WasiP1Ctx,
    limits: CommandLimits,
}

/// Store data of a component guest.
struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: CommandLimits,
    /// For a component that is also an HTTP handler run as a command: it imports wasi:http.
    http: wasmtime_wasi_http::WasiHttpCtx,
    /// How its outgoing requests are sent, and its name lookups answered.
    outgoing: Outgoing,
    resolver: std::sync::Arc<wasmcell_net::Resolver>,
}

impl wasmtime_wasi_http::WasiHttpView for ComponentState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

impl NamesView for ComponentState {
    fn names(&mut self) -> NameLookup<'_> {
        NameLookup {
            table: &mut self.table,
            resolver: &self.resolver,
        }
    }
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
    /// Links `program` to do what `mode` says ([`Exports::mode`](crate::Exports::mode) of its
    /// exports decides it); fails if it imports anything WASI does not provide or is neither a
    /// command (`_start` for a core module, `wasi:cli/run` for a component) nor an HTTP handler
    /// (a component exporting `wasi:http/incoming-handler`).
    pub fn new(engine: &Engine, name: &str, program: Program, mode: Mode) -> Result<Prepared> {
        let link_err = |reason: String| Error::Link {
            program: name.to_owned(),
            reason,
        };
        let exports = program.exports(engine);
        let kind = match program {
            Program::Module(_) if mode == Mode::HttpHandler => {
                return Err(link_err("a core module cannot serve HTTP".into()))
            }
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
                if mode == Mode::HttpHandler {
                    if !engine.serves() {
                        return Err(Error::Engine(format!(
                            "{name} is served, but the engine was not configured for serving"
                        )));
                    }
                    let pre = http_server::link(engine.wasmtime(), &component).map_err(link_err)?;
                    PreparedKind::Proxy(pre)
                } else if exports.has(CLI_RUN) {
                    let mut linker =
                        wasmtime::component::Linker::<ComponentState>::new(engine.wasmtime());
                    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                        .map_err(|e| Error::Engine(format!("{e:#}")))?;
                    name_lookup::link(&mut linker).map_err(|e| Error::Engine(format!("{e:#}")))?;
                    if exports.handles_http() {
                        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
                            .map_err(|e| Error::Engine(format!("{e:#}")))?;
                    }
                    let pre = linker
                        .instantiate_pre(&component)
                        .map_err(|e| link_err(format!("{e:#}")))?;
                    let pre = CommandPre::new(pre).map_err(|e| link_err(format!("{e:#}")))?;
                    PreparedKind::Component(pre)
                } else {
                    return Err(link_err(format!(
                        "it exports neither {CLI_RUN} (a command) nor {HTTP_HANDLER} (an HTTP \
                         handler); it exports {}",
                        exports.describe()
                    )));
                }
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
        !matches!(self.kind, PreparedKind::Core(_))
    }

    /// What it does once started.
    pub fn mode(&self) -> Mode {
        match self.kind {
            PreparedKind::Proxy(_) => Mode::HttpHandler,
            _ => Mode::Command,
        }
    }

    /// Serves HTTP on `listener` until `drain` becomes readable and the requests in flight
    /// have ended (see [`http_server`]), counting them in `counters` when metrics are on; for
    /// an HTTP handler only.
    pub fn serve(
        self,
        grants: Grants,
        settings: http_server::Settings,
        listener: std::net::TcpListener,
        drain: std::os::fd::OwnedFd,
        counters: Option<std::sync::Arc<http_server::Counters>>,
    ) -> Result<i32> {
        match self.kind {
            PreparedKind::Proxy(pre) => {
                http_server::serve(pre, grants, settings, listener, drain, counters)
            }
            _ => Err(Error::Engine(format!(
                "{} is not an HTTP handler",
                self.name
            ))),
        }
    }
}

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this status (returned from its entry point or called exit).
    Exited(i32),
    /// It trapped, or was stopped.
    Trapped(Trap),
}

/// A guest's trap: why, and the message (the trap and the top of the wasm backtrace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// What caused it, as far as the host can tell.
    pub cause: TrapCause,
    /// The trap and the top frames of the wasm backtrace, with function names where the
    /// program has them.
    pub message: String,
}

/// What caused a trap, as far as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapCause {
    /// The guest's own code (`unreachable`, an out-of-bounds access, a stack overflow, ...).
    Guest,
    /// The command used up its CPU deadline and was interrupted.
    CpuDeadline,
    /// A `memory.grow` was refused at the memory cap before the trap: the guest most likely
    /// trapped because it ran out of memory. `desired`: the size in bytes it asked for.
    MemoryRefused {
        /// The size the refused growth asked for.
        desired: u64,
    },
}

/// Frames of the wasm backtrace kept in a trap's message: enough to place it, short enough
/// for the 4 KiB the kubelet keeps of a termination message.
const BACKTRACE_FRAMES: usize = 5;

impl Outcome {
    /// The process exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped(_) => TRAP_EXIT_CODE,
        }
    }
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

/// Sorts a guest failure into an exit or a trap; `limits`: the store's, which remember a
/// refused growth; `deadline`: whether the store had a CPU deadline.
fn outcome_of(err: wasmtime::Error, limits: &CommandLimits, deadline: bool) -> Outcome {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    let trap = err.downcast_ref::<wasmtime::Trap>().copied();
    let cause = match (trap, limits.refused) {
        (Some(wasmtime::Trap::Interrupt), _) if deadline => TrapCause::CpuDeadline,
        (_, Some(desired)) => TrapCause::MemoryRefused { desired },
        _ => TrapCause::Guest,
    };
    Outcome::Trapped(Trap {
        cause,
        message: trap_message(&err, trap),
    })
}

/// The trap (wasmtime says `wasm trap: <what>`) or the host call's error, then the top of the
/// wasm backtrace, a frame a line.
fn trap_message(err: &wasmtime::Error, trap: Option<wasmtime::Trap>) -> String {
    let mut message = match trap {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    if let Some(backtrace) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames = backtrace.frames();
        for (i, frame) in frames.iter().take(BACKTRACE_FRAMES).enumerate() {
            let func = match frame.func_name() {
                Some(name) => name.to_owned(),
                None => format!("<wasm function {}>", frame.func_index()),
            };
            let module = frame.module().name().unwrap_or("<module>");
            message.push_str(&format!("\n    {i}: {module}!{func}"));
        }
        if frames.len() > BACKTRACE_FRAMES {
            message.push_str(&format!(
                "\n    ... {} more frames",
                frames.len() - BACKTRACE_FRAMES
            ));
        }
    }
    message
}

/// A command's store limits: the cap on one linear memory ([`Grants`]), remembering the size
/// a refused growth asked for, so that the trap that usually follows is reported as the memory
/// cap's doing.
pub(crate) struct CommandLimits {
    inner: StoreLimits,
    /// The cap `inner` enforces; a growth refused below it (by the memory's own maximum) is
    /// the program's doing, not the cap's.
    cap: Option<u64>,
    refused: Option<u64>,
}

impl CommandLimits {
    pub(crate) fn new(inner: StoreLimits, cap: Option<u64>) -> Self {
        CommandLimits {
            inner,
            cap,
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for CommandLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        // Only the last growth counts: a refusal the guest handled, followed by growths that
        // succeeded, did not cause a later trap.
        self.refused = (!allowed && self.cap.is_some_and(|cap| desired as u64 > cap))
            .then_some(desired as u64);
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
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
    let deadline = grants.setup.cpu_deadline;
    if deadline.is_some() && !prepared.engine.interruptible() {
        return Err(Error::Engine(format!(
            "{} has a CPU deadline, but its engine's code does not check one",
            prepared.name
        )));
    }
    // Dropped when the guest ends, which ends the watcher.
    let _watching = deadline
        .map(|d| crate::deadline::watch_cpu_time(prepared.engine.clone(), d))
        .transpose()?;
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
        setup,
    } = grants;
    let deadline = setup.cpu_deadline.is_some();
    // With a deadline, the first tick of the epoch (the watcher's, once the CPU time is used up)
    // interrupts the guest. Without one nothing ticks the epoch, but a component that could
    // also be served runs in the serving engine, whose code checks it anyway.
    let epoch_deadline = if deadline { 1 } else { u64::MAX / 2 };
    let limits = CommandLimits::new(limits, setup.memory_cap());
    match &prepared.kind {
        PreparedKind::Core(pre) => {
            let state = CoreState {
                wasi: builder.build_p1(),
                limits,
            };
            let mut store = Store::new(prepared.engine.wasmtime(), state);
            store.limiter(|s| &mut s.limits);
            if prepared.engine.interruptible() {
                store.set_epoch_deadline(epoch_deadline);
            }
            let instance = match pre.instantiate(&mut store) {
                Ok(i) => i,
                Err(e) => return Ok(outcome_of(e, &store.data().limits, deadline)),
            };
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| Error::Link {
                    program: prepared.name.clone(),
                    reason: format!("`_start` has the wrong type: {e:#}"),
                })?;
            Ok(match start.call(&mut store, ()) {
                Ok(()) => Outcome::Exited(0),
                Err(e) => outcome_of(e, &store.data().limits, deadline),
            })
        }
        PreparedKind::Component(pre) => {
            let state = ComponentState {
                ctx: builder.build(),
                table: ResourceTable::new(),
                limits,
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                outgoing: Outgoing::new(
                    setup.network.resolver.clone(),
                    setup.network.trust.clone(),
                    None,
                ),
                resolver: setup.network.resolver.clone(),
            };
            let mut store = Store::new(prepared.engine.wasmtime(), state);
            store.limiter(|s| &mut s.limits);
            if prepared.engine.interruptible() {
                store.set_epoch_deadline(epoch_deadline);
            }
            let command = match pre.instantiate(&mut store) {
                Ok(c) => c,
                Err(e) => return Ok(outcome_of(e, &store.data().limits, deadline)),
            };
            Ok(match command.wasi_cli_run().call_run(&mut store) {
                Ok(Ok(())) => Outcome::Exited(0),
                Ok(Err(())) => Outcome::Exited(1),
                Err(e) => outcome_of(e, &store.data().limits, deadline),
            })
        }
        PreparedKind::Proxy(_) => Err(Error::Engine(format!(
            "{} is an HTTP handler: it is served, not run",
            prepared.name
        ))),
    }
}
