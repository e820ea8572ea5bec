//! The checks, each a function of what was read of the node.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use toml_edit::{DocumentMut, Item};

use super::kernel::{Feature, Kernel};
use super::report::Finding;
use crate::install::config::{self, CONTAINER_ANNOTATIONS, POD_ANNOTATIONS, RUNTIME_TYPE};
use crate::install::containerd::{self, Binary, CRI_RUNTIME_PLUGINS};
use crate::install::layout::{self, Kind, Layout, RootEdit};
use crate::install::{template, SHIM_NAME};

/// What the user asked doctor for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's root directory (`/`, or a node's tree mounted elsewhere).
    pub node_root: PathBuf,
    /// The layout, when it cannot be found from the files.
    pub layout: Option<Kind>,
    /// A kubeadm-style root config, when it is not the default.
    pub config: Option<PathBuf>,
    /// containerd's binary (default: the layout's, else on `PATH`).
    pub containerd: Option<PathBuf>,
    /// The runtime handler pods name in their RuntimeClass.
    pub handler: String,
    /// The kubelet's configuration file.
    pub kubelet_config: PathBuf,
    /// The shim's compile cache (its `WASMCELL_CACHE_DIR`).
    pub cache_dir: PathBuf,
    /// Print JSON rather than a table.
    pub json: bool,
}

/// Free space below which the compile cache fails: a compiled module is a few times its wasm.
const CACHE_MIN_FREE: u64 = 256 << 20;

/// The cgroup controllers a cell's limits are written to.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// containerd as found on the node.
pub struct Containerd {
    binary: Binary,
    version: String,
    major: u64,
    minor: u64,
}

/// What doctor read of the node, once.
pub struct Node {
    root: PathBuf,
    layout: Result<Layout, String>,
    containerd: Result<Containerd, String>,
    /// The text of the config containerd loads (None: there is none).
    loaded: Option<String>,
    /// containerd's own reading of it (`config dump`).
    dump: Result<DocumentMut, String>,
}

impl Node {
    pub fn read(opts: &Options) -> Node {
        let layout = layout::detect(&opts.node_root, opts.layout, opts.config.as_deref())
            .map_err(|e| format!("{e:#}"));
        let bundled = layout.as_ref().ok().and_then(|l| l.containerd.clone());
        let containerd = Binary::find(opts.containerd.as_deref().or(bundled.as_deref()))
            .and_then(|binary| {
                let (version, major) = binary.version()?;
                let minor = version
                    .trim_start_matches('v')
                    .split(['.', '~', '-', '+'])
                    .nth(1)
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                Ok(Containerd {
                    binary,
                    version,
                    major,
                    minor,
                })
            })
            .map_err(|e| format!("{e:#}"));
        let loaded = layout
            .as_ref()
            .ok()
            .and_then(|l| std::fs::read_to_string(&l.loaded).ok());
        let dump = match (&layout, &containerd) {
            (Ok(l), Ok(c)) if loaded.is_some() => c
                .binary
                .dump(&l.loaded)
                .map_err(|e| format!("{e:#}"))
                .and_then(|d| d),
            (Ok(l), Ok(_)) => Err(format!("{} does not exist", l.loaded.display())),
            _ => Err("containerd or its configuration was not found".into()),
        };
        Node {
            root: opts.node_root.clone(),
            layout,
            containerd,
            loaded,
            dump,
        }
    }

    /// `path` (absolute on the node) under the node's root.
    fn path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The CRI runtime handler `name` as containerd loads it.
    fn handler(&self, name: &str) -> Option<&Item> {
        let doc = self.dump.as_ref().ok()?;
        CRI_RUNTIME_PLUGINS
            .iter()
            .find_map(|p| containerd::runtimes(doc, p)?.get(name))
    }

    /// A setting of the CRI runtime plugin's `containerd` table, as containerd loads it.
    fn cri_containerd(&self) -> Option<&Item> {
        let doc = self.dump.as_ref().ok()?;
        CRI_RUNTIME_PLUGINS
            .iter()
            .find_map(|p| doc.get("plugins")?.get(p)?.get("containerd"))
    }
}

