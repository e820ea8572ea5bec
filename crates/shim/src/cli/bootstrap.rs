//! What containerd hands `shim start`, and the form it reads the answer in. Three generations:
//! - **2.3 and later** write `containerd.runtime.bootstrap.v1.BootstrapParams` (protobuf) on
//!   stdin to every shim but runc's and hcs's v1 shims, and read the reply as a protobuf
//!   `BootstrapResult` first (JSON and a bare address only as fallbacks). The params may name
//!   the directory for the shim's socket (the shim manager's `socket_dir`, which a rootless or
//!   relocated containerd sets); the runtime options ride along as extensions.
//! - **1.7 to 2.2** set `MAX_SHIM_VERSION` and read JSON `{"version":2,"address":…,
//!   "protocol":"ttrpc"}`, taking anything that is not such JSON for a bare address.
//! - **1.6** reads a bare address only: JSON would be taken for an address and fail.
//!
//! Every version reads the shim's stdout and stderr together, so `start` writes nothing to
//! stderr unless it fails. The messages are declared here with prost rather than generated:
//! two small messages of a stable, versioned API, of which only the fields the shim uses (and
//! the version, for tests) are declared.

use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

/// containerd's `BootstrapParams`: the fields the shim reads (prost skips the others, among them
/// the runtime options, which wasmcell takes from Create instead).
#[derive(Clone, PartialEq, Message)]
pub struct BootstrapParams {
    /// The container or sandbox id (`-id`).
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// The namespace (`-namespace`).
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// The version of the containerd that runs the shim.
    #[prost(string, tag = "4")]
    pub containerd_version: String,
    /// containerd's ttrpc address, for events (`TTRPC_ADDRESS`).
    #[prost(string, tag = "5")]
    pub containerd_ttrpc_address: String,
    /// Where the shim's socket goes, when containerd says.
    #[prost(string, optional, tag = "9")]
    pub socket_dir: Option<String>,
}

/// containerd's `BootstrapResult`: how to reach the shim.
#[derive(Clone, PartialEq, Message)]
pub struct BootstrapResult {
    /// The shim protocol's version: 2, as in the JSON form.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// The shim's socket (`unix://…`).
    #[prost(string, tag = "2")]
    pub address: String,
    /// `ttrpc`.
    #[prost(string, tag = "3")]
    pub protocol: String,
}

/// Where the shim's socket goes when containerd names no directory (containerd's own default
/// for root).
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// The variable containerd 1.7 and later set for every shim command.
pub const MAX_SHIM_VERSION_ENV: &str = "MAX_SHIM_VERSION";

/// Which containerd runs `start`, as far as the reply's form goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// 2.3 or later: the bootstrap protocol.
    Bootstrap(BootstrapParams),
    /// 1.7 to 2.2: JSON.
    Json,
    /// 1.6: a bare address.
    Bare,
}

impl Caller {
    /// Tells the caller from what it handed `start`: stdin holds `BootstrapParams` for this very
    /// container (its id and namespace, as upstream's shims check, so that a 2.2 containerd's
    /// runtime options, which are also protobuf, are never taken for them); otherwise
    /// `MAX_SHIM_VERSION` marks 1.7 to 2.2.
    pub fn detect(
        stdin: &[u8],
        id: &str,
        namespace: &str,
        max_shim_version: Option<&str>,
    ) -> Caller {
        if !stdin.is_empty() {
            if let Ok(params) = BootstrapParams::decode(stdin) {
                if params.instance_id == id && params.namespace == namespace {
                    return Caller::Bootstrap(params);
                }
            }
        }
        match max_shim_version.map(str::trim) {
            Some(v) if v.parse::<u32>().is_ok_and(|v| v >= 2) => Caller::Json,
            _ => Caller::Bare,
        }
    }

    /// containerd's ttrpc address as the bootstrap params give it (containerd means to stop
    /// setting `TTRPC_ADDRESS` once every shim reads the params).
    pub fn ttrpc_address(&self) -> Option<&str> {
        match self {
            Caller::Bootstrap(p) if !p.containerd_ttrpc_address.is_empty() => {
                Some(&p.containerd_ttrpc_address)
            }
            _ => None,
        }
    }

    /// The directory the shim's socket goes in: the one containerd names, else the default.
    /// A relative one is refused, as containerd refuses it in its own configuration.
    pub fn socket_dir(&self) -> Result<PathBuf, String> {
        match self {
            Caller::Bootstrap(BootstrapParams {
                socket_dir: Some(dir),
                ..
            }) if !dir.is_empty() => {
                let dir = Path::new(dir);
                if dir.is_absolute() {
                    Ok(dir.to_owned())
                } else {
                    Err(format!(
                        "containerd named a relative socket directory {}",
                        dir.display()
                    ))
                }
            }
            _ => Ok(PathBuf::from(DEFAULT_SOCKET_DIR)),
        }
    }

    /// The reply to write on stdout: exactly these bytes (a protobuf reply must not end in a
    /// newline: containerd 2.3.4 and later parse it untrimmed).
    pub fn reply(&self, address: &str) -> Vec<u8> {
        match self {
            Caller::Bootstrap(_) => BootstrapResult {
                version: 2,
                address: address.to_owned(),
                protocol: "ttrpc".to_owned(),
            }
            .encode_to_vec(),
            Caller::Json => serde_json::json!({
                "version": 2,
                "address": address,
                "protocol": "ttrpc",
            })
            .to_string()
            .into_bytes(),
            Caller::Bare => address.as_bytes().to_vec(),
        }
    }
}

