//! The container's cgroup, through the cgroup filesystem: v1 (one hierarchy per controller) and
//! v2 (the unified hierarchy), for the cgroupfs and systemd path forms of
//! [`CgroupPath`](wasmcell_task::CgroupPath).
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

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcell_task::Resources;

/// A failed cgroup operation, naming the file or directory.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CgroupError {
    what: String,
    #[source]
    source: std::io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CgroupError {
    let what = what.into();
    move |source| CgroupError { what, source }
}

/// Result of cgroup operations.
pub type Result<T> = std::result::Result<T, CgroupError>;

/// The cgroup filesystem of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: each mounted hierarchy and the controllers (or `name=`) it carries.
    V1(Vec<(PathBuf, Vec<String>)>),
    /// cgroup v2, mounted at this path.
    V2(PathBuf),
}

impl Hierarchy {
    /// Finds the cgroup mounts in `/proc/self/mountinfo`: the unified hierarchy at
    /// `/sys/fs/cgroup` means v2; otherwise every `cgroup` (v1) mount is used, and a v2 hierarchy
    /// mounted beside them (hybrid mode) is left alone, as runc does.
    pub fn detect() -> Result<Hierarchy> {
        let info =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(err("read mountinfo"))?;
        Ok(Hierarchy::from_mountinfo(&info))
    }

    fn from_mountinfo(info: &str) -> Hierarchy {
        let mut v1 = Vec::new();
        for CgroupMount {
            fstype,
            mount_point,
            super_opts,
        } in cgroup_mounts(info)
        {
            match fstype {
                "cgroup2" if mount_point == "/sys/fs/cgroup" => {
                    return Hierarchy::V2(PathBuf::from(mount_point));
                }
                "cgroup" => {
                    let controllers = super_opts
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                        .map(str::to_owned)
                        .collect();
                    v1.push((PathBuf::from(mount_point), controllers));
                }
                _ => {}
            }
        }
        Hierarchy::V1(v1)
    }
}

/// A `cgroup` or `cgroup2` mount, from a line of `/proc/self/mountinfo`.
struct CgroupMount<'a> {
    fstype: &'a str,
    mount_point: &'a str,
    /// The super block's options: a v1 hierarchy's controllers (or `name=`) among them.
    super_opts: &'a str,
}

/// The cgroup mounts of a `/proc/self/mountinfo` text, in its order.
fn cgroup_mounts(info: &str) -> impl Iterator<Item = CgroupMount<'_>> {
    info.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let super_opts = right.nth(1).unwrap_or_default();
        matches!(fstype, "cgroup" | "cgroup2").then_some(CgroupMount {
            fstype,
            mount_point,
            super_opts,
        })
    })
}

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