/// Every check, in the order a wasm pod needs them.
pub fn all(node: &Node, opts: &Options, kernel: &dyn Kernel) -> Vec<Finding> {
    vec![
        check_containerd(node),
        check_config(node),
        check_layout(node, opts),
        check_handler(node, opts),
        check_shim(node, opts),
        check_image_unpack(node),
        check_cgroup_driver(node, opts),
        check_controllers(node),
        check_kernel(kernel),
        check_cache(node, opts),
    ]
}

fn check_containerd(node: &Node) -> Finding {
    const NAME: &str = "containerd";
    match &node.containerd {
        Err(e) => Finding::fail(
            NAME,
            e.clone(),
            "install containerd 1.6 or later, or name its binary with --containerd",
        ),
        Ok(c) if (c.major, c.minor) < (1, 6) => Finding::fail(
            NAME,
            format!("{} is too old ({})", c.version, c.binary.path().display()),
            "upgrade containerd to 1.6 or later",
        ),
        Ok(c) => Finding::ok(
            NAME,
            format!("{} ({})", c.version, c.binary.path().display()),
        ),
    }
}

fn check_config(node: &Node) -> Finding {
    const NAME: &str = "config";
    let layout = match &node.layout {
        Ok(l) => l,
        Err(e) => return Finding::fail(NAME, e.clone(), "choose the layout with --layout"),
    };
    let shown = layout.loaded.display();
    let Some(text) = &node.loaded else {
        return Finding::fail(
            NAME,
            format!("{shown} does not exist: containerd runs without CRI runtime handlers"),
            "run wasmcell install (it writes the file)",
        );
    };
    let version = match config::ConfigFile::parse(text, &layout.loaded).and_then(|f| f.version()) {
        Ok(v) => v,
        Err(e) => return Finding::fail(NAME, format!("{e:#}"), format!("fix {shown}")),
    };
    let major = node.containerd.as_ref().map(|c| c.major).unwrap_or(0);
    if version == 1 {
        return Finding::fail(
            NAME,
            format!("{shown} has no `version` (config version 1)"),
            "migrate it: `containerd config migrate` (containerd 2.x) or add `version = 2`",
        );
    }
    if version >= 3 && major == 1 {
        return Finding::fail(
            NAME,
            format!("{shown} is config version {version}, which containerd 1.x cannot load"),
            "write it as version 2, or upgrade containerd to 2.x",
        );
    }
    if node.containerd.is_err() {
        return Finding::skip(
            NAME,
            format!("{shown}: version {version}; not loaded (containerd was not found)"),
        );
    }
    match &node.dump {
        Err(e) => Finding::fail(
            NAME,
            format!("containerd cannot load {shown}: {e}"),
            format!("fix {shown}"),
        ),
        Ok(_) => Finding::ok(NAME, format!("{shown}: version {version}, loads")),
    }
}

fn check_handler(node: &Node, opts: &Options) -> Finding {
    const NAME: &str = "handler";
    let handler = &opts.handler;
    if node.dump.is_err() {
        return Finding::skip(NAME, "containerd's configuration could not be read");
    }
    let Some(item) = node.handler(handler) else {
        return Finding::fail(
            NAME,
            format!("containerd has no CRI runtime handler `{handler}`"),
            format!(
                "run wasmcell install (or name the RuntimeClass's handler with --handler; \
                 now: `{handler}`)"
            ),
        );
    };
    let runtime_type = item
        .get("runtime_type")
        .and_then(Item::as_str)
        .unwrap_or("");
    if runtime_type != RUNTIME_TYPE {
        return Finding::fail(
            NAME,
            format!("handler `{handler}` runs {runtime_type:?}, not wasmcell"),
            format!(
                "give wasmcell's handler another name (wasmcell install --handler NAME) and use \
                 it in the RuntimeClass, or set runtime_type = \"{RUNTIME_TYPE}\""
            ),
        );
    }
    let missing = passed_annotations_missing(item);
    if !missing.is_empty() {
        return Finding::warn(
            NAME,
            format!(
                "handler `{handler}` does not pass {} to wasmcell: per-pod settings (or the \
                 termination message's path) from annotations do not reach it",
                missing.join(", ")
            ),
            "run wasmcell install, which adds them to the handler's pod_annotations and \
             container_annotations",
        );
    }
    Finding::ok(NAME, format!("`{handler}` runs {RUNTIME_TYPE}"))
}

