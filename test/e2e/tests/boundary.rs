//! The kernel boundary of the cell: capabilities, `no_new_privs`,
//! namespaces created or joined by path.

use std::time::Duration;
use wasmcell_e2e::{fixtures, proc_status, Containerd};

const IMG: &str = "wasmcell.test/probe:latest";

/// ctr's default capability set (containerd's `oci.WithDefaultSpec`).
const CTR_DEFAULT_CAPS: [u32; 14] = [0, 1, 4, 3, 27, 13, 6, 7, 31, 8, 10, 18, 5, 29];

fn start_sleeper(c: &Containerd, id: &str, flags: &[&str]) -> i32 {
    let r = c.run_detached(flags, IMG, id, &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{id}: {r:?}");
    let pids = c.guest_pids(&[id.to_owned()]);
    assert_eq!(pids.len(), 1, "{id}: one process runs the guest");
    pids[0]
}

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .expect("ns link")
        .to_string_lossy()
        .into_owned()
}

fn mask(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | (1 << c)))
}

#[test]
fn capabilities_and_no_new_privs_follow_the_spec() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);

    let pid = start_sleeper(&c, "caps-default", &[]);
    let want = mask(&CTR_DEFAULT_CAPS);
    assert_eq!(
        proc_status(pid, "CapEff"),
        want,
        "effective = the spec's set"
    );
    assert_eq!(proc_status(pid, "CapPrm"), want);
    assert_eq!(
        proc_status(pid, "CapBnd"),
        want,
        "nothing beyond the spec, even later"
    );
    assert_eq!(proc_status(pid, "CapInh"), mask(&[]));
    assert_eq!(proc_status(pid, "CapAmb"), mask(&[]));
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "the allow-list applies");
    // Capabilities and seccomp filters are per thread: every thread of the cell (the stdin
    // relay, the runtime's) has them.
    let threads: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    assert!(threads.len() > 1, "the stdin relay runs: {threads:?}");
    for tid in threads {
        let task = format!("{pid}/task/{tid}");
        assert_eq!(proc_status(&task, "Seccomp"), "2", "thread {tid}");
        assert_eq!(proc_status(&task, "CapEff"), want, "thread {tid}");
        assert_eq!(proc_status(&task, "CapBnd"), want, "thread {tid}");
    }

    let mut fewer: Vec<u32> = CTR_DEFAULT_CAPS.to_vec();
    fewer.retain(|c| *c != 13 && *c != 0); // CAP_NET_RAW, CAP_CHOWN
    fewer.push(21); // CAP_SYS_ADMIN
    let pid = start_sleeper(
        &c,
        "caps-changed",
        &[
            "--cap-drop",
            "CAP_NET_RAW",
            "--cap-drop",
            "CAP_CHOWN",
            "--cap-add",
            "CAP_SYS_ADMIN",
        ],
    );
    assert_eq!(proc_status(pid, "CapEff"), mask(&fewer));
    assert_eq!(proc_status(pid, "CapBnd"), mask(&fewer));

    // process.user: uid and gid (real, effective, saved, filesystem), the supplementary groups
    // of the spec and no other; the effective capabilities stay the spec's, as runc leaves them.
    // (ctr 1.6 has no --user: the image config's User sets process.user.)
    let probe = c.dir.path().join("probe-user.wasm");
    std::fs::write(&probe, fixtures::PROBE).unwrap();
    c.build_and_import(&[
        "--name",
        "wasmcell.test/probe-user:latest",
        "--wasm",
        probe.to_str().unwrap(),
        "--user",
        "1000:100",
    ]);
    let r = c.run_detached(
        &[],
        "wasmcell.test/probe-user:latest",
        "user",
        &["/probe-user.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let pid = c.guest_pids(&["user".to_owned()])[0];
    assert_eq!(proc_status(pid, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(proc_status(pid, "Gid"), "100\t100\t100\t100");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.bundle_dir("user").join("config.json")).unwrap())
            .unwrap();
    assert_eq!(spec["process"]["user"]["uid"], 1000);
    let groups: Vec<String> = spec["process"]["user"]["additionalGids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        proc_status(pid, "Groups"),
        groups.join(" "),
        "exactly the spec's additional gids"
    );
    assert_eq!(proc_status(pid, "CapEff"), want);
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    // The kernel clears the parent-death signal when a process changes its user: a guest that
    // has dropped to the spec's user still dies with its supervisor (set again after setuid).
    let supervisor = c.cell_pids(&["user".to_owned()]);
    assert_eq!(supervisor.len(), 1, "{supervisor:?}");
    let events = c.events();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let exit = events
        .wait_for("/tasks/exit", "user", std::time::Duration::from_secs(10))
        .expect("the task exits with its supervisor");
    assert_eq!(exit.exit_status(), 137);
    let gone = c.wait_until(std::time::Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "the guest {pid} died with its supervisor");

    for id in ["caps-default", "caps-changed"] {
        assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", id]).code, 0);
    }
}

#[test]
fn namespaces_are_created_or_joined_by_path() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);

    let own = start_sleeper(&c, "ns-own", &[]).to_string();
    for kind in ["net", "ipc", "uts", "mnt"] {
        assert_ne!(ns(&own, kind), ns("self", kind), "{kind}: a new namespace");
    }

    let host = start_sleeper(&c, "ns-host", &["--net-host"]).to_string();
    assert_eq!(
        ns(&host, "net"),
        ns("self", "net"),
        "--net-host keeps the host's"
    );

    let path = format!("network:/proc/{own}/ns/net");
    let joined = start_sleeper(&c, "ns-joined", &["--with-ns", &path]).to_string();
    assert_eq!(
        ns(&joined, "net"),
        ns(&own, "net"),
        "joined by path, as a pod's containers"
    );
    assert_ne!(ns(&joined, "uts"), ns(&own, "uts"));

    let bad = c.run_wasm_with(
        &["--with-ns", "network:/no/such/netns"],
        IMG,
        "ns-bad",
        &["/probe.wasm"],
    );
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(
        bad.stderr.contains("open Network namespace /no/such/netns"),
        "names the namespace path: {bad:?}"
    );

    // PID: the guest is the init of a namespace of its own; the process the shim started (the
    // task's pid) supervises it from the host's namespace, with nothing but CAP_KILL, no fd and
    // its own seccomp filter.
    assert_ne!(ns(&own, "pid"), ns("self", "pid"), "a new PID namespace");
    let nspid = proc_status(&own, "NSpid");
    assert_eq!(
        nspid.split_whitespace().nth(1),
        Some("1"),
        "the guest is pid 1 in its namespace: {nspid}"
    );
    let supervisor = c.cell_pids(&["ns-own".to_owned()]);
    assert_eq!(supervisor.len(), 1);
    let supervisor = supervisor[0];
    assert_ne!(
        supervisor.to_string(),
        own,
        "the guest runs in the cell's child"
    );
    assert_eq!(ns(&supervisor.to_string(), "pid"), ns("self", "pid"));
    // The task's pid is the guest's, as a runc container's is its process in the container's
    // namespaces: `/proc/<task pid>/ns` is how CRI and `kubectl debug` join them.
    let tasks = c.ctr(&["task", "ls"]).stdout;
    let task_pid = tasks
        .lines()
        .find_map(|l| l.strip_prefix("ns-own "))
        .and_then(|rest| rest.split_whitespace().next());
    assert_eq!(task_pid, Some(own.as_str()), "{tasks}");
    assert_eq!(proc_status(supervisor, "CapEff"), mask(&[5]));
    assert_eq!(proc_status(supervisor, "CapBnd"), mask(&[5]));
    assert_eq!(proc_status(supervisor, "NoNewPrivs"), "1");
    assert_eq!(proc_status(supervisor, "Seccomp"), "2");
    // Two fds only: the cgroup's OOM kill count and the status pipe, for its report of an OOM
    // kill.
    let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{supervisor}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                target.display().to_string(),
            )
        })
        .collect();
    fds.sort();
    assert_eq!(fds.len(), 2, "the supervisor's fds: {fds:?}");
    assert_eq!(fds[0].0, "0");
    assert!(
        fds[0].1.ends_with("/default/ns-own/memory.oom_control")
            || fds[0].1.ends_with("/default/ns-own/memory.events"),
        "{fds:?}"
    );
    assert_eq!(fds[1].0, "1");
    assert!(fds[1].1.starts_with("pipe:"), "{fds:?}");
    // A PID namespace joined by path: the guest is a member, not its init.
    let path = format!("pid:/proc/{own}/ns/pid");
    let member = start_sleeper(&c, "ns-pid-joined", &["--with-ns", &path]).to_string();
    assert_eq!(ns(&member, "pid"), ns(&own, "pid"));
    let nspid = proc_status(&member, "NSpid");
    assert_ne!(nspid.split_whitespace().nth(1), Some("1"), "{nspid}");

    // The member first: killing the init of a PID namespace kills its members too.
    for id in ["ns-pid-joined", "ns-own", "ns-host", "ns-joined"] {
        let r = c.ctr(&["task", "kill", "-s", "KILL", id]);
        assert_eq!(r.code, 0, "{id}: {r:?}");
    }
}

