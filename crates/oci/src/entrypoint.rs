//! Finding and classifying a container's entrypoint inside its rootfs.
//!
//! `process.args[0]` comes from the image, so it is resolved with the rootfs as the root
//! (`openat2(RESOLVE_IN_ROOT)`): `..` chains and absolute symlinks stay inside the rootfs and can
//! never name a host file. The file is recognised by its first bytes, whatever its name: the wasm
//! magic `\0asm` with version 1 is a core module, with version `0x0d` layer 1 a component; ELF and
//! `#!` are native programs for runc.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::{Error, Result};

/// Default `PATH` when the spec's env has none (the same default runc and Docker use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What kind of program an entrypoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// A core wasm module (WASI preview 1, `_start`).
    CoreModule,
    /// A wasm component (WASI 0.2, `wasi:cli/run`).
    Component,
    /// An ELF binary or `#!` script: runs through runc.
    Native,
}

impl ProgramKind {
    /// Whether this is wasm, run by a cell.
    pub fn is_wasm(self) -> bool {
        !matches!(self, ProgramKind::Native)
    }
}

/// A resolved entrypoint: the open file and what it is.
#[derive(Debug)]
pub struct Entrypoint {
    /// The entrypoint file, opened read-only inside the rootfs.
    pub file: File,
    /// Its path inside the rootfs, as found.
    pub path: String,
    /// What it is.
    pub kind: ProgramKind,
}

/// Classifies a program by its first 8 bytes.
pub fn classify(entrypoint: &str, head: &[u8]) -> Result<ProgramKind> {
    if head.len() >= 4 && &head[..4] == b"\0asm" {
        return match head.get(4..8) {
            Some([1, 0, 0, 0]) => Ok(ProgramKind::CoreModule),
            Some([0x0d, 0, 1, 0]) => Ok(ProgramKind::Component),
            other => Err(Error::UnknownWasmVersion {
                entrypoint: entrypoint.to_owned(),
                version: hex(other.unwrap_or_default()),
            }),
        };
    }
    if head.starts_with(b"\x7fELF") || head.starts_with(b"#!") {
        return Ok(ProgramKind::Native);
    }
    Err(Error::UnknownEntrypointFormat {
        entrypoint: entrypoint.to_owned(),
        head: hex(head),
    })
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty file)".to_owned();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The candidate paths for `arg0`, in order: as given when it holds a `/` (relative to `cwd`),
/// otherwise each `PATH` directory, then `cwd`.
pub fn candidates(arg0: &str, cwd: &str, env: &[(String, String)]) -> Vec<String> {
    let join = |dir: &str, name: &str| format!("{}/{}", dir.trim_end_matches('/'), name);
    if arg0.contains('/') {
        return vec![if arg0.starts_with('/') {
            arg0.to_owned()
        } else {
            join(cwd, arg0)
        }];
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(std::iter::once(cwd))
        .map(|d| join(d, arg0))
        .collect()
}

/// Finds `path` with `rootfs` as the root directory, without opening what it names (`O_PATH`:
/// a FIFO would block, a device's driver would act).
pub(crate) fn find_in_root(root: &File, path: &str) -> std::io::Result<File> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd: OwnedFd = nix::fcntl::openat2(root, path, how)?;
    Ok(File::from(fd))
}

/// Opens for reading the regular file `found` (from [`find_in_root`]) refers to: through its
/// fd's link in /proc, so it is the very inode that was checked.
pub(crate) fn open_found(found: &File) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", found.as_raw_fd()))
}

/// What a file that is not regular is, for the error.
fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

