//! The OCI side of wasmcell: building OCI images of wasm programs.
//!
//! [`build_archive`] writes an OCI image layout as a tarball for `ctr image import`,
//! `nerdctl load` or `docker load`. The output is deterministic: the same inputs give the same
//! bytes and digests (fixed timestamps, owners and order, uncompressed layers).
//!
//! Layouts implemented: [`Layout::Rootfs`], a filesystem image whose entrypoint is the `.wasm`
//! (platform `wasi/wasm`, as `docker buildx --platform wasi/wasm` makes) or a native program
//! (any other platform, for busybox/pause images in tests). The OCI wasm artifact layouts are
//! the subject of a later change.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod tarball;

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;
use sha2::{Digest, Sha256};

pub use tarball::deterministic_tar;

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed layer.
pub const TAR_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Errors while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// Writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being written.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the image carries its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One filesystem layer; the entrypoint is a file in it.
    Rootfs,
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

/// Everything an image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Full image name, for example `docker.io/library/hello:latest`.
    pub name: String,
    /// `os/architecture`, for example `wasi/wasm` or `linux/amd64`.
    pub platform: String,
    /// The layout.
    pub layout: Layout,
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

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    // serde_json keeps object keys sorted (BTreeMap), so this is canonical.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Builds the image and writes it as an OCI image layout tarball to `out`.
pub fn build_archive(spec: &ImageSpec, out: impl Write) -> Result<Built> {
    let (os, arch) = spec.platform.split_once('/').ok_or_else(|| {
        Error::Invalid(format!(
            "platform {:?} is not os/architecture (for example wasi/wasm)",
            spec.platform
        ))
    })?;
    if spec.name.is_empty() {
        return Err(Error::Invalid("the image needs a name".into()));
    }
    let Layout::Rootfs = spec.layout;
    let layer = tarball::rootfs_layer(&spec.files, &spec.symlinks)?;
    let layer_digest = digest(&layer);

    let mut config = json!({
        "architecture": arch,
        "os": os,
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": spec.env,
            "WorkingDir": if spec.workdir.is_empty() { "/" } else { spec.workdir.as_str() },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    if !spec.user.is_empty() {
        config["config"]["User"] = json!(spec.user);
    }
    let config = to_json(&config);
    let config_digest = digest(&config);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": TAR_LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len()}],
    });
    let manifest = to_json(&manifest);
    let manifest_digest = digest(&manifest);
    let tag = spec
        .name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| "latest".to_owned());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": os},
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });

    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    entries.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    entries.insert("index.json".into(), to_json(&index));
    for (d, bytes) in [
        (&layer_digest, layer),
        (&config_digest, config),
        (&manifest_digest, manifest),
    ] {
        entries.insert(format!("blobs/sha256/{}", &d["sha256:".len()..]), bytes);
    }
    let archive = deterministic_tar(&entries)?;
    let mut out = out;
    out.write_all(&archive).map_err(|e| Error::Io {
        context: "write the image archive".into(),
        source: e,
    })?;
    Ok(Built {
        manifest: manifest_digest,
        config: config_digest,
        layers: vec![layer_digest],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ImageSpec {
        ImageSpec {
            name: "wasmcell.test/hello:v1".into(),
            platform: "wasi/wasm".into(),
            layout: Layout::Rootfs,
            entrypoint: vec!["/hello.wasm".into()],
            cmd: vec![],
            env: vec!["A=1".into()],
            workdir: String::new(),
            user: String::new(),
            files: vec![ImageFile {
                path: "/hello.wasm".into(),
                contents: b"\0asm\x01\0\0\0".to_vec(),
                mode: 0o755,
            }],
            symlinks: vec![],
        }
    }

    #[test]
    fn same_inputs_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let da = build_archive(&hello(), &mut a).expect("a");
        let db = build_archive(&hello(), &mut b).expect("b");
        assert_eq!(a, b);
        assert_eq!(da, db);
        let mut other = hello();
        other.env.push("B=2".into());
        let mut c = Vec::new();
        assert_ne!(build_archive(&other, &mut c).expect("c").config, da.config);
    }

    #[test]
    fn archive_holds_a_valid_layout() {
        let mut out = Vec::new();
        let built = build_archive(&hello(), &mut out).expect("build");
        let mut ar = tar::Archive::new(&out[..]);
        let mut names = BTreeMap::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            names.insert(e.path().expect("path").to_string_lossy().into_owned(), data);
        }
        let index: serde_json::Value = serde_json::from_slice(&names["index.json"]).expect("index");
        assert_eq!(index["manifests"][0]["digest"], built.manifest);
        assert_eq!(index["manifests"][0]["platform"]["os"], "wasi");
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        for d in [&built.manifest, &built.config, &built.layers[0]] {
            let blob = &names[&format!("blobs/sha256/{}", &d[7..])];
            assert_eq!(&digest(blob), d, "blob content matches its digest");
        }
    }

    #[test]
    fn bad_platform_is_named() {
        let mut spec = hello();
        spec.platform = "wasm".into();
        let err = build_archive(&spec, Vec::new()).expect_err("platform");
        assert!(err.to_string().contains("not os/architecture"), "{err}");
    }
}
