//! The few OCI image-spec types wasmcell reads and writes, and the media types it knows.
//!
//! Parsing is deliberately small and strict: a field the walk relies on that is missing or of the
//! wrong type is an error that names the blob, never a silent default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list (the index of Docker schema 2).
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed filesystem layer.
pub const TAR_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Config of a CNCF TAG-Runtime wasm artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The wasm layer of a CNCF wasm artifact (also accepted in runwasi's layout).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// runwasi's wasm layer.
pub const COMPONENT_LAYER_MEDIA_TYPE: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Annotation holding a layer's file name.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `algorithm:hex` digest of the content.
    pub digest: String,
    /// Size of the content in bytes.
    pub size: i64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, for example `amd64` or `wasm`.
    pub architecture: String,
    /// Operating system, for example `linux` or `wasi`.
    pub os: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    /// The manifests it lists.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, in order.
    pub layers: Vec<Descriptor>,
}

/// The fields of an image config that wasmcell reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture; `wasm` for wasm images.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
}

/// Whether a media type is an index.
pub fn is_index(media_type: &str) -> bool {
    media_type == INDEX_MEDIA_TYPE || media_type == DOCKER_LIST_MEDIA_TYPE
}

/// Whether a media type is an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MANIFEST_MEDIA_TYPE || media_type == DOCKER_MANIFEST_MEDIA_TYPE
}

/// Whether a media type is a wasm layer of the CNCF or the runwasi layout.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type == WASM_LAYER_MEDIA_TYPE || media_type == COMPONENT_LAYER_MEDIA_TYPE
}

/// Whether a media type is a filesystem (tar) layer, compressed or not.
pub fn is_tar_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Why a layer claims to hold precompiled native code, if it does: its media type, an
/// annotation or its file name says so. Such a layer is never loaded (runwasi's CVE-2026-47218
/// was loading exactly that as native code).
pub fn precompiled_claim(layer: &Descriptor) -> Option<String> {
    let says = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("precompiled") || s.contains("cwasm")
    };
    if says(&layer.media_type) {
        return Some(format!("its media type is {}", layer.media_type));
    }
    layer
        .annotations
        .iter()
        .find(|(k, v)| says(k) || says(v))
        .map(|(k, v)| format!("its annotation {k}={v:?}"))
}

/// The `algorithm:hex` digest of `bytes` with the algorithm of `like` (sha256 or sha512), or
/// `None` for an algorithm wasmcell does not know.
pub fn digest_like(like: &str, bytes: &[u8]) -> Option<String> {
    let mut digester = Digester::like(like)?;
    digester.update(bytes);
    Some(digester.finish())
}

/// A digest computed as the bytes go by, so that a blob streamed from containerd is checked
/// without being held whole.
pub enum Digester {
    /// sha256
    Sha256(Sha256),
    /// sha512
    Sha512(Sha512),
}

impl Digester {
    /// A digester with the algorithm of `like` (`sha256:…` or `sha512:…`), or `None` for an
    /// algorithm wasmcell does not know.
    pub fn like(like: &str) -> Option<Digester> {
        match like.split_once(':').map(|(a, _)| a) {
            Some("sha256") => Some(Digester::Sha256(Sha256::new())),
            Some("sha512") => Some(Digester::Sha512(Sha512::new())),
            _ => None,
        }
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(bytes),
            Digester::Sha512(h) => h.update(bytes),
        }
    }

    /// The `algorithm:hex` digest of everything added.
    pub fn finish(self) -> String {
        match self {
            Digester::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Digester::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The sha256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A short form of a digest for messages: the algorithm and 12 hex digits.
pub fn short(digest: &str) -> &str {
    let end = digest.find(':').map(|i| i + 13).unwrap_or(digest.len());
    &digest[..end.min(digest.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media_type: &str, annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256(b""),
            size: 0,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: None,
        }
    }

    #[test]
    fn precompiled_claims_are_found_wherever_they_are() {
        assert!(precompiled_claim(&layer(WASM_LAYER_MEDIA_TYPE, &[])).is_none());
        assert!(precompiled_claim(&layer("application/vnd.wasmtime.cwasm", &[])).is_some());
        assert!(precompiled_claim(&layer(
            COMPONENT_LAYER_MEDIA_TYPE,
            &[("runwasi.io/precompiled", "true")]
        ))
        .is_some());
        assert!(precompiled_claim(&layer(
            WASM_LAYER_MEDIA_TYPE,
            &[(TITLE_ANNOTATION, "app.cwasm")]
        ))
        .is_some());
        assert!(precompiled_claim(&layer(
            WASM_LAYER_MEDIA_TYPE,
            &[(TITLE_ANNOTATION, "app.wasm")]
        ))
        .is_none());
    }

    #[test]
    fn digests_follow_the_algorithm() {
        assert!(digest_like("sha512:00", b"x")
            .expect("sha512")
            .starts_with("sha512:"));
        assert_eq!(digest_like("md5:00", b"x"), None);
        assert_eq!(short(&sha256(b"")), "sha256:e3b0c44298fc");
    }
}
