//! The filesystem escape corpus: a guest tries a few hundred crafted paths (`..`
//! chains, absolute host paths, symlinks in the image and in a bind mount that point out of the
//! rootfs, `/proc/self/...`, `/dev/fd/...`) against every preopen, to read a canary file on the
//! host and to write next to it. Nothing may succeed: as root, as a user without privileges,
//! and in a cell under runc.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use wasmcell_e2e::{fixtures, Containerd};

const SECRET: &str = "CANARY-5f1d2c-host-only";
const MARK: &str = "ESCAPED-7a9e";

/// Paths that name `leaf` in the host directory `canary` (absolute, e.g. `/tmp/x/canary`) from
/// a guest whose preopens are `/`, `/data` (rw bind mount) and `/ro` (ro bind mount).
fn corpus(canary: &Path, leaf: &str) -> Vec<String> {
    let host = canary.to_string_lossy().into_owned();
    let host_rel = host.trim_start_matches('/').to_owned();
    let mut out = Vec::new();
    for base in ["/", "/data/", "/ro/", "", "./"] {
        for k in 1..=10 {
            out.push(format!("{base}{}{host_rel}/{leaf}", "../".repeat(k)));
        }
        for link in [
            // in the bind mounts
            format!("abs/{leaf}"),
            format!("rel/{leaf}"),
            format!("root/{host_rel}/{leaf}"),
            format!("proc/{host_rel}/{leaf}"),
            format!("abs/../canary/{leaf}"),
            // in the image
            format!("img-abs/{leaf}"),
            format!("img-rel/{leaf}"),
            format!("img-root/{host_rel}/{leaf}"),
            format!("img-proc/{host_rel}/{leaf}"),
            format!("img-loop/{leaf}"),
        ] {
            out.push(format!("{base}{link}"));
            out.push(format!("{base}data/{link}"));
        }
    }
    for abs in [
        format!("{host}/{leaf}"),
        format!("/proc/self/root{host}/{leaf}"),
        format!("/proc/1/root{host}/{leaf}"),
        format!("/proc/self/cwd/{leaf}"),
        format!("/proc/thread-self/root{host}/{leaf}"),
        format!("//{host}/{leaf}"),
        format!("/./{host_rel}/./{leaf}"),
        format!("/data/./../..{host}/{leaf}"),
    ] {
        out.push(abs);
    }
    for fd in 0..12 {
        out.push(format!("/proc/self/fd/{fd}"));
        out.push(format!("/dev/fd/{fd}"));
    }
    out
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// The canary on the host, the directories bind-mounted into the guest, and the images.
struct Setup {
    _dir: tempfile::TempDir,
    canary: std::path::PathBuf,
    share: std::path::PathBuf,
    /// `ctr run` flags of the two bind mounts.
    mounts: Vec<String>,
}

/// The images (`IMG`, and `IMG_USER` run as a user without privileges), the canary and the
/// bind mounts full of links that point out of them.
fn set_up(c: &Containerd) -> Setup {
    let t = tempfile::Builder::new()
        .prefix("wasmcell-escape-")
        .tempdir()
        .unwrap();
    let canary = t.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("secret.txt"), SECRET).unwrap();
    let host = canary.to_string_lossy().into_owned();

    // A bind-mounted directory full of links that point out of it.
    let share = t.path().join("share");
    std::fs::create_dir(&share).unwrap();
    symlink(&host, &share.join("abs"));
    symlink("../canary", &share.join("rel"));
    symlink("/", &share.join("root"));
    symlink("/proc/self/root", &share.join("proc"));
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    symlink(&host, &ro.join("abs"));

    // An image whose own links point out of its rootfs.
    let wasm = t.path().join("probe.wasm");
    std::fs::write(&wasm, fixtures::PROBE).unwrap();
    let img = IMG;
    let up = format!("{}{}", "../".repeat(12), host.trim_start_matches('/'));
    let links = [
        format!("/img-abs:{host}"),
        format!("/img-rel:{up}"),
        "/img-root:/".to_owned(),
        "/img-proc:/proc/self/root".to_owned(),
        "/img-loop:/img-loop".to_owned(),
    ];
    let mut args = vec!["--name", img, "--wasm", wasm.to_str().unwrap()];
    for l in &links {
        args.extend(["--symlink", l]);
    }
    c.build_and_import(&args);
    // The same image run as a user without privileges (ctr 1.6 has no --user: the image
    // config's User sets process.user).
    args[1] = IMG_USER;
    args.extend(["--user", "1000:1000"]);
    c.build_and_import(&args);

    let mounts = vec![
        format!(
            "--mount=type=bind,src={},dst=/data,options=rbind:rw",
            share.display()
        ),
        format!(
            "--mount=type=bind,src={},dst=/ro,options=rbind:ro",
            ro.display()
        ),
    ];
    Setup {
        _dir: t,
        canary,
        share,
        mounts,
    }
}

const IMG: &str = "wasmcell.test/escape:latest";
const IMG_USER: &str = "wasmcell.test/escape-user:latest";

