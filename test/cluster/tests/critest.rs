//! cri-tools' CRI conformance suite (`critest`, the pinned cri-tools) against containerd's CRI
//! plugin with runtime handler `wasmtime` (wasmcell, configured by `wasmcell install`), and
//! with `WASMCELL_CRITEST_RUNC=1` (`make soak`) once more with `runc` beside it, on the same
//! node: the pod network of the cluster tier and a registry
//! on loopback that serves every image critest pulls, built here under the names it asks for
//! (busybox from Debian's `busybox-static`). containerd reaches the registries those names
//! name (registry.k8s.io, gcr.io, k8s.gcr.io) only through that loopback registry: each has a
//! `hosts.toml` whose server is the loopback one, so nothing is ever sent elsewhere.
//!
//! critest's containers are native (busybox): under `wasmtime` they run through wasmcell's shim
//! and its runc fallback, exactly as a pod's native sidecars do. The verdict: every spec that
//! fails under `wasmtime` also fails under `runc` on this machine (in this run side by side,
//! else as `docs/critest.md` records the last side-by-side run, which must then still hold), or
//! is one of the known failures listed there with its reason. The figures are written to
//! `target/critest/summary.json` and printed.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmcell_cluster::{configure, PodNetwork};
use wasmcell_e2e::cri::Registry;
use wasmcell_e2e::Containerd;

/// critest: `WASMCELL_CRITEST` (`make test` sets it to the pinned build), else PATH's.
fn critest_bin() -> PathBuf {
    std::env::var_os("WASMCELL_CRITEST")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "critest".into())
}

/// One critest run's outcome per spec.
#[derive(Debug, Default)]
struct Outcome {
    passed: BTreeSet<String>,
    failed: BTreeSet<String>,
    skipped: BTreeSet<String>,
}

impl Outcome {
    /// Reads a Ginkgo JUnit report: each `<testcase name=... status=...>`.
    fn of_junit(xml: &str) -> Outcome {
        let mut o = Outcome::default();
        for case in xml.split("<testcase ").skip(1) {
            let head = &case[..case.find('>').unwrap_or(case.len())];
            let attr = |name: &str| {
                let key = format!("{name}=\"");
                head.find(&key).map(|i| {
                    let rest = &head[i + key.len()..];
                    rest[..rest.find('"').unwrap_or(rest.len())]
                        .replace("&#39;", "'")
                        .replace("&quot;", "\"")
                        .replace("&amp;", "&")
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                })
            };
            let name = attr("name").unwrap_or_default();
            if !name.starts_with("[It]") {
                continue; // suite set-up and tear-down nodes
            }
            match attr("status").as_deref() {
                Some("passed") => o.passed.insert(name),
                Some("skipped") | Some("pending") => o.skipped.insert(name),
                _ => o.failed.insert(name),
            };
        }
        o
    }

    fn counts(&self) -> serde_json::Value {
        serde_json::json!({
            "passed": self.passed.len(),
            "failed": self.failed.len(),
            "skipped": self.skipped.len(),
        })
    }
}

/// The specs a section of `docs/critest.md` lists: each row of its table whose first cell is a
/// spec name in backticks, from the heading that starts with `heading` to the next heading.
fn listed(heading: &str) -> BTreeSet<String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/critest.md");
    let text = std::fs::read_to_string(&doc).unwrap_or_default();
    text.lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(name, _)| name.to_owned()))
        .collect()
}

/// The specs that fail under `runc` too on these machines, as the last side-by-side run found
/// (`docs/critest.md`).
const FAIL_UNDER_RUNC: &str = "## Failing under runc too";

/// The known failures of the `wasmtime` handler alone (`docs/critest.md`).
const WASMTIME_ONLY: &str = "## Known failures of the `wasmtime` handler";

