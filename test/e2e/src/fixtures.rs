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
/// [`TWO_MEMORIES`] sleeping 8 s before it grows.
pub const DELAYED_HOG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/delayed_hog.wasm"));
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
/// [`LISTENER`] answering every connection until it is stopped: a long-running TCP service.
pub const SERVER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/server.wasm"));
/// The port [`LISTENER`] and [`SERVER`] listen on.
pub const LISTENER_PORT: u16 = 47811;
/// What [`LISTENER`] writes to its client.
pub const LISTENER_REPLY: &str = "hello from the guest's network namespace\n";

/// A wasi:http/proxy component (`test/fixtures/http_handler.wat`): answers
/// [`HTTP_HELLO`] and writes [`HANDLER_LINE`] to stdout; the paths `/trap`, `/loop` and `/slow`
/// trap, spin forever, and sleep 1.5 s before answering.
pub const HTTP_HANDLER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/http_handler.wasm"));
/// [`HTTP_HANDLER`] that also exports `wasi:cli/run`, which prints [`RAN_AS_COMMAND`].
pub const HTTP_AND_COMMAND: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/http_and_command.wasm"));
/// A wasi:http/proxy component (`test/fixtures/http_echo.wat`) that streams a request's body
/// back and answers `x-path` (the path and query) and `x-echo` (the request's `x-test`).
pub const HTTP_ECHO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/http_echo.wasm"));
/// A wasi:http/proxy component (`test/fixtures/http_fetch.wat`) that answers a request for
/// `/<host>:<port>` with the body of `GET http://<host>:<port>/upstream` (an outgoing request).
pub const HTTP_FETCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/http_fetch.wasm"));
/// [`HTTP_FETCH`] fetching `https://<host>:<port>/upstream`.
pub const HTTPS_FETCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/https_fetch.wasm"));
/// A WASI 0.2 command (`test/fixtures/resolve.wat`) that looks each of its arguments up with
/// `wasi:sockets/ip-name-lookup` and prints `<name> <address>` per address, or `<name> error
/// <code>` (18 name-unresolvable, 19 temporary-resolver-failure); exit 1 if any failed.
pub const RESOLVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/resolve.wasm"));
/// A component that exports neither `wasi:cli/run` nor `wasi:http/incoming-handler`, only a
/// function `greet`.
pub const NO_WORLD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/no_world.wasm"));
/// [`HTTP_HANDLER`]'s answer from a fresh instance.
pub const HTTP_HELLO: &str = "hello from request 1\n";
/// The line [`HTTP_HANDLER`] writes to stdout per request, in two writes.
pub const HANDLER_LINE: &str =
    "handler line: part one of two, then --- part two of two, written apart, ends.";
/// What [`HTTP_AND_COMMAND`] prints when it runs as a command.
pub const RAN_AS_COMMAND: &str = "ran as a command\n";

/// A pod sandbox's native pause program (`pause.c`, static ELF) for the CRI tests.
pub const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// A WASI preview 1 module of about `mib` MiB that prints `hello from a big module`: the bulk
/// is a data segment, so it is large to store, hash and read from the content store, not to
/// compile.
pub fn big_module(mib: usize) -> Vec<u8> {
    let bytes = mib << 20;
    let pages = bytes / 65536 + 2;
    let filler = "w".repeat(bytes);
    let text = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 16) "hello from a big module\n")
  (data (i32.const 65536) "{filler}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 24))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    );
    wat::parse_str(text).expect("the big module's text")
}

/// Grows its memory until refused, then traps (`grow.wat`).
pub const GROW: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/grow.wasm"));
/// Links, but its `_start` takes an argument (`bad_start.wat`).
pub const BAD_START: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bad_start.wasm"));
/// Uses one SIMD instruction and exits 0 (`simd.wat`).
pub const SIMD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/simd.wasm"));

/// Every fixture by file name, for `wasmcell-fixtures`.
pub const ALL: &[(&str, &[u8])] = &[
    ("hello.wasm", HELLO),
    ("exit7.wasm", EXIT7),
    ("trap.wasm", TRAP),
    ("missing_import.wasm", MISSING_IMPORT),
    ("busy.wasm", BUSY),
    ("two_memories.wasm", TWO_MEMORIES),
    ("grow.wasm", GROW),
    ("bad_start.wasm", BAD_START),
    ("simd.wasm", SIMD),
    ("delayed_hog.wasm", DELAYED_HOG),
    ("large.wasm", LARGE),
    ("probe.wasm", PROBE),
    ("probe_component.wasm", PROBE_COMPONENT),
    ("listener.wasm", LISTENER),
    ("server.wasm", SERVER),
    ("http_handler.wasm", HTTP_HANDLER),
    ("http_and_command.wasm", HTTP_AND_COMMAND),
    ("http_echo.wasm", HTTP_ECHO),
    ("http_fetch.wasm", HTTP_FETCH),
    ("https_fetch.wasm", HTTPS_FETCH),
    ("resolve.wasm", RESOLVE),
    ("no_world.wasm", NO_WORLD),
];
