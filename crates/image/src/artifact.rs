//! Finding a container's wasm program among its image's layers in containerd's content store.
//!
//! The walk is: container → image name → image target (index or manifest) → manifest →
//! config and layers. Every blob read is checked against the digest and size of the descriptor
//! that named it. The layouts recognised:
//!
//! - **CNCF TAG-Runtime wasm artifact**: config `application/vnd.wasm.config.v0+json`, exactly
//!   one `application/wasm` layer (more than one is an error, as the spec says).
//! - **runwasi's layout**: an OCI image config whose architecture is `wasm`, with one layer
//!   `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` or `application/wasm`.
//! - Anything else is a **rootfs image**: its program is the entrypoint in the unpacked rootfs.
//!
//! **Wasm layers win.** When an image has a wasm layer and its rootfs also holds a `.wasm`
//! entrypoint, the layer runs, with the rootfs as its filesystem: the media type is the image's
//! explicit statement of what its program is, and runwasi behaves the same, so images made for it
//! run unchanged.
//!
//! **No native code from an image.** A layer that claims to be precompiled (a `cwasm` or
//! `precompiled` media type, annotation or file name) is never used, and the layer that is used
//! must start with the wasm magic: its bytes go through the host compile cache like any other
//! module. Loading such a layer as native code was runwasi's CVE-2026-47218.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::FileExt;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::oci::{self, Descriptor, Digester, ImageConfig, Index, Manifest};

/// Largest manifest, index or config read (containerd's own limit for manifests).
pub const MAX_JSON_BLOB: i64 = 4 << 20;
/// Largest wasm layer read.
pub const MAX_WASM_LAYER: i64 = 1 << 30;

/// Reading containerd's records and content; [`crate::containerd::Containerd`] is the real one,
/// tests use an in-memory double.
pub trait ContentSource {
    /// The image name of a container, or `None` when the container has no image (or no record).
    fn container_image(&self, container_id: &str) -> Result<Option<String>, String>;
    /// The descriptor an image name points at, or `None` when there is no such image.
    fn image_target(&self, image: &str) -> Result<Option<Descriptor>, String>;
    /// Writes the blob `digest` into `into`, asking the store for no more than `size` bytes
    /// (containerd's Read stops there); `Ok(false)` when the content store does not have it.
    /// The caller bounds what it accepts as well: `into` refuses bytes past `size`.
    fn read_blob(&self, digest: &str, size: u64, into: &mut dyn Write) -> Result<bool, String>;
}

/// Which OCI wasm layout a program came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmLayout {
    /// CNCF TAG-Runtime wasm artifact.
    Cncf,
    /// runwasi's layout.
    Runwasi,
}

/// A wasm program read from an image's layer.
#[derive(Debug)]
pub struct LayerProgram {
    /// The image it came from.
    pub image: String,
    /// The layout.
    pub layout: WasmLayout,
    /// The layer's descriptor.
    pub layer: Descriptor,
    /// The layer's bytes, a wasm module or component (checked by its magic), in an anonymous
    /// file sealed against every change and positioned at its start: the layer streams into it
    /// from containerd, so a large layer is held once, and the cell maps it as it maps a
    /// rootfs file.
    pub wasm: File,
    /// Layers passed over because they claim to be precompiled, with the reason.
    pub skipped: Vec<String>,
}

impl LayerProgram {
    /// A name for messages: the layer's title or digest and the image.
    pub fn describe(&self) -> String {
        format!(
            "wasm layer {} ({}) of image {}",
            self.layer
                .annotations
                .get(oci::TITLE_ANNOTATION)
                .map(String::as_str)
                .unwrap_or_else(|| oci::short(&self.layer.digest)),
            self.layer.media_type,
            self.image
        )
    }

    /// `argv[0]` for a container whose spec gives no args: the layer's title, else `app.wasm`.
    pub fn default_argv0(&self) -> String {
        self.layer
            .annotations
            .get(oci::TITLE_ANNOTATION)
            .filter(|t| !t.is_empty() && !t.contains('/'))
            .map(|t| format!("/{t}"))
            .unwrap_or_else(|| "/app.wasm".to_owned())
    }
}

