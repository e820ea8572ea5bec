//! `-v` and `-info`: what containerd (2.x) and people ask the binary about itself.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

/// The runtime type containerd knows us by.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";

/// The version text printed by `-v`.
pub fn version_text() -> String {
    format!(
        "containerd-shim-wasmcell-v1:\n  Version:  {}\n  Runtime:  {RUNTIME_ID}\n  Wasmtime: 48.0.8\n",
        env!("CARGO_PKG_VERSION")
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
    info.annotations.insert(
        "wasmcell.io/engine".to_owned(),
        "wasmtime 48.0.8".to_owned(),
    );
    info.write_to_bytes()
        .map_err(|e| format!("encode RuntimeInfo: {e}"))
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
