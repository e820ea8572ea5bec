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
//! module is compiled once per node even when many pods start it at the same moment.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Module;

use crate::{is_component, Engine, Error, Result};

/// A compiled program, ready to link.
pub enum Program {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
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

/// The compile cache of one engine configuration.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
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

/// Checks that a cache entry is a regular file of ours that nobody else can write.
fn entry_is_ours(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0,
        Err(_) => false,
    }
}

impl CompileCache {
    /// Opens (creating if needed) the cache for `engine` under `root`.
    pub fn open(root: &Path, engine: &Engine) -> Result<CompileCache> {
        ensure_private_dir(root)?;
        let dir = root.join(engine.compat_key());
        ensure_private_dir(&dir)?;
        Ok(CompileCache { dir })
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

    /// Returns the compiled program for `wasm`, from the cache or by compiling it (once).
    pub fn load(
        &self,
        engine: &Engine,
        program: &str,
        wasm: &[u8],
    ) -> Result<(Program, CacheOutcome)> {
        let key = hex::encode(Sha256::digest(wasm));
        let path = self.entry_path(&key);
        let component = is_component(wasm);
        if let Some(p) = self.try_deserialize(engine, component, &path) {
            return Ok((p, CacheOutcome::Hit));
        }
        let lock_path = self.dir.join(format!("{key}.lock"));
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        lock.lock()
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
        // Someone else may have compiled it while we waited for the lock.
        if let Some(p) = self.try_deserialize(engine, component, &path) {
            return Ok((p, CacheOutcome::Hit));
        }
        let compiled = if component {
            engine.wasmtime().precompile_component(wasm)
        } else {
            engine.wasmtime().precompile_module(wasm)
        }
        .map_err(|e| Error::Compile {
            program: program.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&compiled)?;
            f.sync_all()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("write {}", path.display()), e));
        }
        drop(lock);
        let p = self
            .try_deserialize(engine, component, &path)
            .ok_or_else(|| Error::Cache {
                dir: self.dir.clone(),
                reason: format!("cannot load the entry just written: {}", path.display()),
            })?;
        Ok((p, CacheOutcome::Compiled))
    }

    /// Deserializes an entry if it exists, is ours and loads; a stale or corrupt entry is
    /// removed so that it gets compiled again.
    fn try_deserialize(&self, engine: &Engine, component: bool, path: &Path) -> Option<Program> {
        if !entry_is_ours(path) {
            return None;
        }
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
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("dropping unusable cache entry {}: {e:#}", path.display());
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }
}

/// Loads a cache entry that was opened for us by the shim, which looked it up in (or compiled it
/// into) the root-only cache with [`CompileCache::load`]: how a cell under runc, which cannot see
/// the cache, gets its program. Never call it on a file that did not come from the cache.
pub fn load_cache_entry(engine: &Engine, program: &str, mut file: File) -> Result<Program> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|source| Error::Io {
        context: format!("read the compiled {program}"),
        source,
    })?;
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

    #[test]
    fn compiles_once_then_hits() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("cache"), &engine).expect("open");
        let wasm = wat::parse_str(HELLO).expect("wat");
        let (_, first) = cache.load(&engine, "hello", &wasm).expect("first");
        assert_eq!(first, CacheOutcome::Compiled);
        let (_, second) = cache.load(&engine, "hello", &wasm).expect("second");
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
        let (_, outcome) = cache.load(&engine, "hello", &wasm).expect("load");
        assert_eq!(outcome, CacheOutcome::Compiled);
    }

    #[test]
    fn invalid_wasm_names_the_program() {
        let root = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new().expect("engine");
        let cache = CompileCache::open(&root.path().join("c"), &engine).expect("open");
        let err = match cache.load(&engine, "/bad.wasm", b"\0asm\x01\0\0\0\xff\xff") {
            Err(e) => e,
            Ok(_) => panic!("garbage compiled"),
        };
        assert!(
            err.to_string()
                .starts_with("/bad.wasm is not valid WebAssembly"),
            "{err}"
        );
    }
}