/// What the image of a container says about its program.
#[derive(Debug)]
pub enum Lookup {
    /// The container has no image (for example `ctr run --rootfs`): the rootfs is all there is.
    NoImage,
    /// The container's image is no longer in containerd; its layers cannot be read.
    ImageGone(String),
    /// An image without wasm layers: the program is the rootfs entrypoint.
    Rootfs(String),
    /// The program is a wasm layer.
    Layer(Box<LayerProgram>),
}

/// A problem with an image, stated so that its publisher can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{}{problem}", if image.is_empty() { String::new() } else { format!("image {image}: ") })]
pub struct ImageError {
    /// The image name; empty when the failure came before the image was known.
    pub image: String,
    /// What is wrong.
    pub problem: String,
}

/// Looks up the wasm program of `container_id` in its image.
pub fn find_program(source: &dyn ContentSource, container_id: &str) -> Result<Lookup, ImageError> {
    let failed = |problem: String| ImageError {
        image: String::new(),
        problem,
    };
    let Some(image) = source
        .container_image(container_id)
        .map_err(|e| {
            failed(format!(
                "read container {container_id} from containerd: {e}"
            ))
        })?
        .filter(|i| !i.is_empty())
    else {
        return Ok(Lookup::NoImage);
    };
    let walk = Walk {
        source,
        image: &image,
    };
    let Some(target) = source
        .image_target(&image)
        .map_err(|e| walk.error(format!("read the image record from containerd: {e}")))?
    else {
        return Ok(Lookup::ImageGone(image));
    };
    walk.program(target)
}

struct Walk<'a> {
    source: &'a dyn ContentSource,
    image: &'a str,
}

