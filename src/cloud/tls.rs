//! The server endpoint (URL building) and the rustls client configuration (ring provider, TLS ≥ 1.2,
//! web roots plus `--ca-file`, client certificate), and the classification of TLS failures into
//! lines an operator can act on.
//!
//! Pure where it can be: [`Endpoint::parse`] and [`classify_tls`] do no I/O.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::Error;
use super::identity::Identity;

/// Where the link connects: host, port and the Engine.IO WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets): the TLS server name.
    pub host: String,
    pub port: u16,
    /// `wss://<authority>/socket.io/?EIO=4&transport=websocket`
    pub ws_url: String,
}

impl Endpoint {
    /// Builds the endpoint from `--server`. Only `https://` (or `wss://`) is accepted: the link
    /// needs mutual TLS, so a plain `http://` server could never identify the agent. The URL may
    /// carry a port; a path other than `/`, a query, or user info is refused rather than ignored.
    pub fn parse(server: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadServerUrl {
            url: server.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = server
            .trim()
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("https") | Some("wss") => {}
            Some("http") | Some("ws") => {
                return Err(bad(
                    "plain http is refused: the cloud link needs mutual TLS, use https://",
                ));
            }
            Some(other) => return Err(bad(&format!("unsupported scheme {other:?}, use https://"))),
            None => return Err(bad("missing scheme, use https://host[:port]")),
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed in the server URL"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "the server URL must not have a path or query (the link uses /socket.io/)",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = authority.port_u16().unwrap_or(443);
        let ws_url = format!(
            "wss://{}/socket.io/?EIO=4&transport=websocket",
            authority.as_str()
        );
        Ok(Self { host, port, ws_url })
    }

    /// The TLS server name: an IP address (checked against IP SANs) or a DNS name.
    pub fn server_name(&self) -> Result<ServerName<'static>, Error> {
        ServerName::try_from(self.host.clone()).map_err(|e| Error::BadServerUrl {
            url: self.host.clone(),
            reason: format!("not a valid TLS server name: {e}"),
        })
    }
}

/// The rustls configuration for one connection attempt.
pub fn client_config(
    identity: &Identity,
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for ca in extra_roots {
        roots.add(ca.clone()).map_err(|e| {
            Error::Tls(format!(
                "a --ca-file certificate cannot be a trust anchor: {e}"
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            Error::Tls(format!(
                "the client certificate and key do not form a usable identity: {e}"
            ))
        })?;
    Ok(Arc::new(config))
}

/// What a TLS failure means for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted root (web roots or `--ca-file`).
    ServerUntrusted,
    /// The server's certificate is not valid for the host name (or IP) we connected to.
    HostnameMismatch,
    /// The server's certificate is expired or not yet valid (often a wrong clock on the device).
    ServerCertTime,
    /// The server refused our client certificate.
    ClientCertRefused,
    /// Anything else.
    Other,
}

/// Classifies an I/O error from the TLS handshake or from the first read after it (under TLS 1.3
/// the server's verdict on the client certificate arrives only with the first read, i.e. at the
/// WebSocket upgrade).
pub fn classify_tls(err: &std::io::Error, after_handshake: bool) -> TlsFailure {
    if let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidCertificate(ce) => match ce {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::ServerUntrusted
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::HostnameMismatch,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsFailure::ServerCertTime,
                _ => TlsFailure::Other,
            },
            rustls::Error::AlertReceived(alert) => match alert {
                AlertDescription::CertificateRequired
                | AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied => TlsFailure::ClientCertRefused,
                AlertDescription::HandshakeFailure if after_handshake => {
                    TlsFailure::ClientCertRefused
                }
                _ => TlsFailure::Other,
            },
            _ => TlsFailure::Other,
        };
    }
    // A server that closes right after a successful handshake, without a word (Python's ssl
    // module does that under TLS 1.3), refused our certificate.
    if after_handshake
        && matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        )
    {
        return TlsFailure::ClientCertRefused;
    }
    TlsFailure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_become_engine_io_websocket_urls_keeping_the_port() {
        let e = Endpoint::parse("https://api.getedge.me").expect("url");
        assert_eq!(e.host, "api.getedge.me");
        assert_eq!(e.port, 443);
        assert_eq!(
            e.ws_url,
            "wss://api.getedge.me/socket.io/?EIO=4&transport=websocket"
        );
        let e = Endpoint::parse("https://localhost:8443/").expect("url");
        assert_eq!((e.host.as_str(), e.port), ("localhost", 8443));
        assert_eq!(
            e.ws_url,
            "wss://localhost:8443/socket.io/?EIO=4&transport=websocket"
        );
        let e = Endpoint::parse("wss://127.0.0.1:9").expect("url");
        assert_eq!(e.host, "127.0.0.1");
        assert!(matches!(e.server_name(), Ok(ServerName::IpAddress(_))));
        let e = Endpoint::parse("https://[::1]:4443").expect("url");
        assert_eq!(e.host, "::1");
        assert_eq!(
            e.ws_url,
            "wss://[::1]:4443/socket.io/?EIO=4&transport=websocket"
        );
        assert!(matches!(e.server_name(), Ok(ServerName::IpAddress(_))));
        let e = Endpoint::parse("https://Example.com").expect("url");
        assert!(matches!(e.server_name(), Ok(ServerName::DnsName(_))));
    }

    #[test]
    fn plain_http_and_odd_urls_are_refused_with_a_reason() {
        for (url, why) in [
            ("http://api.getedge.me", "plain http"),
            ("ws://x", "plain http"),
            ("ftp://x", "unsupported scheme"),
            ("api.getedge.me", "missing scheme"),
            ("https://x/some/path", "path"),
            ("https://x/?a=b", "query"),
            ("https://user:pw@x", "user info"),
            ("", ""),
        ] {
            let err = Endpoint::parse(url).expect_err(url);
            assert!(err.to_string().contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn tls_errors_are_classified() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            classify_tls(
                &io(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                )),
                false
            ),
            TlsFailure::ServerUntrusted
        );
        assert_eq!(
            classify_tls(
                &io(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                )),
                false
            ),
            TlsFailure::HostnameMismatch
        );
        assert_eq!(
            classify_tls(
                &io(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                true
            ),
            TlsFailure::ClientCertRefused
        );
        assert_eq!(
            classify_tls(
                &io(rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired
                )),
                true
            ),
            TlsFailure::ClientCertRefused
        );
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed");
        assert_eq!(classify_tls(&eof, true), TlsFailure::ClientCertRefused);
        assert_eq!(classify_tls(&eof, false), TlsFailure::Other);
    }
}
