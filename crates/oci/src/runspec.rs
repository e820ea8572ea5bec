//! [`RunSpec`]: the part of an OCI spec that a cell needs to run a wasm guest.
//!
//! The shim builds a `RunSpec` from the bundle's `config.json` and hands it to the cell process
//! as JSON. It is the guest's whole world: args, env, cwd and the directories it may open. The
//! shim's own environment is never part of it, and nothing in it configures the shim or the
//! engine (container env goes to the guest only).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::{CgroupPath, Isolation, Resources, Settings};

/// A directory the guest may open, as WASI sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    /// Directory on the host (as seen by the cell process).
    pub host: PathBuf,
    /// Name the guest sees, for example `/` or `/data`.
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// Everything a cell needs to run one wasm guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Container id, for log messages.
    pub id: String,
    /// `process.args`, `args[0]` included (the guest's program name).
    pub args: Vec<String>,
    /// What the program is called in messages: its path in the rootfs, or the image's wasm
    /// layer; empty means `args[0]`.
    #[serde(default)]
    pub program: String,
    /// `process.env`, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `process.cwd`.
    pub cwd: String,
    /// The container's root filesystem (mounted by the shim); the cell pivots into it.
    pub rootfs: PathBuf,
    /// The rootfs as `/` plus each directory bind mount at its destination.
    pub preopens: Vec<Preopen>,
    /// Each bind mount of a single file (the kubelet's `/etc/resolv.conf` and `/etc/hosts`, a
    /// ConfigMap's key): not the guest's (WASI grants directories), but the cell reads the
    /// container's name-service files and CA bundle through them ([`RunSpec::read_file`]).
    #[serde(default)]
    pub file_mounts: Vec<Preopen>,
    /// Path of the stdin FIFO, which the cell opens itself, or `None` for no stdin.
    pub stdin: Option<PathBuf>,
    /// The cell's stdout and stderr are the slave side of a terminal whose master the shim
    /// holds (`process.terminal`), and the guest reads its stdin from the same terminal (the
    /// shim relays containerd's stdin FIFO into the master); `stdin` is then `None`.
    #[serde(default)]
    pub terminal: bool,
    /// Directory of the host compile cache.
    pub cache_dir: PathBuf,
    /// The kernel boundary the cell puts itself in before it loads the guest.
    pub isolation: Isolation,
    /// The container's cgroup, which the shim creates and puts the cell in.
    pub cgroup: CgroupPath,
    /// The limits of that cgroup; the memory limit also bounds the guest's linear memories.
    pub resources: Resources,
    /// What the operator tuned for this workload ([`crate::settings`]), validated by the shim.
    #[serde(default)]
    pub settings: Settings,
}

/// A process's `env` (the container's, or an exec's), split at the first `=`.
pub fn process_env(process: &oci_spec::runtime::Process) -> Vec<(String, String)> {
    split_env(process.env().as_deref().unwrap_or_default())
}

/// Splits `process.env` entries at the first `=`; an entry without `=` is an empty variable.
fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// Whether an OCI mount is a bind mount (by type or by option).
fn is_bind(mount: &oci_spec::runtime::Mount) -> bool {
    let by_type = matches!(mount.typ().as_deref(), Some("bind") | Some("rbind"));
    let by_option = mount
        .options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
    by_type || by_option
}

/// The preopens a spec grants: the rootfs as `/` (read-only when `root.readonly`), then each
/// bind mount whose source is a directory, at its destination (read-only when it says `ro`).
///
/// Kernel filesystems (`proc`, `sysfs`, `tmpfs`, …) have no meaning to a WASI guest and file bind
/// mounts cannot be WASI preopens, so they are left out; the list is what the guest sees.
pub(crate) fn preopens(rootfs: &Path, spec: &Spec) -> Vec<Preopen> {
    bind_mounts(rootfs, spec).0
}

/// Whether a mount's options make it read-only: the last of `ro`/`rw` wins, as in mount(8);
/// containerd's recursive `rro` is read-only too (the cell makes every preopen's flags
/// recursive).
fn read_only(m: &oci_spec::runtime::Mount) -> bool {
    m.options()
        .iter()
        .flatten()
        .rev()
        .find_map(|o| match o.as_str() {
            "ro" | "rro" => Some(true),
            "rw" | "rrw" => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

/// The bind mounts of single files, at their destinations, in the spec's order.
pub(crate) fn file_mounts(rootfs: &Path, spec: &Spec) -> Vec<Preopen> {
    bind_mounts(rootfs, spec).1
}

/// The spec's bind mounts: the preopens (see [`preopens`]) and the mounts of single files.
fn bind_mounts(rootfs: &Path, spec: &Spec) -> (Vec<Preopen>, Vec<Preopen>) {
    let root_ro = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut out = vec![Preopen {
        host: rootfs.to_owned(),
        guest: "/".to_owned(),
        read_only: root_ro,
    }];
    let mut files = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if !is_bind(m) {
            continue;
        }
        let Some(source) = m.source() else { continue };
        if !source.is_dir() {
            log::debug!(
                "bind mount {} -> {} is not a directory: not a WASI preopen",
                source.display(),
                m.destination().display()
            );
            if source.is_file() {
                files.push(Preopen {
                    host: source.clone(),
                    guest: m.destination().to_string_lossy().into_owned(),
                    read_only: read_only(m),
                });
            }
            continue;
        }
        let read_only = read_only(m);
        out.push(Preopen {
            host: source.clone(),
            guest: m.destination().to_string_lossy().into_owned(),
            read_only,
        });
    }
    (out, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("valid spec")
    }

    #[test]
    fn env_splits_at_first_equals() {
        let env = split_env(&["A=1".into(), "B=x=y".into(), "C".into(), "D=".into()]);
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), "".into()),
                ("D".into(), "".into())
            ]
        );
    }

    #[test]
    fn preopens_take_directory_bind_mounts_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let file = dir.path().join("hosts");
        std::fs::write(&file, "x").expect("write");
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["/app.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro"]},
                {"destination": "/rw", "source": data, "options": ["bind", "rw"]},
                {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["bind"]},
                {"destination": "/rro", "type": "bind", "source": data, "options": ["rbind", "rro"]},
                {"destination": "/last", "type": "bind", "source": data, "options": ["ro", "rw"]}
            ]
        }));
        let p = preopens(Path::new("/r"), &s);
        assert_eq!(
            p.iter()
                .skip(3)
                .map(|x| (x.guest.as_str(), x.read_only))
                .collect::<Vec<_>>(),
            [("/rro", true), ("/last", false)],
            "containerd's recursive rro is read-only; the last of ro and rw wins"
        );
        let p: Vec<Preopen> = p.into_iter().take(3).collect();
        assert_eq!(
            p,
            vec![
                Preopen {
                    host: "/r".into(),
                    guest: "/".into(),
                    read_only: true
                },
                Preopen {
                    host: data.clone(),
                    guest: "/data".into(),
                    read_only: true
                },
                Preopen {
                    host: data,
                    guest: "/rw".into(),
                    read_only: false
                },
            ]
        );
    }
}
