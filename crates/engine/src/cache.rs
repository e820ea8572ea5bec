//! The host compile cache.
//!
//! Layout: `<root>/<compat key>/<sha256 of the wasm>.cwasm`, every level owned by the shim's
//! user with mode 0700, every file 0600. The compat key is wasmtime's
//! `precompile_compatibility_hash` for our configuration, so a wasmtime upgrade or a config
//! change starts a fresh subdirectory instead of loading incompatible code.
//!
//! Why this is safe to `mmap` as native code: a file is only ever deserialized from this
//! directory, which only this user can write, and only under the name of the sha256 of the wasm
//! bytes it was compiled from by [`Engine`]. Bytes from an image are always compiled, never
//! deserialized.
//!
//! Concurrent first starts of the same module take an exclusive `flock` on `<sha256>.lock`, so a
//! module is compiled once per node even when many pods start it at the same moment. The wait
//! for that lock is bounded ([`LOCK_WAIT`]); the lock file goes when its entry is written.
//!
//! **Who does what.** [`CompileCache::load`] takes the compiler as an argument: the cell passes
//! one that compiles in a locked-down child (no privileges, no file system, a seccomp filter),
//! which only hands back the compiled bytes. This process hashes the input, names the entry and
//! writes it, so a compiler subverted by hostile wasm can at most spoil the entry of that same
//! wasm, never plant code under another program's name.
//!
//! **Bounded.** After each write the oldest entries go until the cache is under its size cap
//! ([`DEFAULT_CAP`]); stale temporary and lock files left by killed writers go too. An entry
//! that fails to load is compiled again and replaced by rename, never deleted first: another task
//! may be using it. A full disk fails with an error that says so.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Module;

use crate::world::{is_component, Exports};
use crate::{Engine, Error, Result};

/// A compiled program, ready to link.
pub enum Program {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

impl Program {
    /// What it exports, as the engine sees the compiled code: what [`Exports::of`] reads from
    /// its bytes, for a process that has only the compiled program (the cell under runc).
    pub fn exports(&self, engine: &Engine) -> Exports {
        match self {
            Program::Module(_) => Exports::default(),
            Program::Component(component) => Exports {
                names: component
                    .component_type()
                    .exports(engine.wasmtime())
                    .map(|(name, _)| name.to_owned())
                    .collect(),
            },
        }
    }
}

/// Where a program came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from the cache.
    Hit,
    /// Compiled now and stored in the cache.
    Compiled,
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheOutcome::Hit => "cache-hit",
            CacheOutcome::Compiled => "compiled",
        })
    }
}

/// How long a start waits for another process compiling the same program before it fails.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);
/// The cache's size cap unless [`CAP_ENV`] sets another: past it, the least recently used
/// entries are removed.
pub const DEFAULT_CAP: u64 = 4 << 30;
/// The environment variable that sets the cache's size cap, in bytes.
pub const CAP_ENV: &str = "WASMCELL_CACHE_MAX_BYTES";
/// Temporary and lock files older than this were left by a writer that was killed.
const STALE: Duration = Duration::from_secs(600);
/// A hit refreshes its entry's time at most this often, for the least-recently-used order.
const TOUCH_EVERY: Duration = Duration::from_secs(3600);

/// The compile cache of one engine configuration.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    cap: u64,
}

