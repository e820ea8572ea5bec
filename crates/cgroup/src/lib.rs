//! The container's cgroup, through the cgroup filesystem: v1 (one hierarchy per controller) and
//! v2 (the unified hierarchy), for the cgroupfs and systemd path forms of
//! [`CgroupPath`](wasmcell_oci::CgroupPath).
//!
//! The shim creates the cgroup and applies [`Resources`] before the cell loads anything; the cell
//! moves itself in ([`join_self`]) as soon as it has its orders, before it reads its program (so
//! compiling is charged to the container, as the compile deadline and memory limit expect). The
//! shim reads the cgroup for Stats and OOM, freezes it for Pause, and removes it at Delete.
//!
//! With the systemd path form and systemd running, the shim asks systemd for a transient scope
//! unit holding the cell, and this module writes the limits once systemd has made the cgroup
//! (`docs/design.md`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod files;
mod hierarchy;
mod join;
mod v1;
mod v2;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcell_oci::Resources;

use error::err;
pub use error::{CgroupError, Result};
use files::ControlFiles;
pub use hierarchy::Hierarchy;
pub use join::{join_files_of, join_self, thread_count};

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    relative: PathBuf,
}

/// The key of the OOM killer's kill count in v2's `memory.events` and v1's
/// `memory.oom_control`.
pub const OOM_KILL_KEY: &str = "oom_kill";

/// The kill count in the text of [`Cgroup::oom_kill_file`].
pub fn parse_oom_kills(text: &str) -> u64 {
    parse_keyed(text).get(OOM_KILL_KEY).copied().unwrap_or(0)
}

impl Cgroup {
    /// The cgroup at `relative` (below each hierarchy's root), without touching it.
    pub fn at(hierarchy: Hierarchy, relative: &Path) -> Cgroup {
        Cgroup {
            hierarchy,
            relative: relative.to_owned(),
        }
    }

