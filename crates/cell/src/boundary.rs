//! The kernel boundary the cell puts itself in, from the spec's [`Isolation`].
//!
//! Three steps, all while the cell is single-threaded (namespaces joined with `setns` apply to
//! the calling thread only, and capability sets are per thread):
//!
//! 1. [`enter_namespaces`], before the program is loaded, so that compiling runs inside the
//!    container's namespaces (and, through the shim, its cgroup). The cell always ends up in a
//!    mount namespace of its own, so what it mounts never reaches the host or a joined
//!    namespace;
//! 2. [`seal_preopens`], after the program is loaded from the root-only compile cache: each
//!    directory the guest is granted becomes a mount of its own (read-only where the spec says
//!    so), before the guest's handles to them are opened;
//! 3. [`lock_down`], before the start byte: rlimits, `oom_score_adj`, pivoting into the rootfs
//!    (the host's filesystem is detached; the guest's grants stay reachable through the handles
//!    opened in step 2, and only below their mount roots), user and groups, capabilities,
//!    `no_new_privs`, and last the seccomp allow-list (`crate::seccomp`).
//!
//! The cgroup is the shim's part (`crate::cgroup`); a PID namespace needs a fork
//! (`crate::supervisor`).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use wasmcell_oci::isolation::{sysctl_file, sysctl_namespace, Isolation, NamespaceKind};
use wasmcell_oci::RunSpec;

use crate::{capabilities, sys};

fn flag(kind: NamespaceKind) -> CloneFlags {
    match kind {
        NamespaceKind::Network => CloneFlags::CLONE_NEWNET,
        NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
        NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
        NamespaceKind::Mount => CloneFlags::CLONE_NEWNS,
        NamespaceKind::Pid => CloneFlags::CLONE_NEWPID,
        NamespaceKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
    }
}

/// Whether the cell must fork after [`enter_namespaces`] (a PID namespace applies to children
/// only), and whether the child is the init of a new namespace.
pub fn pid_namespace(iso: &Isolation) -> Option<bool> {
    iso.namespaces
        .iter()
        .find(|ns| ns.kind == NamespaceKind::Pid)
        .map(|ns| ns.path.is_none())
}

