//! What a guest is granted: its command line, env, directories, stdio and memory, opened
//! before the cell locks itself down, and nothing else.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use wasmcell_net::{Resolver, Trust};

use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::InputFile;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::{Error, Result};

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
    /// The container's memory limit: no linear memory may grow beyond [`linear_memory_cap`](crate::linear_memory_cap) of
    /// it (`memory.grow` returns -1, which the guest can handle) before the kernel's OOM killer
    /// would end the whole cell.
    pub memory_limit: Option<u64>,
    /// The operator's cap on one linear memory, where lower than what the limit allows.
    pub memory_max: Option<u64>,
    /// CPU time a command may use before it is interrupted (`crate::deadline`).
    pub cpu_deadline: Option<std::time::Duration>,
    /// What the guest reaches by name, and whom it trusts there.
    pub network: NetworkGrant,
}

/// The container's resolver and TLS roots, which `wasi:sockets/ip-name-lookup` and outgoing
/// `wasi:http` use (the cell reads the container's files for them before it locks itself
/// down). The default is libc's: a nameserver on the container's loopback, no TLS roots.
#[derive(Debug, Clone, Default)]
pub struct NetworkGrant {
    /// The resolver, shared by every lookup of the cell (and so is its cache).
    pub resolver: Arc<Resolver>,
    /// The roots outgoing https trusts; `None`: the guest cannot make https requests.
    pub trust: Option<Arc<Trust>>,
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

impl WasiSetup {
    /// The most one linear memory may grow to: the lower of what the container's memory limit
    /// allows ([`linear_memory_cap`](crate::linear_memory_cap)) and the operator's cap.
    pub fn memory_cap(&self) -> Option<u64> {
        crate::memory::memory_cap(self.memory_limit, self.memory_max)
    }

    /// Gives `b` the guest's command line, env, cwd and network (not its directories).
    pub(crate) fn configure(&self, b: &mut WasiCtxBuilder) {
        b.args(&self.args)
            .envs(&self.env)
            .initial_cwd(&self.cwd)
            // The cell is in the container's network namespace: the guest reaches what a
            // native process of the container would (WASI sockets, TCP and UDP), nothing from
            // the host's. Names resolve through the container's resolver (`name_lookup`), not
            // wasmtime-wasi's.
            .inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
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

/// What a guest is granted, opened: its preopened directories and stdio are held as open
/// handles, so the cell can give up its view of the host's filesystem (pivot into the rootfs)
/// between [`grant`] and [`run`](crate::run).
pub struct Grants {
    pub(crate) builder: WasiCtxBuilder,
    pub(crate) limits: StoreLimits,
    pub(crate) setup: WasiSetup,
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

fn limits(setup: &WasiSetup) -> StoreLimits {
    let mut b = StoreLimitsBuilder::new();
    if let Some(cap) = setup.memory_cap() {
        b = b.memory_size(usize::try_from(cap).unwrap_or(usize::MAX));
    }
    b.build()
}
