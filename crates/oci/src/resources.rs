//! [`Resources`] and [`CgroupPath`]: the cgroup a spec puts its container in, and the limits it
//! sets there, in the form the cgroup code applies them (`wasmcell_cgroup`).
//!
//! Built from `linux.resources` at Create and from the `LinuxResources` of an Update. What the cell
//! cannot apply is [`Unsupported`], so the container is never run with looser limits than asked.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxDeviceType, LinuxResources, Spec};
use serde::{Deserialize, Serialize};

use crate::isolation::Unsupported;

/// Where the container's cgroup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupPath {
    /// cgroupfs driver: a directory below the root of each hierarchy, such as `default/c1`.
    Fs(PathBuf),
    /// systemd driver (`slice:prefix:name`): the unit `prefix-name.scope` in `slice`.
    Systemd {
        /// The slice, such as `kubepods-besteffort-pod1.slice`; empty means `system.slice`.
        slice: String,
        /// The scope's prefix, such as `cri-containerd`.
        prefix: String,
        /// The scope's name, usually the container id.
        name: String,
    },
}

/// The spec's `linux.cgroupsPath`, if it has one.
pub fn cgroups_path_of(spec: &oci_spec::runtime::Spec) -> Option<&str> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .and_then(|p| p.to_str())
}

impl CgroupPath {
    /// The cgroup of `spec` ([`CgroupPath::parse`] of its `linux.cgroupsPath`).
    pub fn of_spec(spec: &oci_spec::runtime::Spec, id: &str) -> Result<CgroupPath, Unsupported> {
        CgroupPath::parse(cgroups_path_of(spec), id)
    }

    /// Reads `linux.cgroupsPath`. The driver follows the form of the path, as in runc: three
    /// fields separated by `:` and no leading `/` is systemd's `slice:prefix:name`. Without a path,
    /// the container gets `wasmcell/<id>`.
    pub fn parse(path: Option<&str>, id: &str) -> Result<CgroupPath, Unsupported> {
        let Some(path) = path.filter(|p| !p.is_empty()) else {
            return Ok(CgroupPath::Fs(PathBuf::from("wasmcell").join(id)));
        };
        if !path.starts_with('/') {
            let fields: Vec<&str> = path.split(':').collect();
            if let [slice, prefix, name] = fields[..] {
                // Each field becomes part of a directory or unit name: none may hold a path.
                let pathlike = |f: &str| f.contains('/') || f == "." || f == "..";
                if name.is_empty() || [slice, prefix, name].into_iter().any(pathlike) {
                    return Err(Unsupported(format!(
                        "the systemd cgroupsPath {path:?} (want slice:prefix:name)"
                    )));
                }
                return Ok(CgroupPath::Systemd {
                    slice: slice.to_owned(),
                    prefix: prefix.to_owned(),
                    name: name.to_owned(),
                });
            }
        }
        let relative: PathBuf = path.trim_start_matches('/').into();
        if relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
            || relative.as_os_str().is_empty()
        {
            return Err(Unsupported(format!(
                "the cgroupsPath {path:?} (it must name a directory below the cgroup root)"
            )));
        }
        Ok(CgroupPath::Fs(relative))
    }

    /// The cgroup's directory below the root of a hierarchy. A systemd slice name spells its
    /// ancestors: `a-b-c.slice` lives in `a.slice/a-b.slice/a-b-c.slice`.
    pub fn relative(&self) -> PathBuf {
        match self {
            CgroupPath::Fs(p) => p.clone(),
            CgroupPath::Systemd {
                slice,
                prefix,
                name,
            } => {
                let slice = if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                };
                let mut dir = PathBuf::new();
                let stem = slice.strip_suffix(".slice").unwrap_or(slice);
                if stem != "-" {
                    let mut acc = String::new();
                    for part in stem.split('-') {
                        if !acc.is_empty() {
                            acc.push('-');
                        }
                        acc.push_str(part);
                        dir.push(format!("{acc}.slice"));
                    }
                }
                let unit = if prefix.is_empty() {
                    format!("{name}.scope")
                } else {
                    format!("{prefix}-{name}.scope")
                };
                dir.join(unit)
            }
        }
    }
}

/// One device cgroup rule, in spec order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// `a`, `c` or `b`.
    pub kind: char,
    /// Major number; `None` is any.
    pub major: Option<i64>,
    /// Minor number; `None` is any.
    pub minor: Option<i64>,
    /// Some of `rwm`.
    pub access: String,
}