/// (device, inode) of a file, following links.
fn identity(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What an fd of a running cell may be: stdio (0-2, and for stdin the client's FIFO, read-only,
/// with the two ends of the relay pipe in front of it), the status pipe (how the guest ends is
/// reported on it), a preopen, the compiled module mapped
/// from the host cache (read-only), or the WASI runtime's anonymous event-loop handles. Files
/// are recognised by device and inode: the cell opened them before it detached the host's
/// tree, so their link text no longer names a host path.
#[test]
fn a_running_cell_holds_only_stdio_preopens_and_its_module() {
    use std::os::unix::fs::FileTypeExt;
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let pid = start_sleeper(&c, "fds", &[]);
    // Start returns once the shim has written the start byte; the cell closes the control pipe
    // (fd 3) when it has read it, which on a busy machine can be a little later.
    let control_closed = || {
        std::fs::read_link(format!("/proc/{pid}/fd/3"))
            .map_or(true, |t| !t.to_string_lossy().starts_with("pipe:"))
    };
    assert!(
        c.wait_until(Duration::from_secs(10), control_closed),
        "the cell closes its control pipe once started"
    );
    let rootfs = identity(&c.bundle_dir("fds").join("rootfs").to_string_lossy()).expect("rootfs");
    let mut cached = Vec::new();
    for dir in std::fs::read_dir(&c.cache).expect("cache").flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            cached.extend(identity(&f.path().to_string_lossy()));
        }
    }
    let mut held_rootfs = false;
    let mut pipes = 0;
    let mut fifo = false;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
    {
        let fd: i32 = e.file_name().to_string_lossy().parse().expect("fd number");
        let path = e.path().to_string_lossy().into_owned();
        let target = std::fs::read_link(e.path())
            .expect("fd link")
            .to_string_lossy()
            .into_owned();
        let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .expect("fdinfo")
            .lines()
            .find_map(|l| l.strip_prefix("flags:").map(|f| f.trim().to_owned()))
            .expect("flags");
        let read_only = u32::from_str_radix(&flags, 8).expect("octal flags") & 0o3 == 0;
        let id = identity(&path);
        if target.starts_with("pipe:") {
            pipes += 1;
            // The stdin relay's pipe (both ends), and the status pipe, on which the cell says
            // how its guest ended.
            assert!(
                pipes <= 3,
                "only the stdin relay's pipe and the status pipe: fd {fd} -> {target}"
            );
            continue;
        }
        let is_fifo = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo());
        fifo |= fd > 2 && is_fifo;
        held_rootfs |= id == Some(rootfs);
        let ok = fd <= 2
            || id == Some(rootfs)
            || (id.is_some_and(|i| cached.contains(&i)) && read_only)
            || target == "anon_inode:[eventpoll]"
            || target == "anon_inode:[eventfd]"
            || (is_fifo && read_only);
        assert!(
            ok,
            "fd {fd} -> {target} (flags {flags}) is none of the allowed"
        );
    }
    assert!(held_rootfs, "the rootfs preopen is held");
    if pipes > 0 {
        assert!(fifo, "pipes only with a stdin FIFO");
    }
    assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", "fds"]).code, 0);
}