/// Finds `arg0` inside `rootfs` and classifies it.
pub fn resolve(
    rootfs: &Path,
    arg0: &str,
    cwd: &str,
    env: &[(String, String)],
) -> Result<Entrypoint> {
    let root = File::open(rootfs)
        .map_err(|e| Error::io(format!("open rootfs {}", rootfs.display()), e))?;
    let candidates = candidates(arg0, cwd, env);
    for path in &candidates {
        let found = match find_in_root(&root, path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
            Err(e) => return Err(Error::io(format!("open entrypoint {path:?} in rootfs"), e)),
        };
        let meta = found
            .metadata()
            .map_err(|e| Error::io(format!("stat entrypoint {path:?}"), e))?;
        if let Some(kind) = special_kind(&meta) {
            return Err(Error::EntrypointNotAFile {
                entrypoint: path.clone(),
                kind,
            });
        }
        if !meta.is_file() {
            continue;
        }
        let file =
            open_found(&found).map_err(|e| Error::io(format!("open entrypoint {path:?}"), e))?;
        let mut head = [0u8; 8];
        let mut n = 0;
        while n < head.len() {
            match file.read_at(&mut head[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(Error::io(format!("read entrypoint {path:?}"), e)),
            }
        }
        let kind = classify(arg0, &head[..n])?;
        return Ok(Entrypoint {
            file,
            path: path.clone(),
            kind,
        });
    }
    let searched = if candidates.len() > 1 {
        format!(" (searched {})", candidates.join(", "))
    } else {
        String::new()
    };
    Err(Error::EntrypointNotFound {
        entrypoint: arg0.to_owned(),
        searched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn classifies_by_magic() {
        assert_eq!(
            classify("x", b"\0asm\x01\0\0\0").ok(),
            Some(ProgramKind::CoreModule)
        );
        assert_eq!(
            classify("x", b"\0asm\x0d\0\x01\0").ok(),
            Some(ProgramKind::Component)
        );
        assert_eq!(
            classify("x", b"\x7fELF\x02\x01\x01\0").ok(),
            Some(ProgramKind::Native)
        );
        assert_eq!(classify("x", b"#!/bin/sh").ok(), Some(ProgramKind::Native));
        let garbage = classify("/g", b"garbage!").expect_err("garbage");
        assert!(
            garbage.to_string().contains("neither a WebAssembly"),
            "{garbage}"
        );
        let v = classify("/v", b"\0asm\x02\0\0\0").expect_err("version");
        assert!(v.to_string().contains("unknown version"), "{v}");
        let empty = classify("/e", b"").expect_err("empty");
        assert!(empty.to_string().contains("empty file"), "{empty}");
    }

    #[test]
    fn candidates_follow_path_then_cwd() {
        let env = vec![("PATH".to_owned(), "/a:/b/".to_owned())];
        assert_eq!(
            candidates("x.wasm", "/w", &env),
            ["/a/x.wasm", "/b/x.wasm", "/w/x.wasm"]
        );
        assert_eq!(candidates("./x", "/w", &env), ["/w/./x"]);
        assert_eq!(candidates("/abs/x", "/w", &env), ["/abs/x"]);
        assert_eq!(candidates("sh", "/", &[])[0], "/usr/local/sbin/sh");
    }

    #[test]
    fn resolution_stays_inside_the_rootfs() {
        let host = tempfile::tempdir().expect("tempdir");
        let rootfs = host.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
        // A file outside the rootfs that an image must never be able to name.
        std::fs::write(host.path().join("secret.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::fs::write(rootfs.join("bin/app.wasm"), b"\0asm\x01\0\0\0").expect("write");
        symlink("/bin/app.wasm", rootfs.join("abs-link")).expect("symlink");
        symlink("../../secret.wasm", rootfs.join("bin/escape")).expect("symlink");

        let ok = resolve(&rootfs, "/abs-link", "/", &[]).expect("absolute link inside root");
        assert_eq!(ok.kind, ProgramKind::CoreModule);
        for path in ["/../secret.wasm", "../../secret.wasm", "/bin/escape"] {
            let err = resolve(&rootfs, path, "/", &[]).expect_err(path);
            assert!(
                matches!(err, Error::EntrypointNotFound { .. }),
                "{path}: {err}"
            );
        }
        let found = resolve(&rootfs, "app.wasm", "/", &[("PATH".into(), "/bin".into())])
            .expect("PATH search");
        assert_eq!(found.path, "/bin/app.wasm");
    }

    #[test]
    fn special_files_are_refused_without_being_opened() {
        let host = tempfile::tempdir().expect("tempdir");
        let rootfs = host.path();
        // Opening a FIFO for reading would wait for a writer: before this check, forever.
        nix::unistd::mkfifo(&rootfs.join("fifo.wasm"), Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        let started = std::time::Instant::now();
        let err = resolve(rootfs, "/fifo.wasm", "/", &[]).expect_err("a FIFO");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
        // A device node (root only: the tests run as root): its driver is never called.
        let null = nix::sys::stat::makedev(1, 3);
        let dev = rootfs.join("dev.wasm");
        if nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            null,
        )
        .is_ok()
        {
            let err = resolve(rootfs, "/dev.wasm", "/", &[]).expect_err("a device");
            assert!(err.to_string().contains("is a character device"), "{err}");
        }
        // A directory of that name is passed over too.
        std::fs::create_dir(rootfs.join("dir.wasm")).expect("mkdir");
        let err = resolve(rootfs, "/dir.wasm", "/", &[]).expect_err("a directory");
        assert!(matches!(err, Error::EntrypointNotFound { .. }), "{err}");
    }
}
