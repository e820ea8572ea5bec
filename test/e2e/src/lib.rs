//! End-to-end test harness of wasmcell: a private containerd per test (own root, state dir,
//! socket and config in a temp dir) with the wasmcell shim on its `PATH`, driven with `ctr`.
//!
//! [`Containerd`] is torn down in `Drop` even when a test fails: containerd and every shim it
//! started are killed and mounts under the temp dir are undone. When the test panicked,
//! containerd's log (which carries the shim's log) is printed first.
// The terminal helper alone makes system calls the standard library does not wrap.
#![deny(unsafe_code)]
#![allow(clippy::unwrap_used)]

pub mod api;
pub mod cri;
pub mod cri_client;
pub mod dns;
pub mod firewall;
pub mod fixtures;
pub mod image;
pub mod netns;
pub mod terminal;

pub use containerd_shim_protos::TaskClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one `ctr` command may take before the test fails as hung.
pub const CTR_TIMEOUT_SECS: u64 = 120;

/// The runtime type of the shim under test.
pub const RUNTIME: &str = "io.containerd.wasmcell.v1";

/// A field of `/proc/<task>/status` (`task`: a pid, or `pid/task/tid` for one thread).
pub fn proc_status(task: impl std::fmt::Display, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{task}/status"))
        .unwrap_or_else(|e| panic!("/proc/{task}/status: {e}"))
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{task}/status"))
}

/// `/proc/<pid>/cmdline` as its arguments, without the empty ones a renamed process shows after
/// its last (the rest of the original command line's memory is NULs).
pub fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Runs `wasmcell install ARGS` on the node whose tree is `dir/node` (its layout found from the
/// files there), with the containerd under test; the shim goes to `dir/bin`.
pub fn install_on_node(dir: &Path, args: &[&str]) -> Ran {
    wasmcell_install(dir, ("--node-root", &dir.join("node")), args)
}

/// Runs `wasmcell install` with `node` (`--config FILE` or `--node-root DIR`), the containerd
/// under test and `args`; the shim goes to `dir/bin`.
pub fn wasmcell_install(dir: &Path, node: (&str, &Path), args: &[&str]) -> Ran {
    Command::new(bin_dir().join("wasmcell"))
        .arg("install")
        .arg(node.0)
        .arg(node.1)
        .arg("--shim-dir")
        .arg(dir.join("bin"))
        .arg("--containerd")
        .arg(containerd_bin())
        .args(args)
        .output()
        .unwrap()
        .into()
}

/// An HTTP/1.x response as read whole from its connection: its status code (0 when there is
/// none) and its body.
pub fn http_reply(reply: &str) -> (u16, String) {
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Directory of the binaries under test: `WASMCELL_BIN_DIR` (`make e2e` sets it), else the
/// profile directory of this test executable (`target/<triple>/release`), where `make build`
/// puts the shim and the CLI. Either way the shim must be there: a test never runs against
/// binaries it did not find.
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("WASMCELL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().unwrap();
            let deps = exe.parent().unwrap();
            deps.parent().unwrap().to_owned()
        }
    };
    let shim = dir.join("containerd-shim-wasmcell-v1");
    assert!(
        shim.is_file(),
        "no shim at {}: run `make build` first (or `make e2e T=<suite>`), or set WASMCELL_BIN_DIR",
        shim.display()
    );
    dir
}

/// A component built from `benches/workloads/<name>` (`target/bench/<name>.wasm`): the HTTP
/// handlers componentize-py and componentize-js make. `make test` and `make e2e` build them
/// first; this asks `make` again, which rebuilds one only if its source changed.
pub fn workload_component(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = format!("target/bench/{name}.wasm");
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&root)
        .arg(&target)
        .status()
        .expect("run make");
    assert!(status.success(), "make {target}: {status}");
    std::fs::read(root.join(&target)).unwrap_or_else(|e| panic!("read {target}: {e}"))
}