impl DeviceRule {
    /// The rule in the form of cgroup v1's `devices.allow` / `devices.deny`: `c 1:3 rwm`.
    pub fn v1_line(&self) -> String {
        let num = |n: Option<i64>| n.map_or("*".to_owned(), |n| n.to_string());
        if self.kind == 'a' {
            return "a".to_owned();
        }
        format!(
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// The limits of `linux.resources` that wasmcell applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes (cgroup v1's `memsw`).
    pub memory_swap: Option<i64>,
    /// Soft memory limit (v1 `soft_limit_in_bytes`, v2 `memory.low`).
    pub memory_reservation: Option<i64>,
    /// `memory.swappiness` (v1 only).
    pub memory_swappiness: Option<u64>,
    /// CPU shares (v1) / converted to `cpu.weight` (v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per period; negative is unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in µs.
    pub cpu_period: Option<u64>,
    /// cpuset CPUs.
    pub cpuset_cpus: Option<String>,
    /// cpuset memory nodes.
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes; zero or negative is unlimited.
    pub pids_limit: Option<i64>,
    /// Device rules, in order.
    pub devices: Vec<DeviceRule>,
    /// Huge page limits: page size (`2MB`) and bytes.
    pub hugepage_limits: Vec<(String, i64)>,
    /// cgroup v2 files written as given (`linux.resources.unified`), by name in order, after
    /// the limits above, as runc writes them. The kubelet sets `memory.oom.group` here for every
    /// container on a cgroup v2 node.
    #[serde(default)]
    pub unified: Vec<(String, String)>,
}

impl Resources {
    /// The resources of a spec (none when it has no `linux.resources`).
    pub fn from_spec(spec: &Spec) -> Result<Resources, Unsupported> {
        match spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            Some(r) => Resources::from_oci(r),
            None => Ok(Resources::default()),
        }
    }

    /// Converts OCI `LinuxResources`, refusing what wasmcell does not apply.
    pub fn from_oci(r: &LinuxResources) -> Result<Resources, Unsupported> {
        let mut out = Resources::default();
        if let Some(m) = r.memory() {
            out.memory_limit = m.limit();
            out.memory_swap = m.swap();
            out.memory_reservation = m.reservation();
            out.memory_swappiness = m.swappiness();
            if m.disable_oom_killer() == Some(true) {
                return Err(Unsupported(
                    "linux.resources.memory.disableOOMKiller".into(),
                ));
            }
            // `kernel` and `kernelTCP` are deprecated and ignored by runc on current kernels too.
        }
        if let Some(c) = r.cpu() {
            out.cpu_shares = c.shares();
            out.cpu_quota = c.quota();
            out.cpu_period = c.period();
            out.cpuset_cpus = c.cpus().clone().filter(|s| !s.is_empty());
            out.cpuset_mems = c.mems().clone().filter(|s| !s.is_empty());
            if c.realtime_runtime().is_some_and(|v| v != 0)
                || c.realtime_period().is_some_and(|v| v != 0)
            {
                return Err(Unsupported("realtime CPU scheduling limits".into()));
            }
            if c.idle().is_some_and(|v| v != 0) || c.burst().is_some_and(|v| v != 0) {
                return Err(Unsupported("cpu.idle or cpu.burst".into()));
            }
        }
        if let Some(p) = r.pids() {
            out.pids_limit = Some(p.limit());
        }
        for d in r.devices().iter().flatten() {
            let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
                LinuxDeviceType::A => 'a',
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::P => {
                    return Err(Unsupported("a FIFO device cgroup rule".into()));
                }
            };
            let access = d.access().clone().unwrap_or_else(|| "rwm".to_owned());
            if access.is_empty() || access.chars().any(|c| !"rwm".contains(c)) {
                return Err(Unsupported(format!("the device access {access:?}")));
            }
            out.devices.push(DeviceRule {
                allow: d.allow(),
                kind,
                major: d.major().filter(|n| *n >= 0),
                minor: d.minor().filter(|n| *n >= 0),
                access,
            });
        }
        for h in r.hugepage_limits().iter().flatten() {
            out.hugepage_limits.push((h.page_size().clone(), h.limit()));
        }
        if r.block_io().is_some() {
            return Err(Unsupported(
                "block I/O limits (linux.resources.blockIO)".into(),
            ));
        }
        if r.network().is_some() {
            return Err(Unsupported("network class and priorities".into()));
        }
        if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(Unsupported("RDMA limits".into()));
        }
        let mut unified: Vec<(String, String)> = r
            .unified()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        unified.sort();
        for (key, value) in &unified {
            if !is_controller_file(key) {
                return Err(Unsupported(format!(
                    "the cgroup v2 unified setting {key:?} (the cell writes the files of the \
                     memory, cpu, cpuset and pids controllers only, such as memory.oom.group)"
                )));
            }
            if value.contains('\n') {
                return Err(Unsupported(format!(
                    "the cgroup v2 unified setting {key:?}: its value holds a line break"
                )));
            }
        }
        out.unified = unified;
        Ok(out)
    }

    /// `cpu.weight` of cgroup v2 for v1 shares, the conversion runc and the kubelet use.
    pub fn cpu_weight(&self) -> Option<u64> {
        self.cpu_shares
            .filter(|s| *s != 0)
            .map(|s| 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142)
    }
}