/// Builds the images critest pulls and pushes them to `registry` under critest's names.
fn serve_images(c: &Containerd, registry: &Registry) {
    let d = c.dir.path().join("critest-images");
    std::fs::create_dir_all(&d).unwrap();
    let etc = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        format!("{}:/etc/{name}", p.display())
    };
    let passwd = etc(
        "passwd",
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n\
         user1000:x:1000:1000::/home/user1000:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    );
    let group = etc(
        "group",
        "root:x:0:\nwww-data:x:33:\nuser1000:x:1000:\ngroup50000:x:50000:user1000\n\
         nogroup:x:65534:\n",
    );
    let keep = d.join("keep");
    std::fs::write(&keep, "").unwrap();
    let index = d.join("index.html");
    std::fs::write(&index, "<h1>Welcome to nginx!</h1>\n").unwrap();
    // busybox with every applet linked into /bin, as the busybox image has it.
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let mut base: Vec<String> = vec![
        "--platform".into(),
        "linux/amd64".into(),
        "--file".into(),
        "/bin/busybox:/bin/busybox".into(),
        "--file".into(),
        passwd,
        "--file".into(),
        group,
        // An empty /tmp, and the PATH the busybox image sets.
        "--file".into(),
        format!("{}:/tmp/.keep", keep.display()),
        "--env".into(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ];
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            base.extend(["--symlink".into(), format!("/bin/{applet}:busybox")]);
        }
    }
    let build = |name: &str, extra: &[&str]| {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend(["--name", name]);
        args.extend(extra);
        let file = format!("{}.tar", name.replace(['/', ':'], "_"));
        let tar = c.build_image(&file, &args);
        registry.push(&tar, name);
    };
    let shell = ["--entrypoint", "/bin/sh"];
    let www = format!("{}:/www/index.html", index.display());
    let httpd = |port: &str| -> Vec<String> {
        let mut args = vec!["--file".to_owned(), www.clone()];
        args.extend(["--entrypoint".to_owned(), "/bin/busybox".to_owned()]);
        // `--arg=...`: the values begin with a dash.
        for a in ["httpd", "-f", "-p", port, "-h", "/www"] {
            args.push(format!("--arg={a}"));
        }
        args
    };
    build("e2e-test-images/busybox:1.29-2", &shell);
    for (name, port) in [
        ("e2e-test-images/nginx:1.14-2", "80"),
        ("e2e-test-images/httpd:2.4.39-4", "80"),
        ("k8s-staging-cri-tools/hostnet-nginx-amd64:latest", "12003"),
    ] {
        let args = httpd(port);
        build(name, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    build("pause:3.9", &shell);
    let tools = "k8s-staging-cri-tools";
    for name in [
        "test-image-latest:latest",
        "test-image-tag:test",
        "test-image-tag:all",
    ] {
        build(&format!("{tools}/{name}"), &shell);
    }
    // Three images that differ (a file of their own), and one image under three tags.
    for n in 1..=3 {
        let own = d.join(format!("image-{n}"));
        std::fs::write(&own, format!("{n}\n")).unwrap();
        let file = format!("{}:/etc/image-{n}", own.display());
        let mut extra = vec!["--file", file.as_str()];
        extra.extend(shell);
        build(&format!("{tools}/test-image-{n}:latest"), &extra);
        build(&format!("{tools}/test-image-tags:{n}"), &shell);
    }
    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:users"),
        ("test-image-user-username-group", "www-data:www-data"),
        ("test-image-predefined-group", "1000"),
    ] {
        let mut extra = vec!["--user", user];
        extra.extend(shell);
        build(&format!("{tools}/{name}:latest"), &extra);
    }
}

/// Runs critest with runtime handler `handler`; its outcome (and the JUnit report kept).
fn critest(c: &Containerd, handler: &str, out: &Path) -> Outcome {
    let report = out.join(format!("junit-{handler}.xml"));
    let _ = std::fs::remove_file(&report);
    let endpoint = format!("unix://{}", c.socket.display());
    let log = out.join(format!("critest-{handler}.log"));
    let status = Command::new(critest_bin())
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--runtime-handler", handler])
        .arg("--ginkgo.no-color")
        // The same spec order for both handlers (critest's image specs see what earlier specs pulled).
        .arg("--ginkgo.seed=1")
        .arg(format!("--ginkgo.junit-report={}", report.display()))
        .arg("--ginkgo.timeout=40m")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (make tools builds it; WASMCELL_CRITEST names it)",
                critest_bin().display()
            )
        });
    let xml = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "critest ({handler}, {status}) wrote no report {}: {e}\n{}",
            report.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    Outcome::of_junit(&xml)
}

