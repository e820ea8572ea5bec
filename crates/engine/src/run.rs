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

use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::serve::{self, ServeState};
use crate::world::{Exports, CLI_RUN, HTTP_HANDLER};
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
    Proxy(ProxyPre<ServeState>),
}

/// What a prepared program does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It runs to its exit (a core module's `_start`, a component's `wasi:cli/run`).
    Command,
    /// It serves HTTP until drained (a component's `wasi:http/incoming-handler`).
    HttpHandler,
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
    /// For a component that is also an HTTP handler run as a command: it imports wasi:http.
    http: wasmtime_wasi_http::WasiHttpCtx,
}

impl wasmtime_wasi_http::WasiHttpView for ComponentState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
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
    /// Links `program` against WASI; fails if it imports anything WASI does not provide or is
    /// neither a command (`_start` for a core module, `wasi:cli/run` for a component) nor an
    /// HTTP handler (a component exporting `wasi:http/incoming-handler`). A component that is
    /// both runs as a command unless `serve_requested`.
    pub fn new(
        engine: &Engine,
        name: &str,
        program: Program,
        serve_requested: bool,
    ) -> Result<Prepared> {
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
                let exports = component_exports(engine, &component);
                let serves = exports.handles_http() && (!exports.has(CLI_RUN) || serve_requested);
                if serves {
                    if !engine.serves() {
                        return Err(Error::Engine(format!(
                            "{name} is served, but the engine was not configured for serving"
                        )));
                    }
                    let pre = serve::link(engine.wasmtime(), &component).map_err(link_err)?;
                    PreparedKind::Proxy(pre)
                } else if exports.has(CLI_RUN) {
                    let mut linker =
                        wasmtime::component::Linker::<ComponentState>::new(engine.wasmtime());
                    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                        .map_err(|e| Error::Engine(format!("{e:#}")))?;
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
    pub fn role(&self) -> Role {
        match self.kind {
            PreparedKind::Proxy(_) => Role::HttpHandler,
            _ => Role::Command,
        }
    }

    /// Serves HTTP on `listener` until `drain` becomes readable and the requests in flight
    /// have ended (see [`serve`](crate::serve)); for an HTTP handler only.
    pub fn serve(
        self,
        grants: Grants,
        settings: serve::Settings,
        listener: std::net::TcpListener,
        drain: std::os::fd::OwnedFd,
    ) -> Result<i32> {
        match self.kind {
            PreparedKind::Proxy(pre) => serve::serve(pre, grants, settings, listener, drain),
            _ => Err(Error::Engine(format!(
                "{} is not an HTTP handler",
                self.name
            ))),
        }
    }
}

/// The names a component exports, as the engine sees them.
fn component_exports(engine: &Engine, component: &wasmtime::component::Component) -> Exports {
    let names = component
        .component_type()
        .exports(engine.wasmtime())
        .map(|(name, _)| name.to_owned())
        .collect();
    Exports { names }
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

/// The guest's stdin, read from a file (a pipe, or a terminal's slave side) as wasmtime's
/// [`InputFile`] reads it, and a terminal when that file is one: WASI's `isatty` and
/// `wasi:cli/terminal-stdin` then say so, as they do for stdout and stderr (wasmtime asks the
/// process's own fds 1 and 2), so that an interpreter gives its interactive prompt.
struct GuestStdin {
    file: InputFile,
    terminal: bool,
}

impl GuestStdin {
    fn new(file: File) -> GuestStdin {
        let terminal = std::io::IsTerminal::is_terminal(&file);
        GuestStdin {
            file: InputFile::new(file),
            terminal,
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl wasmtime_wasi::cli::StdinStream for GuestStdin {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.file.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        self.file.p2_stream()
    }
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

impl WasiSetup {
    /// Gives `b` the guest's command line, env, cwd and network (not its directories).
    pub(crate) fn configure(&self, b: &mut WasiCtxBuilder) {
        b.args(&self.args)
            .envs(&self.env)
            .initial_cwd(&self.cwd)
            // The cell is in the container's network namespace: the guest reaches what a
            // native process of the container would (WASI sockets, TCP and UDP), nothing from
            // the host's. Name lookup stays off: the C library's resolver would load NSS
            // modules, executable mappings the cell's seccomp filter refuses.
            .inherit_network()
            .allow_tcp(true)
            .allow_udp(true);
    }
}

fn build_ctx(setup: &WasiSetup, io: GuestIo) -> Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    setup.configure(&mut b);
    b.allow_blocking_current_thread(true);
    if let Some(f) = io.stdin {
        b.stdin(GuestStdin::new(f));
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
    setup: WasiSetup,
}

/// Opens what `setup` and `io` grant the guest.
pub fn grant(setup: &WasiSetup, io: GuestIo) -> Result<Grants> {
    Ok(Grants {
        builder: build_ctx(setup, io)?,
        limits: limits(setup),
        setup: setup.clone(),
    })
}

/// What each request of a served guest is granted: the same as a command's, its directories
/// opened once for all of them.
pub(crate) struct RequestGrants {
    pub(crate) setup: WasiSetup,
    pub(crate) filesystem: wasmtime_wasi::filesystem::WasiFilesystemCtx,
    pub(crate) limits: StoreLimits,
}

impl Grants {
    pub(crate) fn for_requests(self) -> RequestGrants {
        let Grants {
            mut builder,
            limits,
            setup,
        } = self;
        let mut template = builder.build();
        RequestGrants {
            setup,
            filesystem: template.filesystem().clone(),
            limits,
        }
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
        ..
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
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
            };
            let mut store = Store::new(prepared.engine.wasmtime(), state);
            store.limiter(|s| &mut s.limits);
            // A component that could also be served runs in the serving engine, whose code
            // checks the epoch; as a command it has no deadline (nothing ticks the epoch).
            store.set_epoch_deadline(u64::MAX / 2);
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
        PreparedKind::Proxy(_) => Err(Error::Engine(format!(
            "{} is an HTTP handler: it is served, not run",
            prepared.name
        ))),
    }
}
