//! cgroup v1: one hierarchy per controller (or group of controllers), each with its own files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcell_oci::Resources;

use crate::error::{err, CgroupError, Result};
use crate::files::{apply_cpuset_and_pids, timeout, ControlFiles};

/// Applies `r` to the v1 cgroup `cg`.
pub(crate) fn apply(cg: &impl ControlFiles, r: &Resources) -> Result<()> {
    if let Some((name, _)) = r.unified.first() {
        // As runc: v2's files have no v1 meaning to translate them to.
        return Err(CgroupError {
            what: format!("set {name}"),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "cgroup v2 unified settings (linux.resources.unified) on a cgroup v1 host",
            ),
        });
    }
    if let Some(limit) = r.memory_limit {
        // memsw must stay ≥ the limit: when lowering, the limit goes first; when raising, swap.
        let swap = r.memory_swap;
        let has_memsw = cg
            .file("memory.memsw.limit_in_bytes")
            .is_some_and(|p| p.exists());
        let first = cg.write("memory.limit_in_bytes", &limit.to_string());
        if let (Some(swap), true) = (swap, has_memsw) {
            cg.write("memory.memsw.limit_in_bytes", &swap.to_string())?;
        }
        if first.is_err() {
            cg.write("memory.limit_in_bytes", &limit.to_string())?;
        }
    }
    if let Some(v) = r.memory_reservation {
        cg.write("memory.soft_limit_in_bytes", &v.to_string())?;
    }
    if let Some(v) = r.memory_swappiness.filter(|v| *v <= 100) {
        cg.write("memory.swappiness", &v.to_string())?;
    }
    if let Some(v) = r.cpu_shares.filter(|v| *v != 0) {
        cg.write("cpu.shares", &v.to_string())?;
    }
    if let Some(v) = r.cpu_period.filter(|v| *v != 0) {
        cg.write("cpu.cfs_period_us", &v.to_string())?;
    }
    if let Some(v) = r.cpu_quota.filter(|v| *v != 0) {
        cg.write("cpu.cfs_quota_us", &v.to_string())?;
    }
    apply_cpuset_and_pids(cg, r)?;
    for rule in &r.devices {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        cg.write(file, &rule.v1_line())?;
    }
    for (size, limit) in &r.hugepage_limits {
        // A machine without the hugetlb controller has no huge pages to limit.
        if cg.file("hugetlb.x").is_some() {
            cg.write(
                &format!("hugetlb.{size}.limit_in_bytes"),
                &limit.to_string(),
            )?;
        }
    }
    Ok(())
}

/// Freezes (`true`) or thaws `cg` through the freezer controller and waits until it is done.
pub(crate) fn freeze(cg: &impl ControlFiles, frozen: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = if frozen { "FROZEN" } else { "THAWED" };
    cg.write("freezer.state", state)?;
    while cg.read("freezer.state")?.trim() != state {
        if Instant::now() > deadline {
            return Err(timeout("freezer.state"));
        }
        // A v1 freeze can stall in FREEZING; writing again retries it.
        cg.write("freezer.state", state)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether `cg` is frozen.
pub(crate) fn is_frozen(cg: &impl ControlFiles) -> bool {
    cg.read("freezer.state").is_ok_and(|s| s.trim() == "FROZEN")
}

/// Creates `relative` below each v1 hierarchy of `mounts`.
pub(crate) fn create_dirs(mounts: &[(PathBuf, Vec<String>)], relative: &Path) -> Result<()> {
    for (mount, controllers) in mounts {
        let cpuset = controllers.iter().any(|c| c == "cpuset");
        create_dirs_in(mount, relative, cpuset)?;
    }
    Ok(())
}

/// Creates `relative` below a v1 hierarchy; in the cpuset hierarchy each new level copies its
/// parent's CPUs and memory nodes, without which no process could join it.
fn create_dirs_in(mount: &Path, relative: &Path, cpuset: bool) -> Result<()> {
    let mut dir = mount.to_owned();
    for part in relative.components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::recorder::Recorder;

    #[test]
    fn unified_settings_are_refused_on_v1_before_anything_is_written() {
        let cg = Recorder::default();
        let r = Resources {
            memory_limit: Some(32 << 20),
            unified: vec![("memory.oom.group".into(), "1".into())],
            ..Resources::default()
        };
        let e = apply(&cg, &r).expect_err("v2 files on v1").to_string();
        assert!(
            e.contains("memory.oom.group") && e.contains("cgroup v1 host"),
            "{e}"
        );
        assert!(cg.writes.borrow().is_empty());
    }
}
