//! `wasmcell`: the user's command line.
//!
//! `wasmcell image build` writes an OCI image tarball of a wasm program for `ctr image import`,
//! `nerdctl load` or `docker load`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use wasmcell_image::{build_archive, ImageFile, ImageSpec, ImageSymlink, Layout};

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
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build an OCI image tarball (OCI image layout) from a .wasm file.
    ///
    /// Layout "rootfs": one filesystem layer holding the program (and any --file), platform
    /// wasi/wasm by default; the entrypoint is the program's path in the image. Import it with
    /// `ctr image import --all-platforms IMAGE.tar` and run it with
    /// `ctr run --rm --runtime io.containerd.wasmcell.v1 --platform wasi/wasm NAME ID`.
    ///
    /// Native images (for tests and sidecars) are built the same way with --platform linux/amd64,
    /// the program given with --file and --entrypoint.
    ///
    /// The output is deterministic: the same inputs give byte-identical tarballs.
    Build {
        /// Image name, for example docker.io/library/hello:latest.
        #[arg(long)]
        name: String,
        /// The wasm program; it is stored as /<file name> and becomes the entrypoint.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Image layout.
        #[arg(long, default_value = "rootfs", value_parser = ["rootfs"])]
        layout: String,
        /// Image platform, os/architecture.
        #[arg(long, default_value = "wasi/wasm")]
        platform: String,
        /// Entrypoint path inside the image (default: the --wasm file's path).
        #[arg(long)]
        entrypoint: Option<String>,
        /// Default argument (image Cmd); repeat for more.
        #[arg(long = "arg")]
        args: Vec<String>,
        /// Environment variable KEY=VALUE; repeat for more.
        #[arg(long = "env")]
        env: Vec<String>,
        /// Working directory inside the image.
        #[arg(long, default_value = "/")]
        workdir: String,
        /// User the process runs as (image config User: uid[:gid]); default root.
        #[arg(long, default_value = "")]
        user: String,
        /// Extra file HOST_PATH:IMAGE_PATH; repeat for more.
        #[arg(long = "file")]
        files: Vec<String>,
        /// Symlink IMAGE_PATH:TARGET; repeat for more.
        #[arg(long = "symlink")]
        symlinks: Vec<String>,
        /// Output tarball.
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn read_file(host: &str, image_path: &str) -> Result<ImageFile> {
    let contents = std::fs::read(host).with_context(|| format!("read {host}"))?;
    let mode = std::fs::metadata(host)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    Ok(ImageFile {
        path: image_path.to_owned(),
        contents,
        mode,
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let Command::Image {
        command:
            ImageCommand::Build {
                name,
                wasm,
                layout,
                platform,
                entrypoint,
                args,
                env,
                workdir,
                user,
                files,
                symlinks,
                output,
            },
    } = cli.command;
    if layout != "rootfs" {
        bail!("layout {layout:?} is not supported");
    }
    let mut image_files = Vec::new();
    let mut default_entry = None;
    if let Some(wasm) = &wasm {
        let base = wasm
            .file_name()
            .and_then(|n| n.to_str())
            .context("--wasm needs a file name")?;
        let path = format!("/{base}");
        image_files.push(read_file(&wasm.to_string_lossy(), &path)?);
        default_entry = Some(path);
    }
    for f in &files {
        let (host, image) = f
            .split_once(':')
            .with_context(|| format!("--file {f:?} is not HOST_PATH:IMAGE_PATH"))?;
        image_files.push(read_file(host, image)?);
    }
    let symlinks = symlinks
        .iter()
        .map(|s| {
            s.split_once(':')
                .map(|(p, t)| ImageSymlink {
                    path: p.to_owned(),
                    target: t.to_owned(),
                })
                .with_context(|| format!("--symlink {s:?} is not IMAGE_PATH:TARGET"))
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(entry) = entrypoint.or(default_entry) else {
        bail!("give --wasm or --entrypoint");
    };
    let spec = ImageSpec {
        name,
        platform,
        layout: Layout::Rootfs,
        entrypoint: vec![entry],
        cmd: args,
        env,
        workdir,
        user,
        files: image_files,
        symlinks,
    };
    let file =
        std::fs::File::create(&output).with_context(|| format!("create {}", output.display()))?;
    let built = build_archive(&spec, std::io::BufWriter::new(file))?;
    println!("{} {}", output.display(), built.manifest);
    Ok(())
}
