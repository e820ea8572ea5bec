//! cgroup v2: the unified hierarchy, one directory per cgroup with every controller's files.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmcell_oci::Resources;

use crate::error::{err, Result};
use crate::files::{apply_cpuset_and_pids, timeout, ControlFiles};

/// Controllers a v2 cgroup needs enabled in its parents.
const V2_CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "cpuset"];

/// Applies `r` to the v2 cgroup `cg`.
pub(crate) fn apply(cg: &impl ControlFiles, r: &Resources) -> Result<()> {
    if let Some(limit) = r.memory_limit {
        let max = if limit < 0 {
            "max".to_owned()
        } else {
            limit.to_string()
        };
        cg.write("memory.max", &max)?;
        // v1's memsw counts memory plus swap; v2's swap.max counts swap alone.
        if let Some(swap) = r.memory_swap {
            let swap_max = if swap < 0 || limit < 0 {
                "max".to_owned()
            } else {
                (swap - limit).max(0).to_string()
            };
            if cg.file("memory.swap.max").is_some_and(|p| p.exists()) {
                cg.write("memory.swap.max", &swap_max)?;
            }
        }
    }
    if let Some(v) = r.memory_reservation.filter(|v| *v > 0) {
        cg.write("memory.low", &v.to_string())?;
    }
    if let Some(w) = r.cpu_weight() {
        cg.write("cpu.weight", &w.to_string())?;
    }
    if r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let quota = match r.cpu_quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_owned(),
        };
        let period = r.cpu_period.filter(|p| *p != 0).unwrap_or(100_000);
        cg.write("cpu.max", &format!("{quota} {period}"))?;
    }
    apply_cpuset_and_pids(cg, r)?;
    for (size, limit) in &r.hugepage_limits {
        let name = format!("hugetlb.{size}.max");
        if cg.file(&name).is_some_and(|p| p.exists()) {
            cg.write(&name, &limit.to_string())?;
        }
    }
    // Device rules need an eBPF program on v2; the cell instead sees no device at all (its
    // root is remounted `nodev`), which is stricter than any rule set.

    // The spec's unified settings last, so that they have the final word over the limits
    // above, as in runc.
    for (name, value) in &r.unified {
        cg.write(name, value)?;
    }
    Ok(())
}

/// Freezes (`true`) or thaws `cg` through `cgroup.freeze` and waits until it is done.
pub(crate) fn freeze(cg: &impl ControlFiles, frozen: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    cg.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { 1 } else { 0 };
    while cg.read_keyed("cgroup.events")?.get("frozen") != Some(&want) {
        if Instant::now() > deadline {
            return Err(timeout("cgroup.events"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether `cg` is frozen.
pub(crate) fn is_frozen(cg: &impl ControlFiles) -> bool {
    cg.read_keyed("cgroup.events")
        .ok()
        .and_then(|m| m.get("frozen").copied())
        == Some(1)
}

/// Creates `relative` below the unified hierarchy at `root`, enabling the controllers the
/// container needs in each parent.
pub(crate) fn create_dirs(root: &Path, relative: &Path) -> Result<()> {
    let mut dir = root.to_owned();
    for part in relative.components() {
        enable_controllers(&dir);
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("create {}", dir.display()))(e)),
        }
    }
    Ok(())
}

/// Enables the controllers the container needs for the children of `dir` (v2). Best effort: a
/// controller the machine lacks shows up as a missing file when its limit is written.
fn enable_controllers(dir: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::recorder::Recorder;

    #[test]
    fn unified_settings_are_written_last_in_their_order() {
        let cg = Recorder::default();
        let r = Resources {
            memory_limit: Some(32 << 20),
            unified: vec![
                ("memory.max".into(), "max".into()),
                ("memory.oom.group".into(), "1".into()),
            ],
            ..Resources::default()
        };
        apply(&cg, &r).expect("applied");
        let writes = cg.writes.borrow();
        let names: Vec<&str> = writes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["memory.max", "memory.max", "memory.oom.group"]);
        assert_eq!(writes[0].1, "33554432");
        assert_eq!(writes[1].1, "max", "the unified value has the last word");
    }
}
