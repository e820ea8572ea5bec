//! `wasmcell install`: puts the shim where containerd finds it and adds wasmcell's runtime
//! handler to containerd's CRI configuration, so that pods of a RuntimeClass with that handler
//! (and `ctr run --runtime io.containerd.wasmcell.v1`) run on wasmcell.
//!
//! What a mature node tool owes its user, and how this one keeps it:
//! - **Idempotent**: a second run finds everything in place, changes nothing and says so.
//! - **Nothing lost**: the config is edited format-preserving ([`config`]), the old file is kept
//!   as a backup, and the new one replaces it atomically (written beside it, then renamed).
//! - **Never a config containerd cannot load**: the result is loaded by the node's own
//!   containerd (`config dump`) before it replaces anything, and must show the handler.
//! - **Drop-in directories**: a config whose `imports` name a directory pattern gets its own
//!   file there, and a handler already defined in an imported file is edited where it is.
//! - **Reversible**: `--uninstall` removes what `install` added (a file it created as a whole
//!   is removed as a whole), `--dry-run` shows the diff and writes nothing.

pub mod config;
pub mod containerd;
pub mod layout;
pub mod node;
pub mod template;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use config::{ConfigFile, Edit, Handler, ImagesSetting, LocalPull, LOCAL_PULL_KEY};
use layout::{Layout, Restart, RootEdit};

/// The shim's file name: containerd derives it from the runtime type.
pub const SHIM_NAME: &str = "containerd-shim-wasmcell-v1";

/// What the user asked `install` for.
#[derive(Debug, Clone)]
pub struct Options {
    /// containerd's root configuration file, for a kubeadm-style node (default: found from
    /// the node's layout).
    pub config: Option<PathBuf>,
    /// The node's layout (default: found from its files).
    pub layout: Option<layout::Kind>,
    /// The node's root directory: `/`, or a node's tree mounted elsewhere.
    pub node_root: PathBuf,
    /// The runtime handler's name (a RuntimeClass's `handler`).
    pub handler: String,
    /// The shim binary to install (default: the one beside this `wasmcell`).
    pub shim: Option<PathBuf>,
    /// Where the shim goes: a directory on containerd's `PATH`.
    pub shim_dir: PathBuf,
    /// containerd's binary (default: `containerd` on `PATH`).
    pub containerd: Option<PathBuf>,
    /// containerd's socket, to wait on after a restart (default: the layout's).
    pub address: Option<PathBuf>,
    /// Print what would change; change nothing.
    pub dry_run: bool,
    /// Remove what install added.
    pub uninstall: bool,
    /// Restart containerd afterwards if its configuration changed, and wait until it answers.
    pub restart: bool,
    /// The command that restarts containerd (default: the layout's, such as `systemctl
    /// restart containerd` or `systemctl restart k3s`).
    pub restart_command: Option<String>,
    /// How long to wait for containerd after a restart.
    pub wait: Duration,
    /// Enter the mount namespace of this process first: the node's PID 1 from the installer
    /// pod (`hostPID: true`).
    pub enter_host: Option<u32>,
    /// Label this node (`wasmcell.dev/installed`) through the API server, as a pod.
    pub label_node: Option<String>,
}

/// A configuration file and what it will say.
struct Target {
    path: PathBuf,
    /// Its text today (None: it does not exist).
    before: Option<String>,
    /// Its text after the edit (None: it is to be removed).
    after: Option<String>,
    /// True when `path` is a file `imports` pulls in (the check then imports it by hand).
    imported: bool,
    /// When `path` is a template: the root config it renders, as it will be.
    renders: Option<String>,
}

impl Target {
    fn changes(&self) -> bool {
        self.before != self.after
    }
}