/// The annotation patterns `wasmcell install` gives the handler that it does not list.
fn passed_annotations_missing(handler: &Item) -> Vec<String> {
    let listed = |key: &str| -> Vec<String> {
        handler
            .get(key)
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut missing = Vec::new();
    for (key, patterns) in [
        ("pod_annotations", POD_ANNOTATIONS),
        ("container_annotations", CONTAINER_ANNOTATIONS),
    ] {
        let have = listed(key);
        missing.extend(
            patterns
                .iter()
                .filter(|p| !have.iter().any(|h| h == *p))
                .map(|p| format!("{key} {p:?}")),
        );
    }
    missing
}

fn check_shim(node: &Node, opts: &Options) -> Finding {
    const NAME: &str = "shim";
    let foreign = node
        .handler(&opts.handler)
        .and_then(|h| h.get("runtime_type"))
        .and_then(Item::as_str)
        .is_some_and(|t| t != RUNTIME_TYPE);
    if foreign {
        // Not wasmcell's: its binary is not run (doctor runs as root).
        return Finding::skip(NAME, "the handler runs another runtime (see handler)");
    }
    let runtime_path = node
        .handler(&opts.handler)
        .and_then(|h| h.get("runtime_path"))
        .and_then(Item::as_str)
        .filter(|p| !p.is_empty())
        // As containerd reads it, like install's --shim-dir: not under --node-root.
        .map(PathBuf::from);
    let path = match runtime_path {
        Some(p) => p,
        None => {
            // containerd looks in its own directory, then on its PATH.
            let mut dirs: Vec<PathBuf> = node
                .containerd
                .as_ref()
                .ok()
                .and_then(|c| c.binary.path().parent().map(Path::to_owned))
                .into_iter()
                .collect();
            dirs.extend(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ));
            match dirs.iter().map(|d| d.join(SHIM_NAME)).find(|p| p.exists()) {
                Some(p) => p,
                None => {
                    return Finding::fail(
                        NAME,
                        format!("{SHIM_NAME} is neither the handler's runtime_path nor on PATH"),
                        "run wasmcell install",
                    )
                }
            }
        }
    };
    let shown = path.display();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            return Finding::fail(
                NAME,
                format!("{shown}: {e}"),
                "run wasmcell install (it puts the shim where the handler says)",
            )
        }
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Finding::fail(
            NAME,
            format!("{shown} is not an executable file"),
            format!("chmod 755 {shown}, or run wasmcell install"),
        );
    }
    let ours = env!("CARGO_PKG_VERSION");
    let out = containerd::run(Command::new(&path).arg("-v"), Duration::from_secs(10));
    let theirs = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
            l.trim()
                .strip_prefix("Version:")
                .map(|v| v.trim().to_owned())
        })
    });
    match theirs {
        None => Finding::fail(
            NAME,
            format!("{shown} does not answer `-v` as wasmcell's shim does"),
            "run wasmcell install (it puts this release's shim there)",
        ),
        Some(v) if v != ours => Finding::fail(
            NAME,
            format!("{shown} is version {v}; this wasmcell is {ours}"),
            "run wasmcell install from the same release as the shim you want",
        ),
        Some(v) => Finding::ok(NAME, format!("{shown}, version {v}")),
    }
}