/// Joins the namespaces the spec names by path and creates the others. A PID namespace takes
/// effect for the children of the cell: see `crate::supervisor`.
pub fn enter_namespaces(iso: &Isolation) -> Result<(), String> {
    let hosts = [
        NamespaceKind::Network,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
    ]
    .map(|kind| (kind, namespace_id(kind)));
    // Every path is opened before any namespace is entered, as runc does: a joined mount
    // namespace would otherwise decide what the later paths name.
    let files = iso
        .namespaces
        .iter()
        .map(|ns| {
            ns.path
                .as_ref()
                .map(|path| {
                    File::open(path).map_err(|e| {
                        format!("open {:?} namespace {}: {e}", ns.kind, path.display())
                    })
                })
                .transpose()
        })
        .collect::<Result<Vec<Option<File>>, String>>()?;
    let mut private_mounts = false;
    for (ns, file) in iso.namespaces.iter().zip(files) {
        match (&ns.path, file) {
            (Some(path), Some(file)) => {
                nix::sched::setns(file, flag(ns.kind))
                    .map_err(|e| format!("join {:?} namespace {}: {e}", ns.kind, path.display()))?;
            }
            _ => {
                nix::sched::unshare(flag(ns.kind))
                    .map_err(|e| format!("create a {:?} namespace: {e}", ns.kind))?;
                if ns.kind == NamespaceKind::Mount {
                    slave_mounts()?;
                    private_mounts = true;
                }
            }
        }
    }
    if !private_mounts {
        // No mount namespace in the spec, or a joined one: pivoting there would move the
        // root of every process in it. A copy of our own instead.
        nix::sched::unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("create the cell's mount namespace: {e}"))?;
        slave_mounts()?;
    }
    // The spec's sysctls and hostname belong to namespaces the spec names; one of those that
    // turns out to be the host's own (joined by path) must not be changed from here.
    let changes_host = |kind: NamespaceKind| {
        hosts
            .iter()
            .any(|(k, id)| *k == kind && id.is_some() && *id == namespace_id(kind))
    };
    if let Some(hostname) = &iso.hostname {
        if changes_host(NamespaceKind::Uts) {
            return Err("refusing to set the hostname of the host's UTS namespace".into());
        }
        nix::unistd::sethostname(hostname)
            .map_err(|e| format!("set hostname {hostname:?}: {e}"))?;
    }
    for (key, value) in &iso.sysctls {
        let kind =
            sysctl_namespace(key).ok_or_else(|| format!("sysctl {key} is not namespaced"))?;
        if changes_host(kind) {
            return Err(format!(
                "refusing to set the sysctl {key} in the host's {kind:?} namespace"
            ));
        }
        let file = sysctl_file(key).ok_or_else(|| format!("malformed sysctl key {key:?}"))?;
        // /proc/sys answers for the namespaces of the process that opens the file: the cell's.
        std::fs::write(&file, value).map_err(|e| format!("set sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}

/// The identity (device and inode) of this thread's namespace of `kind`, if it can be read.
fn namespace_id(kind: NamespaceKind) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(format!("/proc/thread-self/ns/{}", kind.proc_name())).ok()?;
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// The namespaces of process `pid` (a container's init that runc made) that are not this
/// process's own, each opened, all before any is joined. The user namespace is left out: a
/// process joining it would become root there with every capability, more than a compiler
/// that drops to `nobody` should hold.
pub fn namespaces_of(pid: i32) -> Result<Vec<(NamespaceKind, File)>, String> {
    use std::os::unix::fs::MetadataExt;
    let kinds = [
        NamespaceKind::Cgroup,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Network,
        NamespaceKind::Pid,
        NamespaceKind::Mount,
    ];
    let mut opened = Vec::new();
    for kind in kinds {
        let path = format!("/proc/{pid}/ns/{}", kind.proc_name());
        let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("stat {path}: {e}"))?;
        if namespace_id(kind) != Some((meta.dev(), meta.ino())) {
            opened.push((kind, file));
        }
    }
    Ok(opened)
}

/// Joins each namespace of `namespaces` (from [`namespaces_of`]); a PID namespace applies to
/// the children forked afterwards, a mount namespace needs a single-threaded caller.
pub fn join_namespaces(namespaces: &[(NamespaceKind, File)]) -> Result<(), String> {
    for (kind, file) in namespaces {
        nix::sched::setns(file, flag(*kind))
            .map_err(|e| format!("join the container's {kind:?} namespace: {e}"))?;
    }
    Ok(())
}

/// Mounts made in the cell never propagate back to the host.
fn slave_mounts() -> Result<(), String> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make / a slave mount in the cell: {e}"))
}

/// Flags of every mount the guest is granted: nothing on it is a device, set-uid or
/// executable by the kernel (the cell never executes a file; its seccomp filter refuses it too).
fn sealed(read_only: bool) -> MsFlags {
    let mut flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    flags
}

/// Gives the rootfs and each preopened directory a mount of its own, sealed: read-only for
/// `ro` and `rro`, and always no devices, no set-uid, no exec, on every mount below it too
/// (a read-only grant has no writable submount).
///
/// Each is a detached copy of the host's tree at that directory (`open_tree`), all taken
/// before any is sealed, so the same directory granted read-only at one place and writable at
/// another is two copies with their own flags. The rootfs's copy is attached at the rootfs
/// (`pivot_root` needs a mount point); the guest is granted each preopen through its copy
/// (see [`Sealed`]), whose `..` at the top leads nowhere once the host's tree is detached.
/// The kernel enforces `ro` beneath WASI's own check.
pub fn seal_preopens(spec: &RunSpec) -> Result<Sealed, String> {
    let trees = spec
        .preopens
        .iter()
        .map(|p| {
            sys::clone_tree(&p.host)
                .map_err(|e| format!("copy the mounts of the preopen {}: {e}", p.host.display()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (p, tree) in spec.preopens.iter().zip(&trees) {
        let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;
        if p.read_only {
            attrs |= sys::MOUNT_ATTR_RDONLY;
        }
        sys::set_tree_attrs(tree, attrs)
            .map_err(|e| format!("seal the mounts of {}: {e}", p.host.display()))?;
    }
    let root = spec
        .preopens
        .iter()
        .position(|p| p.host == spec.rootfs)
        .ok_or_else(|| {
            format!(
                "the rootfs {} is not among the preopens",
                spec.rootfs.display()
            )
        })?;
    sys::attach_tree(&trees[root], &spec.rootfs)
        .map_err(|e| format!("mount the rootfs {}: {e}", spec.rootfs.display()))?;
    Ok(Sealed { trees })
}

/// The preopens as sealed: one mount tree each, in the spec's order.
pub struct Sealed {
    trees: Vec<std::os::fd::OwnedFd>,
}

impl Sealed {
    /// The path that opens the `i`th preopen's own mount while the cell still sees the host's
    /// `/proc`: its fd's link (the guest's runtime opens it there, before the pivot).
    pub fn path(&self, i: usize) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        self.trees
            .get(i)
            .map(|t| PathBuf::from(format!("/proc/self/fd/{}", t.as_raw_fd())))
    }
}

/// For a cell that grants nothing (a pause cell): makes the rootfs a mount of its own, as
/// [`seal_preopens`] does for a guest's, read-only whatever the spec says, since nothing in
/// the cell writes there.
pub fn seal_root(spec: &RunSpec) -> Result<(), String> {
    let root = &spec.rootfs;
    nix::mount::mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} onto itself: {e}", root.display()))?;
    nix::mount::mount(None::<&str>, root, None::<&str>, sealed(true), None::<&str>)
        .map_err(|e| format!("remount {} read-only: {e}", root.display()))
}

/// Which seccomp filter [`lock_down`] ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The guest's allow-list (`crate::seccomp::install`).
    Guest,
    /// None yet: the caller installs a narrower one once it no longer needs the protocol's
    /// reads and writes (a pause cell: `crate::seccomp::install_pause`).
    Later,
}

/// Makes the (sealed) rootfs the cell's `/` and detaches the host's tree.
fn pivot_into(rootfs: &Path) -> Result<(), String> {
    nix::unistd::chdir(rootfs).map_err(|e| format!("enter {}: {e}", rootfs.display()))?;
    // With the same directory as both arguments the old root ends up stacked on the new one,
    // where it is unmounted; no directory for it is needed inside the image.
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| format!("pivot_root into {}: {e}", rootfs.display()))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("detach the host's filesystem: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir / in the rootfs: {e}"))
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// The umask of a process whose spec gives none (runc's).
const DEFAULT_UMASK: u32 = 0o022;

/// Applies rlimits, `oom_score_adj`, the umask, the pivot into the rootfs, user and groups, capabilities, `no_new_privs` and the
/// seccomp allow-list, in the order runc uses (limits need privileges, so they come before
/// dropping them; the filter comes last so that setting up needs no allowed call).
pub fn lock_down(spec: &RunSpec, filter: Filter) -> Result<(), String> {
    let iso = &spec.isolation;
    for r in &iso.rlimits {
        let resource = rlimit_resource(&r.kind)
            .ok_or_else(|| format!("unknown rlimit {:?} in process.rlimits", r.kind))?;
        nix::sys::resource::setrlimit(resource, r.soft, r.hard)
            .map_err(|e| format!("setrlimit {} {}/{}: {e}", r.kind, r.soft, r.hard))?;
    }
    if let Some(adj) = iso.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("set oom_score_adj {adj}: {e}"))?;
    }
    // Files the guest creates in its grants get the spec's umask, as a process runc starts
    // does (runc's own default when the spec gives none).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        iso.umask.unwrap_or(DEFAULT_UMASK),
    ));
    // Read while /proc is still in view.
    let last_cap = capabilities::last_cap();
    pivot_into(&spec.rootfs)?;

    let caps = &iso.capabilities;
    let bounding = capabilities::numbers(&caps.bounding)?;
    let effective = capabilities::numbers(&caps.effective)?;
    let permitted = capabilities::numbers(&caps.permitted)?;
    let inheritable = capabilities::numbers(&caps.inheritable)?;
    let ambient = capabilities::numbers(&caps.ambient)?;
    for cap in 0..=last_cap {
        if !bounding.contains(&cap) {
            sys::drop_bounding(cap)
                .map_err(|e| format!("drop capability {cap} from the bounding set: {e}"))?;
        }
    }

    let change_user = iso.uid != 0 || iso.gid != 0;
    // Changing the user clears the parent-death signal (a guest in a PID namespace has one, to
    // die with its supervisor); it is set again below.
    let death_signal = nix::sys::prctl::get_pdeathsig()
        .map_err(|e| format!("read the parent-death signal: {e}"))?;
    if change_user {
        sys::set_keepcaps(true).map_err(|e| format!("keep capabilities: {e}"))?;
    }
    let groups: Vec<nix::unistd::Gid> = iso
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups)
        .map_err(|e| format!("setgroups {:?}: {e}", iso.additional_gids))?;
    if change_user {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(iso.gid))
            .map_err(|e| format!("setgid {}: {e}", iso.gid))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(iso.uid))
            .map_err(|e| format!("setuid {}: {e}", iso.uid))?;
        sys::set_keepcaps(false).map_err(|e| format!("reset keepcaps: {e}"))?;
        if let Some(signal) = death_signal {
            nix::sys::prctl::set_pdeathsig(signal)
                .map_err(|e| format!("set the parent-death signal again: {e}"))?;
        }
    }
    sys::capset(
        capabilities::mask(&effective),
        capabilities::mask(&permitted),
        capabilities::mask(&inheritable),
    )
    .map_err(|e| format!("set capabilities: {e}"))?;
    sys::set_ambient(&ambient).map_err(|e| format!("set ambient capabilities: {e}"))?;
    // Always: the guest has no use for privilege gains through exec, whatever the spec says.
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    match filter {
        Filter::Guest => {
            // The spec's profile first: it must let the allow-list be installed after it.
            if let Some(profile) = &iso.seccomp {
                crate::seccomp::install_profile(profile)?;
            }
            crate::seccomp::install()
        }
        Filter::Later => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_names_map_to_resources() {
        assert!(rlimit_resource("RLIMIT_NOFILE").is_some());
        assert!(rlimit_resource("RLIMIT_BOGUS").is_none());
    }
}
