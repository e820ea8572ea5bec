//! [`ContentSource`] over containerd's gRPC API: the containers, images and content services
//! on the socket the shim was given with `-address`.
//!
//! The calls go through [`crate::grpc`], a small synchronous HTTP/2 client (the module says why
//! not tonic); the messages are the `containerd-client` crate's. Every call has a deadline, so a
//! containerd that stops answering fails a Create instead of hanging it.

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::{
    GetContainerRequest, GetContainerResponse, GetImageRequest, GetImageResponse,
    ReadContentRequest, ReadContentResponse, VersionResponse,
};
use prost::Message;

use crate::artifact::ContentSource;
use crate::grpc::{CallError, Connection, NOT_FOUND};
use crate::oci::{Descriptor, Platform};

/// How long one call to containerd may take.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// A connection to containerd in one namespace.
pub struct Containerd {
    connection: RefCell<Connection>,
    namespace: String,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Containerd {
    /// Connects to containerd's socket (`unix://` prefix optional).
    pub fn connect(address: &str, namespace: &str) -> Result<Containerd, String> {
        let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(address));
        let connection = Connection::connect(&path, CALL_DEADLINE)
            .map_err(|e| format!("connect to containerd at {}: {e}", path.display()))?;
        Ok(Containerd {
            connection: RefCell::new(connection),
            namespace: namespace.to_owned(),
        })
    }

    /// The version containerd reports (`v2.2.9`): proof that it is up and serving its API.
    pub fn version(&self) -> Result<String, String> {
        let resp: Option<VersionResponse> =
            self.unary("/containerd.services.version.v1.Version/Version", &())?;
        resp.map(|r| r.version)
            .ok_or_else(|| "Version: containerd has no version service".to_owned())
    }

    /// Calls `method` with `request`; `None` when containerd says the thing is not found.
    fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Option<Vec<Resp>>, String> {
        let answer = self.connection.borrow_mut().call(
            method,
            &[("containerd-namespace", &self.namespace)],
            CALL_DEADLINE,
            &request.encode_to_vec(),
        );
        match answer {
            Ok(messages) => messages
                .iter()
                .map(|m| Resp::decode(m.as_slice()))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(|e| format!("{method}: undecodable answer: {e}")),
            Err(CallError::Status { code, .. }) if code == NOT_FOUND => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn unary<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Option<Resp>, String> {
        match self.call::<Req, Resp>(method, request)? {
            None => Ok(None),
            Some(mut messages) if messages.len() == 1 => Ok(messages.pop()),
            Some(messages) => Err(format!(
                "{method}: {} answers to a unary call",
                messages.len()
            )),
        }
    }
}

fn descriptor(d: containerd_client::types::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
        platform: None::<Platform>,
    }
}

impl ContentSource for Containerd {
    fn container_image(&self, container_id: &str) -> Result<Option<String>, String> {
        let resp: Option<GetContainerResponse> = self.unary(
            "/containerd.services.containers.v1.Containers/Get",
            &GetContainerRequest {
                id: container_id.to_owned(),
            },
        )?;
        Ok(resp.and_then(|r| r.container).map(|c| c.image))
    }

    fn image_target(&self, image: &str) -> Result<Option<Descriptor>, String> {
        let resp: Option<GetImageResponse> = self.unary(
            "/containerd.services.images.v1.Images/Get",
            &GetImageRequest {
                name: image.to_owned(),
            },
        )?;
        Ok(resp
            .and_then(|r| r.image)
            .and_then(|i| i.target)
            .map(descriptor))
    }

    fn read_blob(&self, digest: &str, size: u64, into: &mut dyn Write) -> Result<bool, String> {
        const METHOD: &str = "/containerd.services.content.v1.Content/Read";
        // containerd reads the whole blob for a size of 0; one byte is then enough to find a
        // blob that is longer than its descriptor said.
        let request = ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: i64::try_from(size.max(1)).unwrap_or(i64::MAX),
        };
        let answer = self.connection.borrow_mut().call_each(
            METHOD,
            &[("containerd-namespace", &self.namespace)],
            CALL_DEADLINE,
            &request.encode_to_vec(),
            &mut |message| {
                let chunk = ReadContentResponse::decode(message)
                    .map_err(|e| format!("undecodable answer: {e}"))?;
                into.write_all(&chunk.data).map_err(|e| e.to_string())
            },
        );
        match answer {
            Ok(()) => Ok(true),
            Err(CallError::Status { code, .. }) if code == NOT_FOUND => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}
