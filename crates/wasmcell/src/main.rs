//! `wasmcell`: the user's command line.
//!
//! `wasmcell image build` writes an OCI image tarball of a wasm program for `ctr image import`,
//! `nerdctl load` or `docker load`; `wasmcell install` puts wasmcell on a containerd node;
//! `wasmcell doctor` says what on a node would stop a wasm pod.
// Only the kernel probes of doctor (`doctor/kernel.rs`) make raw system calls.
#![deny(unsafe_code)]

mod doctor;
mod image;
mod install;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wasmcell",
    version,
    about = "Tools for running WebAssembly with the wasmcell containerd shim"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with OCI images of wasm programs.
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Put wasmcell on this node: install the shim and add its runtime handler to containerd's
    /// CRI configuration.
    ///
    /// The handler goes under the CRI plugin of the config's `version`:
    /// `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.HANDLER` for version 2
    /// (containerd 1.6/1.7), `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.HANDLER`
    /// for version 3 (containerd 2.x), with runtime_type "io.containerd.wasmcell.v1" and
    /// runtime_path the installed shim. A config whose `imports` name a directory pattern gets
    /// a drop-in file there instead. Comments and layout are kept; the old file is backed up;
    /// the result is loaded by containerd (`config dump`) before it replaces anything. Running
    /// it again changes nothing.
    ///
    /// The node's layout is found from its files: k3s and RKE2 get a block appended to the
    /// containerd config template their agent renders (or a file in the drop-in directory
    /// their rendered config imports), MicroK8s its containerd-template.toml edited, k0s a
    /// file in /etc/k0s/containerd.d.
    Install(InstallArgs),
    /// Check this node for what would stop a wasm pod, and print the fix for each problem:
    /// containerd and its config, the runtime handler, the shim, containerd 2.3+'s image
    /// unpacking, the cgroup drivers of the kubelet and containerd, the cgroup controllers,
    /// the kernel's system calls, the compile cache, and whether a k3s/RKE2/MicroK8s/k0s
    /// node's own files carry the handler. Exits 1 when a check fails.
    Doctor(DoctorArgs),
}

/// Which node, and where its containerd's configuration is: install's and doctor's.
#[derive(clap::Args)]
struct NodeArgs {
    /// containerd's configuration file on a kubeadm-style node (install writes a minimal one if
    /// it is missing). Default: found from the node's layout: /etc/containerd/config.toml, or
    /// k3s's, RKE2's, MicroK8s's or k0s's files when the node has them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The node's layout, when it cannot be found from its files (two distributions' files on
    /// one node).
    #[arg(long, value_enum)]
    layout: Option<install::layout::Kind>,
    /// The node's root directory, for a node's tree mounted elsewhere: the layout's files (and
    /// doctor's /sys, /run, kubelet config and cache) are looked for under it; the shim's
    /// directory and a handler's runtime_path are taken as they are.
    #[arg(long, default_value = "/")]
    node_root: PathBuf,
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// The runtime handler wasm pods' RuntimeClass names.
    #[arg(long, default_value = "wasmtime")]
    handler: String,
    #[command(flatten)]
    node: NodeArgs,
    /// containerd's binary (default: the layout's, else containerd on PATH).
    #[arg(long)]
    containerd: Option<PathBuf>,
    /// The kubelet's configuration file.
    #[arg(long, default_value = "/var/lib/kubelet/config.yaml")]
    kubelet_config: PathBuf,
    /// The shim's compile cache (the WASMCELL_CACHE_DIR containerd gives it).
    #[arg(long, default_value = "/var/lib/wasmcell/cache")]
    cache_dir: PathBuf,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InstallArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The runtime handler's name: a RuntimeClass's `handler`.
    #[arg(long, default_value = "wasmtime")]
    handler: String,
    /// The shim binary to install (default: containerd-shim-wasmcell-v1 beside this program).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// The directory the shim goes to; it should be on containerd's PATH.
    #[arg(long, default_value = "/usr/local/bin")]
    shim_dir: PathBuf,
    /// containerd's binary (default: containerd on PATH).
    #[arg(long)]
    containerd: Option<PathBuf>,
    /// containerd's socket, to wait on after --restart (default: the layout's, such as
    /// /run/containerd/containerd.sock or k3s's /run/k3s/containerd/containerd.sock).
    #[arg(long)]
    address: Option<PathBuf>,
    /// Print what would change (a diff), write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the handler and the shim that install added.
    #[arg(long)]
    uninstall: bool,
    /// Restart containerd afterwards, if its configuration changed, and wait until it answers.
    #[arg(long)]
    restart: bool,
    /// The command that restarts containerd, run by sh (default: the layout's: systemctl
    /// restart containerd, k3s or k3s-agent, rke2-server or rke2-agent,
    /// snap.microk8s.daemon-containerd; k0s restarts it by itself).
    #[arg(long)]
    restart_command: Option<String>,
    /// Seconds to wait for containerd to answer after the restart.
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// Run on the node from a privileged pod with hostPID: read the shim from the pod, then
    /// enter the mount namespace of the node's PID 1 (its files, containerd and systemd).
    #[arg(long)]
    enter_host: bool,
    /// With --enter-host: the process whose mount namespace is the node's.
    #[arg(long, default_value_t = 1, requires = "enter_host")]
    host_pid: u32,
    /// Label node NAME wasmcell.dev/installed=true afterwards (removed by --uninstall, first),
    /// through the API server with the pod's service account.
    #[arg(long, value_name = "NAME")]
    label_node: Option<String>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Doctor(a) => {
            let healthy = doctor::run(&doctor::Options {
                node_root: a.node.node_root,
                layout: a.node.layout,
                config: a.node.config,
                containerd: a.containerd,
                handler: a.handler,
                kubelet_config: a.kubelet_config,
                cache_dir: a.cache_dir,
                json: a.json,
            })?;
            if !healthy {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Image { command } => image::build(command),
        Command::Install(a) => install::run(&install::Options {
            config: a.node.config,
            layout: a.node.layout,
            node_root: a.node.node_root,
            handler: a.handler,
            shim: a.shim,
            shim_dir: a.shim_dir,
            containerd: a.containerd,
            address: a.address,
            dry_run: a.dry_run,
            uninstall: a.uninstall,
            restart: a.restart,
            restart_command: a.restart_command,
            wait: Duration::from_secs(a.wait),
            enter_host: a.enter_host.then_some(a.host_pid),
            label_node: a.label_node,
        }),
    }
}
