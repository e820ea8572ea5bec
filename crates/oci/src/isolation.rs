//! [`Isolation`]: the kernel boundary an OCI spec asks for, in the form the cell applies it.
//!
//! The shim builds it from `config.json` next to the [`RunSpec`](crate::RunSpec); the cell
//! applies it to itself before it loads the guest (see `wasmcell_cell`). Anything the cell cannot
//! honour is reported by [`Isolation::from_spec`] as [`Unsupported`], so a container never runs
//! with weaker isolation than its spec asks for.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

/// A namespace to enter: join the one at `path`, or create a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// `network`, `ipc`, `uts`, `mount`, `pid`, `cgroup`.
    pub kind: NamespaceKind,
    /// Join this namespace (for example the pod's network namespace); `None`: a new one.
    pub path: Option<PathBuf>,
}

/// The namespace types the cell knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    /// Network.
    Network,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Host and domain name.
    Uts,
    /// Mounts.
    Mount,
    /// Process ids.
    Pid,
    /// cgroup root.
    Cgroup,
}

impl NamespaceKind {
    /// Its name below `/proc/<pid>/ns`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Network => "net",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Cgroup => "cgroup",
        }
    }
}

/// A resource limit (`setrlimit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, ...
    pub kind: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The process's capability sets (names such as `CAP_NET_BIND_SERVICE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Bounding set.
    pub bounding: Vec<String>,
    /// Effective set.
    pub effective: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Ambient set.
    pub ambient: Vec<String>,
}