/// Reports the calling test skipped, saying why: what it checks cannot run on this host or
/// this containerd. The test returns right after. The harness still counts it as passed, so
/// each skip is also written to `WASMCELL_SKIP_LOG` (set by `test/scripts/cargo-test.sh`, which
/// reports the skips apart from the passes).
pub fn skip(why: &str) {
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("SKIPPED {name}: {why}");
    if let Some(log) = std::env::var_os("WASMCELL_SKIP_LOG") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{name}: {why}");
        }
    }
}

/// `wasmcell image build` arguments of a native busybox image: the host's static busybox as
/// `/bin/busybox`, its entrypoint.
pub const BUSYBOX_BASE_ARGS: &[&str] = &[
    "--platform",
    "linux/amd64",
    "--file",
    "/bin/busybox:/bin/busybox",
    "--entrypoint",
    "/bin/busybox",
];

/// The directory of the containerd under test (`containerd` and `ctr`):
/// `WASMCELL_CONTAINERD_DIR` (`make test` sets it to the pinned containerd 2.x it built, then to
/// Debian's 1.6 in `/usr/bin`), else whatever `PATH` finds.
pub fn containerd_dir() -> Option<PathBuf> {
    std::env::var_os("WASMCELL_CONTAINERD_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The `containerd` binary under test.
pub fn containerd_bin() -> PathBuf {
    containerd_dir()
        .map(|d| d.join("containerd"))
        .unwrap_or_else(|| "containerd".into())
}

/// The `ctr` binary of the containerd under test.
pub fn ctr_bin() -> PathBuf {
    containerd_dir()
        .map(|d| d.join("ctr"))
        .unwrap_or_else(|| "ctr".into())
}

/// The major version of the containerd under test (1 or 2), from `containerd --version`.
pub fn containerd_major() -> u64 {
    containerd_version().0
}

/// The major and minor version of the containerd under test, from `containerd --version`.
pub fn containerd_version() -> (u64, u64) {
    static VERSION: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(containerd_bin())
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{} --version: {e}", containerd_bin().display()));
        let text = String::from_utf8_lossy(&out.stdout);
        // "containerd <package> <version> <revision>"; Debian's version has no `v`.
        text.split_whitespace()
            .nth(2)
            .and_then(|w| {
                // The leading digits of each part: "1.6.20~ds1", "2.4.0-beta.0", "2.3~rc1".
                let number = |p: &str| -> Option<u64> {
                    let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                };
                let mut parts = w.trim_start_matches('v').split('.');
                Some((number(parts.next()?)?, number(parts.next()?)?))
            })
            .unwrap_or_else(|| panic!("no version in `containerd --version`: {text}"))
    })
}

/// Whether the containerd under test unpacks a layer that is not a tar (the cncf and runwasi
/// layouts): 1.6.25 and 1.7.7 on do; the suites' 1.6 is Debian's 1.6.20, which does not.
pub fn unpacks_non_tar_layers() -> bool {
    containerd_version() >= (1, 7)
}

/// `ctr image import` of every platform, unpacked. From containerd 2.3 the transfer service
/// that `ctr` uses by default unpacks only images of the host's OS, and a wasi/wasm image stays
/// packed (a container of it then fails: "parent snapshot ... does not exist"); `--local`
/// imports and unpacks on the client side, which unpacks every platform.
pub fn import_args() -> Vec<&'static str> {
    let mut args = vec!["image", "import", "--all-platforms"];
    if containerd_version() >= (2, 3) {
        args.push("--local");
    }
    args
}

/// Where a private instance's shims put their sockets: inside `dir` from containerd 2.3 on,
/// which tells its shims (`socket_dir` of the shim manager, handed over in the bootstrap
/// params); earlier ones hard-code `/run/containerd/s`.
pub fn shim_socket_dir(dir: &Path) -> Option<PathBuf> {
    // containerd refuses a socket_dir longer than 42 bytes (a socket's path has room for
    // about 108); under a long TMPDIR the shims keep the default.
    let s = dir.join("s");
    (containerd_version() >= (2, 3) && s.as_os_str().len() <= 42).then_some(s)
}