/// Asserts that the canary was neither read (`read_out`: the probe's answers) nor written next
/// to.
fn assert_untouched(mode: &str, canary: &Path, read_out: &str) {
    assert!(
        !read_out.contains(SECRET),
        "{mode}: a path read the canary:\n{read_out}"
    );
    let mut in_canary: Vec<String> = std::fs::read_dir(canary)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    in_canary.sort();
    assert_eq!(
        in_canary,
        ["secret.txt"],
        "{mode}: nothing was written next to the canary"
    );
    assert_eq!(
        std::fs::read_to_string(canary.join("secret.txt")).unwrap(),
        SECRET
    );
}

#[test]
fn no_crafted_path_reads_or_writes_outside_the_preopens() {
    let c = Containerd::start();
    let Setup {
        _dir,
        canary,
        share,
        mounts,
    } = set_up(&c);
    let flags: Vec<&str> = mounts.iter().map(String::as_str).collect();
    let img = IMG;

    // As root in a cell, as a user without privileges, and in a cell under runc (the
    // fallback, here for a user namespace's id mappings).
    for (mode, img, extra) in [
        ("root", img, vec![]),
        ("user", IMG_USER, vec![]),
        (
            "runc",
            img,
            vec!["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"],
        ),
    ] {
        let mut flags = flags.clone();
        flags.extend(extra);
        let reads = corpus(&canary, "secret.txt");
        let mut run = vec!["/probe.wasm", "read-each"];
        run.extend(reads.iter().map(String::as_str));
        let r = c.run_wasm_with(&flags, img, &format!("escape-read-{mode}"), &run);
        assert_eq!(r.code, 0, "{mode}: {r:?}\n{}", c.log());
        assert_eq!(
            r.stdout.lines().count(),
            reads.len(),
            "one answer per path: {r:?}"
        );

        let writes = corpus(&canary, "escaped.txt");
        let mut run = vec!["/probe.wasm", "write-each", MARK];
        run.extend(writes.iter().map(String::as_str));
        let w = c.run_wasm_with(&flags, img, &format!("escape-write-{mode}"), &run);
        assert_eq!(w.code, 0, "{w:?}");
        assert_eq!(w.stdout.lines().count(), writes.len(), "{w:?}");
        assert_untouched(mode, &canary, &r.stdout);
    }
    assert!(
        c.log()
            .contains("task escape-read-runc: runs under runc with the cell as its process"),
        "the runc round ran under runc"
    );
    let reads = corpus(&canary, "secret.txt");
    let writes = corpus(&canary, "escaped.txt");
    let total = reads.len() + writes.len();
    assert!(total >= 200, "the corpus has {total} paths");
    // The corpus is not vacuous: the same probe reads and writes inside its preopens.
    let ok = c.run_wasm_with(
        &flags,
        img,
        "escape-control",
        &["/probe.wasm", "write-each", MARK, "/data/inside.txt"],
    );
    assert_eq!(ok.stdout.trim(), "wrote /data/inside.txt", "{ok:?}");
    assert_eq!(
        std::fs::read_to_string(share.join("inside.txt")).unwrap(),
        MARK
    );
    let back = c.run_wasm_with(
        &flags,
        img,
        "escape-control-read",
        &["/probe.wasm", "read-each", "/data/inside.txt"],
    );
    assert_eq!(
        back.stdout.trim(),
        format!("read /data/inside.txt: {MARK}"),
        "{back:?}"
    );
}

#[test]
fn the_corpus_run_as_an_exec_reaches_nothing_outside_the_containers_preopens() {
    let c = Containerd::start();
    let setup = set_up(&c);
    let mut flags: Vec<&str> = setup.mounts.iter().map(String::as_str).collect();
    flags.push("--env");
    flags.push("SET_BY=container");
    let r = c.run_detached(&flags, IMG, "escape-exec", &["/probe.wasm", "sleep", "600"]);
    assert_eq!(r.code, 0, "{r:?}");
    let exec = |exec_id: &str, args: &[&str]| {
        let mut a = vec![
            "task",
            "exec",
            "--exec-id",
            exec_id,
            "escape-exec",
            "/probe.wasm",
        ];
        a.extend_from_slice(args);
        c.ctr(&a)
    };

    let reads = corpus(&setup.canary, "secret.txt");
    let mut args = vec!["read-each"];
    args.extend(reads.iter().map(String::as_str));
    let r = exec("reads", &args);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), reads.len(), "one answer per path");
    let writes = corpus(&setup.canary, "escaped.txt");
    let mut args = vec!["write-each", MARK];
    args.extend(writes.iter().map(String::as_str));
    let w = exec("writes", &args);
    assert_eq!(w.code, 0, "{w:?}");
    assert_eq!(w.stdout.lines().count(), writes.len(), "{w:?}");
    assert_untouched("exec", &setup.canary, &r.stdout);

    // Not vacuous: the exec reaches the container's bind mounts, as the container does.
    let ok = exec("inside", &["write-each", MARK, "/data/inside-exec.txt"]);
    assert_eq!(ok.stdout.trim(), "wrote /data/inside-exec.txt", "{ok:?}");
    assert_eq!(
        std::fs::read_to_string(setup.share.join("inside-exec.txt")).unwrap(),
        MARK
    );
    let ro = exec("read-only", &["write-each", MARK, "/ro/nope.txt"]);
    assert!(
        !ro.stdout.starts_with("wrote"),
        "the read-only mount stays read-only for an exec: {ro:?}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", "escape-exec"]);
}
