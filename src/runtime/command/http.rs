//! The HTTP exchange with a runtime's REST API: one connection per command (hyper 1, HTTP/1.1) over
//! TCP, wrapped in TLS (tokio-rustls, ring) on the HTTPS port, with connect and total timeouts and a
//! response size cap. It never talks to anything but the address it is given.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{CommandError, HttpCommand, HttpReply, Limits};

/// Performs `command` against `ip` and returns the runtime's answer, or an error for anything that
/// prevented a complete answer within `limits`.
pub(super) async fn exchange(
    ip: Ipv4Addr,
    command: &HttpCommand,
    limits: &Limits,
) -> Result<HttpReply, CommandError> {
    match tokio::time::timeout(limits.total_timeout, exchange_inner(ip, command, limits)).await {
        Ok(result) => result,
        Err(_) => Err(CommandError::Timeout {
            after: limits.total_timeout,
        }),
    }
}

async fn exchange_inner(
    ip: Ipv4Addr,
    command: &HttpCommand,
    limits: &Limits,
) -> Result<HttpReply, CommandError> {
    let addr = SocketAddr::new(IpAddr::V4(ip), command.port);
    let tcp = match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(CommandError::Connect { addr, source }),
        Err(_) => {
            return Err(CommandError::ConnectTimeout {
                addr,
                after: limits.connect_timeout,
            });
        }
    };
    // Small requests and answers: do not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    if command.is_tls() {
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let handshake = connector.connect(ServerName::IpAddress(IpAddr::V4(ip).into()), tcp);
        let tls = match tokio::time::timeout(limits.connect_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(CommandError::Tls(e.to_string())),
            Err(_) => {
                return Err(CommandError::ConnectTimeout {
                    addr,
                    after: limits.connect_timeout,
                });
            }
        };
        send(tls, addr, command, limits).await
    } else {
        send(tcp, addr, command, limits).await
    }
}

async fn send<S>(
    stream: S,
    addr: SocketAddr,
    command: &HttpCommand,
    limits: &Limits,
) -> Result<HttpReply, CommandError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, ChunkBody>(TokioIo::new(stream))
            .await
            .map_err(|e| CommandError::Http(e.to_string()))?;
    // The connection driver lives exactly as long as this exchange: aborted when we return (also
    // on timeout, since the caller's timeout drops this future and with it the guard).
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    // The body goes out chunk by chunk (an upload's decoded files are sent from where they are,
    // never concatenated); `request` set the Content-Length of a multipart body.
    let (head, _) = command.request(addr)?.into_parts();
    let chunks = command.body_chunks();
    let request = http::Request::from_parts(head, ChunkBody::new(chunks));

    let response = sender
        .send_request(request)
        .await
        .map_err(|e| CommandError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => headers.push((name.as_str().to_string(), value)),
        }
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(length) = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limits.max_response_bytes as u64
    {
        return Err(CommandError::ResponseTooLarge {
            limit: limits.max_response_bytes,
        });
    }
    let mut body = response.into_body();
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CommandError::Http(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > limits.max_response_bytes {
                return Err(CommandError::ResponseTooLarge {
                    limit: limits.max_response_bytes,
                });
            }
            collected.extend_from_slice(&data);
        }
    }
    drop(driver);
    Ok(HttpReply {
        status,
        headers,
        content_type,
        body: collected.freeze(),
    })
}

/// A request body of known chunks with an exact size (so hyper sends a `Content-Length`, never
/// chunked encoding, and no body at all when there are no chunks).
struct ChunkBody {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl ChunkBody {
    fn new(chunks: Vec<Bytes>) -> Self {
        let chunks: std::collections::VecDeque<Bytes> =
            chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self { chunks, remaining }
    }
}

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let next = this.chunks.pop_front().map(|chunk| {
            this.remaining -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        });
        std::task::Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client TLS configuration, built once: ring provider, TLS 1.2+, no client certificate, and
/// [`AnyServerCert`] as the verifier.
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>, CommandError> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CommandError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert { provider }))
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// Accepts whatever certificate the runtime presents — each runtime makes its own self-signed one,
/// so there is nothing to verify it against — while still checking that the peer holds the key of
/// that certificate (handshake signatures are verified with the provider's algorithms).
///
/// This is acceptable only because the agent reaches runtimes over their internal bridge network
/// (`<name>_internal`, Docker `Internal: true`), which nothing else is attached to; never use it
/// for any other peer.
#[derive(Debug)]
struct AnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