/// Runs install (or uninstall) as `opts` say, printing what it does.
pub fn run(opts: &Options) -> Result<()> {
    if !opts.dry_run && !nix::unistd::geteuid().is_root() {
        bail!(
            "wasmcell install must run as root: it writes containerd's configuration and {} \
             (--dry-run works without)",
            opts.shim_dir.display()
        );
    }
    // What lives in the pod is read before the pod's filesystem is left behind.
    let shim = if opts.uninstall {
        None
    } else {
        Some(read_shim(opts)?)
    };
    let cluster = match &opts.label_node {
        Some(_) => Some(node::Cluster::in_cluster()?),
        None => None,
    };
    if let Some(pid) = opts.enter_host {
        node::enter_host_mounts(pid)?;
    }
    let layout = layout::detect(&opts.node_root, opts.layout, opts.config.as_deref())?;
    let containerd =
        containerd::Binary::find(opts.containerd.as_deref().or(layout.containerd.as_deref()))?;
    let (containerd_version, major) = containerd.version()?;
    let verb = if opts.uninstall {
        "uninstall"
    } else {
        "install"
    };
    println!(
        "wasmcell {verb}: {} node, containerd {containerd_version} ({}), config {}",
        layout.kind.name(),
        containerd.path().display(),
        layout.config.display()
    );

    let root = read_root(&layout, major)?;
    let version = root.file.version()?;
    config::cri_runtime_plugin(version)?;
    let (imports, drop_in) = imported_files(&layout.config, &root.file, &opts.node_root)?;
    // containerd 1.x replaces a whole plugin section with an imported file's, so a drop-in
    // file would drop the root's CRI settings there; 2.x merges them key by key.
    let drop_in = drop_in.filter(|_| major >= 2);
    let target = if opts.uninstall {
        plan_uninstall(opts, &layout, &root, version, &imports)?
    } else {
        // containerd 1.x drops its built-in runc once a config lists a runtime: install writes
        // it out with the settings it had.
        let builtin = if major < 2 {
            let scratch = Scratch::new(&layout.config)?;
            let empty = scratch.file("defaults.toml", "version = 2\n")?;
            containerd.builtin_runtime_settings("runc", &empty)?
        } else {
            Vec::new()
        };
        let node = NodeContainerd {
            major,
            builtin_runc: builtin,
            local_pull: pulls_leave_wasm_packed(&containerd_version),
        };
        plan_install(opts, &layout, &root, version, &imports, drop_in, &node)?
    };
    let shim = plan_shim(opts, shim)?;
    // The template says one thing and what the distribution rendered from it another: its
    // containerd has not been restarted since an earlier run changed the template.
    let pending = target.is_none() && render_pending(&layout, &root)?;
    if pending {
        println!(
            "  {} has not rendered {} since its template changed: containerd needs a restart",
            layout.kind.name(),
            layout.loaded.display()
        );
    }
    let restart_due = target.is_some() || pending;
    // Nothing is written when the restart asked for cannot happen.
    if let (true, None, Restart::Unknown(why), true) = (
        opts.restart,
        &opts.restart_command,
        &layout.restart,
        restart_due,
    ) {
        bail!(
            "--restart: {}'s containerd cannot be restarted ({why}); nothing was changed: \
             pass --restart-command, or run without --restart and restart it yourself",
            layout.kind.name()
        );
    }

    if let Some(t) = &target {
        print_diff(t);
        check(&containerd, opts, &layout, &root, &imports, t)?;
        println!("  containerd {containerd_version} loads the result");
    }
    if let Some(node) = &opts.label_node {
        let what = if opts.uninstall { "removes" } else { "sets" };
        println!("  node {node}: {what} label {}", node::INSTALLED_LABEL);
    }
    if opts.dry_run {
        println!("  --dry-run: nothing was written");
        return Ok(());
    }
    // No new wasm pod may land here once the handler is going.
    if let (Some(cluster), Some(node), true) = (&cluster, &opts.label_node, opts.uninstall) {
        cluster.label_node(node, node::INSTALLED_LABEL, None)?;
    }
    let changed_shim = apply_shim(&shim)?;
    let changed_config = match &target {
        Some(t) => {
            apply(t)?;
            if t.after.is_none() {
                remove_empty_drop_in_dir(&layout, &t.path);
            }
            true
        }
        None => false,
    };
    if !changed_shim && !changed_config {
        println!("  nothing changed: wasmcell is already {verb}ed");
    }
    // Only a changed config needs containerd restarted (a new shim binary is used by the next
    // container as it is); so the installer DaemonSet, which runs this at every start of its
    // pod, restarts containerd once, not at every start.
    let changed_config = changed_config || pending;
    if opts.restart && !changed_config {
        println!("  containerd not restarted: its configuration did not change");
    } else if opts.restart {
        let (command, systemd) = match (&opts.restart_command, &layout.restart) {
            (Some(c), _) => (c.clone(), false),
            (None, Restart::Command { command, systemd }) => (command.clone(), *systemd),
            (None, Restart::ByItself(how)) => {
                println!("  containerd not restarted here: {how}");
                // A label lets wasm pods come: only once containerd has the handler.
                if opts.label_node.is_some() {
                    let address = opts.address.as_ref().unwrap_or(&layout.address);
                    let v = containerd::wait_for_restart(address, opts.wait)?;
                    println!("  containerd {v} answers again at {}", address.display());
                }
                return label_after_install(opts, cluster.as_ref());
            }
            (None, Restart::Unknown(why)) => bail!(
                "the configuration changed, but {}'s containerd cannot be restarted: {why}; \
                 restart it yourself, or pass --restart-command",
                layout.kind.name()
            ),
        };
        println!("  restarting containerd ({command})");
        containerd::restart(&command, systemd)?;
        let address = opts.address.as_ref().unwrap_or(&layout.address);
        let v = containerd::wait_until_answering(address, opts.wait)?;
        println!("  containerd {v} answers at {}", address.display());
    } else if changed_config {
        match &layout.restart {
            Restart::ByItself(how) => println!("  {how}"),
            Restart::Command { command, .. } => println!(
                "  restart containerd for the change to take effect ({command}, or run with \
                 --restart)"
            ),
            Restart::Unknown(why) => println!(
                "  restart containerd for the change to take effect (how is not known: {why})"
            ),
        }
    }
    label_after_install(opts, cluster.as_ref())
}