/// The config section that puts the shims' sockets in [`shim_socket_dir`], if any.
pub(crate) fn shim_manager_section(dir: &Path) -> String {
    match shim_socket_dir(dir) {
        Some(s) => format!(
            "[plugins.\"io.containerd.shim.v1.manager\"]\n  socket_dir = \"{}\"\n",
            s.display()
        ),
        None => String::new(),
    }
}

/// A private instance's root, state dir and socket, as config values.
pub(crate) fn instance_paths(dir: &Path, socket: &Path) -> (String, String, String) {
    (
        dir.join("root").display().to_string(),
        dir.join("state").display().to_string(),
        socket.display().to_string(),
    )
}

/// The configuration of a private containerd in `dir`: its own root, state and socket, no CRI
/// (the CRI suites configure their own) and nothing that reaches outside `dir` but what
/// containerd before 2.3 hard-codes (shim sockets under /run/containerd/s).
pub fn private_config(dir: &Path, socket: &Path) -> String {
    let (root, state, sock) = instance_paths(dir, socket);
    if containerd_major() >= 2 {
        // containerd 2.x: config version 3; the CRI plugin is three plugins, and NRI (on by
        // default) would listen on /var/run/nri/nri.sock, which two instances cannot share.
        let opt = dir.join("opt").display().to_string();
        format!(
            r#"version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{sock}"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
{shim_manager}"#,
            shim_manager = shim_manager_section(dir)
        )
    } else {
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            opt = dir.join("opt").display()
        )
    }
}

/// A private containerd.
pub struct Containerd {
    /// Temp dir holding everything of this instance.
    pub dir: tempfile::TempDir,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// The compile cache the shim uses.
    pub cache: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The environment it was started with (a restart reuses it).
    env: Vec<(String, std::ffi::OsString)>,
    spec_template: std::sync::OnceLock<serde_json::Value>,
}

/// What a `ctr` command did.
#[derive(Debug)]
pub struct Ran {
    /// Exit status of ctr.
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Containerd {
    /// Starts containerd and waits until it answers.
    pub fn start() -> Containerd {
        Containerd::start_with_env(&[])
    }

    /// Starts containerd with extra environment variables (which its shims inherit).
    pub fn start_with_env(env: &[(&str, &str)]) -> Containerd {
        let dir = Containerd::new_dir();
        let socket = dir.path().join("containerd.sock");
        std::fs::write(
            dir.path().join("config.toml"),
            private_config(dir.path(), &socket),
        )
        .unwrap();
        Containerd::start_in(dir, env, &[bin_dir()])
    }

    /// A new temp dir for an instance: its config goes to `config.toml` in it, its socket is
    /// `containerd.sock` (as the config must say).
    pub fn new_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("wasmcell-e2e-")
            .tempdir()
            .unwrap()
    }