#[test]
fn critest_passes_for_the_wasmtime_handler_wherever_it_passes_for_runc() {
    // runc's whole run beside wasmtime's takes as long again (about 4 minutes), so `make test`
    // checks wasmtime against the failures the last side-by-side run recorded, and that run is
    // made with WASMCELL_CRITEST_RUNC=1 (`make soak` sets it).
    let side_by_side = std::env::var("WASMCELL_CRITEST_RUNC").is_ok_and(|v| v == "1");
    let dir = Containerd::new_dir();
    let shims = configure(dir.path(), true);
    let network = PodNetwork::install(dir.path());
    let c = Containerd::start_in(dir, &[], &[shims]);
    c.import_pause();
    let registry = Registry::serve(&c);
    for upstream in ["registry.k8s.io", "gcr.io", "k8s.gcr.io"] {
        let hosts = c.dir.path().join("certs.d").join(upstream);
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "# {upstream} is served by the test's registry on loopback, and only by it.\n\
                 server = \"http://{host}\"\n[host.\"http://{host}\"]\n  \
                 capabilities = [\"pull\", \"resolve\"]\n",
                host = registry.host
            ),
        )
        .unwrap();
    }
    serve_images(&c, &registry);

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/critest");
    std::fs::create_dir_all(&out).unwrap();
    let wasmtime = critest(&c, "wasmtime", &out);
    let runc = side_by_side.then(|| critest(&c, "runc", &out));
    if runc.is_none() {
        // An earlier side-by-side run's logs would read as this run's.
        for old in ["junit-runc.xml", "critest-runc.log", "critest-runc.err"] {
            let _ = std::fs::remove_file(out.join(old));
        }
    }
    // Pods critest left (a failed spec may): removed through CRI before containerd goes.
    c.crictl(&["rmp", "--force", "--all"]);

    let wasmtime_only = listed(WASMTIME_ONLY);
    let recorded = listed(FAIL_UNDER_RUNC);
    let summary = serde_json::json!({
        "critest": critest_bin().display().to_string(),
        "wasmtime": wasmtime.counts(),
        "runc": runc.as_ref().map(Outcome::counts),
        "failed_wasmtime": wasmtime.failed,
        "failed_runc": runc.as_ref().map(|r| &r.failed),
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    println!("critest        passed failed skipped");
    for (name, o) in [("wasmtime", Some(&wasmtime)), ("runc", runc.as_ref())] {
        if let Some(o) = o {
            println!(
                "{name:<14} {:>6} {:>6} {:>7}",
                o.passed.len(),
                o.failed.len(),
                o.skipped.len()
            );
        }
    }
    assert!(
        wasmtime.passed.len() + wasmtime.failed.len() > 50,
        "critest ran too few specs: {summary}"
    );
    assert!(
        !recorded.is_empty(),
        "docs/critest.md lists no spec under {FAIL_UNDER_RUNC:?}: is the heading still there?"
    );
    // The yardstick: runc's failures of this run, or those the last side-by-side run recorded.
    let under_runc = runc.as_ref().map_or(&recorded, |r| &r.failed);
    let ours: Vec<&String> = wasmtime
        .failed
        .iter()
        .filter(|s| !under_runc.contains(*s) && !wasmtime_only.contains(*s))
        .collect();
    assert!(
        ours.is_empty(),
        "specs that fail under wasmtime but not under runc, and are not in docs/critest.md: \
         {ours:#?}\n(logs in {})",
        out.display()
    );
    if let Some(runc) = &runc {
        assert_eq!(
            &runc.failed, &recorded,
            "the specs failing under runc on this machine differ from docs/critest.md's list \
             under {FAIL_UNDER_RUNC:?}: update it"
        );
    }
    drop(c);
    drop(network);
}
