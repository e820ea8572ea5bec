//! Where a node keeps containerd's configuration, and how that containerd is restarted.
//!
//! Only a kubeadm-style node has containerd read a file its admin edits
//! (`/etc/containerd/config.toml`). The Kubernetes distributions that bundle containerd write
//! its configuration themselves, and take the admin's part through a file of their own:
//! - **k3s and RKE2** render `agent/etc/containerd/config.toml` at every start from a Go
//!   template (`config-v3.toml.tmpl`, else `config.toml.tmpl`, else a built-in one), and newer
//!   releases have the rendered file import `config-v3.toml.d/*.toml`. An edit of the rendered
//!   file is lost at the next start.
//! - **MicroK8s** renders `args/containerd.toml` from `args/containerd-template.toml` (a TOML
//!   file with `${SNAP_DATA}`-style placeholders in its strings) at every start of its
//!   containerd.
//! - **k0s** rewrites `/etc/k0s/containerd.toml` while its first line is `# k0s_managed=true`,
//!   and that file imports `/etc/k0s/containerd.d/*.toml`, whose changes k0s notices and
//!   restarts containerd for by itself.
//!
//! [`detect`] finds which one a node is, from the files alone, so that neither `install` nor
//! the installer DaemonSet needs to be told.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The node layouts install knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// containerd reads `/etc/containerd/config.toml` (kubeadm, most distributions' packages).
    Kubeadm,
    /// k3s's agent renders containerd's config from a template.
    K3s,
    /// RKE2's agent renders containerd's config from a template (k3s's code).
    Rke2,
    /// The MicroK8s snap renders containerd's config from `containerd-template.toml`.
    Microk8s,
    /// k0s writes containerd's config and imports drop-ins from `/etc/k0s/containerd.d/`.
    K0s,
}

impl Kind {
    /// The name users know it by.
    /// The value `--layout` takes for it.
    pub fn flag(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kubeadm => "kubeadm-style",
            Kind::K3s => "k3s",
            Kind::Rke2 => "RKE2",
            Kind::Microk8s => "MicroK8s",
            Kind::K0s => "k0s",
        }
    }
}

/// How install may change the root configuration file (the one containerd loads) when its
/// handler cannot go into a drop-in file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEdit {
    /// The file is the admin's: edit it where it is.
    InPlace,
    /// The file is rendered from a template at every start; the template gets a marked block
    /// appended (`templates` are the names the renderer looks for, in its order; the first
    /// that exists is the one in use).
    Template { templates: Vec<PathBuf> },
    /// The file belongs to the distribution and has no template: only its drop-in directory
    /// may be written.
    Never,
}

/// How containerd is restarted on this layout once its configuration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// A command for `sh -c`; `systemd` when it needs systemd running.
    Command { command: String, systemd: bool },
    /// The distribution restarts containerd by itself when the drop-in directory changes.
    ByItself(&'static str),
    /// No command could be found; why.
    Unknown(String),
}

/// One node's layout: which files are containerd's, and how it is restarted.
#[derive(Debug, Clone)]
pub struct Layout {
    pub kind: Kind,
    /// The root configuration file install edits: the one containerd loads, or for MicroK8s
    /// the template it is rendered from.
    pub config: PathBuf,
    /// The file containerd loads.
    pub loaded: PathBuf,
    /// How that file may be changed.
    pub root_edit: RootEdit,
    /// The containerd binary the distribution runs, when it bundles one and it is there.
    pub containerd: Option<PathBuf>,
    /// containerd's socket.
    pub address: PathBuf,
    pub restart: Restart,
    /// The directory whose drop-in directories (`config-v3.toml.d`) the distribution's config
    /// imports but does not create: one install made is removed again, once empty, by
    /// uninstall.
    pub drop_in_parent: Option<PathBuf>,
    /// Placeholders the distribution replaces in the file before containerd reads it, with
    /// their values, where install needs to know one.
    pub placeholders: &'static [(&'static str, &'static str)],
}