/// The cell pivots into the rootfs: its `/` is the image, the host's tree is gone from its mount
/// namespace, and every mount it keeps is without devices, set-uid or exec (and read-only where
/// the spec says `ro`).
#[test]
fn the_cell_sees_only_its_rootfs_and_mounts() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("mounted.txt"), "m").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.path().display()
    );
    let pid = start_sleeper(&c, "pivot", &["--mount", &mount]);

    let root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .expect("the cell's root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(root.contains(&"probe.wasm".to_owned()), "{root:?}");
    for host_only in ["proc", "sys", "usr", "var"] {
        assert!(
            !root.contains(&host_only.to_owned()),
            "{host_only} in {root:?}"
        );
    }

    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mounts: Vec<(&str, &str)> = mountinfo
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[4], f[5])
        })
        .collect();
    assert_eq!(
        mounts.iter().map(|m| m.0).collect::<Vec<_>>(),
        ["/"],
        "only the rootfs is mounted in the cell's namespace: {mountinfo}"
    );
    let opts: Vec<&str> = mounts[0].1.split(',').collect();
    for o in ["nosuid", "nodev", "noexec", "rw"] {
        assert!(opts.contains(&o), "rootfs mount options {opts:?}");
    }
    assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", "pivot"]).code, 0);

    // The read-only bind mount is read-only for the kernel too: the guest cannot write there.
    let r = c.run_wasm_with(
        &["--mount", &mount],
        IMG,
        "pivot-ro",
        &["/probe.wasm", "write", "/data/new.txt", "x"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(!data.path().join("new.txt").exists());
}

/// What a namespace test set up on the host, undone even when the test fails.
struct HostSetup {
    netns: String,
    helper: Option<std::process::Child>,
    bind: std::path::PathBuf,
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        if let Some(mut h) = self.helper.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = nix::mount::umount2(&self.bind, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A spec that joins a mount namespace and then a network namespace by path: the network path
/// names what it names in the shim's mount namespace, not what it would name in the joined one
/// (here: nothing, a tmpfs hides it there), because every path is opened before any is joined.
#[test]
fn namespace_paths_are_opened_before_any_is_joined() {
    let c = Containerd::start();
    c.import_wasm(IMG, "probe.wasm", fixtures::PROBE);
    let run = |cmd: &str, args: &[&str]| {
        let s = std::process::Command::new(cmd).args(args).status().unwrap();
        assert!(s.success(), "{cmd} {args:?}");
    };
    let dir = c.dir.path().to_owned();
    let mut setup = HostSetup {
        netns: format!("wasmcelltest-{}", std::process::id()),
        helper: None,
        bind: dir.clone(),
    };
    run("ip", &["netns", "add", &setup.netns]);
    // The container's rootfs is mounted below the test's directory at Create; shared, so that it
    // shows in the helper's mount namespace too (the cell pivots into it from there).
    let d = dir.to_str().unwrap();
    run("mount", &["--rbind", d, d]);
    run("mount", &["--make-rshared", d]);
    let mut helper = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "slave",
            "sh",
            "-c",
            "mount -t tmpfs hidden /run/netns && echo ready && exec sleep 600",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let hpid = helper.id();
    let stdout = helper.stdout.take().unwrap();
    setup.helper = Some(helper);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let netns_path = format!("/run/netns/{}", setup.netns);
    let mnt = format!("mount:/proc/{hpid}/ns/mnt");
    let net = format!("network:{netns_path}");
    let r = c.run_detached(
        &["--with-ns", &mnt, "--with-ns", &net],
        IMG,
        "ns-order",
        &["/probe.wasm", "sleep", "600"],
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", c.log());
    let guest = c.guest_pids(&["ns-order".to_owned()])[0].to_string();
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&netns_path).unwrap().ino();
    assert_eq!(ns(&guest, "net"), format!("net:[{inode}]"));
    assert_eq!(c.ctr(&["task", "kill", "-s", "KILL", "ns-order"]).code, 0);
    drop(setup);
}