    /// Starts containerd on the `config.toml` already in `dir` and waits until it answers.
    /// Its `PATH` (which its shims inherit) starts with `path`, then the directory of the
    /// containerd under test (for its runc shim), then the test's own.
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)], path: &[PathBuf]) -> Containerd {
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let cache = d.join("cache");
        let log = d.join("containerd.log");
        let mut dirs: Vec<PathBuf> = path.to_vec();
        dirs.extend(containerd_dir());
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).unwrap();
        let mut vars = vec![
            ("PATH".to_owned(), path),
            ("WASMCELL_CACHE_DIR".to_owned(), cache.clone().into()),
            ("WASMCELL_RUNC_ROOT".to_owned(), d.join("runc").into()),
        ];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())));
        let mut c = Containerd {
            dir,
            socket,
            cache,
            log,
            child: None,
            env: vars,
            spec_template: std::sync::OnceLock::new(),
        };
        c.spawn();
        c
    }

    /// Starts the containerd process (its log appended to) and waits until it answers.
    fn spawn(&mut self) {
        let log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap()
        };
        let child = Command::new(containerd_bin())
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log())
            .spawn()
            .expect("start containerd (is it installed? run `make deps`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ctr(&["version"]).code != 0 {
            let exited = self
                .child
                .as_mut()
                .and_then(|ch| ch.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("containerd exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts containerd on its (possibly changed) `config.toml`, as a service manager
    /// would: SIGTERM, wait, start again. Running tasks and their shims stay.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops containerd (SIGTERM, and waits), leaving tasks and shims running, until
    /// [`Containerd::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Starts containerd again after [`Containerd::stop`]; returns once it answers.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// containerd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `ctr` against this containerd with stdin from /dev/null.
    pub fn ctr(&self, args: &[&str]) -> Ran {
        self.ctr_with_stdin(args, None)
    }

    /// Starts `ctr` in a terminal of `cols` by `rows` of its own (`ctr run -t`, `ctr task exec
    /// -t`), for the test to type into.
    pub fn ctr_in_terminal(&self, args: &[&str], cols: u16, rows: u16) -> terminal::Terminal {
        let mut cmd = Command::new(ctr_bin());
        cmd.arg("--address").arg(&self.socket).args(args);
        terminal::Terminal::spawn(cmd, cols, rows)
    }

    /// Runs `ctr`, feeding `stdin` if given. A `ctr` that hangs is killed after
    /// [`CTR_TIMEOUT_SECS`] and fails the test (with the logs, from `Drop`).
    pub fn ctr_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Ran {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &CTR_TIMEOUT_SECS.to_string()]);
        cmd.arg(ctr_bin());
        cmd.arg("--address").arg(&self.socket).args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut ran = self.run_ctr(cmd, stdin);
        ran.stderr = without_deprecation_warnings(&ran.stderr);
        let timed_out = started.elapsed() >= Duration::from_secs(CTR_TIMEOUT_SECS);
        assert!(
            !(timed_out && (ran.code == 124 || ran.code == 137)),
            "ctr {args:?} hung: killed after {CTR_TIMEOUT_SECS} s ({ran:?})"
        );
        ran
    }

    fn run_ctr(&self, mut cmd: Command, stdin: Option<&[u8]>) -> Ran {
        match stdin {
            None => {
                cmd.stdin(Stdio::null());
                cmd.output().unwrap().into()
            }
            Some(bytes) => {
                cmd.stdin(Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                let mut w = child.stdin.take().unwrap();
                let bytes = bytes.to_vec();
                let t = std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = w.write_all(&bytes);
                });
                let out = child.wait_with_output().unwrap();
                t.join().unwrap();
                out.into()
            }
        }
    }

    /// Builds a rootfs image of `wasm` (stored as `/<file>`) and imports it as `name`.
    pub fn import_wasm(&self, name: &str, file: &str, wasm: &[u8]) {
        let src = self.dir.path().join(file);
        std::fs::write(&src, wasm).unwrap();
        self.build_and_import(&["--name", name, "--wasm", src.to_str().unwrap()]);
    }

    /// Runs `wasmcell image build` with `args`, imports (and unpacks) the tarball and returns
    /// its path.
    pub fn build_and_import(&self, args: &[&str]) -> PathBuf {
        let name = args
            .iter()
            .position(|a| *a == "--name")
            .and_then(|i| args.get(i + 1))
            .map(|n| n.replace(['/', ':'], "_"))
            .unwrap_or_else(|| "image".to_owned());
        let tar = self.build_image(&format!("{name}.tar"), args);
        let mut args = import_args();
        args.push(tar.to_str().unwrap());
        let r = self.ctr(&args);
        assert_eq!(r.code, 0, "import: {r:?}");
        tar
    }

    /// Runs `wasmcell image build` with `args` and returns the tarball's path (named `file` in
    /// this instance's directory).
    pub fn build_image(&self, file: &str, args: &[&str]) -> PathBuf {
        let tar = self.dir.path().join(file);
        let out = Command::new(bin_dir().join("wasmcell"))
            .args(["image", "build"])
            .args(args)
            .arg("-o")
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "image build {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tar
    }

    /// containerd's default runtime spec (`ctr oci spec`) for container `id`, with `args`, `env`
    /// and `cwd` as a client sets them from an image config.
    pub fn default_spec(
        &self,
        id: &str,
        args: &[String],
        env: &[String],
        cwd: &str,
    ) -> serde_json::Value {
        let mut spec = self
            .spec_template
            .get_or_init(|| {
                let r = self.ctr(&["oci", "spec"]);
                assert_eq!(r.code, 0, "ctr oci spec: {r:?}");
                serde_json::from_str(&r.stdout).unwrap()
            })
            .clone();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["env"] = serde_json::json!(env);
        spec["process"]["cwd"] = serde_json::json!(cwd);
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/default/{id}"));
        spec
    }

    /// Builds a rootfs image named `name` holding the probe fixture as `/probe.wasm` and imports
    /// it without unpacking (what containerd 1.6 can do with any image); its defaults and
    /// layers, for containers created through the API ([`crate::api::ContainerRequest::wasmcell`]).
    pub fn import_probe_unpacked(&self, name: &str) -> image::ImageDefaults {
        // The image names the program after its file: /probe.wasm.
        let dir = self.dir.path().join("unpacked-probe");
        std::fs::create_dir_all(&dir).expect("make a directory for the probe");
        let probe = dir.join("probe.wasm");
        std::fs::write(&probe, fixtures::PROBE).expect("write the probe");
        let file = format!("{}.tar", name.replace(['/', ':'], "_"));
        let probe = probe.to_str().expect("utf-8 path");
        let tar = self.build_image(
            &file,
            &["--name", name, "--layout", "rootfs", "--wasm", probe],
        );
        let tar = tar.to_str().expect("utf-8 path");
        let r = self.ctr(&["image", "import", "--no-unpack", "--all-platforms", tar]);
        assert_eq!(r.code, 0, "import {name}: {r:?}");
        image::defaults_of(Path::new(tar))
    }

    /// The path of a blob in this containerd's content store.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("root/io.containerd.content.v1.content/blobs/sha256")
            .join(hex)
    }

    /// Builds a native image holding the host's static busybox (`busybox-static`) as
    /// `/bin/busybox`, entrypoint `busybox echo hello from busybox`, and imports it as `name`.
    pub fn import_busybox(&self, name: &str) -> PathBuf {
        let mut args = vec!["--name", name];
        args.extend(BUSYBOX_BASE_ARGS);
        args.extend(["--arg", "echo", "--arg", "hello from busybox"]);
        self.build_and_import(&args)
    }

    /// Subscribes to containerd's events (`ctr events`); returns once the subscription is live.
    pub fn events(&self) -> Events {
        let mut child = Command::new(ctr_bin())
            .arg("--address")
            .arg(&self.socket)
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(event) = Event::parse(&line) {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        let events = Events {
            child,
            seen,
            reader: Some(reader),
        };
        // An event of our own proves the subscription is live before the test acts.
        let marker = format!("events-ready-{}", std::process::id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.ctr(&["namespaces", "create", &marker]);
            let live = self.wait_until(Duration::from_millis(500), || {
                events.all().iter().any(|e| e.topic == "/namespaces/create")
            });
            if live {
                break;
            }
            self.ctr(&["namespaces", "remove", &marker]);
            assert!(Instant::now() < deadline, "ctr events saw nothing");
        }
        self.ctr(&["namespaces", "remove", &marker]);
        events
    }

    /// `ctr run --rm` of a wasm image under wasmcell.
    pub fn run_wasm(&self, image: &str, id: &str, args: &[&str]) -> Ran {
        self.run_wasm_with(&[], image, id, args)
    }

    /// `ctr run --rm` of a wasm image under wasmcell with extra `ctr run` flags.
    pub fn run_wasm_with(&self, flags: &[&str], image: &str, id: &str, args: &[&str]) -> Ran {
        self.run_wasm_mode("--rm", flags, image, id, args)
    }

    /// `ctr run -d` of a wasm image under wasmcell with extra `ctr run` flags: returns once the
    /// task has started.
    pub fn run_detached(&self, flags: &[&str], image: &str, id: &str, args: &[&str]) -> Ran {
        self.run_wasm_mode("-d", flags, image, id, args)
    }

    fn run_wasm_mode(
        &self,
        mode: &str,
        flags: &[&str],
        image: &str,
        id: &str,
        args: &[&str],
    ) -> Ran {
        let mut a = vec!["run", mode, "--runtime", RUNTIME, "--platform", "wasi/wasm"];
        a.extend_from_slice(flags);
        a.extend([image, id]);
        a.extend_from_slice(args);
        self.ctr(&a)
    }

    /// How the shim prepared task `id`'s program, as it logged it: `compiled` or `cache-hit`.
    pub fn prepared(&self, id: &str) -> String {
        let log = self.log();
        let needle = format!("task {id}: prepared ");
        log.lines()
            .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
            .filter_map(|rest| rest.split("): ").nth(1))
            .filter_map(|rest| rest.split(" in ").next())
            .next_back()
            .unwrap_or_else(|| panic!("no 'prepared' line for {id} in the log:\n{log}"))
            .to_owned()
    }

    /// containerd's log so far (it includes the shims' logs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pids of the wasmcell shims this containerd started (their `-address` is our socket).
    pub fn shim_pids(&self) -> Vec<i32> {
        self.shim_pids_of("containerd-shim-wasmcell-v1")
    }

    /// The pid of the wasmcell shim started for task `id` (its `-id`).
    pub fn shim_pid_of(&self, id: &str) -> Option<i32> {
        self.shim_pids().into_iter().find(|pid| {
            cmdline(*pid)
                .windows(2)
                .any(|w| w[0] == "-id" && w[1] == id)
        })
    }

    /// Pids of the shims named `binary` (for example `containerd-shim-runc-v2`) that this
    /// containerd started.
    pub fn shim_pids_of(&self, binary: &str) -> Vec<i32> {
        let sock = self.socket.to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            let is_shim =
                cmd.starts_with(&format!("{binary}\0")) || cmd.contains(&format!("/{binary}\0"));
            if is_shim && cmd.contains(&sock) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Bundle directories containerd keeps for tasks of namespace `default`.
    pub fn bundles(&self) -> Vec<String> {
        let dir = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default");
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bundle directory of task `id` (namespace `default`).
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default")
            .join(id)
    }

    /// The unix socket path of the shim serving container `id` (from its bundle's `address`).
    pub fn shim_socket(&self, id: &str) -> Option<PathBuf> {
        let file = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default")
            .join(id)
            .join("address");
        let address = std::fs::read_to_string(file).ok()?;
        Some(PathBuf::from(address.trim().trim_start_matches("unix://")))
    }

    /// A ttrpc client of the shim serving container `id`, for the Task RPCs that `ctr` 1.6 has no
    /// command for (Update). It talks to the real shim over its real socket, as containerd does.
    pub fn shim_client(&self, id: &str) -> TaskClient {
        let socket = self
            .shim_socket(id)
            .unwrap_or_else(|| panic!("no shim socket for {id}"));
        let client =
            containerd_shim_protos::ttrpc::Client::connect(&format!("unix://{}", socket.display()))
                .unwrap_or_else(|e| panic!("connect to the shim of {id}: {e}"));
        TaskClient::new(client)
    }

    /// Cell processes (`containerd-shim-wasmcell-v1 cell <id>`) alive: (pid, parent pid, id).
    fn cell_processes() -> Vec<(i32, i32, String)> {
        let mut cells = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let mut parts = cmd.split(|b| *b == 0);
            let exe = parts.next().unwrap_or_default();
            if !exe.ends_with(b"containerd-shim-wasmcell-v1") || parts.next() != Some(b"cell") {
                continue;
            }
            let id = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let ppid = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_owned();
                    after.parse().ok()
                })
                .unwrap_or(0);
            cells.push((pid, ppid, id));
        }
        cells
    }

    /// Pids of the cells still alive for `ids`: the processes the shim started (with a PID
    /// namespace, the supervisor; its child runs the guest, see [`Containerd::guest_pids`]).
    pub fn cell_pids(&self, ids: &[String]) -> Vec<i32> {
        let cells = Self::cell_processes();
        cells
            .iter()
            .filter(|(_, ppid, id)| ids.contains(id) && !cells.iter().any(|c| c.0 == *ppid))
            .map(|c| c.0)
            .collect()
    }

    /// Pids of the processes that run the guests of `ids`: the cell's child in a PID
    /// namespace, else the cell itself.
    pub fn guest_pids(&self, ids: &[String]) -> Vec<i32> {
        let cells = Self::cell_processes();
        cells
            .iter()
            .filter(|(pid, _, id)| ids.contains(id) && !cells.iter().any(|c| c.1 == *pid))
            .map(|c| c.0)
            .collect()
    }

    /// Containers runc still knows in wasmcell's runc root for namespace `default`.
    pub fn runc_containers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("runc/default"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mount points below this instance's temp dir.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }

    /// Waits until `cond` holds (polling), at most `timeout`.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond()
    }
}