/// Where the layouts' files are, relative to the node's root.
const K3S_DIR: &str = "var/lib/rancher/k3s/agent/etc/containerd";
const RKE2_DIR: &str = "var/lib/rancher/rke2/agent/etc/containerd";
const MICROK8S_TEMPLATE: &str = "var/snap/microk8s/current/args/containerd-template.toml";
const K0S_CONFIG: &str = "etc/k0s/containerd.toml";
const KUBEADM_CONFIG: &str = "etc/containerd/config.toml";

/// The runtime handlers k3s's and RKE2's agent add by themselves, each when it finds the
/// runtime's shim or binary on its PATH.
pub const K3S_RUNTIMES: [&str; 11] = [
    "crun",
    "nvidia",
    "nvidia-experimental",
    "nvidia-cdi",
    "lunatic",
    "slight",
    "spin",
    "wws",
    "wasmedge",
    "wasmer",
    "wasmtime",
];

/// The first line of a k0s-managed `containerd.toml`.
pub const K0S_MANAGED: &str = "# k0s_managed=true";

/// Where systemd unit files are installed, in the order the distributions' installers use.
const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// The layout of the node whose root directory is `root` (`/`, or a node's tree mounted
/// elsewhere): `config` (an explicit root config file) means kubeadm-style; `asked` forces a
/// layout; otherwise it is found from the files, and more than one is an error.
pub fn detect(root: &Path, asked: Option<Kind>, config: Option<&Path>) -> Result<Layout> {
    match (asked, config) {
        (None | Some(Kind::Kubeadm), Some(config)) => {
            return Ok(kubeadm(root, config.to_owned()));
        }
        (Some(kind), Some(_)) => bail!(
            "--config names a kubeadm-style root config; a {} node's files are found by \
             --layout alone (with --node-root for a node mounted elsewhere)",
            kind.name()
        ),
        (Some(kind), None) => {
            return match of(kind, root) {
                Some(layout) => Ok(layout),
                None => bail!(
                    "--layout {}: this node has no {} (under {})",
                    kind.flag(),
                    marker(kind),
                    root.display()
                ),
            };
        }
        (None, None) => {}
    }
    let found: Vec<Layout> = [Kind::K3s, Kind::Rke2, Kind::Microk8s, Kind::K0s]
        .into_iter()
        .filter_map(|k| of(k, root))
        .collect();
    match found.len() {
        0 => Ok(kubeadm(root, root.join(KUBEADM_CONFIG))),
        1 => Ok(found.into_iter().next().expect("one layout")),
        _ => bail!(
            "this node has the files of more than one distribution ({}): choose one with \
             --layout",
            found
                .iter()
                .map(|l| format!("{} at {}", l.kind.name(), l.config.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What marks a layout on a node.
fn marker(kind: Kind) -> &'static str {
    match kind {
        Kind::Kubeadm => KUBEADM_CONFIG,
        Kind::K3s => K3S_DIR,
        Kind::Rke2 => RKE2_DIR,
        Kind::Microk8s => MICROK8S_TEMPLATE,
        Kind::K0s => K0S_CONFIG,
    }
}

/// Layout `kind` on the node at `root`, if the node has its marker.
fn of(kind: Kind, root: &Path) -> Option<Layout> {
    match kind {
        Kind::Kubeadm => Some(kubeadm(root, root.join(KUBEADM_CONFIG))),
        Kind::K3s | Kind::Rke2 => rancher(kind, root),
        Kind::Microk8s => {
            let template = root.join(MICROK8S_TEMPLATE);
            template.is_file().then(|| Layout {
                kind,
                config: template,
                loaded: root.join("var/snap/microk8s/current/args/containerd.toml"),
                root_edit: RootEdit::InPlace,
                containerd: existing(root.join("snap/microk8s/current/bin/containerd")),
                address: root.join("var/snap/microk8s/common/run/containerd.sock"),
                restart: Restart::Command {
                    command: "systemctl restart snap.microk8s.daemon-containerd".into(),
                    systemd: true,
                },
                drop_in_parent: None,
                // Its start script always sets the default runtime to runc.
                placeholders: &[("${RUNTIME}", "runc")],
            })
        }
        Kind::K0s => {
            let config = root.join(K0S_CONFIG);
            let text = std::fs::read_to_string(&config).ok()?;
            let managed = text.lines().next() == Some(K0S_MANAGED);
            let (root_edit, restart) = if managed {
                (
                    RootEdit::Never,
                    Restart::ByItself(
                        "k0s restarts containerd by itself a few seconds after \
                         /etc/k0s/containerd.d changes",
                    ),
                )
            } else {
                // The admin took the file over: k0s loads it as it is, at its start.
                (
                    RootEdit::InPlace,
                    enabled_unit(root, &["k0sworker", "k0scontroller"]),
                )
            };
            Some(Layout {
                kind,
                loaded: config.clone(),
                config,
                root_edit,
                containerd: existing(root.join("var/lib/k0s/bin/containerd")),
                address: root.join("run/k0s/containerd.sock"),
                restart,
                drop_in_parent: None,
                placeholders: &[],
            })
        }
    }
}

fn kubeadm(root: &Path, config: PathBuf) -> Layout {
    Layout {
        kind: Kind::Kubeadm,
        loaded: config.clone(),
        config,
        root_edit: RootEdit::InPlace,
        containerd: None,
        address: root.join("run/containerd/containerd.sock"),
        restart: Restart::Command {
            command: "systemctl restart containerd".into(),
            systemd: true,
        },
        drop_in_parent: None,
        placeholders: &[],
    }
}

/// k3s or RKE2: their agents share the code that renders containerd's config.
fn rancher(kind: Kind, root: &Path) -> Option<Layout> {
    let (dir, bin, units): (_, _, &[&str]) = if kind == Kind::K3s {
        (
            root.join(K3S_DIR),
            root.join("var/lib/rancher/k3s/data/current/bin/containerd"),
            &["k3s", "k3s-agent"],
        )
    } else {
        (
            root.join(RKE2_DIR),
            root.join("var/lib/rancher/rke2/bin/containerd"),
            &["rke2-server", "rke2-agent"],
        )
    };
    if !dir.is_dir() {
        return None;
    }
    Some(Layout {
        kind,
        config: dir.join("config.toml"),
        loaded: dir.join("config.toml"),
        root_edit: RootEdit::Template {
            templates: vec![
                dir.join("config-v3.toml.tmpl"),
                dir.join("config.toml.tmpl"),
            ],
        },
        containerd: existing(bin),
        // Both keep k3s's state directory.
        address: root.join("run/k3s/containerd/containerd.sock"),
        restart: enabled_unit(root, units),
        drop_in_parent: Some(dir),
        placeholders: &[],
    })
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.exists().then_some(path)
}

/// `systemctl restart` of the first of `units` that is enabled (wanted by a target), else the
/// only one installed; a server and an agent unit may both be installed (RKE2's tarball
/// installs both), but only one is enabled.
fn enabled_unit(root: &Path, units: &[&str]) -> Restart {
    let installed: Vec<&str> = units
        .iter()
        .copied()
        .filter(|u| {
            UNIT_DIRS
                .iter()
                .any(|d| root.join(d).join(format!("{u}.service")).is_file())
        })
        .collect();
    let enabled = installed.iter().copied().find(|u| {
        std::fs::read_dir(root.join("etc/systemd/system"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
            .any(|e| {
                e.path()
                    .join(format!("{u}.service"))
                    .symlink_metadata()
                    .is_ok()
            })
    });
    match (enabled, installed.as_slice()) {
        (Some(unit), _) | (None, &[unit]) => Restart::Command {
            command: format!("systemctl restart {unit}"),
            systemd: true,
        },
        (None, []) => Restart::Unknown(format!(
            "no systemd unit {} is installed",
            units.join(" or ")
        )),
        (None, _) => Restart::Unknown(format!(
            "units {} are installed and none is enabled",
            installed.join(" and ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_node_with_none_of_the_distributions_is_kubeadm_style() {
        let root = tempfile::tempdir().unwrap();
        let l = detect(root.path(), None, None).unwrap();
        assert_eq!(l.kind, Kind::Kubeadm);
        assert_eq!(l.config, root.path().join("etc/containerd/config.toml"));
        assert_eq!(l.root_edit, RootEdit::InPlace);
    }

    #[test]
    fn each_distribution_is_found_from_its_files() {
        for (kind, rel, config) in [
            (
                Kind::K3s,
                "var/lib/rancher/k3s/agent/etc/containerd/config.toml",
                "var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            ),
            (
                Kind::Rke2,
                "var/lib/rancher/rke2/agent/etc/containerd/config.toml",
                "var/lib/rancher/rke2/agent/etc/containerd/config.toml",
            ),
            (Kind::Microk8s, MICROK8S_TEMPLATE, MICROK8S_TEMPLATE),
            (Kind::K0s, K0S_CONFIG, K0S_CONFIG),
        ] {
            let root = tempfile::tempdir().unwrap();
            touch(root.path(), rel, "version = 3\n");
            // A stray kubeadm-style file does not make it ambiguous.
            touch(root.path(), KUBEADM_CONFIG, "version = 3\n");
            let l = detect(root.path(), None, None).unwrap();
            assert_eq!(l.kind, kind);
            assert_eq!(l.config, root.path().join(config));
        }
    }

    #[test]
    fn two_distributions_on_one_node_must_be_chosen_between() {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), &format!("{K3S_DIR}/config.toml"), "");
        touch(root.path(), K0S_CONFIG, "");
        let err = detect(root.path(), None, None).unwrap_err().to_string();
        assert!(err.contains("k3s at") && err.contains("k0s at"), "{err}");
        assert!(err.contains("--layout"), "{err}");
        let l = detect(root.path(), Some(Kind::K0s), None).unwrap();
        assert_eq!(l.kind, Kind::K0s);
        let err = detect(root.path(), Some(Kind::Microk8s), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no var/snap/microk8s"), "{err}");
    }

    #[test]
    fn an_explicit_config_is_kubeadm_style_and_other_layouts_refuse_it() {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), &format!("{K3S_DIR}/config.toml"), "");
        let l = detect(root.path(), None, Some(Path::new("/x/config.toml"))).unwrap();
        assert_eq!(l.kind, Kind::Kubeadm);
        assert_eq!(l.config, Path::new("/x/config.toml"));
        assert!(detect(root.path(), Some(Kind::K3s), Some(Path::new("/x"))).is_err());
    }

    #[test]
    fn k0s_owns_its_file_only_while_it_is_marked_managed() {
        let root = tempfile::tempdir().unwrap();
        touch(
            root.path(),
            K0S_CONFIG,
            &format!("{K0S_MANAGED}\nversion = 3\n"),
        );
        let l = detect(root.path(), None, None).unwrap();
        assert_eq!(l.root_edit, RootEdit::Never);
        assert!(matches!(l.restart, Restart::ByItself(_)));
        touch(root.path(), K0S_CONFIG, "version = 3\n");
        touch(root.path(), "etc/systemd/system/k0sworker.service", "");
        let l = detect(root.path(), None, None).unwrap();
        assert_eq!(l.root_edit, RootEdit::InPlace);
        assert_eq!(
            l.restart,
            Restart::Command {
                command: "systemctl restart k0sworker".into(),
                systemd: true
            }
        );
    }

    #[test]
    fn the_enabled_unit_is_restarted_when_server_and_agent_are_both_installed() {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), &format!("{RKE2_DIR}/config.toml"), "");
        touch(
            root.path(),
            "usr/local/lib/systemd/system/rke2-server.service",
            "",
        );
        touch(
            root.path(),
            "usr/local/lib/systemd/system/rke2-agent.service",
            "",
        );
        let l = detect(root.path(), None, None).unwrap();
        assert!(matches!(l.restart, Restart::Unknown(ref why) if why.contains("none is enabled")));
        std::fs::create_dir_all(
            root.path()
                .join("etc/systemd/system/multi-user.target.wants"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/usr/local/lib/systemd/system/rke2-agent.service",
            root.path()
                .join("etc/systemd/system/multi-user.target.wants/rke2-agent.service"),
        )
        .unwrap();
        // The link points into the node's root, which a fixture is not: it counts by name.
        let l = detect(root.path(), None, None).unwrap();
        assert_eq!(
            l.restart,
            Restart::Command {
                command: "systemctl restart rke2-agent".into(),
                systemd: true
            }
        );
    }
}
