//! The wasmtime engine: one configuration for programs that run to their exit, one for
//! components that serve HTTP, and the key that says which compiled code each can load.

use sha2::{Digest, Sha256};

use crate::memory::keep_resident;
use crate::world::Exports;
use crate::{Error, Result};

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
        if Exports::of(wasm).handles_http() {
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