fn check_image_unpack(node: &Node) -> Finding {
    const NAME: &str = "image unpack";
    let Ok(c) = &node.containerd else {
        return Finding::skip(NAME, "containerd was not found");
    };
    if (c.major, c.minor) < (2, 3) {
        return Finding::ok(NAME, format!("{}: CRI pulls unpack wasm images", c.version));
    }
    let Ok(doc) = &node.dump else {
        return Finding::skip(NAME, "containerd's configuration could not be read");
    };
    let on = doc
        .get("plugins")
        .and_then(|p| p.get("io.containerd.cri.v1.images"))
        .and_then(|i| i.get(config::LOCAL_PULL_KEY))
        .and_then(Item::as_bool)
        .unwrap_or(false);
    if on {
        Finding::ok(
            NAME,
            format!(
                "{}: CRI pulls go through the client, which unpacks wasm images",
                c.version
            ),
        )
    } else {
        Finding::fail(
            NAME,
            format!(
                "{}: CRI pulls unpack only images of the host's OS, so a pulled wasm image's \
                 pods fail (\"parent snapshot ... does not exist\")",
                c.version
            ),
            format!(
                "run wasmcell install (it sets `{}` in [plugins.\"io.containerd.cri.v1.images\"])",
                config::LOCAL_PULL_KEY
            ),
        )
    }
}

/// The cgroup version of the node: 2 on the unified hierarchy, 1 otherwise, None when
/// `/sys/fs/cgroup` shows neither.
fn cgroup_version(node: &Node) -> Option<u8> {
    let dir = node.path(Path::new("/sys/fs/cgroup"));
    // v1 by any of its hierarchies: a node may lack one (memory, when the kernel turned it off).
    if dir.join("cgroup.controllers").is_file() {
        Some(2)
    } else if ["systemd", "cpu", "cpuacct", "pids", "memory", "cpuset"]
        .iter()
        .any(|h| dir.join(h).is_dir())
    {
        Some(1)
    } else {
        None
    }
}

/// The kubelet's `cgroupDriver` from its config file (`cgroupfs` when the file leaves it out,
/// as the kubelet does): YAML's `cgroupDriver: x  # comment` or JSON's `"cgroupDriver": "x"`.
/// A top-level key is read by its line, so
/// that doctor needs no YAML parser (and the kubelet writes this file in one known form).
fn kubelet_driver(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            let l = l.trim().trim_start_matches(['{', ',']).trim_start();
            l.strip_prefix("cgroupDriver:")
                .or_else(|| l.strip_prefix("\"cgroupDriver\":"))
        })
        .map(|v| {
            let v = v.split(" #").next().unwrap_or(v);
            v.trim()
                .trim_end_matches([',', '}'])
                .trim()
                .trim_matches(['"', '\''])
                .to_owned()
        })
        .unwrap_or_else(|| "cgroupfs".into())
}