    /// Creates the cgroup (and missing parents) and applies `resources`.
    pub fn create(hierarchy: Hierarchy, relative: &Path, resources: &Resources) -> Result<Cgroup> {
        let cg = Cgroup::at(hierarchy, relative);
        match &cg.hierarchy {
            Hierarchy::V1(mounts) => v1::create_dirs(mounts, relative)?,
            Hierarchy::V2(root) => v2::create_dirs(root, relative)?,
        }
        if let Err(e) = cg.apply(resources) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// Whether this is a cgroup v2 cgroup.
    pub fn is_v2(&self) -> bool {
        matches!(self.hierarchy, Hierarchy::V2(_))
    }

    /// The cgroup's directories (one per v1 hierarchy).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1(mounts) => mounts.iter().map(|(m, _)| m.join(&self.relative)).collect(),
            Hierarchy::V2(root) => vec![root.join(&self.relative)],
        }
    }

    /// The path of a control file such as `memory.limit_in_bytes`: on v1 in the hierarchy of the
    /// controller its name starts with; `None` if this machine does not mount that controller.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V2(root) => Some(root.join(&self.relative).join(name)),
            Hierarchy::V1(mounts) => {
                let controller = name.split('.').next().unwrap_or(name);
                mounts
                    .iter()
                    .find(|(_, cs)| cs.iter().any(|c| c == controller))
                    .map(|(m, _)| m.join(&self.relative).join(name))
            }
        }
    }

    /// Writes a control file; a controller this machine does not have is an error naming it.
    pub fn write(&self, name: &str, value: &str) -> Result<()> {
        let path = self.file(name).ok_or_else(|| CgroupError {
            what: format!("set {name}"),
            source: std::io::Error::new(ErrorKind::NotFound, "controller not mounted"),
        })?;
        std::fs::write(&path, value).map_err(err(format!("write {value:?} to {}", path.display())))
    }

    /// Reads a control file.
    pub fn read(&self, name: &str) -> Result<String> {
        let path = self.file(name).ok_or_else(|| CgroupError {
            what: format!("read {name}"),
            source: std::io::Error::new(ErrorKind::NotFound, "controller not mounted"),
        })?;
        std::fs::read_to_string(&path).map_err(err(format!("read {}", path.display())))
    }

    /// Reads a control file holding one number (`max` reads as `u64::MAX`).
    pub fn read_u64(&self, name: &str) -> Result<u64> {
        let text = self.read(name)?;
        let t = text.trim();
        if t == "max" {
            return Ok(u64::MAX);
        }
        t.parse().map_err(|_| CgroupError {
            what: format!("parse {name}"),
            source: std::io::Error::new(ErrorKind::InvalidData, format!("{t:?}")),
        })
    }

    /// Reads a flat-keyed file such as `memory.stat` (`key value` per line).
    pub fn read_keyed(&self, name: &str) -> Result<HashMap<String, u64>> {
        Ok(parse_keyed(&self.read(name)?))
    }

    /// Applies `resources`: the limits at Create, or the new ones of an Update.
    pub fn apply(&self, r: &Resources) -> Result<()> {
        match &self.hierarchy {
            Hierarchy::V1(_) => v1::apply(self, r),
            Hierarchy::V2(_) => v2::apply(self, r),
        }
    }

    /// The files through which a process moves itself into the cgroup with [`join_self`]: on v1
    /// each hierarchy's `tasks`, on v2 `cgroup.procs`.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        let name = if self.is_v2() {
            "cgroup.procs"
        } else {
            "tasks"
        };
        self.dirs().into_iter().map(|d| d.join(name)).collect()
    }

    /// The processes in the cgroup. Only real pids: `cgroup.procs` lists a process that the
    /// reader's PID namespace cannot see as `0`, and `kill(0, …)` would signal the caller's
    /// own process group.
    pub fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs()
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| parse_pids(&s))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How many times the kernel's OOM killer has killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        self.read_keyed(self.oom_kill_file_name())
            .ok()
            .and_then(|m| m.get(OOM_KILL_KEY).copied())
            .unwrap_or(0)
    }

    /// The file whose [`OOM_KILL_KEY`] line counts the OOM killer's kills in this cgroup.
    pub fn oom_kill_file(&self) -> Option<PathBuf> {
        self.file(self.oom_kill_file_name())
    }

    fn oom_kill_file_name(&self) -> &'static str {
        if self.is_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        }
    }

    /// Freezes (`true`) or thaws the cgroup and waits until the kernel says it is done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match &self.hierarchy {
            Hierarchy::V1(_) => v1::freeze(self, frozen),
            Hierarchy::V2(_) => v2::freeze(self, frozen),
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match &self.hierarchy {
            Hierarchy::V1(_) => v1::is_frozen(self),
            Hierarchy::V2(_) => v2::is_frozen(self),
        }
    }

    /// Kills what is left in the cgroup and removes its directories (not the parents, which
    /// other containers share). A missing directory is fine: removal is idempotent.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.is_frozen() {
            let _ = self.freeze(false);
        }
        for dir in self.dirs() {
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(err(format!("remove {}", dir.display()))(e));
                    }
                    Err(_) => {
                        for pid in self.procs() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ControlFiles for Cgroup {
    fn file(&self, name: &str) -> Option<PathBuf> {
        Cgroup::file(self, name)
    }
    fn write(&self, name: &str, value: &str) -> Result<()> {
        Cgroup::write(self, name, value)
    }
    fn read(&self, name: &str) -> Result<String> {
        Cgroup::read(self, name)
    }
    fn read_keyed(&self, name: &str) -> Result<HashMap<String, u64>> {
        Cgroup::read_keyed(self, name)
    }
}

/// Parses `key value` lines.
pub fn parse_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The pids of a `cgroup.procs` text, without `0` and anything else that is not a process.
fn parse_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_control_files_are_in_the_hierarchy_of_their_controller() {
        let v1 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        let cg = Cgroup::at(Hierarchy::from_mountinfo(v1), Path::new("default/c1"));
        assert_eq!(
            cg.file("cpuacct.usage"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/cpu,cpuacct/default/c1/cpuacct.usage"
            ))
        );
        assert_eq!(cg.file("memory.max_usage_in_bytes"), None);
    }

    #[test]
    fn procs_never_include_pid_zero() {
        assert_eq!(parse_pids("12\n0\n\n-3\n40\n"), [12, 40]);
    }

    #[test]
    fn keyed_files_parse() {
        let m = parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(m.get("oom_kill"), Some(&3));
    }
}