/// Whether a template layout's template and the config rendered from it disagree on install's
/// block: the distribution has not rendered (restarted containerd) since.
fn render_pending(layout: &Layout, root: &Root) -> Result<bool> {
    let RootEdit::Template { templates } = &layout.root_edit else {
        return Ok(false);
    };
    let Some(path) = templates.iter().find(|t| t.is_file()) else {
        return Ok(false);
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let rendered = root.text.as_deref().unwrap_or_default();
    Ok(template::block_body(&text)? != template::block_body(rendered)?)
}

/// Labels the node once wasmcell is installed on it, when asked to.
fn label_after_install(opts: &Options, cluster: Option<&node::Cluster>) -> Result<()> {
    if let (Some(cluster), Some(node), false) = (cluster, &opts.label_node, opts.uninstall) {
        cluster.label_node(node, node::INSTALLED_LABEL, Some("true"))?;
        println!("  node {node} labelled {}=true", node::INSTALLED_LABEL);
    }
    Ok(())
}

/// The root configuration file as read (or as it will be written, when there is none).
struct Root {
    file: ConfigFile,
    /// Its text on disk; None when it does not exist.
    text: Option<String>,
}

fn read_root(layout: &Layout, containerd_major: u64) -> Result<Root> {
    let path = &layout.config;
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Root {
            file: ConfigFile::parse(&text, path)?,
            text: Some(text),
        }),
        // A file the distribution writes: it has not run yet, and install cannot tell what it
        // will write.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && layout.root_edit != RootEdit::InPlace =>
        {
            bail!(
                "{} has not written {} yet: start it once (it writes containerd's configuration \
             as it starts), then run install again (if it runs another containerd, install \
             with --layout kubeadm)",
                layout.kind.name(),
                path.display()
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Root {
            file: ConfigFile::minimal(config::version_for_containerd(containerd_major)),
            text: None,
        }),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The files `imports` pulls in today, in order, and the drop-in file wasmcell would add to the
/// first directory pattern.
/// An absolute pattern (k3s's and k0s's are) names a path on the node, under `node_root`.
fn imported_files(
    config: &Path,
    root: &ConfigFile,
    node_root: &Path,
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let dir = config.parent().unwrap_or(Path::new("/"));
    let mut files = Vec::new();
    let mut drop_in = None;
    for pattern in root.imports()? {
        let pattern = match Path::new(&pattern).strip_prefix("/") {
            Ok(on_node) => node_root.join(on_node),
            Err(_) => dir.join(pattern),
        };
        let name = pattern
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = pattern.parent().unwrap_or(Path::new("/"));
        if !name.contains(['*', '?', '[']) {
            if pattern.is_file() {
                files.push(pattern);
            }
            continue;
        }
        if parent.to_string_lossy().contains(['*', '?', '[']) || name.contains('[') {
            bail!(
                "imports pattern {}: only `*` and `?` in the file name are followed",
                pattern.display()
            );
        }
        let mut matched: Vec<PathBuf> = std::fs::read_dir(parent)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| wildcard(&name, &n.to_string_lossy()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        matched.sort();
        files.extend(matched);
        if drop_in.is_none() && name.matches('*').count() == 1 && !name.contains('?') {
            drop_in = Some(parent.join(name.replacen('*', "wasmcell", 1)));
        }
    }
    Ok((files, drop_in))
}

/// What install needs to know of the node's containerd beyond its config.
struct NodeContainerd {
    /// Its major version.
    major: u64,
    /// 1.x: the built-in runc's settings, for writing it out.
    builtin_runc: Vec<(String, toml_edit::Value)>,
    /// 2.3+: its CRI pulls leave wasm images packed unless they go through the client.
    local_pull: bool,
}

fn plan_install(
    opts: &Options,
    layout: &Layout,
    root: &Root,
    version: i64,
    imports: &[PathBuf],
    drop_in: Option<PathBuf>,
    node: &NodeContainerd,
) -> Result<Option<Target>> {
    // A root config that pulls through the client already (k3s's does) needs nothing more.
    let local_pull = node.local_pull && root.file.images_setting() != ImagesSetting::On;
    let handler = Handler {
        name: opts.handler.clone(),
        shim_path: Some(opts.shim_dir.join(SHIM_NAME).to_string_lossy().into_owned()),
    };
    // The handler, and for containerd 2.3+ pulls that unpack wasm images, in a file of
    // config `v` at `path`.
    let set = |f: &mut ConfigFile, v: i64, path: &Path| -> Result<Edit> {
        let edit = f.set_handler(v, &handler)?;
        if !local_pull {
            return Ok(edit);
        }
        // A version 2 file may carry the table too: containerd 2.x reads it as it migrates
        // the file.
        Ok(match f.pull_through_client()? {
            LocalPull::Added => {
                println!(
                    "  {}: sets the CRI plugin's `{LOCAL_PULL_KEY}` (containerd 2.3+ leaves \
                     pulled wasm images packed otherwise)",
                    path.display()
                );
                if edit == Edit::Unchanged {
                    Edit::Updated
                } else {
                    edit
                }
            }
            LocalPull::Already => edit,
            LocalPull::TurnedOff => {
                println!(
                    "  warning: {} sets `{LOCAL_PULL_KEY} = false`: containerd 2.3+ then leaves \
                     pulled wasm images packed, and their pods fail (\"parent snapshot ... \
                     does not exist\"); left as it is",
                    path.display()
                );
                edit
            }
        })
    };
    // A handler already defined in an imported file is edited there.
    if let Some(mut found) = imported_with_handler(imports, version, &opts.handler)? {
        let v = found.version;
        let path = found.path.clone();
        return edit(&path, Some(found.text), true, &mut found.file, |f| {
            set(f, v, &path)
        });
    }
    if root
        .file
        .handler_runtime_type(version, &opts.handler)?
        .is_none()
    {
        if let Some(path) = drop_in {
            if !path.exists() {
                let mut file = ConfigFile::minimal(version);
                return edit(&path, None, true, &mut file, |f| set(f, version, &path));
            }
        }
    }
    match &layout.root_edit {
        RootEdit::InPlace => {}
        RootEdit::Template { templates } => {
            return plan_template(opts, layout, templates, root, version, Some(node));
        }
        RootEdit::Never => bail!(
            "{} is {}'s own file, and it imports no drop-in directory install can add a file \
             to{}",
            layout.config.display(),
            layout.kind.name(),
            if node.major < 2 {
                " (k0s with containerd 1.x merges CRI drop-ins into a config of its own, which \
                 install does not write: add the handler in /etc/k0s/containerd.d by hand)"
            } else {
                ""
            }
        ),
    }
    let mut file = root.file.clone();
    let config = &layout.config;
    edit(config, root.text.clone(), false, &mut file, |f| {
        let kept = node.major < 2
            && f.keep_default_runtime(version, &node.builtin_runc, layout.placeholders)?;
        let edit = set(f, version, config)?;
        Ok(if kept { Edit::Added } else { edit })
    })
}

/// Install (`node` given) or uninstall through a template the distribution renders into the
/// root config at its start ([`template`]).
fn plan_template(
    opts: &Options,
    layout: &Layout,
    templates: &[PathBuf],
    root: &Root,
    version: i64,
    node: Option<&NodeContainerd>,
) -> Result<Option<Target>> {
    let rendered = root.text.as_deref().unwrap_or_default();
    // The template in use is the first the renderer finds; with none, the one for the config
    // version it renders today.
    let has_block = |t: &PathBuf| {
        std::fs::read_to_string(t)
            .ok()
            .and_then(|text| template::block_body(&text).ok().flatten())
            .is_some()
    };
    // Uninstall takes the block from whichever template has it (the one in use may have
    // changed since install: k3s's containerd 1.x read config.toml.tmpl).
    let with_block = node
        .is_none()
        .then(|| templates.iter().find(|t| has_block(t)));
    let path = match (with_block.flatten(), templates.iter().find(|t| t.is_file())) {
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) if version >= 3 => templates[0].clone(),
        (None, None) => templates[templates.len() - 1].clone(),
    };
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let shown = path.display();
    let name = layout.kind.name();
    // What the template renders without install's block.
    let base = template::without_rendered_block(rendered)?;
    let Some(node) = node else {
        let Some(text) = before.as_deref() else {
            println!("  {shown} does not exist: no handler to remove");
            return Ok(None);
        };
        let after = match template::without_block(text)? {
            template::Without::NoBlock => {
                println!("  {shown}: has no block of install's: nothing to remove");
                return Ok(None);
            }
            template::Without::Text(t) => Some(t),
            template::Without::Remove => None,
        };
        println!(
            "  {shown}: removes the runtime handler ({name} renders {} from it at its next start)",
            layout.config.display()
        );
        return Ok(Some(Target {
            path,
            before,
            after,
            imported: false,
            renders: Some(base),
        }));
    };
    let base_file = ConfigFile::parse(&base, &layout.config)?;
    if let Some(runtime_type) = base_file.handler_runtime_type(version, &opts.handler)? {
        bail!(
            "{name}'s own configuration ({}) already has a runtime handler `{}` (runtime_type \
             {runtime_type:?}{}); give wasmcell's another name with --handler (and use it as \
             the RuntimeClass's handler)",
            layout.config.display(),
            opts.handler,
            if runtime_type == config::RUNTIME_TYPE {
                ", written outside install's block"
            } else if layout::K3S_RUNTIMES.contains(&opts.handler.as_str()) {
                ": the agent adds one for each shim of its fixed list it finds on its PATH"
            } else {
                ""
            }
        );
    }
    if layout::K3S_RUNTIMES.contains(&opts.handler.as_str()) {
        println!(
            "  warning: `{}` is a handler {name} makes itself once it finds that runtime's shim \
             on its PATH (for `wasmtime`: containerd-shim-wasmtime-v1, as KWasm installs it); \
             its containerd would then not start (the table twice): install with --handler \
             wasmcell on nodes that may get such a shim",
            opts.handler
        );
    }
    let mut block = ConfigFile::parse("", &path)?;
    block.set_handler(
        version,
        &Handler {
            name: opts.handler.clone(),
            shim_path: Some(opts.shim_dir.join(SHIM_NAME).to_string_lossy().into_owned()),
        },
    )?;
    if node.local_pull {
        match base_file.images_setting() {
            // A table cannot be added to from the end of the file once it was written.
            ImagesSetting::TableWithout => bail!(
                "{name}'s configuration ({}) has the CRI image plugin's table without \
                 `{LOCAL_PULL_KEY}`, which containerd 2.3+ needs to unpack wasm images, and a \
                 block at the template's end cannot add to it: add `{LOCAL_PULL_KEY} = true` \
                 to that table in {shown}",
                layout.config.display()
            ),
            ImagesSetting::Off => println!(
                "  warning: {} sets `{LOCAL_PULL_KEY} = false`: containerd 2.3+ then leaves \
                 pulled wasm images packed, and their pods fail; left as it is",
                layout.config.display()
            ),
            ImagesSetting::On => {}
            ImagesSetting::NoTable => {
                block.pull_through_client()?;
            }
        }
    }
    let after = template::with_block(before.as_deref(), &block.text())?;
    if before.as_deref() == Some(after.as_str()) {
        println!("  {shown}: already as it should be");
        return Ok(None);
    }
    println!(
        "  {shown}: {} the runtime handler ({name} renders {} from it at its next start)",
        if template::block_body(before.as_deref().unwrap_or_default())?.is_some() {
            "updates"
        } else {
            "adds"
        },
        layout.config.display()
    );
    let renders = template::with_block(Some(&base), &block.text())?;
    Ok(Some(Target {
        path,
        before,
        after: Some(after),
        imported: false,
        renders: Some(renders),
    }))
}

fn plan_uninstall(
    opts: &Options,
    layout: &Layout,
    root: &Root,
    version: i64,
    imports: &[PathBuf],
) -> Result<Option<Target>> {
    if let Some(mut found) = imported_with_handler(imports, version, &opts.handler)? {
        let v = found.version;
        return edit(&found.path, Some(found.text), true, &mut found.file, |f| {
            remove(f, v, &opts.handler)
        });
    }
    match &layout.root_edit {
        RootEdit::InPlace => {}
        RootEdit::Template { templates } => {
            return plan_template(opts, layout, templates, root, version, None);
        }
        RootEdit::Never => {
            println!(
                "  no drop-in file defines handler `{}`: nothing to remove",
                opts.handler
            );
            return Ok(None);
        }
    }
    let Some(text) = root.text.clone() else {
        println!(
            "  {} does not exist: no handler to remove",
            layout.config.display()
        );
        return Ok(None);
    };
    let mut file = root.file.clone();
    edit(&layout.config, Some(text), false, &mut file, |f| {
        remove(f, version, &opts.handler)
    })
}

/// Removes the handler and what install set beside it.
fn remove(f: &mut ConfigFile, version: i64, handler: &str) -> Result<Edit> {
    let edit = f.remove_handler(version, handler)?;
    Ok(match (f.remove_pull_through_client(), edit) {
        (true, Edit::Unchanged) => Edit::Removed,
        (_, edit) => edit,
    })
}

/// Whether the CRI plugin of containerd `version` (as `containerd --version` prints it) leaves
/// pulled wasm images packed unless it pulls through the client: 2.3 and later.
fn pulls_leave_wasm_packed(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '~', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 3)
}

/// An imported file that defines the handler.
struct Imported {
    path: PathBuf,
    text: String,
    file: ConfigFile,
    /// The version it is read at.
    version: i64,
}

/// The first of `imports` that defines runtime handler `handler`.
fn imported_with_handler(
    imports: &[PathBuf],
    root_version: i64,
    handler: &str,
) -> Result<Option<Imported>> {
    for path in imports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read {} (imported)", path.display()))?;
        let file = ConfigFile::parse(&text, path)?;
        let version = imported_version(&file, root_version)?;
        if file.handler_runtime_type(version, handler)?.is_some() {
            return Ok(Some(Imported {
                path: path.clone(),
                text,
                file,
                version,
            }));
        }
    }
    Ok(None)
}

