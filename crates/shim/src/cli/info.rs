//! `-v` and `-info`: what containerd (2.x) and people ask the binary about itself.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

/// The runtime type containerd knows us by.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";

/// The version text printed by `-v`.
pub fn version_text() -> String {
    format!(
        "containerd-shim-wasmcell-v1:\n  Version:  {}\n  Runtime:  {RUNTIME_ID}\n  Wasmtime: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("WASMCELL_WASMTIME_VERSION")
    )
}

/// Builds the RuntimeInfo for `-info` from the options containerd writes on stdin (a
/// protobuf `Any`, possibly empty). Garbage on stdin is an error that names the problem.
pub fn runtime_info(stdin: &[u8]) -> Result<Vec<u8>, String> {
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_ID.to_owned();
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").to_owned();
    info.version = Some(version).into();
    if !stdin.is_empty() {
        let options = Any::parse_from_bytes(stdin)
            .map_err(|e| format!("stdin is not a protobuf Any of runtime options: {e}"))?;
        if options.type_url.is_empty()
            || options
                .special_fields
                .unknown_fields()
                .iter()
                .next()
                .is_some()
        {
            return Err(format!(
                "stdin is not a protobuf Any of runtime options ({} bytes without a type URL)",
                stdin.len()
            ));
        }
        info.options = Some(options).into();
    }
    info.features = Some(features()).into();
    info.annotations.insert(
        "wasmcell.io/engine".to_owned(),
        concat!("wasmtime ", env!("WASMCELL_WASMTIME_VERSION")).to_owned(),
    );
    info.write_to_bytes()
        .map_err(|e| format!("encode RuntimeInfo: {e}"))
}

/// The type URL containerd reads the runtime-spec `Features` document under (JSON).
const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// What this runtime supports, in the runtime-spec's `features` form, which containerd's CRI
/// reads to tell the kubelet what a runtime handler can do. Only what holds for every container
/// the shim runs is listed: a cell's preopens honour these mount options (`rro` and `ro` on
/// every mount below, with `mount_setattr`), and runc, which runs the others, honours them too.
fn features() -> Any {
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "mountOptions": ["bind", "rbind", "ro", "rro", "rw", "rrw"]
    });
    let mut any = Any::new();
    any.type_url = FEATURES_TYPE_URL.to_owned();
    any.value = doc.to_string().into_bytes();
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stdin_gives_runtime_info() {
        let bytes = runtime_info(b"").expect("info");
        let info = RuntimeInfo::parse_from_bytes(&bytes).expect("decodes");
        assert_eq!(info.name, RUNTIME_ID);
        assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
        let doc: serde_json::Value =
            serde_json::from_slice(&info.features.value).expect("JSON features");
        let options = doc["mountOptions"].as_array().expect("mount options");
        assert!(options.iter().any(|o| o == "rro"), "{doc}");
    }

    #[test]
    fn options_are_echoed() {
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = vec![8, 1];
        let bytes = runtime_info(&any.write_to_bytes().expect("enc")).expect("info");
        let info = RuntimeInfo::parse_from_bytes(&bytes).expect("decodes");
        assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    }

    #[test]
    fn garbage_is_refused() {
        for garbage in [&b"hello world"[..], &[0xff, 0xff, 0xff][..]] {
            let err = runtime_info(garbage).expect_err("garbage");
            assert!(err.contains("not a protobuf Any"), "{err}");
        }
    }
}
