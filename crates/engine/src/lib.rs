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
#![deny(missing_docs)]

mod cache;
mod error;
mod run;

pub use cache::{
    load_cache_entry, precompile, read_wasm, CacheOutcome, CompileCache, Program, CAP_ENV,
};
pub use error::{Error, Result};
pub use run::{
    grant, linear_memory_cap, run, Grants, GuestIo, Outcome, Prepared, WasiSetup, TRAP_EXIT_CODE,
};

use sha2::{Digest, Sha256};

/// Runs the detection of the host CPU's features that the code generator (through the standard
/// library's cache) and the compile cache's sha256 and sha512 do on first use, so that processes
/// forked afterwards inherit the results. In a VM every `cpuid` instruction traps to the
/// hypervisor, so each process that detects for itself pays for dozens of traps; the zygote calls
/// this once, before it forks any cell.
pub fn detect_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("avx2");
    let _ = Sha256::digest(b"");
    let _ = sha2::Sha512::digest(b"");
}

/// Whether wasm bytes are a component (layer 1) rather than a core module.
pub fn is_component(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && &wasm[..4] == b"\0asm" && wasm[4..8] == [0x0d, 0, 1, 0]
}

/// The wasmtime engine every cell uses, built once per process.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    compat_key: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("compat_key", &self.compat_key)
            .finish()
    }
}

/// Feeds `Hash` output into SHA-256, so a `Hash` value gets a digest that is stable across
/// processes (unlike `DefaultHasher`, whose output is not promised to be).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Engine {
    /// Builds the engine with wasmcell's fixed configuration.
    pub fn new() -> Result<Engine> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .parallel_compilation(true)
            // Fixed here so that no environment variable (WASMTIME_BACKTRACE_DETAILS) changes the
            // compiled code, the cache key, or the trap text a user sees.
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
        let inner = wasmtime::Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&inner.precompile_compatibility_hash(), &mut hasher);
        let compat_key = hex::encode(&hasher.0.finalize()[..16]);
        Ok(Engine { inner, compat_key })
    }

    /// Hex digest of wasmtime's `precompile_compatibility_hash` for this configuration: compiled
    /// code is reusable exactly between engines with the same key.
    pub fn compat_key(&self) -> &str {
        &self.compat_key
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }
}