/// Creates `dir` (mode 0700) if needed and checks that only we can use it.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    let err = |reason: String| Error::Cache {
        dir: dir.to_owned(),
        reason,
    };
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(err(format!("cannot create: {e}"))),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(format!("cannot stat: {e}")))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(err("is not a directory (a symlink is refused)".into()));
    }
    if meta.uid() != euid {
        return Err(err(format!(
            "is owned by uid {}, not by the shim's uid {euid}: refusing to load compiled code from it",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(err(format!(
            "has mode {:o}: it must be 0700 so that nobody else can plant compiled code",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The metadata of a cache entry if it is a regular file of ours that nobody else can write.
fn entry_is_ours(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(path).ok().filter(|m| {
        m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

impl CompileCache {
    /// Opens (creating if needed) the cache for `engine` under `root`.
    pub fn open(root: &Path, engine: &Engine) -> Result<CompileCache> {
        ensure_private_dir(root)?;
        let dir = root.join(engine.compat_key());
        ensure_private_dir(&dir)?;
        Ok(CompileCache {
            dir,
            cap: configured_cap(),
        })
    }

    /// The same cache with another size cap, in bytes.
    pub fn with_cap(mut self, cap: u64) -> CompileCache {
        self.cap = cap;
        self
    }

    /// The directory holding this engine's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the entry for wasm bytes with this sha256.
    pub fn entry_path(&self, sha256_hex: &str) -> PathBuf {
        self.dir.join(format!("{sha256_hex}.cwasm"))
    }

    /// Path of the entry for `wasm` (whether or not it exists yet).
    pub fn entry_for(&self, wasm: &[u8]) -> PathBuf {
        self.entry_path(&hex::encode(Sha256::digest(wasm)))
    }

    /// The compiled program for `wasm` if the cache holds it; never compiles (so never starts
    /// compiler threads).
    pub fn lookup(&self, engine: &Engine, wasm: &[u8]) -> Option<Program> {
        let key = hex::encode(Sha256::digest(wasm));
        self.try_deserialize(engine, is_component(wasm), &self.entry_path(&key))
    }

    /// Returns the compiled program for `wasm`, from the cache or by compiling it (once per
    /// node) with `compile`, which gets the wasm and returns what [`precompile`] returns for
    /// it.
    pub fn load(
        &self,
        engine: &Engine,
        program: &str,
        wasm: &[u8],
        compile: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<(Program, CacheOutcome)> {
        let key = hex::encode(Sha256::digest(wasm));
        let path = self.entry_path(&key);
        let component = is_component(wasm);
        if let Some(p) = self.try_deserialize(engine, component, &path) {
            return Ok((p, CacheOutcome::Hit));
        }
        let lock = self.lock(&key, LOCK_WAIT)?;
        // Someone else may have compiled it while we waited for the lock.
        if let Some(p) = self.try_deserialize(engine, component, &path) {
            return Ok((p, CacheOutcome::Hit));
        }
        let compiled = compile(wasm)?;
        self.store(&key, &compiled)?;
        drop(lock);
        self.evict(&path);
        let p = self
            .try_deserialize(engine, component, &path)
            .ok_or_else(|| Error::Cache {
                dir: self.dir.clone(),
                reason: format!(
                    "the compiler's output for {program} does not load: {}",
                    path.display()
                ),
            })?;
        Ok((p, CacheOutcome::Compiled))
    }

    /// Takes the compile lock of entry `key`, waiting at most `wait` for another holder.
    fn lock(&self, key: &str, wait: Duration) -> Result<EntryLock> {
        let path = self.dir.join(format!("{key}.lock"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(EntryLock { path, _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Cache {
                        dir: self.dir.clone(),
                        reason: format!(
                            "another process has been compiling the same program for more \
                             than {} s (it holds {})",
                            wait.as_secs(),
                            path.display()
                        ),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("lock {}", path.display()), e))
                }
            }
        }
    }

    /// Writes entry `key` whole: a temporary file, synced, renamed over whatever was there
    /// (a task still using the old file keeps its copy).
    fn store(&self, key: &str, compiled: &[u8]) -> Result<()> {
        let path = self.entry_path(key);
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(compiled)?;
            f.sync_all()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::StorageFull {
                Error::Cache {
                    dir: self.dir.clone(),
                    reason: format!(
                        "its file system is full: no room for the {} bytes compiled for {} \
                         (free space there, or give the cache a smaller cap)",
                        compiled.len(),
                        path.display()
                    ),
                }
            } else {
                Error::io(format!("write {}", path.display()), e)
            }
        })
    }

    /// Removes temporary and lock files left by killed writers, then the least recently used
    /// entries (never `keep`) until the cache is within its cap. Best effort: the cache stays
    /// usable whatever fails here.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        for e in dir.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") || name.ends_with(".lock") {
                if age > STALE {
                    let _ = std::fs::remove_file(&path);
                }
            } else if name.ends_with(".cwasm") {
                total += meta.len();
                if path != keep {
                    entries.push((age, meta.len(), path));
                }
            }
        }
        // Oldest first.
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (_, len, path) in entries {
            if total <= self.cap {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                log::info!("compile cache over its cap: removed {}", path.display());
                total -= len;
            }
        }
    }

    /// Deserializes an entry if it exists, is ours and loads. An entry that does not load is
    /// left in place (another task may be using it): the caller compiles it again and the new
    /// entry replaces it.
    #[allow(unsafe_code)]
    fn try_deserialize(&self, engine: &Engine, component: bool, path: &Path) -> Option<Program> {
        let meta = entry_is_ours(path)?;
        // SAFETY: `path` is in a directory only this user can write (checked by
        // `ensure_private_dir`), the file is ours and not writable by others (`entry_is_ours`),
        // and every file in it was written by `load` from `precompile_*` of an engine with the
        // same compatibility key. wasmtime additionally checks the header and the engine
        // compatibility before using the code.
        let loaded = unsafe {
            if component {
                Component::deserialize_file(engine.wasmtime(), path).map(Program::Component)
            } else {
                Module::deserialize_file(engine.wasmtime(), path).map(Program::Module)
            }
        };
        match loaded {
            Ok(p) => {
                touch(path, &meta);
                Some(p)
            }
            Err(e) => {
                log::warn!("cache entry {} does not load: {e:#}", path.display());
                None
            }
        }
    }
}

/// The size cap [`CAP_ENV`] sets, else [`DEFAULT_CAP`]; a value that is not a number is
/// reported and ignored.
fn configured_cap() -> u64 {
    match std::env::var(CAP_ENV) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            log::warn!("{CAP_ENV}={v:?} is not a number of bytes; the cap is {DEFAULT_CAP}");
            DEFAULT_CAP
        }),
        Err(_) => DEFAULT_CAP,
    }
}

/// Compiles `wasm` (a module or a component) to what the cache stores. In this process:
/// callers that take hostile input run it in a locked-down child (see the module documentation).
pub fn precompile(engine: &Engine, program: &str, wasm: &[u8]) -> Result<Vec<u8>> {
    if is_component(wasm) {
        engine.wasmtime().precompile_component(wasm)
    } else {
        engine.wasmtime().precompile_module(wasm)
    }
    .map_err(|e| Error::Compile {
        program: program.to_owned(),
        reason: format!("{e:#}"),
    })
}

/// The compile lock of one entry, released when dropped, whether the compile succeeded or
/// not. The lock file goes before the lock: a waiter that opened it still takes it, then finds
/// the entry (or compiles it itself).
struct EntryLock {
    path: PathBuf,
    _file: File,
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sets an entry's modification time to now, at most every [`TOUCH_EVERY`], so that eviction
/// takes the least recently used entries first. `meta`: the entry's, as just read.
fn touch(path: &Path, meta: &std::fs::Metadata) {
    let old = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > TOUCH_EVERY);
    if old {
        if let Ok(f) = File::options().append(true).open(path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

/// Loads a cache entry that was opened for us by the shim, which looked it up in (or compiled it
/// into) the root-only cache with [`CompileCache::load`]: how a cell under runc, which cannot see
/// the cache, gets its program. Never call it on a file that did not come from the cache.
#[allow(unsafe_code)]
pub fn load_cache_entry(engine: &Engine, program: &str, mut file: File) -> Result<Program> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| Error::io(format!("read the compiled {program}"), source))?;
    let not_ours = || {
        Error::Engine(format!(
            "the compiled {program} is not a usable cache entry"
        ))
    };
    // SAFETY: the shim opened this file from the compile cache (see `try_deserialize` for why
    // its entries are trusted) and passed it to this process; wasmtime checks the header and the
    // engine compatibility before using the code.
    unsafe {
        match wasmtime::Engine::detect_precompiled(&bytes) {
            Some(wasmtime::Precompiled::Module) => Module::deserialize(engine.wasmtime(), &bytes)
                .map(Program::Module)
                .map_err(|_| not_ours()),
            Some(wasmtime::Precompiled::Component) => {
                Component::deserialize(engine.wasmtime(), &bytes)
                    .map(Program::Component)
                    .map_err(|_| not_ours())
            }
            None => Err(not_ours()),
        }
    }
}

/// Reads the whole wasm of `program` from an already open file.
pub fn read_wasm(file: &mut File, program: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {program}"), e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"(module (func (export "_start")))"#;

    /// A compiler in this process.
    fn here(engine: &Engine) -> impl FnOnce(&[u8]) -> Result<Vec<u8>> + '_ {
        move |w| precompile(engine, "hello", w)
    }

    /// A module of `n` functions, so that its compiled form is larger than its text.
    fn module(n: usize) -> Vec<u8> {
        let funcs: String = (0..n)
            .map(|i| format!("(func (export \"f{i}\") (result i32) i32.const {i})"))
            .collect();
        wat::parse_str(format!("(module {funcs})")).expect("wat")
    }

    /// The names of the files in the cache's directory.
    fn files(cache: &CompileCache) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache.dir())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_entry_is_written_by_the_caller_and_its_lock_file_goes() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("cache"), &engine).expect("open");
        let wasm = wat::parse_str(HELLO).expect("wat");
        let (_, outcome) = cache
            .load(&engine, "hello", &wasm, |w| {
                // The compiler only returns bytes: it has no say in where they go.
                precompile(&engine, "hello", w)
            })
            .expect("load");
        assert_eq!(outcome, CacheOutcome::Compiled);
        let key = hex::encode(Sha256::digest(&wasm));
        assert_eq!(files(&cache), vec![format!("{key}.cwasm")]);
    }

    #[test]
    fn a_compiler_that_returns_something_else_fails_the_load() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("cache"), &engine).expect("open");
        let wasm = wat::parse_str(HELLO).expect("wat");
        let err = match cache.load(&engine, "hello", &wasm, |_| Ok(b"forged".to_vec())) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("forged bytes loaded"),
        };
        assert!(err.contains("does not load"), "{err}");
    }

    #[test]
    fn the_lock_wait_is_bounded() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("cache"), &engine).expect("open");
        let held = cache.lock("k", Duration::ZERO).expect("first lock");
        let err = match cache.lock("k", Duration::from_millis(100)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a held lock was taken"),
        };
        assert!(err.contains("has been compiling the same program"), "{err}");
        drop(held);
        assert!(files(&cache).is_empty(), "{:?}", files(&cache));
    }

    #[test]
    fn the_oldest_entries_go_past_the_cap_and_stale_leftovers_go_too() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("cache"), &engine).expect("open");
        let programs: Vec<Vec<u8>> = (1..=3).map(module).collect();
        let mut sizes = Vec::new();
        for (i, wasm) in programs.iter().enumerate() {
            cache.load(&engine, "m", wasm, here(&engine)).expect("load");
            let path = cache.entry_for(wasm);
            sizes.push(std::fs::metadata(&path).expect("entry").len());
            // Make the first entry the least recently used.
            let age = Duration::from_secs(100 * (3 - i as u64));
            let f = File::options().append(true).open(&path).expect("open");
            f.set_modified(SystemTime::now() - age).expect("set time");
        }
        let stale = SystemTime::now() - STALE - Duration::from_secs(1);
        for leftover in [".dead.1.tmp", "dead.lock"] {
            let f = File::create(cache.dir().join(leftover)).expect("leftover");
            f.set_modified(stale).expect("set time");
        }
        // Room for the newest two only.
        let small = cache.clone().with_cap(sizes[1] + sizes[2]);
        small.evict(&cache.entry_for(&programs[2]));
        let mut want: Vec<String> = programs[1..]
            .iter()
            .map(|w| format!("{}.cwasm", hex::encode(Sha256::digest(w))))
            .collect();
        want.sort();
        assert_eq!(files(&cache), want);
    }

    #[test]
    fn a_full_file_system_fails_the_load_and_says_so() {
        let root = tempfile::tempdir().expect("tempdir");
        let mnt = root.path().join("small");
        std::fs::create_dir(&mnt).expect("mkdir");
        // A 16 KiB tmpfs: root can mount one; elsewhere the test has nothing to show.
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here");
            return;
        }
        let engine = Engine::new().expect("engine");
        let result = CompileCache::open(&mnt.join("cache"), &engine).and_then(|cache| {
            let wasm = module(400);
            cache
                .load(&engine, "big", &wasm, here(&engine))
                .map(|_| files(&cache))
        });
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        let err = match result {
            Err(e) => e.to_string(),
            Ok(files) => panic!("stored in 16 KiB: {files:?}"),
        };
        assert!(err.contains("file system is full"), "{err}");
    }

    #[test]
    fn compiles_once_then_hits() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("cache"), &engine).expect("open");
        let wasm = wat::parse_str(HELLO).expect("wat");
        let (_, first) = cache
            .load(&engine, "hello", &wasm, here(&engine))
            .expect("first");
        assert_eq!(first, CacheOutcome::Compiled);
        let (_, second) = cache
            .load(&engine, "hello", &wasm, here(&engine))
            .expect("second");
        assert_eq!(second, CacheOutcome::Hit);
    }

    #[test]
    fn refuses_a_directory_others_can_write() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cache");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let engine = Engine::new().expect("engine");
        let err = CompileCache::open(&dir, &engine).expect_err("world-writable");
        assert!(err.to_string().contains("must be 0700"), "{err}");
    }

    #[test]
    fn corrupt_entry_is_recompiled_not_trusted() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("c"), &engine).expect("open");
        let wasm = wat::parse_str(HELLO).expect("wat");
        let key = hex::encode(Sha256::digest(&wasm));
        std::fs::write(cache.entry_path(&key), b"not compiled code").expect("plant");
        std::fs::set_permissions(
            cache.entry_path(&key),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let (_, outcome) = cache
            .load(&engine, "hello", &wasm, here(&engine))
            .expect("load");
        assert_eq!(outcome, CacheOutcome::Compiled);
    }

    #[test]
    fn an_entry_that_does_not_load_stays_until_its_replacement_is_renamed_over_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("c"), &engine).expect("open");
        let wasm = wat::parse_str(HELLO).expect("wat");
        let path = cache.entry_for(&wasm);
        std::fs::write(&path, b"not compiled code").expect("plant");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // A task that has the old entry open keeps reading what it opened.
        let mut held = File::open(&path).expect("open");
        assert!(cache.lookup(&engine, &wasm).is_none());
        assert!(path.exists(), "a failed load deleted the entry");
        cache
            .load(&engine, "hello", &wasm, here(&engine))
            .expect("load");
        let mut old = Vec::new();
        held.read_to_end(&mut old).expect("read");
        assert_eq!(old, b"not compiled code");
    }

    #[test]
    fn invalid_wasm_names_the_program() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("c"), &engine).expect("open");
        let err = match cache.load(&engine, "/bad.wasm", b"\0asm\x01\0\0\0\xff\xff", |w| {
            precompile(&engine, "/bad.wasm", w)
        }) {
            Err(e) => e,
            Ok(_) => panic!("garbage compiled"),
        };
        assert!(
            err.to_string()
                .starts_with("/bad.wasm is not valid WebAssembly"),
            "{err}"
        );
        assert!(files(&cache).is_empty(), "left behind: {:?}", files(&cache));
    }
}