impl Walk<'_> {
    fn error(&self, problem: String) -> ImageError {
        ImageError {
            image: self.image.to_owned(),
            problem,
        }
    }

    fn program(&self, target: Descriptor) -> Result<Lookup, ImageError> {
        let manifest_desc = self.manifest_of(target)?;
        let manifest: Manifest = self.read_json(&manifest_desc, "manifest")?;
        let layers = &manifest.layers;
        let wasm_config = manifest.config.media_type == oci::WASM_CONFIG_MEDIA_TYPE;
        let image_config = manifest.config.media_type == oci::CONFIG_MEDIA_TYPE
            || manifest.config.media_type == oci::DOCKER_CONFIG_MEDIA_TYPE;

        let mut skipped = Vec::new();
        let mut candidates = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            match oci::precompiled_claim(layer) {
                Some(why) => skipped.push(format!(
                    "layer {i} ({}) claims to be precompiled native code ({why}): never loaded",
                    oci::short(&layer.digest)
                )),
                None if oci::is_wasm_layer(&layer.media_type) => candidates.push(layer),
                None => {}
            }
        }
        let listing = || {
            layers
                .iter()
                .map(|l| format!("{} {}", oci::short(&l.digest), l.media_type))
                .collect::<Vec<_>>()
                .join(", ")
        };

        let layout = if wasm_config {
            // Read (and so check) the config even though nothing in it steers the run.
            let _: serde_json::Map<String, serde_json::Value> =
                self.read_json(&manifest.config, "wasm config")?;
            let wasm: Vec<_> = candidates
                .iter()
                .filter(|l| l.media_type == oci::WASM_LAYER_MEDIA_TYPE)
                .copied()
                .collect();
            match wasm.len() {
                0 if !skipped.is_empty() => return Err(self.precompiled_only(&skipped)),
                0 => {
                    return Err(self.error(format!(
                        "a CNCF wasm artifact (config {}) must have one {} layer; this one has \
                         none (layers: {})",
                        oci::WASM_CONFIG_MEDIA_TYPE,
                        oci::WASM_LAYER_MEDIA_TYPE,
                        listing()
                    )))
                }
                1 => {}
                n => {
                    return Err(self.error(format!(
                        "a CNCF wasm artifact must have exactly one {} layer; this one has {n} \
                         ({})",
                        oci::WASM_LAYER_MEDIA_TYPE,
                        wasm.iter()
                            .map(|l| oci::short(&l.digest))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
            candidates = wasm;
            WasmLayout::Cncf
        } else if candidates.is_empty() {
            if !skipped.is_empty() {
                return Err(self.precompiled_only(&skipped));
            }
            if !image_config {
                let unknown: Vec<_> = layers
                    .iter()
                    .filter(|l| !oci::is_tar_layer(&l.media_type))
                    .collect();
                if !unknown.is_empty() {
                    return Err(self.error(format!(
                        "config media type {} is neither {} (CNCF wasm artifact) nor an image \
                         config, and its layers are not filesystem layers either (layers: {})",
                        manifest.config.media_type,
                        oci::WASM_CONFIG_MEDIA_TYPE,
                        listing()
                    )));
                }
            }
            return Ok(Lookup::Rootfs(self.image.to_owned()));
        } else {
            if !image_config {
                return Err(self.error(format!(
                    "it has wasm layers but its config media type is {}; the runwasi layout \
                     needs an image config ({}) and a CNCF artifact needs {}",
                    manifest.config.media_type,
                    oci::CONFIG_MEDIA_TYPE,
                    oci::WASM_CONFIG_MEDIA_TYPE
                )));
            }
            let config: ImageConfig = self.read_json(&manifest.config, "image config")?;
            if config.architecture != "wasm" {
                return Err(self.error(format!(
                    "it has wasm layers but its config says architecture {:?}; an image with \
                     wasm layers (runwasi's layout) must say \"wasm\"",
                    config.architecture
                )));
            }
            if candidates.len() > 1 {
                return Err(self.error(format!(
                    "it has {} wasm layers ({}); wasmcell runs one program per container: \
                     compose them into one component",
                    candidates.len(),
                    candidates
                        .iter()
                        .map(|l| oci::short(&l.digest))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            WasmLayout::Runwasi
        };

        let layer = candidates[0].clone();
        let what = format!("wasm layer {} ({})", layer.digest, layer.media_type);
        if layer.size == 0 {
            return Err(self.error(format!("{what} is empty")));
        }
        let wasm = self.read_wasm(&layer, &what)?;
        let mut head = [0u8; 8];
        let got = wasm
            .read_at(&mut head, 0)
            .map_err(|e| self.error(format!("read back {what}: {e}")))?;
        let head = &head[..got];
        if !head.starts_with(b"\0asm") {
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            let kind = if head.starts_with(b"\x7fELF") {
                "an ELF file: native code, as a precompiled module is; wasmcell never loads \
                 native code from an image, publish the .wasm instead"
            } else {
                "not WebAssembly (no \\0asm magic)"
            };
            return Err(self.error(format!("{what} starts with {}: {kind}", hex.join(" "))));
        }
        Ok(Lookup::Layer(Box::new(LayerProgram {
            image: self.image.to_owned(),
            layout,
            layer,
            wasm,
            skipped,
        })))
    }

    fn precompiled_only(&self, skipped: &[String]) -> ImageError {
        self.error(format!(
            "its only wasm layers claim to be precompiled native code, which wasmcell never \
             loads from an image (publish the .wasm; wasmcell compiles it once per node): {}",
            skipped.join("; ")
        ))
    }

    /// Follows an index (at most a few levels deep) to the manifest for this node.
    fn manifest_of(&self, mut desc: Descriptor) -> Result<Descriptor, ImageError> {
        for _ in 0..4 {
            if oci::is_manifest(&desc.media_type) {
                return Ok(desc);
            }
            if !oci::is_index(&desc.media_type) {
                return Err(self.error(format!(
                    "{} has media type {:?}, which is neither an image index nor an image \
                     manifest",
                    desc.digest, desc.media_type
                )));
            }
            let index: Index = self.read_json(&desc, "index")?;
            desc = self.pick(&index, &desc.digest)?;
        }
        Err(self.error("indexes nest more than 4 deep".into()))
    }

    /// The index entry for a wasm image on this node: a `wasm` architecture first, then this
    /// host's Linux platform, then the only entry.
    fn pick(&self, index: &Index, digest: &str) -> Result<Descriptor, ImageError> {
        let host = host_architecture();
        let found = index
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture == "wasm")
            })
            .or_else(|| {
                index.manifests.iter().find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == host)
                })
            })
            .or_else(|| (index.manifests.len() == 1).then(|| &index.manifests[0]));
        found.cloned().ok_or_else(|| {
            let listed: Vec<String> = index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "(no platform)".into())
                })
                .collect();
            self.error(format!(
                "index {} lists no manifest for wasm or linux/{host} (it lists: {})",
                oci::short(digest),
                listed.join(", ")
            ))
        })
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<T, ImageError> {
        let what = format!("{what} {}", desc.digest);
        let bytes = self.read(desc, &what, MAX_JSON_BLOB)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("{what} ({}) is malformed: {e}", desc.media_type)))
    }

    /// Reads a blob into memory and checks it against its descriptor's size and digest.
    fn read(&self, desc: &Descriptor, what: &str, limit: i64) -> Result<Vec<u8>, ImageError> {
        let mut bytes = Vec::new();
        self.read_into(desc, what, limit, &mut bytes)?;
        Ok(bytes)
    }

    /// Streams a wasm layer into a sealed anonymous file and checks it against its
    /// descriptor's size and digest.
    fn read_wasm(&self, desc: &Descriptor, what: &str) -> Result<File, ImageError> {
        let io = |doing: &str, e: std::io::Error| self.error(format!("{doing} for {what}: {e}"));
        let name = format!("wasmcell-layer-{}", desc.digest.replace(':', "-"));
        let fd = memfd_create(
            name.as_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| io("create an anonymous file", e.into()))?;
        let mut file = File::from(fd);
        self.read_into(desc, what, MAX_WASM_LAYER, &mut file)?;
        file.rewind().map_err(|e| io("rewind", e))?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|e| io("seal the anonymous file", e.into()))?;
        Ok(file)
    }

    /// Streams a blob into `sink`, taking at most the size its descriptor gives (itself at
    /// most `limit`), and checks the size and digest of what came.
    fn read_into(
        &self,
        desc: &Descriptor,
        what: &str,
        limit: i64,
        sink: &mut dyn Write,
    ) -> Result<(), ImageError> {
        if desc.size < 0 || desc.size > limit {
            return Err(self.error(format!(
                "{what} has size {} in its descriptor; wasmcell reads at most {limit} bytes",
                desc.size
            )));
        }
        let Some(digester) = Digester::like(&desc.digest) else {
            return Err(self.error(format!(
                "{what}: digest {:?} is not sha256:… or sha512:…",
                desc.digest
            )));
        };
        let size = desc.size as u64;
        let mut checked = Checked {
            sink,
            digester,
            written: 0,
            size,
            overflow: false,
        };
        let found = self.source.read_blob(&desc.digest, size, &mut checked);
        if checked.overflow {
            return Err(self.error(format!(
                "{what} is longer than the {size} bytes its descriptor says (replaced content); \
                 wasmcell stopped reading there"
            )));
        }
        let found = found
            .map_err(|e| self.error(format!("read {what} from containerd's content store: {e}")))?;
        if !found {
            return Err(self.error(format!(
                "{what} is not in containerd's content store (was the image pulled or imported \
                 completely?)"
            )));
        }
        if checked.written != size {
            return Err(self.error(format!(
                "{what} is {} bytes, but its descriptor says {size} (truncated or replaced \
                 content)",
                checked.written
            )));
        }
        let actual = checked.digester.finish();
        if actual != desc.digest {
            return Err(self.error(format!(
                "{what} does not match its digest: the content store holds {actual} (corrupt \
                 or tampered content)"
            )));
        }
        Ok(())
    }
}