/// The version an imported file is read at: its own, or the root's when it has none.
fn imported_version(file: &ConfigFile, root_version: i64) -> Result<i64> {
    Ok(match file.version()? {
        1 => root_version,
        v => v,
    })
}

/// Applies `change` to `file` (read from `path`, whose text is `before`) and says what it did.
fn edit(
    path: &Path,
    before: Option<String>,
    imported: bool,
    file: &mut ConfigFile,
    change: impl FnOnce(&mut ConfigFile) -> Result<Edit>,
) -> Result<Option<Target>> {
    let what = change(file)?;
    let shown = path.display();
    match what {
        Edit::Unchanged => {
            println!("  {shown}: already as it should be");
            return Ok(None);
        }
        Edit::Added => println!("  {shown}: adds the runtime handler"),
        Edit::Updated => println!("  {shown}: updates the runtime handler"),
        Edit::Removed => println!("  {shown}: removes the runtime handler"),
    }
    // A file install wrote as a whole goes as a whole.
    let after = if what == Edit::Removed && file.is_minimal() {
        None
    } else {
        Some(file.text())
    };
    Ok(Some(Target {
        path: path.to_owned(),
        before,
        after,
        imported,
        renders: None,
    }))
}

/// Has containerd load the configuration as it will be with `target` in place, and compare it
/// with today's ([`containerd::Binary::check`]).
fn check(
    containerd: &containerd::Binary,
    opts: &Options,
    layout: &Layout,
    root: &Root,
    imports: &[PathBuf],
    target: &Target,
) -> Result<()> {
    let scratch = Scratch::new(&layout.config)?;
    let new_root = if let Some(rendered) = &target.renders {
        scratch.beside(rendered)?
    } else if target.imported {
        // The root as it is, its imports spelled out file by file, the target's new text in
        // place of the target (or no file, when it is to go).
        let mut files: Vec<PathBuf> = imports
            .iter()
            .filter(|f| **f != target.path)
            .cloned()
            .collect();
        if let Some(after) = &target.after {
            let candidate = scratch.file("imported.toml", after)?;
            let at = imports
                .iter()
                .position(|f| *f == target.path)
                .or_else(|| {
                    files.iter().position(|f| {
                        f.parent() == target.path.parent()
                            && f.file_name() > target.path.file_name()
                    })
                })
                .unwrap_or(files.len());
            files.insert(at, candidate);
        }
        let mut root_file = root.file.clone();
        root_file.set_imports(
            files
                .iter()
                .map(|f| f.to_string_lossy().into_owned())
                .collect(),
        );
        scratch.beside(&root_file.text())?
    } else {
        scratch.beside(target.after.as_deref().unwrap_or(""))?
    };
    let old_root = root.text.is_some().then_some(layout.config.as_path());
    containerd
        .check(old_root, &new_root, &opts.handler, !opts.uninstall)
        .with_context(|| format!("{} was not changed", target.path.display()))
}

