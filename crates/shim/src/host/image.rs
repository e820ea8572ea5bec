//! Finding what a container runs: the wasm layer of its image (CNCF artifact or runwasi layout,
//! read from containerd's content store), else the entrypoint in its rootfs.
//!
//! Wasm layers win over a rootfs entrypoint (see `wasmcell_image::artifact`). A layer's bytes are
//! handed to the cell as a sealed memfd, so they take exactly the path a rootfs file takes: the
//! cell hashes them and loads the host compile cache's entry or compiles into it. Nothing from
//! the image is ever deserialized as native code.

use std::os::unix::fs::FileExt;

use oci_spec::runtime::Spec;
use wasmcell_image::artifact::{self, Lookup};
use wasmcell_image::containerd::Containerd;
use wasmcell_oci::entrypoint::{self, Entrypoint};
use wasmcell_oci::Bundle;

use crate::error::{Error, Result};

/// The image lookup of a container, running in a thread of its own from the start of Create so
/// that its round trips to containerd overlap the rootfs mount.
pub struct PendingLookup {
    started: std::time::Instant,
    outcome: Result<std::thread::JoinHandle<Result<Lookup>>>,
}

/// Starts looking up the image of container `id` in containerd's content store, through its
/// gRPC socket `address` (none: the container's program is its rootfs entrypoint).
pub fn start_lookup(address: Option<String>, namespace: &str, id: &str) -> PendingLookup {
    let namespace = namespace.to_owned();
    let owned_id = id.to_owned();
    PendingLookup {
        started: std::time::Instant::now(),
        outcome: std::thread::Builder::new()
            .name("image-lookup".into())
            .spawn(move || lookup(address.as_deref(), &namespace, &owned_id))
            .map_err(|e| Error::io("start the image lookup", e)),
    }
}

fn lookup(address: Option<&str>, namespace: &str, id: &str) -> Result<Lookup> {
    let Some(address) = address else {
        return Ok(Lookup::NoImage);
    };
    match Containerd::connect(address, namespace) {
        Ok(client) => {
            artifact::find_program(&client, id).map_err(|e| Error::InvalidArgument(e.to_string()))
        }
        // containerd asked for this container, so it is there: a socket that does not answer is
        // a fault to report, not a reason to run the rootfs instead of the image's wasm layer.
        Err(e) => Err(Error::Internal(format!(
            "cannot reach containerd at {address} to read the image of container {id}: {e}"
        ))),
    }
}

/// Finds the program of container `id`, from its image (`lookup`) or its rootfs. A wasm layer
/// given no `process.args` gets the layer's name as `argv[0]` (written into the bundle's spec).
pub fn find(lookup: PendingLookup, id: &str, bundle: &mut Bundle) -> Result<Entrypoint> {
    let image = lookup
        .outcome?
        .join()
        .map_err(|_| Error::Internal("the image lookup panicked".into()))??;
    log::info!(
        "task {id}: image lookup done {:.2} ms after it started (beside the rootfs mount)",
        lookup.started.elapsed().as_secs_f64() * 1000.0
    );
    let gone = match image {
        Lookup::Layer(program) => return from_layer(id, &mut bundle.spec, *program),
        Lookup::ImageGone(name) => {
            log::warn!(
                "task {id}: its image {name} is no longer in containerd; using the rootfs \
                 entrypoint"
            );
            Some(name)
        }
        Lookup::Rootfs(_) | Lookup::NoImage => None,
    };
    let process = bundle.process()?;
    let args = process.args().as_deref().unwrap_or_default();
    let arg0 = args.first().ok_or(wasmcell_oci::Error::NoProcess)?;
    let cwd = process.cwd().to_string_lossy();
    entrypoint::resolve(&bundle.rootfs, arg0, &cwd, &bundle.env()?).map_err(|e| match (e, gone) {
        (e @ wasmcell_oci::Error::EntrypointNotFound { .. }, Some(name)) => {
            Error::InvalidArgument(format!(
                "{e} (the container's image {name} is no longer in containerd, so its wasm \
                 layers, if it had any, could not be read)"
            ))
        }
        (e, _) => e.into(),
    })
}

fn from_layer(id: &str, spec: &mut Spec, program: artifact::LayerProgram) -> Result<Entrypoint> {
    let name = program.describe();
    for skipped in &program.skipped {
        log::warn!("task {id}: image {}: {skipped}", program.image);
    }
    let mut head = [0u8; 8];
    let got = program
        .wasm
        .read_at(&mut head, 0)
        .map_err(|e| Error::io(format!("read {name}"), e))?;
    let kind = entrypoint::classify(&name, &head[..got])?;
    if let Some(process) = spec.process_mut() {
        if process.args().as_ref().is_none_or(Vec::is_empty) {
            process.set_args(Some(vec![program.default_argv0()]));
        }
    }
    log::info!(
        "task {id}: program is {name} ({:?} layout, {} bytes)",
        program.layout,
        program.layer.size
    );
    Ok(Entrypoint {
        file: program.wasm,
        path: name,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_containerd_fails_the_lookup_instead_of_using_the_rootfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("no-containerd.sock");
        let err =
            lookup(Some(socket.to_str().expect("utf-8")), "default", "c1").expect_err("an error");
        assert!(
            err.to_string().contains("cannot reach containerd at"),
            "{err}"
        );
        assert!(matches!(lookup(None, "default", "c1"), Ok(Lookup::NoImage)));
    }
}
