//! [`ContentSource`] over containerd's gRPC API: the containers, images and content services
//! on the socket the shim was given with `-address`.
//!
//! The shim is synchronous, so this wraps tonic in a small current-thread tokio runtime that
//! lives as long as the client and runs only while a call is in flight. Every call has a
//! deadline, so a containerd that stops answering fails a Create instead of hanging it.

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient,
    images_client::ImagesClient, GetContainerRequest, GetImageRequest, ReadContentRequest,
};
use containerd_client::tonic::{self, transport::Channel, Code, Request};

use crate::artifact::ContentSource;
use crate::oci::{Descriptor, Platform};

/// How long one call to containerd may take.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// A connection to containerd in one namespace.
pub struct Containerd {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("start a runtime for containerd's API: {e}"))?;
        let channel = runtime
            .block_on(async {
                tokio::time::timeout(CALL_DEADLINE, containerd_client::connect(&path)).await
            })
            .map_err(|_| format!("connect to containerd at {}: timed out", path.display()))?
            .map_err(|e| format!("connect to containerd at {}: {e}", path.display()))?;
        Ok(Containerd {
            runtime,
            channel,
            namespace: namespace.to_owned(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.set_timeout(CALL_DEADLINE);
        if let Ok(ns) = self.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", ns);
        }
        req
    }
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
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
        let mut client = ContainersClient::new(self.channel.clone());
        let req = self.request(GetContainerRequest {
            id: container_id.to_owned(),
        });
        match self.runtime.block_on(client.get(req)) {
            Ok(resp) => Ok(resp.into_inner().container.map(|c| c.image)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(describe(&s)),
        }
    }

    fn image_target(&self, image: &str) -> Result<Option<Descriptor>, String> {
        let mut client = ImagesClient::new(self.channel.clone());
        let req = self.request(GetImageRequest {
            name: image.to_owned(),
        });
        match self.runtime.block_on(client.get(req)) {
            Ok(resp) => Ok(resp
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(descriptor)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(describe(&s)),
        }
    }

    fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, String> {
        let mut client = ContentClient::new(self.channel.clone());
        let req = self.request(ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        });
        self.runtime.block_on(async {
            let mut stream = match client.read(req).await {
                Ok(s) => s.into_inner(),
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(describe(&s)),
            };
            let mut bytes = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.data),
                    Ok(None) => return Ok(Some(bytes)),
                    Err(s) if s.code() == Code::NotFound => return Ok(None),
                    Err(s) => return Err(describe(&s)),
                }
            }
        })
    }
}
