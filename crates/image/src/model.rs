//! What an image to build is made of: its layout, its files and program, and what was built.

/// How the image carries its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One filesystem layer; the entrypoint is a file in it. Any platform: `wasi/wasm` for wasm
    /// (as `docker buildx --platform wasi/wasm` makes), `linux/…` for native test images.
    Rootfs,
    /// CNCF TAG-Runtime wasm artifact: config `application/vnd.wasm.config.v0+json` and exactly
    /// one `application/wasm` layer, nothing else.
    Cncf,
    /// runwasi's layout: an image config with architecture `wasm`, the program as a
    /// `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` layer, and the other files
    /// (if any) in a filesystem layer before it.
    Runwasi,
}

/// A file to put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path inside the image.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A symbolic link to put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSymlink {
    /// Absolute path of the link inside the image.
    pub path: String,
    /// Where it points.
    pub target: String,
}

/// The wasm program of a [`Layout::Cncf`] or [`Layout::Runwasi`] image (a rootfs image holds
/// its program as one of its files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgram {
    /// File name, recorded as the layer's `org.opencontainers.image.title`.
    pub name: String,
    /// The module or component.
    pub wasm: Vec<u8>,
}

/// Everything an image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Full image name, for example `docker.io/library/hello:latest`.
    pub name: String,
    /// `os/architecture`, for example `wasi/wasm` or `linux/amd64`. The OCI wasm layouts are
    /// always `wasm`; their os is `wasip1` for a module and `wasip2` for a component unless given.
    pub platform: String,
    /// More platforms the index lists for the same manifest, for example `linux/amd64`: CRI pulls
    /// for the node's platform, and an index that lists only `wasi/wasm` fails there with
    /// "no match for platform in manifest".
    pub extra_platforms: Vec<String>,
    /// The layout.
    pub layout: Layout,
    /// The program of the OCI wasm layouts.
    pub program: Option<LayerProgram>,
    /// Image config `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// Image config `Cmd` (default arguments).
    pub cmd: Vec<String>,
    /// Image config `Env`, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Image config `WorkingDir`.
    pub workdir: String,
    /// Image config `User` (`uid[:gid]` or a name); empty: not set (root).
    pub user: String,
    /// Files of the rootfs.
    pub files: Vec<ImageFile>,
    /// Symlinks of the rootfs.
    pub symlinks: Vec<ImageSymlink>,
}

/// The digests of a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Digest of the manifest (`sha256:…`).
    pub manifest: String,
    /// Digest of the config.
    pub config: String,
    /// Digests of the layers.
    pub layers: Vec<String>,
}
