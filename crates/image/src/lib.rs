//! The OCI side of wasmcell: finding a container's wasm in containerd's content store, and
//! building OCI images of wasm programs.
//!
//! - [`artifact`] walks a container's image (index → manifest → config → layers) and returns its
//!   wasm layer, for the CNCF wasm artifact and runwasi's layout, or says the image is a rootfs
//!   image. [`containerd::Containerd`] reads containerd's records and blobs over its gRPC API.
//! - [`build_archive`] writes an OCI image layout as a tarball for `ctr image import`,
//!   `nerdctl load` or `docker load`, in each [`Layout`]. The output is deterministic: the same
//!   inputs give the same bytes and digests (fixed timestamps, owners and order, uncompressed
//!   layers, canonical JSON).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod archive;
pub mod artifact;
pub mod containerd;
mod error;
pub mod grpc;
mod model;
pub mod oci;
mod tarball;

pub use archive::build_archive;
pub use error::{Error, Result};
pub use model::{Built, ImageFile, ImageSpec, ImageSymlink, LayerProgram, Layout};
pub use oci::{CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, TAR_LAYER_MEDIA_TYPE};
pub use tarball::deterministic_tar;
