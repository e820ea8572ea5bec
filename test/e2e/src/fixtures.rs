//! The wasm programs the tests run, built by `build.rs` from `test/fixtures`.

/// Prints `hello from wasm` (WAT).
pub const HELLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.wasm"));
/// Calls `proc_exit(7)` (WAT).
pub const EXIT7: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exit7.wasm"));
/// Traps at once (WAT).
pub const TRAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trap.wasm"));
/// Imports a function nobody provides (WAT).
pub const MISSING_IMPORT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/missing_import.wasm"));
/// Loops forever without host calls (WAT).
pub const BUSY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/busy.wasm"));
/// Grows two linear memories to 20 MiB each (WAT): past a 32 MiB limit only together.
pub const TWO_MEMORIES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/two_memories.wasm"));
/// A large generated module (slow to compile, fast to load).
pub const LARGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/large.wasm"));
/// The multi-purpose C program (`probe.c`, wasi-libc).
pub const PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.wasm"));
/// The C program as a WASI 0.2 component (`wasi:cli/run`).
pub const PROBE_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/probe_component.wasm"));
/// A WASI 0.2 component that listens on TCP port [`LISTENER_PORT`] with `wasi:sockets`, answers
/// one connection with [`LISTENER_REPLY`] and exits 0 (`test/fixtures/listener.wat`).
pub const LISTENER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/listener.wasm"));
/// The port [`LISTENER`] listens on.
pub const LISTENER_PORT: u16 = 47811;
/// What [`LISTENER`] writes to its client.
pub const LISTENER_REPLY: &str = "hello from the guest's network namespace\n";

/// Every fixture by file name, for `wasmcell-fixtures`.
pub const ALL: &[(&str, &[u8])] = &[
    ("hello.wasm", HELLO),
    ("exit7.wasm", EXIT7),
    ("trap.wasm", TRAP),
    ("missing_import.wasm", MISSING_IMPORT),
    ("busy.wasm", BUSY),
    ("two_memories.wasm", TWO_MEMORIES),
    ("large.wasm", LARGE),
    ("probe.wasm", PROBE),
    ("probe_component.wasm", PROBE_COMPONENT),
    ("listener.wasm", LISTENER),
];
