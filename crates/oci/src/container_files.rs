//! Reading a file as the container's own processes would see it, for what the cell must read
//! on the guest's behalf before it locks itself down: the name-service files (`/etc/resolv.conf`,
//! `/etc/hosts`) and the CA bundle.
//!
//! The kubelet and CRI bind-mount `/etc/resolv.conf` and `/etc/hosts` as single files, which a
//! WASI guest is never granted (WASI grants directories), so the file mounts are looked at first;
//! then the deepest directory the guest has (a bind mount, or the rootfs itself). Inside that
//! directory the path is resolved with it as the root (`openat2(RESOLVE_IN_ROOT)`), so an image's
//! `/etc/resolv.conf -> /etc/shadow` symlink names the image's file, never the host's.

use std::fs::File;
use std::io::Read;

use crate::entrypoint::{find_in_root, open_found};
use crate::{Preopen, RunSpec};

/// Why a container file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading it failed.
    #[error("read the container's {path}: {source}")]
    Io {
        /// The path in the container.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It is larger than the reader accepts.
    #[error("the container's {path} is larger than {limit} bytes")]
    TooLarge {
        /// The path in the container.
        path: String,
        /// The most the reader accepts.
        limit: usize,
    },
    /// It is not a regular file.
    #[error("the container's {path} is not a regular file")]
    NotAFile {
        /// The path in the container.
        path: String,
    },
}

impl RunSpec {
    /// The bytes of the container's file at the absolute `path`, at most `limit` of them;
    /// `None` when the container has no such file.
    pub fn read_file(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let io = |source| ReadError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(mount) = self.file_mounts.iter().rev().find(|m| m.guest == path) {
            let file = File::open(&mount.host).map_err(io)?;
            return read_bounded(file, path, limit).map(Some);
        }
        let Some((dir, rest)) = deepest_dir(&self.preopens, path) else {
            return Ok(None);
        };
        let root = File::open(&dir.host).map_err(io)?;
        let found = match find_in_root(&root, rest) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(None)
            }
            Err(e) => return Err(io(e)),
        };
        if !found.metadata().map_err(io)?.is_file() {
            return Err(ReadError::NotAFile {
                path: path.to_owned(),
            });
        }
        let file = open_found(&found).map_err(io)?;
        read_bounded(file, path, limit).map(Some)
    }
}

/// The preopen whose guest path is the longest directory prefix of `path`, and the rest of
/// `path` below it.
fn deepest_dir<'a>(preopens: &'a [Preopen], path: &'a str) -> Option<(&'a Preopen, &'a str)> {
    preopens
        .iter()
        .filter_map(|p| {
            let dir = p.guest.trim_end_matches('/');
            let rest = path.strip_prefix(dir)?;
            let rest = if dir.is_empty() {
                rest
            } else {
                rest.strip_prefix('/')?
            };
            Some((p, rest.trim_start_matches('/')))
        })
        .max_by_key(|(p, _)| p.guest.trim_end_matches('/').len())
        .filter(|(_, rest)| !rest.is_empty())
}

fn read_bounded(file: File, path: &str, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(rootfs: &Path, preopens: Vec<Preopen>, file_mounts: Vec<Preopen>) -> RunSpec {
        let mut all = vec![Preopen {
            host: rootfs.to_owned(),
            guest: "/".into(),
            read_only: false,
        }];
        all.extend(preopens);
        RunSpec {
            id: "c".into(),
            args: vec!["a.wasm".into()],
            program: String::new(),
            env: vec![],
            cwd: "/".into(),
            rootfs: rootfs.to_owned(),
            preopens: all,
            file_mounts,
            stdin: None,
            terminal: false,
            cache_dir: rootfs.to_owned(),
            isolation: Default::default(),
            cgroup: crate::CgroupPath::Fs(Default::default()),
            settings: Default::default(),
            resources: Default::default(),
        }
    }

    fn mount(host: &Path, guest: &str) -> Preopen {
        Preopen {
            host: host.to_owned(),
            guest: guest.into(),
            read_only: true,
        }
    }

    #[test]
    fn a_file_mount_wins_over_the_rootfs() {
        let t = tempfile::tempdir().expect("tempdir");
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        std::fs::write(rootfs.join("etc/resolv.conf"), "image").expect("write");
        let kubelet = t.path().join("resolv.conf");
        std::fs::write(&kubelet, "kubelet").expect("write");
        let s = spec(&rootfs, vec![], vec![mount(&kubelet, "/etc/resolv.conf")]);
        let got = s.read_file("/etc/resolv.conf", 100).expect("read");
        assert_eq!(got.as_deref(), Some(&b"kubelet"[..]));
        let s = spec(&rootfs, vec![], vec![]);
        let got = s.read_file("/etc/resolv.conf", 100).expect("read");
        assert_eq!(got.as_deref(), Some(&b"image"[..]));
        assert!(s.read_file("/etc/hosts", 100).expect("read").is_none());
    }

    #[test]
    fn the_deepest_directory_mount_is_read_and_links_stay_inside_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let rootfs = t.path().join("rootfs");
        let certs = t.path().join("certs");
        std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).expect("mkdir");
        std::fs::create_dir_all(&certs).expect("mkdir");
        std::fs::write(rootfs.join("etc/ssl/certs/ca.pem"), "image").expect("write");
        std::fs::write(certs.join("ca.pem"), "configmap").expect("write");
        std::fs::write(t.path().join("secret"), "host").expect("write");
        std::os::unix::fs::symlink("/../../secret", certs.join("escape.pem")).expect("link");
        let s = spec(&rootfs, vec![mount(&certs, "/etc/ssl/certs/")], vec![]);
        let got = s.read_file("/etc/ssl/certs/ca.pem", 100).expect("read");
        assert_eq!(got.as_deref(), Some(&b"configmap"[..]));
        assert!(s
            .read_file("/etc/ssl/certs/escape.pem", 100)
            .expect("read")
            .is_none());
        // A directory that merely shares a prefix is not the mount.
        assert!(s
            .read_file("/etc/ssl/certsx/ca.pem", 100)
            .expect("read")
            .is_none());
    }

    #[test]
    fn too_large_and_not_a_file_are_errors() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("etc/hosts")).expect("mkdir");
        std::fs::write(t.path().join("big"), vec![b'x'; 101]).expect("write");
        let s = spec(t.path(), vec![], vec![mount(&t.path().join("big"), "/big")]);
        assert!(matches!(
            s.read_file("/big", 100),
            Err(ReadError::TooLarge { limit: 100, .. })
        ));
        assert!(matches!(
            s.read_file("/etc/hosts", 100),
            Err(ReadError::NotAFile { .. })
        ));
        assert!(s.read_file("/", 100).expect("read").is_none());
    }
}