/// The kernel boundary of one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// Namespaces to join or create, in spec order.
    pub namespaces: Vec<Namespace>,
    /// `process.noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `process.capabilities`; a set the spec leaves out is empty (nothing is kept).
    pub capabilities: Capabilities,
    /// `process.rlimits`.
    pub rlimits: Vec<Rlimit>,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.user.additionalGids`.
    pub additional_gids: Vec<u32>,
    /// `process.user.umask`; none means runc's default, 0022.
    #[serde(default)]
    pub umask: Option<u32>,
    /// `hostname`, set in the UTS namespace the spec names.
    #[serde(default)]
    pub hostname: Option<String>,
    /// `linux.sysctl`, each one of a namespace the spec names (see [`sysctl_namespace`]), in key
    /// order.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// `linux.seccomp`: the spec's own profile, which the cell compiles and installs beneath
    /// its allow-list (the shim sends a profile the cell cannot honour to runc).
    #[serde(default)]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// The namespace a sysctl belongs to, as runc decides it: the System V IPC and POSIX message
/// queue ones to the IPC namespace, `net.*` to the network namespace, the host and domain
/// names to the UTS namespace. Any other sysctl is the whole machine's; `None`.
pub fn sysctl_namespace(key: &str) -> Option<NamespaceKind> {
    let dotted = key.replace('/', ".");
    let key = dotted.as_str();
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(NamespaceKind::Ipc)
    } else if key.starts_with("net.") {
        Some(NamespaceKind::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NamespaceKind::Uts)
    } else {
        None
    }
}

/// The file under `/proc/sys` of a sysctl key (`net.ipv4.ip_forward` is `net/ipv4/ip_forward`;
/// a key written with slashes, which lets a component hold a dot, is taken as it is), or `None`
/// for a key that could name something outside `/proc/sys`.
pub fn sysctl_file(key: &str) -> Option<PathBuf> {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let fine = !relative.is_empty()
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    fine.then(|| PathBuf::from("/proc/sys").join(relative))
}

/// Something in a spec that the cell does not implement; the container must not run in a cell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cell cannot honour {0}")]
pub struct Unsupported(pub String);

impl Isolation {
    /// The boundary `spec` asks for, or what of it the cell cannot honour.
    pub fn from_spec(spec: &Spec) -> Result<Isolation, Unsupported> {
        let mut iso = Isolation::default();
        if let Some(names) = container_hook_kinds(spec) {
            // They run inside the container, as a native process of it: a cell has none.
            // (The shim runs the runtime-namespace stages itself: `crate::hooks`.)
            return Err(Unsupported(format!(
                "OCI hooks that run inside the container ({names}); runc runs them"
            )));
        }
        if let Some(linux) = spec.linux() {
            for ns in linux.namespaces().iter().flatten() {
                let kind = match ns.typ() {
                    LinuxNamespaceType::Network => NamespaceKind::Network,
                    LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
                    LinuxNamespaceType::Uts => NamespaceKind::Uts,
                    LinuxNamespaceType::Mount => NamespaceKind::Mount,
                    LinuxNamespaceType::Pid => NamespaceKind::Pid,
                    LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
                    other => {
                        return Err(Unsupported(format!(
                            "a {other:?} namespace (linux.namespaces)"
                        )))
                    }
                };
                iso.namespaces.push(Namespace {
                    kind,
                    path: ns.path().clone(),
                });
            }
            if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            {
                return Err(Unsupported("user namespace id mappings".into()));
            }
            iso.seccomp = linux.seccomp().clone();
            if linux.mount_label().is_some() {
                return Err(Unsupported("an SELinux mount label".into()));
            }
            if linux.intel_rdt().is_some() {
                return Err(Unsupported("Intel RDT (linux.intelRdt)".into()));
            }
            let mut sysctls: Vec<(String, String)> = linux
                .sysctl()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            sysctls.sort();
            for (key, _) in &sysctls {
                let kind = sysctl_namespace(key).ok_or_else(|| {
                    Unsupported(format!("the sysctl {key}, which is not namespaced"))
                })?;
                if sysctl_file(key).is_none() {
                    return Err(Unsupported(format!("the malformed sysctl key {key:?}")));
                }
                if !iso.namespaces.iter().any(|ns| ns.kind == kind) {
                    return Err(Unsupported(format!(
                        "the sysctl {key} without a {kind:?} namespace in the spec"
                    )));
                }
            }
            iso.sysctls = sysctls;
        }
        if let Some(hostname) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
            if !iso
                .namespaces
                .iter()
                .any(|ns| ns.kind == NamespaceKind::Uts)
            {
                return Err(Unsupported(
                    "a hostname without a UTS namespace in the spec".into(),
                ));
            }
            iso.hostname = Some(hostname.clone());
        }
        if let Some(process) = spec.process() {
            if process
                .apparmor_profile()
                .as_ref()
                .is_some_and(|p| !p.is_empty())
            {
                return Err(Unsupported("an AppArmor profile".into()));
            }
            if process
                .selinux_label()
                .as_ref()
                .is_some_and(|l| !l.is_empty())
            {
                return Err(Unsupported("an SELinux process label".into()));
            }
            iso.no_new_privileges = process.no_new_privileges().unwrap_or(false);
            if let Some(caps) = process.capabilities() {
                let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
                    let mut v: Vec<String> =
                        set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
                    v.sort();
                    v
                };
                iso.capabilities = Capabilities {
                    bounding: names(caps.bounding()),
                    effective: names(caps.effective()),
                    permitted: names(caps.permitted()),
                    inheritable: names(caps.inheritable()),
                    ambient: names(caps.ambient()),
                };
            }
            for r in process.rlimits().iter().flatten() {
                iso.rlimits.push(Rlimit {
                    // The spec's own spelling, `RLIMIT_NOFILE`.
                    kind: serde_json::to_value(r.typ())
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    soft: r.soft(),
                    hard: r.hard(),
                });
            }
            iso.oom_score_adj = process.oom_score_adj();
            let user = process.user();
            iso.uid = user.uid();
            iso.gid = user.gid();
            iso.additional_gids = user.additional_gids().clone().unwrap_or_default();
            iso.umask = user.umask();
        }
        Ok(iso)
    }
}

/// The stages of OCI hooks that run inside the container (`createContainer,
/// startContainer`) that `spec` lists, if any.
fn container_hook_kinds(spec: &Spec) -> Option<String> {
    let hooks = spec.hooks().as_ref()?;
    let kinds = [
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
    ];
    let names: Vec<&str> = kinds
        .iter()
        .filter(|(_, list)| list.as_ref().is_some_and(|l| !l.is_empty()))
        .map(|(name, _)| *name)
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_inside_the_container_go_to_runc_and_runtime_namespace_ones_do_not() {
        let inside = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "hooks": {
                "createRuntime": [{"path": "/bin/true"}],
                "createContainer": [{"path": "/bin/true"}],
                "startContainer": [{"path": "/bin/true"}],
                "poststop": [{"path": "/bin/true", "args": ["true"]}]
            }
        }));
        let err = Isolation::from_spec(&inside).expect_err("hooks inside are not the cell's");
        assert_eq!(
            err.to_string(),
            "the cell cannot honour OCI hooks that run inside the container (createContainer, \
             startContainer); runc runs them"
        );
        let runtime = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "hooks": {
                "prestart": [{"path": "/bin/true"}],
                "createRuntime": [{"path": "/bin/true"}],
                "startContainer": [],
                "poststart": [{"path": "/bin/true"}],
                "poststop": [{"path": "/bin/true", "args": ["true"]}]
            }
        }));
        assert!(Isolation::from_spec(&runtime).is_ok());
    }

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("spec")
    }

    #[test]
    fn reads_namespaces_caps_limits_and_user() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/app.wasm"], "cwd": "/",
                "user": {"uid": 1000, "gid": 100, "additionalGids": [5, 6]},
                "noNewPrivileges": true,
                "oomScoreAdj": 500,
                "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}]
            },
            "linux": {"namespaces": [
                {"type": "network", "path": "/var/run/netns/pod"},
                {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "pid"}
            ]}
        }));
        let iso = Isolation::from_spec(&s).expect("supported");
        assert_eq!(
            iso.namespaces[0],
            Namespace {
                kind: NamespaceKind::Network,
                path: Some("/var/run/netns/pod".into())
            }
        );
        assert_eq!(iso.namespaces.len(), 5);
        assert!(iso.no_new_privileges);
        assert_eq!(iso.oom_score_adj, Some(500));
        assert_eq!(iso.capabilities.bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(iso.capabilities.effective, ["CAP_KILL"]);
        assert!(iso.capabilities.ambient.is_empty());
        assert_eq!(
            iso.rlimits,
            [Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 512,
                hard: 1024
            }]
        );
        assert_eq!(
            (iso.uid, iso.gid, iso.additional_gids),
            (1000, 100, vec![5, 6])
        );
    }

    #[test]
    fn refuses_what_the_cell_cannot_honour() {
        let base = |linux: serde_json::Value, process_extra: serde_json::Value| {
            let mut process =
                serde_json::json!({"args": ["/a.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}});
            for (k, v) in process_extra.as_object().expect("object") {
                process[k] = v.clone();
            }
            spec(serde_json::json!({"ociVersion": "1.0.2", "process": process, "linux": linux}))
        };
        for (s, says) in [
            (
                base(
                    serde_json::json!({"namespaces": [{"type": "user"}]}),
                    serde_json::json!({}),
                ),
                "User",
            ),
            (
                base(
                    serde_json::json!({"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}),
                    serde_json::json!({}),
                ),
                "user namespace id mappings",
            ),
            (
                base(
                    serde_json::json!({}),
                    serde_json::json!({"apparmorProfile": "p"}),
                ),
                "AppArmor",
            ),
            (
                base(
                    serde_json::json!({"sysctl": {"vm.overcommit_memory": "1"}}),
                    serde_json::json!({}),
                ),
                "not namespaced",
            ),
            (
                base(
                    serde_json::json!({"sysctl": {"net.ipv4.ping_group_range": "0 0"}}),
                    serde_json::json!({}),
                ),
                "without a Network namespace",
            ),
            (
                base(
                    serde_json::json!({"namespaces": [{"type": "network"}], "sysctl": {"net/../../etc": "x"}}),
                    serde_json::json!({}),
                ),
                "malformed sysctl key",
            ),
        ] {
            let e = Isolation::from_spec(&s).expect_err(says).to_string();
            assert!(e.contains(says), "{e}");
        }
        let mut no_uts = base(serde_json::json!({}), serde_json::json!({}));
        no_uts.set_hostname(Some("pod".into()));
        let e = Isolation::from_spec(&no_uts)
            .expect_err("hostname")
            .to_string();
        assert!(e.contains("hostname without a UTS namespace"), "{e}");
    }

    #[test]
    fn the_specs_seccomp_profile_is_kept_for_the_cell() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/a.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}}
        }));
        let iso = Isolation::from_spec(&s).expect("kept");
        let profile = iso.seccomp.expect("profile");
        assert_eq!(
            profile.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(profile.syscalls().as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn namespaced_sysctls_and_the_hostname_are_kept() {
        let mut s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/pause"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {
                "namespaces": [{"type": "network", "path": "/run/netns/x"}, {"type": "ipc"}, {"type": "uts"}],
                "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmni": "8"}
            }
        }));
        s.set_hostname(Some("pod-a".into()));
        let iso = Isolation::from_spec(&s).expect("supported");
        assert_eq!(iso.hostname.as_deref(), Some("pod-a"));
        assert_eq!(
            iso.sysctls,
            vec![
                ("kernel.shmmni".into(), "8".into()),
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into())
            ]
        );
    }

    #[test]
    fn sysctl_keys_map_below_proc_sys_only() {
        assert_eq!(
            sysctl_file("net.ipv4.ip_forward"),
            Some(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
        );
        assert_eq!(
            sysctl_file("net/ipv4/conf/eth0.100/forwarding"),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding"))
        );
        for bad in ["", "net..x", "net/../../etc/shadow", "/etc/passwd", "net."] {
            assert_eq!(sysctl_file(bad), None, "{bad}");
        }
        assert_eq!(
            sysctl_namespace("fs.mqueue.msg_max"),
            Some(NamespaceKind::Ipc)
        );
        assert_eq!(
            sysctl_namespace("kernel.domainname"),
            Some(NamespaceKind::Uts)
        );
        assert_eq!(sysctl_namespace("kernel.pid_max"), None);
        assert_eq!(
            sysctl_namespace("net/ipv4/conf/eth0.100/forwarding"),
            Some(NamespaceKind::Network)
        );
        assert_eq!(sysctl_namespace("kernel/shmmni"), Some(NamespaceKind::Ipc));
    }
}
