//! The VM tier: a Debian machine with systemd as PID 1 and the unified cgroup v2 hierarchy,
//! booted with qemu under software emulation (TCG), for what the cgroup v1 hosts of CI cannot
//! run.
//!
//! - [`Image::get`] builds the machine once (`test/vm/build-image.sh`: debootstrap, the cloud
//!   kernel and its initramfs, an ext4 root disk) into the tools cache, keyed by its inputs.
//! - [`Image::run`] boots it with a command: the command and the host directories it needs
//!   are copied onto a second disk (`/mnt/in` in the guest, read-only), a third disk receives
//!   the results, the guest's runner (`guest/wasmcell-vm-run`, a systemd unit) runs the
//!   command as root after boot and powers off, and the host reads the command's output and
//!   exit status from the third disk (with `debugfs`), and the serial console. The root disk
//!   is opened with `snapshot=on`, so no run changes it. The machine has no network card.
//!   (Disks rather than 9p or virtiofs shares: the cloud kernel has no 9p, and virtiofs needs
//!   a daemon beside qemu.)
//!
//! KVM is not used: on these machines `-enable-kvm` hangs at early boot.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The built machine: its kernel, initramfs and root disk.
#[derive(Debug, Clone)]
pub struct Image {
    dir: PathBuf,
}

/// A host directory the command reads: copied to `/mnt/in/<name>` in the guest.
#[derive(Debug, Clone)]
pub struct Share {
    /// Its name under `/mnt/in`.
    pub name: String,
    /// The host directory (symbolic links in it are followed).
    pub path: PathBuf,
}

/// What one boot did.
#[derive(Debug)]
pub struct Run {
    /// The command's exit status; `None` if the machine never reported one (it did not boot,
    /// the runner failed, or the time ran out).
    pub status: Option<i32>,
    /// The command's stdout and stderr.
    pub output: String,
    /// The serial console: the kernel's and systemd's messages, and the runner's last line.
    pub console: String,
    /// Wall time from starting qemu until it exited.
    pub took: Duration,
}

/// Shell lines a command starts with so that its output says how the machine booted, for
/// [`Run::assert_systemd_on_cgroup_v2`].
pub const BOOT_FACTS: &str = "echo \"init: $(cat /proc/1/comm)\"\n\
                              echo \"cgroup filesystem: $(stat -fc %T /sys/fs/cgroup)\"\n";

impl Run {
    /// Panics with the report unless the command ran, after [`BOOT_FACTS`], on a machine with
    /// systemd as init and the unified cgroup v2 hierarchy: what the tier is there for.
    pub fn assert_systemd_on_cgroup_v2(&self) {
        for fact in ["init: systemd", "cgroup filesystem: cgroup2fs"] {
            assert!(self.output.contains(fact), "{fact}?\n{}", self.report());
        }
    }

    /// The console and output, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "status {:?} after {:?}\n--- output ---\n{}\n--- console ---\n{}",
            self.status, self.took, self.output, self.console
        )
    }
}

impl Image {
    /// Builds the machine if the cache does not hold it yet (several minutes, once), and
    /// returns it. Panics with the build's error output if that fails.
    pub fn get() -> Image {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .expect("run build-image.sh");
        assert!(
            out.status.success(),
            "building the VM image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        for file in ["vmlinuz", "initrd.img", "rootfs.ext4"] {
            assert!(dir.join(file).is_file(), "{} has no {file}", dir.display());
        }
        Image { dir }
    }