/// A writer that passes bytes on while hashing them, and refuses any byte past `size`.
struct Checked<'a> {
    sink: &'a mut dyn Write,
    digester: Digester,
    written: u64,
    size: u64,
    overflow: bool,
}

impl Write for Checked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.size {
            self.overflow = true;
            return Err(std::io::Error::other(format!(
                "more than the {} bytes asked for",
                self.size
            )));
        }
        self.sink.write_all(buf)?;
        self.digester.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

/// This host's architecture in OCI's (Go's) names.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde_json::json;

    use super::*;
    use crate::oci::{
        sha256, COMPONENT_LAYER_MEDIA_TYPE, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE,
        MANIFEST_MEDIA_TYPE, TAR_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
    };

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    /// containerd's records and content store, in memory.
    #[derive(Default)]
    struct Store {
        image: Option<Descriptor>,
        blobs: HashMap<String, Vec<u8>>,
        /// Bytes the reader has taken, over all reads.
        written: std::cell::Cell<usize>,
    }

    impl ContentSource for Store {
        fn container_image(&self, id: &str) -> Result<Option<String>, String> {
            Ok((id == "c").then(|| "test/img:1".to_owned()))
        }
        fn image_target(&self, _: &str) -> Result<Option<Descriptor>, String> {
            Ok(self.image.clone())
        }
        /// Writes the whole blob in 64 KiB pieces whatever `size` says, as a content store
        /// that ignored it would, so that the reader's own bound is what the tests see.
        fn read_blob(&self, digest: &str, _: u64, into: &mut dyn Write) -> Result<bool, String> {
            let Some(blob) = self.blobs.get(digest) else {
                return Ok(false);
            };
            for piece in blob.chunks(64 << 10) {
                into.write_all(piece).map_err(|e| e.to_string())?;
                self.written.set(self.written.get() + piece.len());
            }
            Ok(true)
        }
    }

    impl Store {
        fn put(&mut self, media_type: &str, bytes: &[u8]) -> Descriptor {
            let digest = sha256(bytes);
            self.blobs.insert(digest.clone(), bytes.to_vec());
            Descriptor {
                media_type: media_type.into(),
                digest,
                size: bytes.len() as i64,
                annotations: BTreeMap::new(),
                platform: None,
            }
        }

        fn json(&mut self, media_type: &str, v: serde_json::Value) -> Descriptor {
            self.put(media_type, &serde_json::to_vec(&v).expect("json"))
        }

        /// An image whose manifest has this config and these layers.
        fn image(config: (&str, serde_json::Value), layers: &[(&str, &[u8])]) -> Store {
            let mut s = Store::default();
            let config = s.json(config.0, config.1);
            let layers: Vec<Descriptor> = layers.iter().map(|(m, b)| s.put(m, b)).collect();
            let manifest = s.json(
                MANIFEST_MEDIA_TYPE,
                json!({"schemaVersion": 2, "config": config, "layers": layers}),
            );
            s.image = Some(manifest);
            s
        }

        fn manifest(&self) -> serde_json::Value {
            let d = self.image.as_ref().expect("image");
            serde_json::from_slice(&self.blobs[&d.digest]).expect("manifest")
        }

        /// Replaces the manifest with an edited copy.
        fn edit_manifest(&mut self, edit: impl FnOnce(&mut serde_json::Value)) {
            let mut m = self.manifest();
            edit(&mut m);
            self.image = Some(self.json(MANIFEST_MEDIA_TYPE, m));
        }

        fn lookup(&self) -> Result<Lookup, ImageError> {
            find_program(self, "c")
        }

        fn error(&self) -> String {
            match self.lookup() {
                Err(e) => e.to_string(),
                Ok(other) => panic!("expected an error, got {other:?}"),
            }
        }
    }

    fn cncf() -> (&'static str, serde_json::Value) {
        (
            WASM_CONFIG_MEDIA_TYPE,
            json!({"architecture": "wasm", "os": "wasip1", "layerDigests": []}),
        )
    }

    fn wasm_image_config() -> (&'static str, serde_json::Value) {
        (
            CONFIG_MEDIA_TYPE,
            json!({"architecture": "wasm", "os": "wasip1", "rootfs": {"type": "layers", "diff_ids": []}}),
        )
    }

    /// What a program's sealed file holds.
    fn bytes(p: &LayerProgram) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut &p.wasm, &mut out).expect("read the program's file");
        out
    }

    fn layer_of(l: Lookup) -> LayerProgram {
        match l {
            Lookup::Layer(p) => *p,
            other => panic!("expected a layer, got {other:?}"),
        }
    }

    #[test]
    fn cncf_artifact_gives_its_one_layer() {
        let p = layer_of(
            Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)])
                .lookup()
                .expect("ok"),
        );
        assert_eq!(p.layout, WasmLayout::Cncf);
        assert_eq!(bytes(&p), WASM);
        assert_eq!(p.default_argv0(), "/app.wasm");
    }

    #[test]
    fn runwasi_layout_gives_its_wasm_layer_and_keeps_tar_layers_for_the_rootfs() {
        let p = layer_of(
            Store::image(
                wasm_image_config(),
                &[
                    (TAR_LAYER_MEDIA_TYPE, b"tar"),
                    (COMPONENT_LAYER_MEDIA_TYPE, WASM),
                ],
            )
            .lookup()
            .expect("ok"),
        );
        assert_eq!(p.layout, WasmLayout::Runwasi);
        assert_eq!(p.layer.media_type, COMPONENT_LAYER_MEDIA_TYPE);
    }

    #[test]
    fn rootfs_images_and_containers_without_images_use_the_rootfs() {
        let rootfs = Store::image(wasm_image_config(), &[(TAR_LAYER_MEDIA_TYPE, b"tar")]);
        assert!(matches!(rootfs.lookup(), Ok(Lookup::Rootfs(_))));
        assert!(matches!(
            find_program(&rootfs, "other"),
            Ok(Lookup::NoImage)
        ));
        let gone = Store::default();
        assert!(matches!(gone.lookup(), Ok(Lookup::ImageGone(_))));
    }

    #[test]
    fn index_picks_the_wasm_platform_then_the_host() {
        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        let mut wasm = s.image.clone().expect("manifest");
        wasm.platform = Some(oci::Platform {
            architecture: "wasm".into(),
            os: "wasip1".into(),
        });
        let mut other = s.json(MANIFEST_MEDIA_TYPE, json!({"broken": true}));
        other.platform = Some(oci::Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
        });
        s.image = Some(s.json(
            INDEX_MEDIA_TYPE,
            json!({"schemaVersion": 2, "manifests": [other, wasm]}),
        ));
        assert_eq!(bytes(&layer_of(s.lookup().expect("ok"))), WASM);

        let mut none = Store::default();
        none.image = Some(none.json(
            INDEX_MEDIA_TYPE,
            json!({"schemaVersion": 2, "manifests": [other.clone(), other]}),
        ));
        let e = none.error();
        assert!(
            e.contains("lists no manifest for wasm") && e.contains("linux/s390x"),
            "{e}"
        );
    }

    #[test]
    fn two_wasm_layers_in_a_cncf_artifact_are_refused() {
        let s = Store::image(
            cncf(),
            &[
                (WASM_LAYER_MEDIA_TYPE, WASM),
                (WASM_LAYER_MEDIA_TYPE, b"\0asm\x01\0\0\0\0"),
            ],
        );
        let e = s.error();
        assert!(
            e.contains("exactly one application/wasm layer; this one has 2"),
            "{e}"
        );
    }

    #[test]
    fn wrong_media_types_are_named() {
        let e = Store::image(cncf(), &[("application/octet-stream", WASM)]).error();
        assert!(
            e.contains("must have one application/wasm layer")
                && e.contains("application/octet-stream"),
            "{e}"
        );

        let e = Store::image(
            ("application/vnd.example.config+json", json!({})),
            &[("application/vnd.example.blob", WASM)],
        )
        .error();
        assert!(e.contains("application/vnd.example.config+json"), "{e}");

        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        if let Some(d) = s.image.as_mut() {
            d.media_type = "application/vnd.oci.image.layer.v1.tar".into();
        }
        let e = s.error();
        assert!(
            e.contains("neither an image index nor an image manifest"),
            "{e}"
        );

        let mut config = wasm_image_config();
        config.1["architecture"] = json!("amd64");
        let e = Store::image(config, &[(COMPONENT_LAYER_MEDIA_TYPE, WASM)]).error();
        assert!(e.contains("architecture \"amd64\""), "{e}");
    }

    #[test]
    fn digest_and_size_mismatches_are_named() {
        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        let layer = s.manifest()["layers"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_owned();
        s.blobs.insert(layer.clone(), b"\0asm\x01\0\0\x01".to_vec());
        let e = s.error();
        assert!(
            e.contains("does not match its digest") && e.contains(&layer),
            "{e}"
        );

        s.blobs.insert(layer.clone(), WASM[..5].to_vec());
        let e = s.error();
        assert!(e.contains("is 5 bytes, but its descriptor says 8"), "{e}");

        s.blobs.remove(&layer);
        let e = s.error();
        assert!(e.contains("not in containerd's content store"), "{e}");
    }

    #[test]
    fn a_descriptor_that_understates_its_blob_bounds_the_read() {
        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        let layer = s.manifest()["layers"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_owned();
        // The descriptor says 8 bytes; the store holds 8 MiB under that digest.
        let mut huge = WASM.to_vec();
        huge.resize(8 << 20, 0);
        s.blobs.insert(layer.clone(), huge);
        let e = s.error();
        assert!(
            e.contains("is longer than the 8 bytes its descriptor says") && e.contains(&layer),
            "{e}"
        );
        assert!(
            s.written.get() < 64 << 10,
            "the reader took {} bytes",
            s.written.get()
        );
    }

    #[test]
    fn the_program_file_is_sealed_and_starts_at_its_beginning() {
        let s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        let mut p = layer_of(s.lookup().expect("ok"));
        let mut first = [0u8; 4];
        std::io::Read::read_exact(&mut p.wasm, &mut first).expect("read");
        assert_eq!(&first, b"\0asm");
        assert!(p.wasm.write_at(b"x", 0).is_err(), "the file can be written");
        assert!(p.wasm.set_len(1 << 20).is_err(), "the file can grow");
    }

    #[test]
    fn malformed_manifests_and_configs_are_named() {
        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        s.image = Some(s.put(MANIFEST_MEDIA_TYPE, b"{\"config\": 1"));
        let e = s.error();
        assert!(
            e.contains("manifest sha256:") && e.contains("is malformed"),
            "{e}"
        );

        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        s.edit_manifest(|m| m["layers"] = json!("none"));
        assert!(s.error().contains("is malformed"));

        let mut s = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, WASM)]);
        let config = s.put(WASM_CONFIG_MEDIA_TYPE, b"not json");
        s.edit_manifest(|m| m["config"] = json!(config));
        let e = s.error();
        assert!(
            e.contains("wasm config sha256:") && e.contains("is malformed"),
            "{e}"
        );
    }

    #[test]
    fn empty_and_non_wasm_layers_are_refused() {
        let e = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, b"")]).error();
        assert!(e.contains("is empty"), "{e}");
        let e = Store::image(
            cncf(),
            &[(WASM_LAYER_MEDIA_TYPE, b"\x7fELF\x02\x01\x01\0rest")],
        )
        .error();
        assert!(
            e.contains("native code") && e.contains("7f 45 4c 46"),
            "{e}"
        );
        let e = Store::image(cncf(), &[(WASM_LAYER_MEDIA_TYPE, b"hello world")]).error();
        assert!(e.contains("not WebAssembly"), "{e}");
    }

    #[test]
    fn precompiled_layers_are_passed_over_or_refused() {
        // Beside a genuine wasm layer: the wasm layer runs, the claim is reported.
        let mut s = Store::image(
            wasm_image_config(),
            &[
                (COMPONENT_LAYER_MEDIA_TYPE, b"\x7fELFnative"),
                (COMPONENT_LAYER_MEDIA_TYPE, WASM),
            ],
        );
        s.edit_manifest(|m| {
            m["layers"][0]["annotations"] = json!({"runwasi.io/precompiled": "true"});
        });
        let p = layer_of(s.lookup().expect("ok"));
        assert_eq!(bytes(&p), WASM);
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);

        // Alone: refused, and its bytes are never read.
        let mut s = Store::image(cncf(), &[("application/vnd.wasmtime.cwasm", b"\x7fELF")]);
        s.blobs.retain(|_, b| b != b"\x7fELF");
        let e = s.error();
        assert!(
            e.contains("claim to be precompiled") && e.contains("cwasm"),
            "{e}"
        );
    }
}