/// Controllers a v2 cgroup needs enabled in its parents.
const V2_CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "cpuset"];

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
            Hierarchy::V1(mounts) => {
                for (mount, controllers) in mounts {
                    let cpuset = controllers.iter().any(|c| c == "cpuset");
                    create_dirs(mount, relative, cpuset)?;
                }
            }
            Hierarchy::V2(root) => {
                let mut dir = root.clone();
                for part in relative.components() {
                    enable_v2_controllers(&dir);
                    dir.push(part);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(err(format!("create {}", dir.display()))(e)),
                    }
                }
            }
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
        if self.is_v2() {
            self.apply_v2(r)
        } else {
            self.apply_v1(r)
        }
    }

    /// The files v1 and v2 name alike: the cpuset and the pids limit.
    fn apply_cpuset_and_pids(&self, r: &Resources) -> Result<()> {
        if let Some(v) = &r.cpuset_cpus {
            self.write("cpuset.cpus", v)?;
        }
        if let Some(v) = &r.cpuset_mems {
            self.write("cpuset.mems", v)?;
        }
        if let Some(v) = r.pids_limit {
            self.write("pids.max", &pids_max(v))?;
        }
        Ok(())
    }

    fn apply_v1(&self, r: &Resources) -> Result<()> {
        if let Some(limit) = r.memory_limit {
            // memsw must stay ≥ the limit: when lowering, the limit goes first; when raising, swap.
            let swap = r.memory_swap;
            let has_memsw = self
                .file("memory.memsw.limit_in_bytes")
                .is_some_and(|p| p.exists());
            let first = self.write("memory.limit_in_bytes", &limit.to_string());
            if let (Some(swap), true) = (swap, has_memsw) {
                self.write("memory.memsw.limit_in_bytes", &swap.to_string())?;
            }
            if first.is_err() {
                self.write("memory.limit_in_bytes", &limit.to_string())?;
            }
        }
        if let Some(v) = r.memory_reservation {
            self.write("memory.soft_limit_in_bytes", &v.to_string())?;
        }
        if let Some(v) = r.memory_swappiness.filter(|v| *v <= 100) {
            self.write("memory.swappiness", &v.to_string())?;
        }
        if let Some(v) = r.cpu_shares.filter(|v| *v != 0) {
            self.write("cpu.shares", &v.to_string())?;
        }
        if let Some(v) = r.cpu_period.filter(|v| *v != 0) {
            self.write("cpu.cfs_period_us", &v.to_string())?;
        }
        if let Some(v) = r.cpu_quota.filter(|v| *v != 0) {
            self.write("cpu.cfs_quota_us", &v.to_string())?;
        }
        self.apply_cpuset_and_pids(r)?;
        for rule in &r.devices {
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            self.write(file, &rule.v1_line())?;
        }
        for (size, limit) in &r.hugepage_limits {
            // A machine without the hugetlb controller has no huge pages to limit.
            if self.file("hugetlb.x").is_some() {
                self.write(
                    &format!("hugetlb.{size}.limit_in_bytes"),
                    &limit.to_string(),
                )?;
            }
        }
        Ok(())
    }

    fn apply_v2(&self, r: &Resources) -> Result<()> {
        if let Some(limit) = r.memory_limit {
            let max = if limit < 0 {
                "max".to_owned()
            } else {
                limit.to_string()
            };
            self.write("memory.max", &max)?;
            // v1's memsw counts memory plus swap; v2's swap.max counts swap alone.
            if let Some(swap) = r.memory_swap {
                let swap_max = if swap < 0 || limit < 0 {
                    "max".to_owned()
                } else {
                    (swap - limit).max(0).to_string()
                };
                if self.file("memory.swap.max").is_some_and(|p| p.exists()) {
                    self.write("memory.swap.max", &swap_max)?;
                }
            }
        }
        if let Some(v) = r.memory_reservation.filter(|v| *v > 0) {
            self.write("memory.low", &v.to_string())?;
        }
        if let Some(w) = r.cpu_weight() {
            self.write("cpu.weight", &w.to_string())?;
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let quota = match r.cpu_quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_owned(),
            };
            let period = r.cpu_period.filter(|p| *p != 0).unwrap_or(100_000);
            self.write("cpu.max", &format!("{quota} {period}"))?;
        }
        self.apply_cpuset_and_pids(r)?;
        for (size, limit) in &r.hugepage_limits {
            let name = format!("hugetlb.{size}.max");
            if self.file(&name).is_some_and(|p| p.exists()) {
                self.write(&name, &limit.to_string())?;
            }
        }
        // Device rules need an eBPF program on v2; the cell instead sees no device at all (its
        // root is remounted `nodev`), which is stricter than any rule set.
        Ok(())
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
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.is_v2() {
            self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
            let want = if frozen { 1 } else { 0 };
            while self.read_keyed("cgroup.events")?.get("frozen") != Some(&want) {
                if Instant::now() > deadline {
                    return Err(timeout("cgroup.events"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            let state = if frozen { "FROZEN" } else { "THAWED" };
            self.write("freezer.state", state)?;
            while self.read("freezer.state")?.trim() != state {
                if Instant::now() > deadline {
                    return Err(timeout("freezer.state"));
                }
                // A v1 freeze can stall in FREEZING; writing again retries it.
                self.write("freezer.state", state)?;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        if self.is_v2() {
            self.read_keyed("cgroup.events")
                .ok()
                .and_then(|m| m.get("frozen").copied())
                == Some(1)
        } else {
            self.read("freezer.state")
                .is_ok_and(|s| s.trim() == "FROZEN")
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

fn timeout(file: &str) -> CgroupError {
    CgroupError {
        what: format!("wait for {file}"),
        source: std::io::Error::new(ErrorKind::TimedOut, "the kernel did not finish in 5 s"),
    }
}

fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_owned()
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

/// Creates `relative` below a v1 hierarchy; in the cpuset hierarchy each new level copies its
/// parent's CPUs and memory nodes, without which no process could join it.
fn create_dirs(mount: &Path, relative: &Path, cpuset: bool) -> Result<()> {
    let mut dir = mount.to_owned();
    for part in relative.components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("create {}", dir.display()))(e)),
        }
        if cpuset {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let mine = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                if mine.trim().is_empty() {
                    let theirs = std::fs::read_to_string(parent.join(file))
                        .map_err(err(format!("read {}", parent.join(file).display())))?;
                    std::fs::write(dir.join(file), theirs.trim())
                        .map_err(err(format!("write {}", dir.join(file).display())))?;
                }
            }
        }
    }
    Ok(())
}

/// Enables the controllers the container needs for the children of `dir` (v2). Best effort: a
/// controller the machine lacks shows up as a missing file when its limit is written.
fn enable_v2_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if !wanted.is_empty() {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "));
    }
}

/// The pids of a `cgroup.procs` text, without `0` and anything else that is not a process.
fn parse_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .collect()
}

