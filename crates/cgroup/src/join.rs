//! A process moving itself into a cgroup, and the files it writes to move into another
//! process's cgroups.

use std::path::{Path, PathBuf};

use crate::error::{err, CgroupError, Result};
use crate::hierarchy::{cgroup_mounts, CgroupMount};

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
/// [`Cgroup::self_join_files`](crate::Cgroup::self_join_files). The process must be single-threaded, which this checks.
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
}