fn check_cgroup_driver(node: &Node, opts: &Options) -> Finding {
    const NAME: &str = "cgroup driver";
    let version = match cgroup_version(node) {
        Some(v) => format!("cgroup v{v}"),
        None => return Finding::fail(
            NAME,
            "/sys/fs/cgroup is neither cgroup v2 nor v1",
            "mount the cgroup hierarchy (systemd does; else mount -t cgroup2 none /sys/fs/cgroup)",
        ),
    };
    let kubelet_file = node.path(&opts.kubelet_config);
    let kubelet = std::fs::read_to_string(&kubelet_file)
        .ok()
        .map(|t| kubelet_driver(&t));
    let default = node
        .cri_containerd()
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .unwrap_or("runc")
        .to_owned();
    // runc's shim uses cgroupfs unless its options say SystemdCgroup.
    let runc = node
        .cri_containerd()
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(&default))
        .map(|r| {
            let systemd = r
                .get("options")
                .and_then(|o| o.get("SystemdCgroup"))
                .and_then(Item::as_bool)
                .unwrap_or(false);
            if systemd {
                "systemd"
            } else {
                "cgroupfs"
            }
        });
    let systemd = node.path(Path::new("/run/systemd/system")).is_dir();
    // The shim asks systemd for each cell's scope over the system bus, or, without one, over
    // systemd's private socket.
    let bus = UnixStream::connect(node.path(Path::new("/run/dbus/system_bus_socket"))).is_ok()
        || node.path(Path::new("/run/systemd/private")).exists();
    let mut detail = format!(
        "{version}; kubelet: {}; containerd's {default}: {}; shim: follows the pod's cgroup parent",
        kubelet.as_deref().unwrap_or("no config file"),
        runc.unwrap_or("unknown")
    );
    if let Some(k) = kubelet
        .as_deref()
        .filter(|k| !["systemd", "cgroupfs"].contains(k))
    {
        return Finding::fail(
            NAME,
            format!("{detail}: the kubelet's cgroupDriver {k:?} is neither systemd nor cgroupfs"),
            format!("set cgroupDriver in {}", opts.kubelet_config.display()),
        );
    }
    if let (Some(k), Some(r)) = (kubelet.as_deref(), runc) {
        if k != r {
            detail.push_str(": they disagree");
            return Finding::fail(
                NAME,
                detail,
                format!(
                    "make them one driver: SystemdCgroup = {} in containerd's {default} \
                     options (then restart containerd), or cgroupDriver: {r} in {}",
                    k == "systemd",
                    opts.kubelet_config.display()
                ),
            );
        }
    }
    let uses_systemd = kubelet.as_deref() == Some("systemd") || runc == Some("systemd");
    if uses_systemd && !systemd {
        return Finding::fail(
            NAME,
            format!("{detail}; but systemd is not this node's init"),
            "use the cgroupfs driver on a node without systemd",
        );
    }
    if uses_systemd && !bus {
        return Finding::fail(
            NAME,
            format!(
                "{detail}; neither a D-Bus system bus (/run/dbus/system_bus_socket) nor \
                 systemd's private socket (/run/systemd/private)"
            ),
            "start the system bus (dbus), or run the shim as root beside systemd: it asks \
             systemd for each cell's scope over one of them",
        );
    }
    Finding::ok(NAME, detail)
}