/// The number of threads of the calling process. [`join_self`] moves only the calling thread,
/// so it checks there is no other; the daemon checks it before it forks.
pub fn thread_count() -> std::io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no Threads: line"))
}

/// Moves the calling process into a cgroup by writing `0` ("myself") into each of `files`, from
/// [`Cgroup::self_join_files`]. The process must be single-threaded, which this checks.
///
/// Why the process moves itself rather than being moved by the shim: writing another process's
/// pid (or a whole thread group) takes the kernel's global `cgroup_threadgroup_rwsem` for
/// writing, and the first such write after a quiet spell waits for an RCU grace period
/// (milliseconds; docs/performance.md). A single thread moving itself through v1's `tasks` file
/// needs no such lock, since it can neither exit nor exec meanwhile. On v2, `cgroup.procs` always
/// moves the thread group and takes the lock, so the cost is the same as the shim's write;
/// kernels that lock for every write are no slower either.
pub fn join_self(files: &[PathBuf]) -> Result<()> {
    let threads = thread_count().map_err(err("count the threads in /proc/self/status"))?;
    if threads != 1 {
        return Err(CgroupError {
            what: "join the cgroup".to_owned(),
            source: std::io::Error::other(format!(
                "the process has {threads} threads; only the calling one would move"
            )),
        });
    }
    for file in files {
        std::fs::write(file, "0").map_err(err(format!("join {}", file.display())))?;
    }
    Ok(())
}

/// The files through which a process moves itself with [`join_self`] into the cgroups of
/// process `pid`, in every hierarchy mounted here (a hybrid host's unified one too), whoever
/// made them: runc through systemd, runc on its own, or the cell.
pub fn join_files_of(pid: i32) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(err("read mountinfo"))?;
    let file = format!("/proc/{pid}/cgroup");
    let member = std::fs::read_to_string(&file).map_err(err(format!("read {file}")))?;
    Ok(join_files(&info, &member))
}

/// [`join_files_of`] from the texts of `/proc/self/mountinfo` and `/proc/<pid>/cgroup`. A v1
/// line (`3:cpu,cpuacct:/path`) goes to the `cgroup` mount whose options carry all of its
/// controllers (or its `name=`), the v2 line (`0::/path`) to the `cgroup2` mount.
fn join_files(mountinfo: &str, member: &str) -> Vec<PathBuf> {
    let mounts: Vec<CgroupMount<'_>> = cgroup_mounts(mountinfo).collect();
    member
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let (mount_point, file) = if controllers.is_empty() {
                let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
                (mount.mount_point, "cgroup.procs")
            } else {
                let mount = mounts.iter().find(|m| {
                    m.fstype == "cgroup"
                        && controllers
                            .split(',')
                            .all(|c| m.super_opts.split(',').any(|o| o == c))
                })?;
                (mount.mount_point, "tasks")
            };
            let path = path.trim_start_matches('/');
            // A path the reader's cgroup namespace cannot name has no file here.
            (!path.split('/').any(|c| c == ".."))
                .then(|| Path::new(mount_point).join(path).join(file))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v1_hierarchies_and_v2() {
        let v1 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::from_mountinfo(v1);
        assert_eq!(
            h,
            Hierarchy::V1(vec![
                (
                    "/sys/fs/cgroup/cpu,cpuacct".into(),
                    vec!["cpu".into(), "cpuacct".into()]
                ),
                ("/sys/fs/cgroup/systemd".into(), vec!["name=systemd".into()]),
            ])
        );
        let cg = Cgroup::at(h, Path::new("default/c1"));
        assert_eq!(
            cg.file("cpuacct.usage"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/cpu,cpuacct/default/c1/cpuacct.usage"
            ))
        );
        assert_eq!(cg.file("memory.max_usage_in_bytes"), None);

        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v2),
            Hierarchy::V2("/sys/fs/cgroup".into())
        );
    }

    #[test]
    fn a_process_cgroups_map_to_the_join_files_of_each_hierarchy() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let member = "5:memory:/k8s/c1\n3:cpuacct,cpu:/k8s/c1\n1:name=systemd:/s/x.scope\n\
                      0::/s/x.scope\n9:pids:/k8s/c1\n2:blkio:/../escape\n";
        assert_eq!(
            join_files(info, member),
            [
                "/sys/fs/cgroup/memory/k8s/c1/tasks",
                "/sys/fs/cgroup/cpu,cpuacct/k8s/c1/tasks",
                "/sys/fs/cgroup/systemd/s/x.scope/tasks",
                "/sys/fs/cgroup/unified/s/x.scope/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            join_files(v2, "0::/kubepods/pod1/c2\n"),
            [PathBuf::from(
                "/sys/fs/cgroup/kubepods/pod1/c2/cgroup.procs"
            )]
        );
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
