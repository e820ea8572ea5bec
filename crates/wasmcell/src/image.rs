//! `wasmcell image build`: OCI image tarballs of wasm programs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use wasmcell_image::{build_archive, ImageFile, ImageSpec, ImageSymlink, LayerProgram, Layout};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an OCI image tarball (OCI image layout) from a .wasm file.
    ///
    /// Layouts (--layout):
    ///
    ///   rootfs   One filesystem layer holding the program as /<file name> and every --file.
    ///            Platform wasi/wasm by default (what `docker buildx --platform wasi/wasm`
    ///            makes); the entrypoint is the program's path. Every containerd can unpack it.
    ///            Native images (tests, sidecars) are built the same way with --platform
    ///            linux/amd64, the program given with --file and --entrypoint.
    ///
    ///   cncf     The CNCF TAG-Runtime wasm artifact: config application/vnd.wasm.config.v0+json
    ///            and exactly one application/wasm layer. No --file, --symlink or --user (the
    ///            artifact holds only the wasm); entrypoint, args, env and workdir are recorded
    ///            in the config where containerd's clients read container defaults.
    ///
    ///   runwasi  runwasi's layout: an image config with architecture wasm, the --file/--symlink
    ///            entries (if any) in one filesystem layer, then the program as an
    ///            application/vnd.bytecodealliance.wasm.component.layer.v0+wasm layer.
    ///
    /// cncf and runwasi carry a non-tar layer: containerd before 1.6.25 / 1.7.7 cannot unpack
    /// them on pull ("failed to extract layer ... archive/tar: invalid tar header" or
    /// "mismatched image rootfs and manifest layers"). Use rootfs for those nodes.
    ///
    /// Their platform is wasm (os wasip1 for a module, wasip2 for a component). CRI pulls for
    /// the node's platform and fails with "no match for platform in manifest" on an index that
    /// lists only wasm: add --extra-platform linux/amd64 (and linux/arm64, ...) to list the same
    /// manifest under those platforms too.
    ///
    /// Import with `ctr image import --all-platforms IMAGE.tar` (or `nerdctl load`, `docker
    /// load`) and run with `ctr run --rm --runtime io.containerd.wasmcell.v1 NAME ID`.
    ///
    /// The output is deterministic: the same inputs give byte-identical tarballs.
    Build {
        /// Image name, for example docker.io/library/hello:latest.
        #[arg(long)]
        name: String,
        /// The wasm program: the file /<file name> of a rootfs image (and its entrypoint), the
        /// wasm layer of the cncf and runwasi layouts.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Image layout: rootfs, cncf or runwasi (see above).
        #[arg(long, default_value = "rootfs", value_parser = ["rootfs", "cncf", "runwasi"])]
        layout: String,
        /// Image platform, os/architecture.
        #[arg(long, default_value = "wasi/wasm")]
        platform: String,
        /// Another platform the index lists for the same manifest (for example linux/amd64,
        /// so that CRI finds it); repeat for more.
        #[arg(long = "extra-platform")]
        extra_platforms: Vec<String>,
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

/// `wasmcell image build`.
pub fn build(cmd: ImageCommand) -> Result<()> {
    let ImageCommand::Build {
        name,
        wasm,
        layout,
        platform,
        extra_platforms,
        entrypoint,
        args,
        env,
        workdir,
        user,
        files,
        symlinks,
        output,
    } = cmd;
    let layout = match layout.as_str() {
        "rootfs" => Layout::Rootfs,
        "cncf" => Layout::Cncf,
        "runwasi" => Layout::Runwasi,
        other => bail!("unknown layout {other:?}"),
    };
    let mut image_files = Vec::new();
    let mut default_entry = None;
    let mut program = None;
    if let Some(wasm) = &wasm {
        let base = wasm
            .file_name()
            .and_then(|n| n.to_str())
            .context("--wasm needs a file name")?;
        let path = format!("/{base}");
        let file = read_file(&wasm.to_string_lossy(), &path)?;
        if layout == Layout::Rootfs {
            image_files.push(file);
        } else {
            program = Some(LayerProgram {
                name: base.to_owned(),
                wasm: file.contents,
            });
        }
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
        extra_platforms,
        layout,
        program,
        entrypoint: vec![entry],
        cmd: args,
        env,
        workdir,
        user,
        files: image_files,
        symlinks,
    };
    if layout != Layout::Rootfs {
        eprintln!(
            "note: this layout has a non-tar layer, which containerd before 1.6.25 / 1.7.7 cannot \
             unpack (\"mismatched image rootfs and manifest layers\"); use --layout rootfs for \
             such nodes"
        );
    }
    if spec.extra_platforms.is_empty() && !spec.platform.starts_with("linux/") {
        eprintln!(
            "note: the index lists only {}; CRI pulls for the node's linux platform and fails \
             with \"no match for platform in manifest\": add --extra-platform linux/amd64 (or \
             the nodes' platforms) for Kubernetes",
            spec.platform
        );
    }
    let file =
        std::fs::File::create(&output).with_context(|| format!("create {}", output.display()))?;
    let built = build_archive(&spec, std::io::BufWriter::new(file))?;
    println!("{} {}", output.display(), built.manifest);
    Ok(())
}