/// The address of the socket of the shim that serves `grouping` (a pod, or a lone container)
/// in `namespace` of the containerd at `grpc_address`: a hash of the three, as containerd's own
/// shims name theirs, so the name is short and the same for every container of the pod.
pub fn socket_address(
    socket_dir: &Path,
    grpc_address: &str,
    namespace: &str,
    grouping: &str,
) -> String {
    let key = Path::new(grpc_address).join(namespace).join(grouping);
    let hash = Sha256::digest(key.display().to_string().as_bytes());
    format!("unix://{}/{}", socket_dir.display(), hex::encode(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes containerd 2.3 writes for `-id c1 -namespace default` with a socket dir and a
    /// runtime-options extension, encoded by hand from bootstrap.proto's field numbers so the
    /// test does not lean on the declarations above.
    fn params_from_containerd_2_3() -> Vec<u8> {
        fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
            let mut out = vec![(tag << 3) | 2, bytes.len() as u8];
            out.extend_from_slice(bytes);
            out
        }
        let mut b = Vec::new();
        b.extend(field(1, b"c1"));
        b.extend(field(2, b"default"));
        // log_level = DEBUG (-4): a negative int32 is a ten-byte varint.
        b.push(3 << 3);
        b.extend([0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        b.extend(field(4, b"v2.3.7"));
        b.extend(field(5, b"unix:///run/containerd/containerd.sock.ttrpc"));
        b.extend(field(6, b"/run/containerd/containerd.sock"));
        b.extend(field(7, b"/usr/bin/containerd"));
        let any = [field(1, b"type.googleapis.com/x"), field(2, b"\x08\x01")].concat();
        b.extend(field(8, &field(1, &any)));
        b.extend(field(9, b"/run/user/1000/containerd/s"));
        b
    }

    #[test]
    fn containerd_2_3_is_told_by_its_bootstrap_params_and_gets_protobuf() {
        let caller = Caller::detect(&params_from_containerd_2_3(), "c1", "default", Some("2"));
        let Caller::Bootstrap(params) = &caller else {
            panic!("{caller:?}")
        };
        assert_eq!(params.containerd_version, "v2.3.7");
        assert_eq!(
            caller.ttrpc_address(),
            Some("unix:///run/containerd/containerd.sock.ttrpc")
        );
        assert_eq!(
            caller.socket_dir(),
            Ok(PathBuf::from("/run/user/1000/containerd/s"))
        );
        let reply = caller.reply("unix:///run/user/1000/containerd/s/ab");
        assert_eq!(
            BootstrapResult::decode(reply.as_slice()),
            Ok(BootstrapResult {
                version: 2,
                address: "unix:///run/user/1000/containerd/s/ab".into(),
                protocol: "ttrpc".into(),
            })
        );
        assert_ne!(reply.last(), Some(&b'\n'));
    }

    #[test]
    fn params_for_another_container_are_runtime_options_of_an_older_containerd() {
        // containerd 2.2 writes the runtime options (an `Any`) on stdin: protobuf too, which
        // may even decode as params, but not with this container's id and namespace.
        let stdin = params_from_containerd_2_3();
        assert_eq!(
            Caller::detect(&stdin, "c2", "default", Some("2")),
            Caller::Json
        );
        assert_eq!(
            Caller::detect(&stdin, "c1", "k8s.io", Some("2")),
            Caller::Json
        );
        assert_eq!(
            Caller::detect(b"\xff\xff", "c1", "default", Some("2")),
            Caller::Json
        );
    }

    #[test]
    fn containerd_1_7_to_2_2_get_json_and_1_6_a_bare_address() {
        let json = Caller::detect(b"", "c1", "default", Some("2"));
        assert_eq!(json, Caller::Json);
        let reply: serde_json::Value = serde_json::from_slice(&json.reply("unix:///s/ab")).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"version": 2, "address": "unix:///s/ab", "protocol": "ttrpc"})
        );
        for max in [None, Some(""), Some("1"), Some("x")] {
            let bare = Caller::detect(b"", "c1", "default", max);
            assert_eq!(bare, Caller::Bare, "{max:?}");
            assert_eq!(bare.reply("unix:///s/ab"), b"unix:///s/ab");
        }
        assert_eq!(json.socket_dir(), Ok(PathBuf::from(DEFAULT_SOCKET_DIR)));
    }

    #[test]
    fn a_relative_socket_dir_is_refused_and_an_empty_one_is_the_default() {
        let with = |dir: &str| {
            Caller::Bootstrap(BootstrapParams {
                socket_dir: Some(dir.into()),
                ..Default::default()
            })
            .socket_dir()
        };
        assert!(with("run/s")
            .unwrap_err()
            .contains("relative socket directory run/s"));
        assert_eq!(with(""), Ok(PathBuf::from(DEFAULT_SOCKET_DIR)));
    }

    #[test]
    fn the_socket_is_named_as_containerd_s_own_shims_name_theirs() {
        // containerd-shim's socket_address for the same three, under /run/containerd/s.
        let ours = socket_address(
            Path::new(DEFAULT_SOCKET_DIR),
            "/run/containerd/containerd.sock",
            "k8s.io",
            "pod",
        );
        let theirs =
            containerd_shim::socket_address("/run/containerd/containerd.sock", "k8s.io", "pod");
        assert_eq!(ours, theirs);
    }
}
