//! wasmtime, and only wasmtime, lives here.
//!
//! - [`Engine`]: one engine configuration for every cell, with the key that makes compiled code
//!   reusable across processes ([`Engine::compat_key`]).
//! - [`CompileCache`]: the host compile cache. A module is compiled at most once per node per
//!   engine configuration; later starts `mmap` the compiled code. Only files this cache wrote are
//!   ever deserialized: compiled code from an image is never loaded.
//! - [`Prepared`] / [`run`]: link a core module against WASI preview 1 or a component against
//!   WASI 0.2 (`wasi:cli/run`) once, then run it with the guest's capabilities and map how it
//!   ended to an exit status.
//! - [`http_server`]: a component exporting `wasi:http/incoming-handler` is served instead: the
//!   host is the HTTP server and each request gets a fresh instance. [`world`] tells which a
//!   component is, from its bytes, before the engine is chosen ([`Engine::for_program`]), and
//!   decides whether it runs or is served ([`Exports::mode`]).
//! - [`grant`]: what the guest is granted (its command line, env, directories, stdio),
//!   opened before the cell locks itself down; [`linear_memory_cap`]: how much of the
//!   container's memory limit one linear memory may take.
//!
//! | module | what |
//! |---|---|
//! | `engine` | the wasmtime configurations and their compatibility key |
//! | `cache` | the compile cache |
//! | `world` | what a component exports, and what it therefore does |
//! | `grants` | what a guest is granted, opened |
//! | `memory` | how a container's memory limit is shared out |
//! | `name_lookup` | `wasi:sockets/ip-name-lookup` through the container's resolver |
//! | `outgoing` | outgoing `wasi:http`: names, TLS with the container's roots, HTTP/2 |
//! | `run` | linking a guest, running a command |
//! | `deadline` | a command's CPU deadline, through the epoch |
//! | [`http_server`] | serving a `wasi:http/proxy` component |
#![deny(missing_docs)]
// Deserializing compiled code is unsafe (wasmtime trusts it to be its own output): the cache
// module alone may, where it has checked that the file is the cache's own.
#![deny(unsafe_code)]

mod cache;
mod deadline;
mod engine;
mod error;
mod grants;
pub mod http_server;
mod memory;
mod name_lookup;
mod outgoing;
mod run;
pub mod world;

pub use cache::{
    load_cache_entry, precompile, read_wasm, CacheOutcome, CompileCache, Program, CAP_ENV,
};
pub use engine::{detect_cpu_features, Engine, EngineOptions, Pool};
pub use error::{Error, Result};
pub use grants::{grant, Grants, GuestIo, NetworkGrant, WasiSetup};
pub use memory::{linear_memory_cap, memory_cap};
pub use run::{run, Outcome, Prepared, Trap, TrapCause, TRAP_EXIT_CODE};
pub use world::{is_component, Exports, Mode};
