//! Writing an OCI image layout as a tarball ([`build_archive`]), deterministically.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use crate::model::{Built, ImageSpec, LayerProgram, Layout};
use crate::oci::{
    self, sha256 as digest, Descriptor, Platform, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    TAR_LAYER_MEDIA_TYPE,
};
use crate::tarball::{self, deterministic_tar};
use crate::{Error, Result};

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    // serde_json keeps object keys sorted (BTreeMap), so this is canonical.
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse_platform(text: &str) -> Result<Platform> {
    match text.split_once('/') {
        Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
            Ok(Platform {
                os: os.to_owned(),
                architecture: arch.to_owned(),
            })
        }
        _ => Err(Error::Invalid(format!(
            "platform {text:?} is not os/architecture (for example wasi/wasm)"
        ))),
    }
}

/// Blobs of an image being built, by digest.
#[derive(Default)]
struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let d = Descriptor {
            media_type: media_type.to_owned(),
            digest: digest(&bytes),
            size: bytes.len() as i64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        self.0.insert(d.digest.clone(), bytes);
        d
    }
}

/// Builds the image and writes it as an OCI image layout tarball to `out`.
pub fn build_archive(spec: &ImageSpec, out: impl Write) -> Result<Built> {
    if spec.name.is_empty() {
        return Err(Error::Invalid("the image needs a name".into()));
    }
    let mut platform = parse_platform(&spec.platform)?;
    let extra = spec
        .extra_platforms
        .iter()
        .map(|p| parse_platform(p))
        .collect::<Result<Vec<_>>>()?;
    let mut blobs = Blobs::default();
    let (config, layers) = match spec.layout {
        Layout::Rootfs => {
            if spec.program.is_some() {
                return Err(Error::Invalid(
                    "a rootfs image holds its program as a file, not as a wasm layer".into(),
                ));
            }
            let layer = blobs.add(
                TAR_LAYER_MEDIA_TYPE,
                tarball::rootfs_layer(&spec.files, &spec.symlinks)?,
            );
            let config = image_config(spec, &platform, std::slice::from_ref(&layer.digest));
            (blobs.add(CONFIG_MEDIA_TYPE, to_json(&config)), vec![layer])
        }
        Layout::Cncf => {
            let program = wasm_program(spec)?;
            if !spec.files.is_empty() || !spec.symlinks.is_empty() || !spec.user.is_empty() {
                return Err(Error::Invalid(
                    "a CNCF wasm artifact holds exactly one wasm layer: no files, symlinks or \
                     user; use the runwasi or rootfs layout for those, or mount them"
                        .into(),
                ));
            }
            platform = wasm_platform(&platform, &program.wasm)?;
            let mut layer = blobs.add(oci::WASM_LAYER_MEDIA_TYPE, program.wasm.clone());
            layer
                .annotations
                .insert(oci::TITLE_ANNOTATION.into(), program.name.clone());
            // The artifact's own fields, plus the image-config fields containerd's clients read
            // for a container's defaults (args, env, cwd); other readers ignore those.
            let mut config = json!({
                "created": "1970-01-01T00:00:00Z",
                "architecture": platform.architecture,
                "os": platform.os,
                "layerDigests": [layer.digest],
            });
            config["config"] = image_config(spec, &platform, &[])["config"].take();
            (
                blobs.add(oci::WASM_CONFIG_MEDIA_TYPE, to_json(&config)),
                vec![layer],
            )
        }
        Layout::Runwasi => {
            let program = wasm_program(spec)?;
            platform = wasm_platform(&platform, &program.wasm)?;
            let mut layers = Vec::new();
            if !spec.files.is_empty() || !spec.symlinks.is_empty() {
                layers.push(blobs.add(
                    TAR_LAYER_MEDIA_TYPE,
                    tarball::rootfs_layer(&spec.files, &spec.symlinks)?,
                ));
            }
            // diff_ids name the filesystem layers only: those are what containerd unpacks.
            let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
            let mut layer = blobs.add(oci::COMPONENT_LAYER_MEDIA_TYPE, program.wasm.clone());
            layer
                .annotations
                .insert(oci::TITLE_ANNOTATION.into(), program.name.clone());
            layers.push(layer);
            let config = image_config(spec, &platform, &diff_ids);
            (blobs.add(CONFIG_MEDIA_TYPE, to_json(&config)), layers)
        }
    };

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config,
        "layers": layers,
    });
    let manifest = blobs.add(MANIFEST_MEDIA_TYPE, to_json(&manifest));
    let tag = spec
        .name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| "latest".to_owned());
    let mut entries = Vec::new();
    for p in std::iter::once(&platform).chain(&extra) {
        let mut d = manifest.clone();
        d.platform = Some(p.clone());
        d.annotations = BTreeMap::from([
            ("io.containerd.image.name".to_owned(), spec.name.clone()),
            ("org.opencontainers.image.ref.name".to_owned(), tag.clone()),
        ]);
        entries.push(d);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::INDEX_MEDIA_TYPE,
        "manifests": entries,
    });

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert("index.json".into(), to_json(&index));
    for (d, bytes) in blobs.0 {
        let (algorithm, hex) = d.split_once(':').unwrap_or(("sha256", &d));
        files.insert(format!("blobs/{algorithm}/{hex}"), bytes);
    }
    let archive = deterministic_tar(&files)?;
    let mut out = out;
    out.write_all(&archive).map_err(|e| Error::Io {
        context: "write the image archive".into(),
        source: e,
    })?;
    Ok(Built {
        manifest: manifest.digest,
        config: config.digest,
        layers: layers.into_iter().map(|l| l.digest).collect(),
    })
}