/// Temporary files for the check: one beside the root config (so relative imports resolve as
/// they will) under a name no import pattern of `*.toml` matches, others in a private
/// directory. All are removed on drop.
struct Scratch {
    dir: PathBuf,
    beside: PathBuf,
}

impl Scratch {
    fn new(target: &Path) -> Result<Scratch> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("wasmcell-install-{pid}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let parent = target.parent().unwrap_or(Path::new("/"));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Scratch {
            dir,
            beside: parent.join(format!(".{name}.wasmcell-check-{pid}")),
        })
    }

    fn file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        Ok(p)
    }

    fn beside(&self, text: &str) -> Result<PathBuf> {
        if let Some(parent) = self.beside.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&self.beside, text)
            .with_context(|| format!("write {}", self.beside.display()))?;
        Ok(self.beside.clone())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.beside);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the directory of drop-in file `removed` when it is the layout's drop-in directory,
/// which the distribution does not create, and is empty now.
fn remove_empty_drop_in_dir(layout: &Layout, removed: &Path) {
    let Some(dir) = removed.parent() else {
        return;
    };
    if layout.drop_in_parent.as_deref() != dir.parent() {
        return;
    }
    if std::fs::remove_dir(dir).is_ok() {
        println!("  removed {} (empty; install had made it)", dir.display());
    }
}

