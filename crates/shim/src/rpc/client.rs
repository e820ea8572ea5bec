//! A ttrpc client for unary calls, made from the calling thread: it writes the request and
//! reads until the response to it arrives. One call at a time per client, which is how the
//! events forwarder (`crate::service::events`) uses it.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::{self, Code};

use super::frame::{self, Frame, REQUEST, RESPONSE};

/// A connection to a ttrpc server.
pub struct Client {
    stream: UnixStream,
    /// Client-initiated streams have odd ids.
    next_stream_id: u32,
    timeout: Duration,
}

impl Client {
    /// Connects to `address`, a socket path (`unix://` allowed); a call that gets no answer
    /// within `timeout` fails.
    pub fn connect(address: &str, timeout: Duration) -> std::io::Result<Client> {
        let path = super::socket_path(address);
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            next_stream_id: 1,
            timeout,
        })
    }

    /// Calls `method` of `service` with an encoded request; the encoded response, or what went
    /// wrong (the server's status message for a call it refused).
    pub fn call(
        &mut self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(2);
        let mut request = ttrpc::Request::new();
        request.service = service.to_owned();
        request.method = method.to_owned();
        request.payload = payload;
        request.timeout_nano = i64::try_from(self.timeout.as_nanos()).unwrap_or(i64::MAX);
        let bytes = request
            .write_to_bytes()
            .map_err(|e| format!("encode the request: {e}"))?;
        frame::write(&mut self.stream, stream_id, REQUEST, 0, &bytes)
            .map_err(|e| format!("send {service}/{method}: {e}"))?;
        loop {
            let frame = frame::read(&mut self.stream)
                .map_err(|e| format!("read the answer to {service}/{method}: {e}"))?
                .ok_or_else(|| format!("the server closed the connection during {method}"))?;
            let Frame::Message(header, bytes) = frame else {
                return Err(format!("oversized answer to {service}/{method}"));
            };
            // An answer to an earlier call given up on: skip it.
            if header.stream_id != stream_id || header.kind != RESPONSE {
                continue;
            }
            let response = ttrpc::Response::parse_from_bytes(&bytes)
                .map_err(|e| format!("malformed answer to {service}/{method}: {e}"))?;
            if let Some(status) = response.status.as_ref() {
                if status.code.value() != Code::OK as i32 {
                    return Err(format!(
                        "{service}/{method}: {:?}: {}",
                        status.code, status.message
                    ));
                }
            }
            return Ok(response.payload);
        }
    }
}