/// An OCI image config for `spec`.
fn image_config(spec: &ImageSpec, platform: &Platform, diff_ids: &[String]) -> serde_json::Value {
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": spec.env,
            "WorkingDir": if spec.workdir.is_empty() { "/" } else { spec.workdir.as_str() },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if !spec.user.is_empty() {
        config["config"]["User"] = json!(spec.user);
    }
    config
}

fn wasm_program(spec: &ImageSpec) -> Result<&LayerProgram> {
    let program = spec.program.as_ref().ok_or_else(|| {
        Error::Invalid("the CNCF and runwasi layouts need the wasm program (--wasm)".into())
    })?;
    if !program.wasm.starts_with(b"\0asm") {
        return Err(Error::Invalid(format!(
            "{} is not WebAssembly (no \\0asm magic); precompiled or native code never goes \
             into a wasm layer",
            program.name
        )));
    }
    Ok(program)
}

/// The platform of an OCI wasm layout: architecture `wasm`, os as given unless it is the generic
/// `wasi`, which becomes `wasip1` for a module and `wasip2` for a component.
fn wasm_platform(given: &Platform, wasm: &[u8]) -> Result<Platform> {
    if given.architecture != "wasm" {
        return Err(Error::Invalid(format!(
            "the OCI wasm layouts have architecture wasm, not {given}; add --extra-platform for \
             the platforms CRI pulls with"
        )));
    }
    let component = wasm.get(4..8) == Some(&[0x0d, 0, 1, 0]);
    let os = match given.os.as_str() {
        "wasi" if component => "wasip2",
        "wasi" => "wasip1",
        other => other,
    };
    Ok(Platform {
        os: os.to_owned(),
        architecture: "wasm".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageFile;

    fn hello() -> ImageSpec {
        ImageSpec {
            name: "wasmcell.test/hello:v1".into(),
            platform: "wasi/wasm".into(),
            extra_platforms: vec![],
            layout: Layout::Rootfs,
            program: None,
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
        let names = entries(&out);
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

    fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut ar = tar::Archive::new(archive);
        let mut names = BTreeMap::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            names.insert(e.path().expect("path").to_string_lossy().into_owned(), data);
        }
        names
    }

    fn blob(names: &BTreeMap<String, Vec<u8>>, d: &str) -> serde_json::Value {
        serde_json::from_slice(&names[&format!("blobs/sha256/{}", &d[7..])]).expect("json")
    }

    fn wasm_layout(layout: Layout) -> ImageSpec {
        let mut spec = hello();
        spec.layout = layout;
        spec.files.clear();
        spec.entrypoint = vec!["/hello.wasm".into()];
        spec.program = Some(LayerProgram {
            name: "hello.wasm".into(),
            wasm: b"\0asm\x01\0\0\0".to_vec(),
        });
        spec
    }

    #[test]
    fn cncf_artifact_has_the_wasm_config_and_one_wasm_layer() {
        let mut out = Vec::new();
        let built = build_archive(&wasm_layout(Layout::Cncf), &mut out).expect("build");
        let names = entries(&out);
        let manifest = blob(&names, &built.manifest);
        assert_eq!(manifest["config"]["mediaType"], oci::WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            oci::WASM_LAYER_MEDIA_TYPE
        );
        let config = blob(&names, &built.config);
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["layerDigests"][0], built.layers[0]);
        assert_eq!(config["config"]["Env"][0], "A=1");

        let mut with_files = wasm_layout(Layout::Cncf);
        with_files.files = hello().files;
        let err = build_archive(&with_files, Vec::new()).expect_err("files");
        assert!(err.to_string().contains("exactly one wasm layer"), "{err}");
    }

    #[test]
    fn runwasi_layout_puts_files_first_and_the_program_last() {
        let mut spec = wasm_layout(Layout::Runwasi);
        spec.files.push(ImageFile {
            path: "/etc/greeting".into(),
            contents: b"hi".to_vec(),
            mode: 0o644,
        });
        let mut out = Vec::new();
        let built = build_archive(&spec, &mut out).expect("build");
        let names = entries(&out);
        let manifest = blob(&names, &built.manifest);
        assert_eq!(manifest["layers"][0]["mediaType"], TAR_LAYER_MEDIA_TYPE);
        assert_eq!(
            manifest["layers"][1]["mediaType"],
            oci::COMPONENT_LAYER_MEDIA_TYPE
        );
        let config = blob(&names, &built.config);
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([built.layers[0]])
        );

        let mut native = wasm_layout(Layout::Runwasi);
        native.program = Some(LayerProgram {
            name: "app.cwasm".into(),
            wasm: b"\x7fELF\x02\x01".to_vec(),
        });
        let err = build_archive(&native, Vec::new()).expect_err("native");
        assert!(err.to_string().contains("not WebAssembly"), "{err}");
    }

    #[test]
    fn extra_platforms_point_at_the_same_manifest() {
        let mut spec = wasm_layout(Layout::Runwasi);
        spec.extra_platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
        let mut out = Vec::new();
        let built = build_archive(&spec, &mut out).expect("build");
        let index: serde_json::Value =
            serde_json::from_slice(&entries(&out)["index.json"]).expect("index");
        let listed: Vec<(String, String)> = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| {
                (
                    m["digest"].as_str().unwrap_or_default().to_owned(),
                    format!(
                        "{}/{}",
                        m["platform"]["os"].as_str().unwrap_or_default(),
                        m["platform"]["architecture"].as_str().unwrap_or_default()
                    ),
                )
            })
            .collect();
        let want: Vec<(String, String)> = ["wasip1/wasm", "linux/amd64", "linux/arm64"]
            .iter()
            .map(|p| (built.manifest.clone(), p.to_string()))
            .collect();
        assert_eq!(listed, want);
    }
}
