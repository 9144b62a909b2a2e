//! The crate's one error type. Callers branch on the predicates, never on message text.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in devcloud.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file (certificates, keys) failed.
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
    /// A PEM file or certificate could not be read or did not hold what it should.
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    /// rcgen refused to make a key or a certificate.
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    /// The TLS server configuration could not be built (bad key, bad client CA).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    /// No agent is connected (and none was named).
    #[error("no agent is connected")]
    NoAgent,
    /// The named agent (client certificate CN) is not connected.
    #[error("agent {0:?} is not connected")]
    AgentNotConnected(String),
    /// The agent did not acknowledge in time.
    #[error("the agent did not acknowledge within {0:?}")]
    AckTimeout(Duration),
    /// The message could not be sent, or the ack could not be received or decoded.
    #[error("sending to the agent failed: {0}")]
    Send(String),
    /// A console line or HTTP request was not understood.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl Error {
    /// The agent is not there (none connected, or not the one named).
    pub fn is_not_connected(&self) -> bool {
        matches!(self, Error::NoAgent | Error::AgentNotConnected(_))
    }

    /// The agent was there but did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::AckTimeout(_))
    }

    /// The caller's input was wrong (console line, HTTP request).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Error::BadRequest(_))
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::File {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_pem(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadPem {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result with devcloud's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
