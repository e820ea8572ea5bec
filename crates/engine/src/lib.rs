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
//! - [`serve`]: a component exporting `wasi:http/incoming-handler` is served instead: the host
//!   is the HTTP server and each request gets a fresh instance. [`world`] tells which a
//!   component is, from its bytes, before the engine is chosen ([`Engine::for_program`]).
#![deny(missing_docs)]

mod cache;
mod error;
mod run;
pub mod serve;
pub mod world;

pub use cache::{
    load_cache_entry, precompile, read_wasm, CacheOutcome, CompileCache, Program, CAP_ENV,
};
pub use error::{Error, Result};
pub use run::{
    grant, linear_memory_cap, run, Grants, GuestIo, Outcome, Prepared, Role, WasiSetup,
    TRAP_EXIT_CODE,
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

/// The wasmtime engine of a cell: one configuration for programs that run to their exit, one
/// for components that serve HTTP (which also run a component that is both as a command).
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    compat_key: String,
    serves: bool,
}

/// The pool a serving engine takes its instances from: made once, so that a request's instance
/// costs no `mmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Instances alive at once: the requests that may be in flight.
    pub instances: u32,
    /// The most one linear memory may grow to (from the container's memory limit).
    pub memory_cap: Option<u64>,
}

/// Core instances, memories and tables a component instance may take from the pool: more than
/// a componentize-py or jco component has (its guest, the WASI adapter, shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 32;

/// What the pool's idle memory slots may keep resident together: an eighth of the container's
/// memory, or this much without a limit.
const KEEP_RESIDENT_WITHOUT_LIMIT: u64 = 1 << 30;
/// The most one slot keeps resident: more than a componentize-py or componentize-js handler's
/// request dirties.
const KEEP_RESIDENT_PER_SLOT: u64 = 16 << 20;
/// Granularity of what is kept resident: a wasm page.
const WASM_PAGE: u64 = 64 << 10;

/// How many bytes of each memory slot stay resident between instances: reset in place (only the
/// pages the last request dirtied, where the kernel answers `PAGEMAP_SCAN`) rather than given
/// back with `madvise`, whose TLB shootdown interrupts every core the server's threads ran on,
/// and whose pages the next request faults in again (most of a request's memory cost;
/// docs/performance.md). The pool keeps at most `instances` idle slots warm (see
/// [`Engine::serving`]), and a slot in use holds memory the requests' own budget counts, so
/// this much per slot keeps the idle slots within their budget.
fn keep_resident(instances: u32, memory_cap: Option<u64>) -> usize {
    let budget = keep_resident_budget(memory_cap);
    let per_slot = (budget / u64::from(instances.max(1))).min(KEEP_RESIDENT_PER_SLOT);
    usize::try_from(per_slot / WASM_PAGE * WASM_PAGE).unwrap_or(0)
}

/// What all slots may keep resident together.
fn keep_resident_budget(memory_cap: Option<u64>) -> u64 {
    memory_cap.map_or(KEEP_RESIDENT_WITHOUT_LIMIT, |cap| cap / 8)
}

/// The linear memory the requests in flight may hold together under a container memory limit
/// (`serve`'s memory budget): one memory's cap ([`linear_memory_cap`]) less what the pool keeps
/// resident in its idle slots, which the kernel counts against the same limit.
pub(crate) fn requests_memory_budget(limit: u64) -> u64 {
    let cap = linear_memory_cap(limit);
    cap - keep_resident_budget(Some(cap))
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
    /// The engine for programs that run to their exit.
    pub fn new() -> Result<Engine> {
        Engine::build(wasmtime::Config::new(), false)
    }

    /// The engine `wasm` needs: the serving one (without a pool) for a component that can be
    /// served, else the one of [`Engine::new`]. Compiling and loading a program must agree on
    /// this, and both decide it from the bytes alone.
    pub fn for_program(wasm: &[u8]) -> Result<Engine> {
        if world::Exports::of(wasm).handles_http() {
            Engine::serving(None)
        } else {
            Engine::new()
        }
    }

    /// The engine for serving HTTP: its code checks an epoch, so that a request can be cut off
    /// at its deadline. With `pool`, instances come from the pooling allocator; without one, or
    /// where the host refuses the pool's reservation, from `mmap` per instance. The compiled code
    /// is the same either way (one cache key).
    pub fn serving(pool: Option<Pool>) -> Result<Engine> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let Some(pool) = pool else {
            return Engine::build(config, true);
        };
        let n = pool.instances.max(1);
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
            .total_stacks(n)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT);
        if let Some(cap) = pool.memory_cap {
            pooling.max_memory_size(usize::try_from(cap).unwrap_or(usize::MAX));
        }
        let keep = keep_resident(n, pool.memory_cap);
        pooling
            .max_unused_warm_slots(n)
            .linear_memory_keep_resident(keep)
            .table_keep_resident(keep)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut pooled = config.clone();
        pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        match Engine::build(pooled, true) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                log::warn!("no instance pool ({e}); instances are allocated one by one");
                Engine::build(config, true)
            }
        }
    }

    fn build(mut config: wasmtime::Config, serves: bool) -> Result<Engine> {
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
        Ok(Engine {
            inner,
            compat_key,
            serves,
        })
    }

    /// Whether this is a serving engine.
    pub fn serves(&self) -> bool {
        self.serves
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

#[cfg(test)]
mod tests {
    use super::keep_resident;

    #[test]
    fn what_the_pool_keeps_resident_stays_within_its_budget() {
        // No limit, 128 instances: 1 GiB / 128, 8 MiB each.
        assert_eq!(keep_resident(128, None), 8 << 20);
        // A few instances: at most 16 MiB each.
        assert_eq!(keep_resident(4, None), 16 << 20);
        // 64 MiB limit, 256 instances: 8 MiB / 256 = 32 KiB, less than a wasm page: nothing.
        assert_eq!(keep_resident(256, Some(64 << 20)), 0);
        // 1 GiB limit, 64 instances: 128 MiB / 64 = 2 MiB.
        assert_eq!(keep_resident(64, Some(1 << 30)), 2 << 20);
        // Always whole wasm pages.
        assert_eq!(keep_resident(3, Some(3 << 20)) % (64 << 10), 0);
    }
}