/// Puts `target` in place: the old file is kept as a backup, the new one is renamed over it.
fn apply(target: &Target) -> Result<()> {
    let path = &target.path;
    // A file install wrote as a whole and now removes needs no backup.
    if target.before.is_some() && target.after.is_some() {
        let backup = backup_path(path);
        std::fs::copy(path, &backup)
            .with_context(|| format!("back up {} to {}", path.display(), backup.display()))?;
        println!("  backup: {}", backup.display());
    }
    match &target.after {
        None => {
            std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
            println!("  removed {} (install had written it)", path.display());
        }
        Some(text) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            replace_file(path, text.as_bytes(), mode)?;
            println!("  wrote {}", path.display());
        }
    }
    Ok(())
}

/// `<file>.wasmcell-backup-<unix seconds>`, a name no earlier backup has.
fn backup_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut n = 0;
    loop {
        let suffix = if n == 0 {
            format!(".wasmcell-backup-{secs}")
        } else {
            format!(".wasmcell-backup-{secs}-{n}")
        };
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Writes `bytes` beside `path` and renames it over `path`, so a reader sees the old file or
/// the new one, never a part.
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".wasmcell-new-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("write {}", path.display()))
}

/// What happens to the shim binary.
enum ShimPlan {
    /// Write `bytes` (the shim read at the start) to `to`.
    Copy { bytes: Vec<u8>, to: PathBuf },
    /// The destination already holds the same bytes.
    InPlace,
    /// Remove `to`.
    Remove { to: PathBuf },
    /// Nothing there to remove.
    Absent,
}

