//! Mounting the rootfs mounts containerd hands to Create, and unmounting them at Delete.
//!
//! The framework's `mount_rootfs` forks the (multi-threaded) daemon for every mount, so that
//! it can `chdir` for overlay options too long for one page, and waits for the child through
//! the reaper, a large share of a cold start (docs/performance.md). The common case needs none of
//! that: an overlay or bind mount whose options are all filesystem data (`lowerdir=`,
//! `upperdir=`, `workdir=`, `index=off`…) and fit in a page is one `mount(2)` call, made here
//! directly. Anything else (a flag word such as `ro` or `rbind`, propagation, loop devices, long
//! options) still goes through the framework, which knows all of them.
//!
//! Likewise at Delete: the framework's `umount_recursive` parses `/proc/self/mountinfo` to find
//! mounts below the target first; the rootfs normally has none (the cell mounts inside its own
//! mount namespace), so [`unmount`] unmounts the target itself directly and reads mountinfo
//! only when that says something is in the way.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::MsFlags;

use crate::error::Error;

/// Option words `mount(8)` and containerd treat as flags rather than filesystem data; a mount
/// with any of them is left to the framework.
const FLAG_WORDS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "loop",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// Leaves room below the page-size limit of mount data, as the framework does.
const DATA_LIMIT: usize = 4096 - 512;

/// The data string of a mount that can be made with one direct `mount(2)`, or `None`.
fn direct_data(fs_type: &str, options: &[String]) -> Option<String> {
    if fs_type.is_empty() || options.iter().any(|o| FLAG_WORDS.contains(&o.as_str())) {
        return None;
    }
    let data = options.join(",");
    (data.len() < DATA_LIMIT).then_some(data)
}

/// Mounts `source` (of type `fs_type`, with `options`) on `target`.
pub fn mount(fs_type: &str, source: &str, options: &[String], target: &Path) -> Result<(), String> {
    match direct_data(fs_type, options) {
        Some(data) => nix::mount::mount(
            Some(source),
            target,
            Some(fs_type),
            MsFlags::empty(),
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| e.to_string()),
        None => containerd_shim::mount::mount_rootfs(Some(fs_type), Some(source), options, target)
            .map_err(|e| e.to_string()),
    }
}

/// Unmounts everything at and below `target`, logging what cannot be unmounted.
pub fn unmount(target: &Path) {
    // Several mounts may be stacked on the target; unmount until nothing is left. A mount with
    // others below it does not unmount (EBUSY), so once the target has unmounted and is no
    // mount point any more (EINVAL), nothing is left below it either.
    let mut unmounted = false;
    loop {
        match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
            Ok(()) => unmounted = true,
            Err(nix::errno::Errno::EINVAL) if unmounted => return,
            Err(nix::errno::Errno::ENOENT) => return,
            // Not a mount point (mounts may still sit below it), or busy: the framework's walk
            // of mountinfo finds and unmounts what is there.
            Err(_) => break,
        }
    }
    let t = target.to_string_lossy();
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(&t), 0) {
        log::warn!("unmount {t}: {e}; retrying lazily");
        if let Err(e) = containerd_shim::mount::umount_recursive(Some(&t), libc::MNT_DETACH) {
            log::error!("cannot unmount {t}: {e}");
        }
    }
}

/// The rootfs the shim mounted for a task: unmounted again when dropped, unless kept (on
/// Create's success, for Delete to unmount).
pub struct MountedRootfs(Option<PathBuf>);

impl MountedRootfs {
    /// Mounts containerd's `mounts` on `<bundle>/rootfs`, in order; nothing when there are none
    /// (the bundle has its rootfs already).
    pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<MountedRootfs, Error> {
        if mounts.is_empty() {
            return Ok(MountedRootfs(None));
        }
        let target = bundle.join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
        let guard = MountedRootfs(Some(target.clone()));
        for m in mounts {
            mount(&m.type_, &m.source, &m.options, &target).map_err(|e| {
                Error::Internal(format!(
                    "mount {} ({}) on {}: {e}",
                    m.source,
                    m.type_,
                    target.display()
                ))
            })?;
        }
        Ok(guard)
    }

    /// Keeps the mount; its path, for Delete.
    pub fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for MountedRootfs {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            unmount(&target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_overlay_options_are_mounted_directly() {
        let o = opts(&["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"]);
        assert_eq!(
            direct_data("overlay", &o).as_deref(),
            Some("index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2")
        );
    }

    #[test]
    fn flags_long_options_and_untyped_mounts_go_to_the_framework() {
        assert_eq!(direct_data("overlay", &opts(&["ro", "lowerdir=/l"])), None);
        assert_eq!(direct_data("none", &opts(&["rbind", "rw"])), None);
        assert_eq!(direct_data("", &opts(&["lowerdir=/l"])), None);
        let long = format!("lowerdir={}", "/layer".repeat(700));
        assert_eq!(direct_data("overlay", &[long]), None);
    }
}
