//! Outgoing `wasi:http` requests, sent by the host on the guest's behalf: the name through the
//! container's resolver, `https` verified against the container's CA bundle
//! ([`wasmcell_net::Trust`]), HTTP/2 when the server's ALPN picks it, HTTP/1.1 otherwise.
//!
//! wasmtime-wasi-http's own sender would resolve through the C library (see `name_lookup`) and
//! trust only the public web PKI. Each failure is the `wasi:http` error code a guest can act on,
//! and a line on the container's stderr that says why (a certificate's fault by name), since the
//! guest alone would only see the code.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmcell_net::{LookupError, Resolver, Trust};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long a connection may take when the guest sets no `connect-timeout` (the deadline of
/// a served request bounds it further).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the response's head may take when the guest sets no `first-byte-timeout`.
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(600);

/// The response and the future that ends with the connection (wasmtime-wasi-http's contract).
type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// How a guest's outgoing requests are sent; one per store.
#[derive(Clone, Default)]
pub(crate) struct Outgoing {
    resolver: Arc<Resolver>,
    trust: Option<Arc<Trust>>,
    /// The served request's deadline: no connection outlives it.
    deadline: Option<Instant>,
}

impl Outgoing {
    pub(crate) fn new(
        resolver: Arc<Resolver>,
        trust: Option<Arc<Trust>>,
        deadline: Option<Instant>,
    ) -> Outgoing {
        Outgoing {
            resolver,
            trust,
            deadline,
        }
    }

    /// `wanted`, cut to what is left of the deadline.
    fn bounded(&self, wanted: Duration) -> Duration {
        match self.deadline {
            Some(d) => wanted.min(d.saturating_duration_since(Instant::now())),
            None => wanted,
        }
    }

    async fn send(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, Error> {
        let uri = request.uri().clone();
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?.clone();
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let fail = |why: &dyn std::fmt::Display, code: Error| {
            let _ = writeln!(
                std::io::stderr(),
                "wasmcell: outgoing request to {}://{authority}: {why}",
                if tls { "https" } else { "http" }
            );
            code
        };
        let addrs = self
            .resolver
            .lookup(host)
            .await
            .map_err(|e| fail(&e, dns_error(&e)))?;
        let connect_timeout = self.bounded(
            options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        );
        let stream = connect(&addrs, port, connect_timeout)
            .await
            .map_err(|(why, code)| fail(&why, code))?;
        let (io, h2): (Box<dyn Io>, bool) = if tls {
            let trust = self
                .trust
                .as_ref()
                .ok_or_else(|| fail(&"no TLS roots were granted", Error::ConfigurationError))?;
            let config = trust
                .client_config()
                .map_err(|why| fail(&why, Error::TlsCertificateError))?;
            let name = server_name(host).map_err(|why| fail(&why, Error::HttpRequestUriInvalid))?;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(name, stream);
            let stream = match tokio::time::timeout(connect_timeout, handshake).await {
                Err(_) => {
                    return Err(fail(
                        &"the TLS handshake timed out",
                        Error::ConnectionTimeout,
                    ))
                }
                Ok(Err(e)) => {
                    let (why, code) = tls_error(&e);
                    return Err(fail(&why, code));
                }
                Ok(Ok(s)) => s,
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            (Box::new(stream), h2)
        } else {
            (Box::new(stream), false)
        };
        let io = TokioIo::new(io);
        let first_byte = self.bounded(
            options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT),
        );
        if h2 {
            let (mut sender, connection) = tokio::time::timeout(
                connect_timeout,
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
            )
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
            let driver = tokio::spawn(connection);
            let response = tokio::time::timeout(first_byte, sender.send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)??;
            Ok(finish(response, driver))
        } else {
            // HTTP/1.1 sends the path only; the authority goes in the Host header, which
            // wasmtime-wasi-http has set.
            *request.uri_mut() = http::Uri::builder()
                .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
                .build()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let (mut sender, connection) =
                tokio::time::timeout(connect_timeout, hyper::client::conn::http1::handshake(io))
                    .await
                    .map_err(|_| Error::ConnectionTimeout)??;
            let driver = tokio::spawn(connection);
            let response = tokio::time::timeout(first_byte, sender.send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)??;
            Ok(finish(response, driver))
        }
    }
}

/// The response with its body as wasi:http's, and a future that ends with the connection.
fn finish(
    response: http::Response<hyper::body::Incoming>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
) -> Sent {
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let ended = async move {
        match driver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::from(e)),
            // The runtime is shutting down: nothing is left to report to.
            Err(_) => Ok(()),
        }
    };
    (response, Box::new(ended))
}

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        Box::new(self.clone().send(request, options))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Connects to the first of `addrs` that answers, each within what is left of `timeout`.
async fn connect(
    addrs: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, (String, Error)> {
    let until = Instant::now() + timeout;
    let mut last = (
        "no address to connect to".to_owned(),
        Error::DestinationNotFound,
    );
    for addr in addrs {
        let to = SocketAddr::new(*addr, port);
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                let code = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                    _ => Error::DestinationUnavailable,
                };
                last = (format!("connect to {to}: {e}"), code);
            }
            Err(_) => {
                return Err((
                    format!("connect to {to}: no answer within {timeout:?}"),
                    Error::ConnectionTimeout,
                ))
            }
        }
    }
    Err(last)
}

/// The name TLS verifies: an address literal (brackets dropped) or a DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(bare.to_owned())
        .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))
}

/// What a guest is told of a name that did not resolve.
fn dns_error(e: &LookupError) -> Error {
    match e {
        LookupError::InvalidName { .. } => Error::HttpRequestUriInvalid,
        LookupError::NotFound { .. } => Error::DnsError {
            rcode: Some("NXDOMAIN".into()),
            info_code: None,
        },
        LookupError::Timeout { .. } => Error::DnsTimeout,
        LookupError::Temporary { .. } => Error::DnsError {
            rcode: Some("SERVFAIL".into()),
            info_code: None,
        },
        LookupError::Failed { reason, .. } => Error::DnsError {
            rcode: Some(reason.clone()),
            info_code: None,
        },
    }
}

/// Why a TLS handshake failed, and the wasi:http code for it.
fn tls_error(e: &std::io::Error) -> (String, Error) {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return (format!("TLS handshake: {e}"), Error::TlsProtocolError);
    };
    let why = format!("TLS: {tls}");
    let code = match tls {
        rustls::Error::InvalidCertificate(_) => Error::TlsCertificateError,
        rustls::Error::AlertReceived(alert) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => Error::TlsProtocolError,
    };
    (why, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_of_hosts_and_addresses() {
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("198.18.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("backend.ns.svc"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn lookup_errors_become_wasi_http_codes() {
        let name = "x".to_owned();
        assert!(matches!(
            dns_error(&LookupError::NotFound { name: name.clone() }),
            Error::DnsError { rcode: Some(r), .. } if r == "NXDOMAIN"
        ));
        assert!(matches!(
            dns_error(&LookupError::Timeout {
                name,
                servers: String::new(),
                after: Duration::ZERO
            }),
            Error::DnsTimeout
        ));
    }
}
