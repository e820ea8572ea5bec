//! The cgroup filesystem of this machine, from `/proc/self/mountinfo`.

use std::path::PathBuf;

use crate::error::{err, Result};

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

    pub(crate) fn from_mountinfo(info: &str) -> Hierarchy {
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
pub(crate) struct CgroupMount<'a> {
    pub(crate) fstype: &'a str,
    pub(crate) mount_point: &'a str,
    /// The super block's options: a v1 hierarchy's controllers (or `name=`) among them.
    pub(crate) super_opts: &'a str,
}

/// The cgroup mounts of a `/proc/self/mountinfo` text, in its order.
pub(crate) fn cgroup_mounts(info: &str) -> impl Iterator<Item = CgroupMount<'_>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v1_hierarchies_and_v2() {
        let v1 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v1),
            Hierarchy::V1(vec![
                (
                    "/sys/fs/cgroup/cpu,cpuacct".into(),
                    vec!["cpu".into(), "cpuacct".into()]
                ),
                ("/sys/fs/cgroup/systemd".into(), vec!["name=systemd".into()]),
            ])
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v2),
            Hierarchy::V2("/sys/fs/cgroup".into())
        );
    }
}