fn check_controllers(node: &Node) -> Finding {
    const NAME: &str = "cgroup controllers";
    let (have, source): (Vec<String>, _) = match cgroup_version(node) {
        Some(2) => {
            let path = node.path(Path::new("/sys/fs/cgroup/cgroup.controllers"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            (text.split_whitespace().map(str::to_owned).collect(), path)
        }
        Some(_) => {
            // subsys_name hierarchy num_cgroups enabled
            let path = node.path(Path::new("/proc/cgroups"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let have = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 4 && f[3] == "1").then(|| f[0].to_owned())
                })
                .collect();
            (have, path)
        }
        None => return Finding::skip(NAME, "no cgroup hierarchy (see cgroup driver)"),
    };
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if missing.is_empty() {
        Finding::ok(NAME, format!("{} enabled", CONTROLLERS.join(", ")))
    } else {
        Finding::fail(
            NAME,
            format!(
                "{} not enabled ({}): a cell's limits cannot be set",
                missing.join(", "),
                source.display()
            ),
            "enable them on the kernel command line (for memory: cgroup_enable=memory)",
        )
    }
}

fn check_kernel(kernel: &dyn Kernel) -> Finding {
    const NAME: &str = "kernel";
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for f in Feature::ALL {
        match kernel.has(f) {
            Ok(true) => {}
            Ok(false) => missing.push(format!("{} (Linux {})", f.name(), f.since())),
            Err(e) => unknown.push(e),
        }
    }
    let names: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
    if !missing.is_empty() {
        return Finding::fail(
            NAME,
            format!("missing: {}", missing.join(", ")),
            "run a kernel of Linux 5.12 or later with seccomp filters (CONFIG_SECCOMP_FILTER)",
        );
    }
    if !unknown.is_empty() {
        return Finding::warn(
            NAME,
            unknown.join("; "),
            "run doctor on the node itself, outside a confined container",
        );
    }
    Finding::ok(NAME, names.join(", "))
}

fn check_cache(node: &Node, opts: &Options) -> Finding {
    const NAME: &str = "compile cache";
    let dir = node.path(&opts.cache_dir);
    let shown = opts.cache_dir.display();
    // The shim makes the directory (and its parents) at its first compile.
    let mut at = dir.as_path();
    let meta = loop {
        // The directory itself as it is (the shim refuses a symlink), its parents followed.
        let meta = if at == dir {
            std::fs::symlink_metadata(at)
        } else {
            std::fs::metadata(at)
        };
        match meta {
            Ok(m) => break m,
            Err(_) => match at.parent() {
                Some(p) => at = p,
                None => {
                    return Finding::fail(
                        NAME,
                        format!("{shown}: nothing of it exists"),
                        "create it",
                    )
                }
            },
        }
    };
    let existing = if at == dir {
        shown.to_string()
    } else {
        format!("{} (the shim creates {shown})", at.display())
    };
    if !meta.is_dir() {
        return Finding::fail(
            NAME,
            format!("{existing} is not a directory (the shim refuses a symlink too)"),
            "remove it, or point WASMCELL_CACHE_DIR (--cache-dir here) elsewhere",
        );
    }
    if meta.uid() != 0 {
        return Finding::fail(
            NAME,
            format!("{existing} belongs to uid {}, not root", meta.uid()),
            format!(
                "chown root:root {}: whoever owns it can put compiled code there that cells run",
                at.display()
            ),
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    // The shim refuses any access but its owner's (it creates the directory 0700).
    if at == dir && mode & 0o077 != 0 {
        return Finding::fail(
            NAME,
            format!("{existing} has mode {mode:o}, not 700: the shim refuses it"),
            format!(
                "chmod 700 {}: whoever writes it can put compiled code there that cells run",
                at.display()
            ),
        );
    }
    let free = match nix::sys::statvfs::statvfs(at) {
        Ok(s) => s.blocks_available() * s.fragment_size(),
        Err(e) => {
            return Finding::fail(
                NAME,
                format!("statvfs {}: {e}", at.display()),
                "check the filesystem",
            )
        }
    };
    let mib = free >> 20;
    if free < CACHE_MIN_FREE {
        return Finding::fail(
            NAME,
            format!("{existing}: {mib} MiB free"),
            format!(
                "free space there, or point WASMCELL_CACHE_DIR at a filesystem with at least {} MiB",
                CACHE_MIN_FREE >> 20
            ),
        );
    }
    Finding::ok(
        NAME,
        format!("{existing}: root's, mode {mode:o}, {mib} MiB free"),
    )
}

/// Whether a distribution's own files carry the handler (install's edit), and whether what
/// containerd loads has it yet.
fn check_layout(node: &Node, opts: &Options) -> Finding {
    const NAME: &str = "layout";
    let Ok(layout) = &node.layout else {
        return Finding::skip(NAME, "see config");
    };
    let name = layout.kind.name();
    if layout.kind == Kind::Kubeadm {
        return Finding::ok(NAME, format!("{name}: {}", layout.config.display()));
    }
    let edited = match edited_by_install(layout, node, &opts.handler) {
        Ok(e) => e,
        Err(e) => return Finding::fail(NAME, format!("{name}: {e}"), "fix the file by hand"),
    };
    let loaded = node.handler(&opts.handler).is_some();
    let restart = match &layout.restart {
        layout::Restart::Command { command, .. } => command.clone(),
        layout::Restart::ByItself(_) => {
            "k0s restarts containerd by itself; wait a few seconds".into()
        }
        layout::Restart::Unknown(_) => format!("restart {name}"),
    };
    match (edited, loaded) {
        (Some(file), true) => Finding::ok(NAME, format!("{name}: handler in {}", file.display())),
        (Some(file), false) => Finding::fail(
            NAME,
            format!(
                "{name}: {} has the handler, but {} (what containerd loads) does not yet",
                file.display(),
                layout.loaded.display()
            ),
            restart,
        ),
        (None, true) => Finding::warn(
            NAME,
            format!(
                "{name}: {} has the handler, but not from {name}'s own files: {name} may \
                 overwrite it",
                layout.loaded.display()
            ),
            "run wasmcell install",
        ),
        (None, false) => Finding::fail(
            NAME,
            format!("{name}: install has not edited this node"),
            format!("run wasmcell install (it finds {name}'s files by itself)"),
        ),
    }
}

/// The distribution's file that defines the handler, if one does.
fn edited_by_install(
    layout: &Layout,
    node: &Node,
    handler: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let defines = |path: &Path| -> anyhow::Result<bool> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(false);
        };
        let file = config::ConfigFile::parse(&text, path)?;
        let version = match file.version()? {
            1 => 3,
            v => v,
        };
        Ok(file.handler_runtime_type(version, handler)?.is_some())
    };
    // Drop-in files the loaded config imports.
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(text) = &node.loaded {
        if let Ok(root) = config::ConfigFile::parse(text, &layout.loaded) {
            for pattern in root.imports().unwrap_or_default() {
                let pattern = match Path::new(&pattern).strip_prefix("/") {
                    Ok(_) => node.path(Path::new(&pattern)),
                    Err(_) => layout
                        .loaded
                        .parent()
                        .unwrap_or(Path::new("/"))
                        .join(pattern),
                };
                if let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) {
                    let name = name.to_string_lossy().into_owned();
                    // A `*` in the file name (what install follows too); a name without one is
                    // the file itself.
                    let (head, tail) = name.split_once('*').unwrap_or((&name, ""));
                    let exact = !name.contains('*');
                    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let file = e.file_name().to_string_lossy().into_owned();
                        let matches = if exact {
                            file == name
                        } else {
                            file.len() >= head.len() + tail.len()
                                && file.starts_with(head)
                                && file.ends_with(tail)
                        };
                        if matches {
                            candidates.push(e.path());
                        }
                    }
                }
            }
        }
    }
    candidates.sort();
    for c in candidates {
        if defines(&c)? {
            return Ok(Some(c));
        }
    }
    match &layout.root_edit {
        RootEdit::Template { templates } => {
            // The renderer reads only the first template it finds.
            if let Some(t) = templates.iter().find(|t| t.is_file()) {
                let text = std::fs::read_to_string(t)?;
                let block = template::block_body(&text)?;
                if block.is_some_and(|b| b.contains(&format!(".{handler}]"))) {
                    return Ok(Some(t.clone()));
                }
            }
            Ok(None)
        }
        RootEdit::InPlace if layout.config != layout.loaded => {
            Ok(defines(&layout.config)?.then(|| layout.config.clone()))
        }
        RootEdit::InPlace | RootEdit::Never => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lacking(Feature);

    impl Kernel for Lacking {
        fn has(&self, f: Feature) -> Result<bool, String> {
            Ok(f != self.0)
        }
    }

    #[test]
    fn a_kernel_without_a_call_the_cell_needs_fails_with_the_release_that_has_it() {
        for f in Feature::ALL {
            let finding = check_kernel(&Lacking(f));
            assert_eq!(finding.status, super::super::report::Status::Fail);
            assert!(finding.detail.contains(f.name()), "{finding:?}");
            assert!(finding.detail.contains(f.since()), "{finding:?}");
        }
        assert_eq!(
            check_kernel(&super::super::kernel::Running).status,
            super::super::report::Status::Ok
        );
    }

    #[test]
    fn the_kubelets_driver_is_read_with_a_comment_or_as_json() {
        assert_eq!(
            kubelet_driver("cgroupDriver: systemd  # kubeadm\n"),
            "systemd"
        );
        assert_eq!(
            kubelet_driver(
                "{\n  \"kind\": \"KubeletConfiguration\",\n  \"cgroupDriver\": \"systemd\",\n}"
            ),
            "systemd"
        );
        assert_eq!(
            kubelet_driver("{\"cgroupDriver\": \"cgroupfs\"}"),
            "cgroupfs"
        );
    }

    #[test]
    fn the_kubelets_driver_is_read_from_its_config_and_defaults_to_cgroupfs() {
        assert_eq!(
            kubelet_driver("kind: KubeletConfiguration\ncgroupDriver: systemd\n"),
            "systemd"
        );
        assert_eq!(kubelet_driver("cgroupDriver: \"cgroupfs\"\n"), "cgroupfs");
        assert_eq!(kubelet_driver("kind: KubeletConfiguration\n"), "cgroupfs");
    }
}