/// `ctr`'s stderr without the deprecation warnings containerd 2.x hands every client (for
/// example that cgroup v1 is deprecated), which are about the host, not the command.
fn without_deprecation_warnings(stderr: &str) -> String {
    stderr
        .split_inclusive('\n')
        .filter(|l| !(l.contains("level=warning") && l.contains("msg=\"DEPRECATION: ")))
        .collect()
}

/// One event as `ctr events` prints it: `<time> <namespace> <topic> <json>`.
#[derive(Debug, Clone)]
pub struct Event {
    /// `/tasks/exit`, `/containers/create`, ...
    pub topic: String,
    /// The event's fields.
    pub body: serde_json::Value,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let at = line.find(" /")?;
        let rest = &line[at + 1..];
        let (topic, json) = rest.split_once(' ')?;
        Some(Event {
            topic: topic.to_owned(),
            body: serde_json::from_str(json).ok()?,
        })
    }

    /// The container the event is about, if any.
    pub fn container_id(&self) -> Option<&str> {
        self.body
            .get("container_id")
            .or_else(|| self.body.get("id"))
            .and_then(|v| v.as_str())
    }

    /// `exit_status` of a `/tasks/exit` (Go's JSON leaves out a zero).
    pub fn exit_status(&self) -> i64 {
        self.body
            .get("exit_status")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
    }
}