/// The shim binary to install: its path and bytes.
fn read_shim(opts: &Options) -> Result<(PathBuf, Vec<u8>)> {
    let from = match &opts.shim {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("find this program's path")?
            .parent()
            .unwrap_or(Path::new("/"))
            .join(SHIM_NAME),
    };
    match std::fs::read(&from) {
        Ok(bytes) => Ok((from, bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no shim at {} to install (name it with --shim)",
            from.display()
        ),
        Err(e) => Err(e).with_context(|| format!("read {}", from.display())),
    }
}

fn plan_shim(opts: &Options, source: Option<(PathBuf, Vec<u8>)>) -> Result<ShimPlan> {
    let to = opts.shim_dir.join(SHIM_NAME);
    let Some((from, bytes)) = source else {
        let plan = if to.exists() {
            println!("  {}: removes the shim", to.display());
            ShimPlan::Remove { to }
        } else {
            ShimPlan::Absent
        };
        return Ok(plan);
    };
    if std::fs::read(&to).ok().as_deref() == Some(bytes.as_slice()) {
        println!("  {}: the shim is in place", to.display());
        return Ok(ShimPlan::InPlace);
    }
    println!(
        "  {}: installs the shim from {}",
        to.display(),
        from.display()
    );
    Ok(ShimPlan::Copy { bytes, to })
}

/// Carries out the shim's plan; true when something changed.
fn apply_shim(plan: &ShimPlan) -> Result<bool> {
    match plan {
        ShimPlan::Copy { bytes, to } => {
            replace_file(to, bytes, 0o755)?;
            Ok(true)
        }
        ShimPlan::Remove { to } => {
            std::fs::remove_file(to).with_context(|| format!("remove {}", to.display()))?;
            Ok(true)
        }
        ShimPlan::InPlace | ShimPlan::Absent => Ok(false),
    }
}

/// Prints a unified diff of a target's change.
fn print_diff(t: &Target) {
    if !t.changes() {
        return;
    }
    let before = t.before.as_deref().unwrap_or("");
    let after = t.after.as_deref().unwrap_or("");
    let shown = t.path.display().to_string();
    let old = if t.before.is_some() {
        shown.as_str()
    } else {
        "/dev/null"
    };
    let new = if t.after.is_some() {
        shown.as_str()
    } else {
        "/dev/null"
    };
    let diff = similar::TextDiff::from_lines(before, after);
    print!("{}", diff.unified_diff().context_radius(3).header(old, new));
}

/// Go's `filepath.Match` for `*` and `?` within one file name.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::{pulls_leave_wasm_packed, wildcard};

    #[test]
    fn wildcards_match_as_go_does_within_a_name() {
        assert!(wildcard("*.toml", "wasmcell.toml"));
        assert!(wildcard("*.toml", ".hidden.toml"));
        assert!(!wildcard("*.toml", "wasmcell.toml.bak"));
        assert!(wildcard("1?-*.toml", "10-a.toml"));
        assert!(!wildcard("1?-*.toml", "1-a.toml"));
    }

    #[test]
    fn containerd_2_3_and_later_need_pulls_through_the_client() {
        for (version, needs) in [
            ("v2.3.7", true),
            ("v2.4.0-beta.0", true),
            ("v3.0.0", true),
            ("v2.2.10", false),
            ("1.7.35", false),
            ("1.6.20~ds1", false),
        ] {
            assert_eq!(pulls_leave_wasm_packed(version), needs, "{version}");
        }
    }
}
