//! The kernel's flags on the preopens' mounts as a cell makes them, checked in a forked child
//! with a mount namespace of its own: a read-only grant is read-only all the way down (a mount
//! below it too), and one host directory granted read-only at one place and writable at another
//! keeps each grant's flags.
//!
//! One test in this binary, so the fork happens while no other test thread can hold a lock.
#![allow(unsafe_code)]

use std::path::Path;

use wasmcell_oci::Bundle;

/// Whether the filesystem behind `path` is mounted read-only (`statvfs`'s `ST_RDONLY`).
fn read_only(path: &Path) -> Result<bool, String> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {path:?}: {e}"))?;
    Ok(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

fn checks(root: &Path) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    let rootfs = root.join("rootfs");
    let data = root.join("data");
    // A writable mount below the directory granted.
    nix::mount::mount(
        Some("tmpfs"),
        &data.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("tmpfs: {e}"))?;
    // The same directory granted read-only at /ro and writable at /rw, as a spec's mounts.
    let oci: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/a.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/ro", "type": "bind", "source": data, "options": ["rbind", "ro"]},
            {"destination": "/rw", "type": "bind", "source": data, "options": ["rbind", "rw"]}
        ]
    }))
    .map_err(|e| format!("spec: {e}"))?;
    let bundle = Bundle {
        dir: root.to_owned(),
        spec: oci,
        rootfs: rootfs.clone(),
    };
    let spec = bundle
        .run_spec("t", None, Path::new("/tmp"))
        .map_err(|e| format!("run spec: {e}"))?;
    let grants: Vec<(&str, bool)> = spec
        .preopens
        .iter()
        .map(|p| (p.guest.as_str(), p.read_only))
        .collect();
    if grants != [("/", false), ("/ro", true), ("/rw", false)] {
        return Err(format!("preopens: {grants:?}"));
    }
    let sealed = wasmcell_cell::seal_preopens(&spec)?;
    let grant = |i: usize| sealed.path(i).ok_or(format!("no preopen {i}"));
    let want = [
        (grant(1)?, true, "/ro"),
        (grant(1)?.join("sub"), true, "/ro/sub, a mount below"),
        (grant(2)?, false, "/rw"),
        (grant(2)?.join("sub"), false, "/rw/sub"),
    ];
    for (path, ro, what) in want {
        if read_only(&path)? != ro {
            return Err(format!("{what}: read-only should be {ro}"));
        }
    }
    Ok(())
}

#[test]
fn read_only_grants_are_read_only_all_the_way_down_and_each_keeps_its_own_mount() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("rootfs")).expect("mkdir");
    std::fs::create_dir_all(root.path().join("data/sub")).expect("mkdir");
    // SAFETY: the child only runs `checks` and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = match checks(root.path()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            };
            // SAFETY: end the child without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).expect("wait") {
                nix::sys::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
                other => panic!("child: {other:?}"),
            }
        }
    }
}