/// A live `ctr events` subscription; ended in `Drop`.
pub struct Events {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Events {
    /// Every event seen so far.
    pub fn all(&self) -> Vec<Event> {
        self.seen.lock().unwrap().clone()
    }

    /// The task events (`/tasks/...`) of container `id`, in order.
    pub fn of_task(&self, id: &str) -> Vec<Event> {
        self.all()
            .into_iter()
            .filter(|e| e.topic.starts_with("/tasks/") && e.container_id() == Some(id))
            .collect()
    }

    /// Waits until an event with `topic` about container `id` arrives.
    pub fn wait_for(&self, topic: &str, id: &str, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .all()
                .into_iter()
                .find(|e| e.topic == topic && e.container_id() == Some(id));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Processes whose parent is one of `parents`.
/// Every process below `parents`, children first found first.
fn descendants_of(parents: &[i32]) -> Vec<i32> {
    let mut all = Vec::new();
    let mut level = children_of(parents);
    while !level.is_empty() {
        all.extend_from_slice(&level);
        level = children_of(&level);
    }
    all
}

fn children_of(parents: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid.is_some_and(|p| parents.contains(&p)) {
            out.push(pid);
        }
    }
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== containerd and shim log ({}) =====\n{}",
                self.log.display(),
                self.log()
            );
        }
        // Tasks a failed test left running, in every namespace (CRI's is `k8s.io`): deleted
        // through containerd, so their shims remove cgroups and mounts; then anything left
        // under the shims (the zygote, the cells it forked, runc inits) is killed.
        let lines = |r: Ran| -> Vec<String> {
            r.stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for ns in lines(self.ctr(&["namespace", "ls", "-q"])) {
            for id in lines(self.ctr(&["-n", &ns, "task", "ls", "-q"])) {
                self.ctr(&["-n", &ns, "task", "delete", "--force", &id]);
            }
        }
        let shims = self.shim_pids();
        for pid in descendants_of(&shims).into_iter().chain(shims) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = child.wait();
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
