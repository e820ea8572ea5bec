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
    interruptible: bool,
}

/// What a workload's settings change in the engine's configuration, and so in its compiled code
/// (each combination has its own [`Engine::compat_key`], hence its own compile cache entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// WebAssembly proposals switched on (`true`) or off, by their names in wasmcell's settings
    /// (`gc`, `tail-call`, ...), applied in order over wasmtime's defaults.
    pub proposals: Vec<(String, bool)>,
    /// Whether running code checks an epoch, so that a command can be stopped at a CPU deadline
    /// (a serving engine's code always does, for its requests' deadlines).
    pub interruptible: bool,
}

impl EngineOptions {
    fn apply(&self, config: &mut wasmtime::Config) -> Result<()> {
        for (name, on) in &self.proposals {
            let on = *on;
            match name.as_str() {
                // wasmtime is built here without its `threads` feature: it would validate atomics
                // but fail on the first shared memory, so switching it on is refused at once.
                "threads" if on => {
                    return Err(Error::Engine(
                        "the threads proposal is not available: this wasmtime is built without \
                         shared memories"
                            .into(),
                    ))
                }
                "threads" => config.wasm_features(wasmtime::WasmFeatures::THREADS, false),
                "gc" => config.wasm_gc(on),
                "exceptions" => config.wasm_exceptions(on),
                "memory64" => config.wasm_memory64(on),
                "tail-call" => config.wasm_tail_call(on),
                "multi-memory" => config.wasm_multi_memory(on),
                "simd" => config.wasm_simd(on),
                "relaxed-simd" => config.wasm_relaxed_simd(on),
                "function-references" => config.wasm_function_references(on),
                "wide-arithmetic" => config.wasm_wide_arithmetic(on),
                "custom-page-sizes" => config.wasm_custom_page_sizes(on),
                "extended-const" => config.wasm_extended_const(on),
                other => {
                    return Err(Error::Engine(format!(
                        "no WebAssembly proposal is called {other:?}"
                    )))
                }
            };
        }
        if self.interruptible {
            config.epoch_interruption(true);
        }
        Ok(())
    }
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
    /// The engine for programs that run to their exit, with wasmtime's defaults.
    pub fn new() -> Result<Engine> {
        Engine::running(&EngineOptions::default())
    }

    /// The engine for programs that run to their exit, configured by `options`.
    pub fn running(options: &EngineOptions) -> Result<Engine> {
        let mut config = wasmtime::Config::new();
        options.apply(&mut config)?;
        Engine::build(config, false, options.interruptible)
    }

    /// The engine `wasm` needs: the serving one (without a pool) for a component that can be
    /// served, else the one of [`Engine::running`]. Compiling and loading a program must agree
    /// on this, and both decide it from the bytes and the options alone.
    pub fn for_program(wasm: &[u8], options: &EngineOptions) -> Result<Engine> {
        if Exports::of(wasm).handles_http() {
            Engine::serving(None, options)
        } else {
            Engine::running(options)
        }
    }

    /// The engine for serving HTTP: its code checks an epoch, so that a request can be cut off
    /// at its deadline. With `pool`, instances come from the pooling allocator; without one, or
    /// where the host refuses the pool's reservation, from `mmap` per instance. The compiled code
    /// is the same either way (one cache key).
    pub fn serving(pool: Option<Pool>, options: &EngineOptions) -> Result<Engine> {
        let mut config = wasmtime::Config::new();
        options.apply(&mut config)?;
        config.epoch_interruption(true);
        let Some(pool) = pool else {
            return Engine::build(config, true, true);
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
        match Engine::build(pooled, true, true) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                log::warn!("no instance pool ({e}); instances are allocated one by one");
                Engine::build(config, true, true)
            }
        }
    }

    fn build(mut config: wasmtime::Config, serves: bool, interruptible: bool) -> Result<Engine> {
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
            interruptible,
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

    /// Whether its code checks the epoch (see [`Engine::interrupt`]).
    pub fn interruptible(&self) -> bool {
        self.interruptible
    }

    /// Makes every store of this engine whose epoch deadline has come trap at its next check:
    /// how a command is stopped at its CPU deadline.
    pub fn interrupt(&self) {
        self.inner.increment_epoch();
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }
}
