//! Reading an image tarball made by `wasmcell image build` the way a containerd client reads an
//! image: what it unpacks and the defaults it puts into a container's spec.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use containerd_client::types::Descriptor;
use serde_json::Value;

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// What a client takes from an image to create a container: the manifest's filesystem layers,
/// their diff ids, and the config's defaults (args = Entrypoint + Cmd, Env, WorkingDir).
#[derive(Debug, Clone)]
pub struct ImageDefaults {
    /// The filesystem layers, in order.
    pub tar_layers: Vec<Descriptor>,
    /// The config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// Entrypoint + Cmd.
    pub args: Vec<String>,
    /// Env.
    pub env: Vec<String>,
    /// WorkingDir.
    pub cwd: String,
}

impl ImageDefaults {
    /// The chain id of the unpacked image: the snapshot a container's rootfs is prepared on.
    pub fn chain_id(&self) -> String {
        let mut chain = String::new();
        for d in &self.diff_ids {
            chain = if chain.is_empty() {
                d.clone()
            } else {
                let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{chain} {d}"));
                format!("sha256:{}", hex::encode(digest))
            };
        }
        chain
    }
}

fn tar_entries(tar: &Path) -> HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar).expect("open tarball"));
    let mut out = HashMap::new();
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        out.insert(e.path().expect("path").to_string_lossy().into_owned(), data);
    }
    out
}

/// The defaults of the image in `tar` (its index's first manifest).
pub fn defaults_of(tar: &Path) -> ImageDefaults {
    let files = tar_entries(tar);
    let blob = |d: &Value| -> Value {
        let d = d.as_str().expect("digest");
        serde_json::from_slice(&files[&format!("blobs/sha256/{}", &d[7..])]).expect("json blob")
    };
    let index: Value = serde_json::from_slice(&files["index.json"]).expect("index");
    let manifest = blob(&index["manifests"][0]["digest"]);
    let config = blob(&manifest["config"]["digest"]);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &config["config"];
    let mut args = strings(&c["Entrypoint"]);
    args.extend(strings(&c["Cmd"]));
    ImageDefaults {
        tar_layers: manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .filter(|l| l["mediaType"] == TAR)
            .map(|l| Descriptor {
                media_type: TAR.into(),
                digest: l["digest"].as_str().expect("digest").into(),
                size: l["size"].as_i64().expect("size"),
                annotations: HashMap::new(),
            })
            .collect(),
        diff_ids: strings(&config["rootfs"]["diff_ids"]),
        args,
        env: strings(&c["Env"]),
        cwd: c["WorkingDir"].as_str().unwrap_or("/").to_owned(),
    }
}