/// The v2 controllers whose files a cell's cgroup has: those the cgroup code enables for it.
/// Another controller's settings (`io.max`, `hugetlb.2MB.max`) go to the runc fallback, which
/// enables every controller the machine has.
const UNIFIED_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuset", "pids"];

/// Whether `key` names a file of one of the [`UNIFIED_CONTROLLERS`] (`memory.oom.group`,
/// `pids.max`): the controller's name, a dot, the file's, and nothing that leaves the
/// directory. The core files (`cgroup.procs`, `cgroup.subtree_control`, ...) are the shim's to
/// manage, not a spec's.
fn is_controller_file(key: &str) -> bool {
    let Some((controller, file)) = key.split_once('.') else {
        return false;
    };
    UNIFIED_CONTROLLERS.contains(&controller)
        && !file.is_empty()
        && file
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        && !file.starts_with('.')
        && !file.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_and_systemd_paths() {
        assert_eq!(
            CgroupPath::parse(Some("/default/c1"), "c1")
                .expect("fs")
                .relative(),
            PathBuf::from("default/c1")
        );
        assert_eq!(
            CgroupPath::parse(None, "c1").expect("none").relative(),
            PathBuf::from("wasmcell/c1")
        );
        let s = CgroupPath::parse(
            Some("kubepods-besteffort-pod12.slice:cri-containerd:abc"),
            "x",
        )
        .expect("systemd");
        assert_eq!(
            s.relative(),
            PathBuf::from(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            CgroupPath::parse(Some(":p:n"), "x")
                .expect("systemd")
                .relative(),
            PathBuf::from("system.slice/p-n.scope")
        );
        for bad in [
            "/a/../../etc",
            "/",
            "a:b:c/d",
            // A prefix with a slash once made `p-n.scope` outside the root.
            "x.slice:../../../../../T/p:n",
            "..:p:n",
            "x.slice:p:..",
        ] {
            assert!(CgroupPath::parse(Some(bad), "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_from_oci_and_refusals() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 33554432, "swap": 33554432},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 64},
            "devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
        }))
        .expect("resources");
        let res = Resources::from_oci(&r).expect("supported");
        assert_eq!(res.memory_limit, Some(33_554_432));
        assert_eq!(res.cpu_quota, Some(50_000));
        assert_eq!(res.pids_limit, Some(64));
        assert_eq!(res.devices[0].v1_line(), "a");
        assert_eq!(res.devices[1].v1_line(), "c 1:3 rwm");
        assert_eq!(res.cpu_weight(), Some(1 + 510 * 9999 / 262_142));

        let bio: LinuxResources =
            serde_json::from_value(serde_json::json!({"blockIO": {"weight": 10}})).expect("bio");
        let e = Resources::from_oci(&bio).expect_err("blockIO").to_string();
        assert!(e.contains("blockIO"), "{e}");
    }

    fn unified(map: serde_json::Value) -> Result<Resources, Unsupported> {
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({ "unified": map })).expect("unified");
        Resources::from_oci(&r)
    }

    #[test]
    fn unified_settings_are_controller_files_written_in_name_order() {
        // What the kubelet asks of every container on a cgroup v2 node.
        let res = unified(serde_json::json!({"memory.oom.group": "1", "memory.high": "max"}))
            .expect("controller files");
        assert_eq!(
            res.unified,
            [
                ("memory.high".to_owned(), "max".to_owned()),
                ("memory.oom.group".to_owned(), "1".to_owned())
            ]
        );
        for key in [
            "cgroup.procs",
            "cgroup.subtree_control",
            "../memory.max",
            "memory.oom/group",
            "memory",
            ".max",
            "memory.",
            "Memory.max",
            "io.max",
            "hugetlb.2MB.max",
            "",
        ] {
            let e = unified(serde_json::json!({ key: "1" }))
                .expect_err(key)
                .to_string();
            assert!(e.contains("unified setting"), "{key}: {e}");
        }
        let e = unified(serde_json::json!({"memory.max": "1\n2"}))
            .expect_err("a line break")
            .to_string();
        assert!(e.contains("line break"), "{e}");
    }
}
