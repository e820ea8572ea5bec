//! The image reader (`wasmcell_image::artifact::find_program`) on any image containerd's
//! content store may hold: any index, manifest, config and layer, linked by real digests. It
//! never panics, and a program it returns is wasm.
//!
//! The input is up to five parts separated by 0xff bytes: the media type of the image's target
//! (its first byte picks one), the target blob, a second manifest, a config and a layer. Before
//! hashing, `@LS`/`@L`, `@CS`/`@C` and `@MS`/`@M` in the text are replaced with the size and
//! digest of the layer, the config and the second manifest, so that mutations keep the blobs
//! linked as a real image links them (the seeds in corpus/oci_image are such templates).
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use wasmcell_image::artifact::{find_program, ContentSource, Lookup};
use wasmcell_image::oci::{self, Descriptor};

const TARGETS: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

struct Store {
    target: Descriptor,
    blobs: HashMap<String, Vec<u8>>,
}

impl ContentSource for Store {
    fn container_image(&self, _: &str) -> Result<Option<String>, String> {
        Ok(Some("fuzz/image:1".to_owned()))
    }
    fn image_target(&self, _: &str) -> Result<Option<Descriptor>, String> {
        Ok(Some(self.target.clone()))
    }
    fn read_blob(&self, digest: &str, _: u64, into: &mut dyn Write) -> Result<bool, String> {
        match self.blobs.get(digest) {
            Some(blob) => into
                .write_all(blob)
                .map(|()| true)
                .map_err(|e| e.to_string()),
            None => Ok(false),
        }
    }
}

/// `text` with the placeholders of one blob replaced.
fn link(text: Vec<u8>, name: &str, blob: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(&text).into_owned();
    text.replace(&format!("@{name}S"), &blob.len().to_string())
        .replace(&format!("@{name}"), &oci::sha256(blob))
        .into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff).map(<[u8]>::to_vec);
    let selector = parts.next().unwrap_or_default();
    let mut root = parts.next().unwrap_or_default();
    let mut manifest = parts.next().unwrap_or_default();
    let mut config = parts.next().unwrap_or_default();
    let layer = parts.next().unwrap_or_default();
    config = link(config, "L", &layer);
    for (name, blob) in [("L", &layer), ("C", &config)] {
        manifest = link(manifest, name, blob);
        root = link(root, name, blob);
    }
    root = link(root, "M", &manifest);
    let mut blobs = HashMap::new();
    for blob in [&root, &manifest, &config, &layer] {
        blobs.insert(oci::sha256(blob), blob.clone());
    }
    let target = Descriptor {
        media_type: TARGETS[usize::from(selector.first().copied().unwrap_or(0)) % TARGETS.len()]
            .to_owned(),
        digest: oci::sha256(&root),
        size: root.len() as i64,
        annotations: BTreeMap::new(),
        platform: None,
    };
    let store = Store { target, blobs };
    if let Ok(Lookup::Layer(program)) = find_program(&store, "c") {
        let mut wasm = Vec::new();
        (&program.wasm)
            .read_to_end(&mut wasm)
            .expect("read the program back");
        assert!(wasm.starts_with(b"\0asm"));
        assert_eq!(wasm.len() as i64, program.layer.size);
    }
});