    /// Boots the machine, runs `command` (a script: the file gets `#!/bin/sh` if it has no
    /// interpreter line) with `shares` under `/mnt/in`, and waits until the machine is off, at
    /// most `timeout` (then it is killed).
    pub fn run(&self, command: &str, shares: &[Share], timeout: Duration) -> Run {
        let work = tempfile::Builder::new()
            .prefix("wasmcell-vm-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let input = work.path().join("in");
        std::fs::create_dir(&input).expect("in dir");
        let text = if command.starts_with("#!") {
            command.to_owned()
        } else {
            format!("#!/bin/sh\n{command}")
        };
        let script = input.join("command");
        std::fs::write(&script, text).expect("write the command");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the command");
        for share in shares {
            let status = Command::new("cp")
                .arg("-RL")
                .arg(&share.path)
                .arg(input.join(&share.name))
                .status()
                .expect("run cp");
            assert!(
                status.success(),
                "copy {} into the VM's disk",
                share.path.display()
            );
        }
        let in_disk = work.path().join("in.ext4");
        let out_disk = work.path().join("out.ext4");
        mkfs(&in_disk, Some(&input));
        mkfs(&out_disk, None);
        let console = work.path().join("console.log");

        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args([
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
        ])
        .args(["-smp", "2", "-m", "4096"])
        .args(["-display", "none", "-monitor", "none", "-nic", "none"])
        .args(["-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(self.dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(self.dir.join("initrd.img"))
        .args([
            "-append",
            "console=ttyS0 root=/dev/vda rw panic=-1 loglevel=4 systemd.show_status=0",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            self.dir.join("rootfs.ext4").display()
        ));
        for disk in [&in_disk, &out_disk] {
            qemu.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", disk.display()));
        }
        qemu.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = qemu
            .spawn()
            .expect("start qemu-system-x86_64 (is qemu-system-x86 installed? make deps)");
        let finished = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() > timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("wait for qemu: {e}"),
            }
        };
        let took = started.elapsed();
        let mut qemu_err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use std::io::Read;
            let _ = stderr.read_to_string(&mut qemu_err);
        }
        let read = |name: &str| fetch(&out_disk, name, work.path());
        let mut console_text = std::fs::read_to_string(&console).unwrap_or_default();
        if finished.is_none() {
            console_text.push_str(&format!("\n[the VM was killed after {timeout:?}]"));
        }
        if !qemu_err.is_empty() {
            console_text.push_str(&format!("\n[qemu] {qemu_err}"));
        }
        Run {
            status: read("status").trim().parse().ok(),
            output: read("output"),
            console: console_text,
            took,
        }
    }
}

/// The newest build of integration test `name` in cargo's `deps` directory: cargo names it
/// `<name>-<hash>`, and builds every test of a `cargo test` before it runs any, so a tier that
/// runs another crate's test inside the VM finds it there.
pub fn test_binary(deps: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(deps)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            file.strip_prefix(&format!("{name}-"))
                .is_some_and(|hash| hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no {name} test binary in {} (cargo test --no-run builds it)",
                deps.display()
            )
        })
}

/// A directory `dir` of symbolic links to `files` (name, target), for a [`Share`]: the copy
/// onto the VM's disk follows the links.
pub fn stage(dir: &Path, files: &[(&str, PathBuf)]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("make the staging dir");
    for (name, target) in files {
        std::os::unix::fs::symlink(target, dir.join(name)).expect("link into the staging dir");
    }
    dir.to_owned()
}

/// Makes an ext4 disk image at `image` holding `dir` (empty if `None`), with room to spare.
fn mkfs(image: &Path, dir: Option<&Path>) {
    let size_mib = dir.map_or(0, du_mib) * 5 / 4 + 256;
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F"]);
    if let Some(dir) = dir {
        cmd.arg("-d").arg(dir);
    }
    let out = cmd
        .arg(image)
        .arg(format!("{size_mib}M"))
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4 {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Disk usage of `dir` in MiB.
fn du_mib(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sm"])
        .arg(dir)
        .output()
        .expect("run du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A file from the root of an ext4 image, read with `debugfs` (no mount needed); empty if it
/// is not there.
fn fetch(image: &Path, name: &str, scratch: &Path) -> String {
    let target = scratch.join(format!("fetched-{name}"));
    let _ = Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump /{name} {}", target.display()))
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    std::fs::read_to_string(&target).unwrap_or_default()
}
