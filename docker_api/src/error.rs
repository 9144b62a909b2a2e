//! The crate's one error type. Callers branch on the predicates (`is_not_found()`, `is_conflict()`, …),
//! never on message text; the text is for operators.

use std::path::PathBuf;
use std::time::Duration;

use crate::version::ApiVersion;

/// Boxed source error of the transport layer (hyper, hyper-util, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the Docker engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `DOCKER_HOST` (or an explicit host string) is not a `unix://` socket.
    #[error("unsupported Docker host {host:?}: only unix:///path/to/docker.sock is supported")]
    InvalidHost {
        /// The host string as given.
        host: String,
    },

    /// A caller-supplied argument cannot be sent (bad characters, a shape the negotiated API
    /// version cannot express, …). Nothing was sent to the engine.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The request has a shape the negotiated API version cannot honour (a MAC the engine would
    /// silently ignore, a field it no longer accepts); nothing was sent. Branch with
    /// [`Error::is_unsupported`]; the [`ApiVersion`] predicates say beforehand what is possible.
    #[error("{what} (engine API {negotiated})")]
    Unsupported {
        /// What cannot be done, and from/until which version it can.
        what: String,
        /// The version in use.
        negotiated: ApiVersion,
    },

    /// The engine's socket could not be reached (no socket, refused, connect timed out).
    #[error("cannot reach the Docker engine at {}: {source}", socket.display())]
    Unreachable {
        /// The socket path tried.
        socket: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// The connection broke while a request or response was in flight.
    #[error("transport error during {what}: {source}")]
    Transport {
        /// The request (`METHOD /path`).
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },

    /// The engine did not answer (headers or body) within the configured time.
    #[error("Docker engine did not answer {what} within {after:?}")]
    Timeout {
        /// The request (`METHOD /path`).
        what: String,
        /// The limit that expired.
        after: Duration,
    },

    /// The engine is older than this client supports.
    #[error(
        "Docker engine speaks API {server}, older than the minimum {minimum} this agent supports"
    )]
    EngineTooOld {
        /// The engine's maximum API version (`Api-Version` of `/_ping`).
        server: ApiVersion,
        /// Our minimum.
        minimum: ApiVersion,
    },

    /// The engine answered with an HTTP error status. `message` is the engine's `message` field
    /// (or the raw body when it is not the usual JSON).
    #[error("Docker engine refused {what}: HTTP {status}: {message}")]
    Api {
        /// The request (`METHOD /path`).
        what: String,
        /// HTTP status code.
        status: u16,
        /// The engine's `message`.
        message: String,
    },

    /// An image pull reported an error inside its (HTTP 200) progress stream.
    #[error("pulling {image} failed: {message}")]
    PullFailed {
        /// The reference pulled (`repo:tag`).
        image: String,
        /// The engine's `errorDetail.message` (or legacy `error`).
        message: String,
    },

    /// An image pull made no progress (no message from the engine) for the stall time.
    #[error("pulling {image} made no progress for {after:?}; aborted")]
    PullStalled {
        /// The reference pulled (`repo:tag`).
        image: String,
        /// The stall limit.
        after: Duration,
    },

    /// The engine's answer could not be decoded.
    #[error("cannot decode the engine's answer to {what}: {reason}")]
    Decode {
        /// The request (`METHOD /path`).
        what: String,
        /// Why.
        reason: String,
    },
}

/// Message fragments with which pre-1.44 engines answer invalid IPAM input with HTTP 500.
const INVALID_INPUT_500: &[&str] = &[
    "invalid subnet",
    "invalid cidr",
    "invalid gateway",
    "invalid ip range",
    "invalid pool",
    "requested address is out of range",
];

impl Error {
    /// The HTTP status of an engine error answer, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The engine's `message`, if this is an engine error answer.
    pub fn engine_message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// 404: no such container, network or image.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 409, or an engine message saying the object "already exists" (network names on some versions
    /// answer 400/403/500 with that text).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409) || self.message_contains("already exists")
    }

    /// A name matched several objects ("network x is ambiguous (2 matches found on name)"): Docker's
    /// duplicate-name check is not atomic, so two creates of one network name that overlap in the
    /// engine can both succeed.
    pub fn is_ambiguous(&self) -> bool {
        self.message_contains("ambiguous")
    }

    /// The requested address pool overlaps an existing network's ("Pool overlaps with other one on
    /// this address space", "... overlaps with ...").
    pub fn is_pool_overlap(&self) -> bool {
        self.message_contains("overlaps")
    }

    /// The engine rejected the request as invalid: HTTP 400 (invalid IPAM, bad parameter,
    /// unsupported API version), or — engines before API 1.44 answer invalid IPAM with 500 — a 500
    /// whose message names an invalid subnet, gateway, range or address.
    pub fn is_bad_request(&self) -> bool {
        match self {
            Error::Api { status: 400, .. } => true,
            Error::Api {
                status: 500,
                message,
                ..
            } => {
                let m = message.to_ascii_lowercase();
                INVALID_INPUT_500.iter().any(|p| m.contains(p))
            }
            _ => false,
        }
    }

    /// 304: the container already was in the requested state. `start_container`/`stop_container`
    /// already map this to success; it only surfaces from lower-level use.
    pub fn is_not_modified(&self) -> bool {
        self.status() == Some(304)
    }

    /// The engine could not be reached or the connection broke: retrying later may help.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Transport { .. })
    }

    /// The engine's socket could not be reached at all (engine down, wrong path).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// A timeout: the engine did not answer in time, or a pull stalled.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::PullStalled { .. })
    }

    /// An image pull failed, inside its stream or by stalling.
    pub fn is_pull_failure(&self) -> bool {
        matches!(self, Error::PullFailed { .. } | Error::PullStalled { .. })
    }

    /// The request needs a newer API than the one negotiated (nothing was sent).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    /// The engine speaks an API version below our minimum.
    pub fn is_engine_too_old(&self) -> bool {
        matches!(self, Error::EngineTooOld { .. })
    }

    fn message_contains(&self, needle: &str) -> bool {
        match self {
            Error::Api { message, .. } | Error::PullFailed { message, .. } => {
                message.contains(needle)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> Error {
        Error::Api {
            what: "POST /x".into(),
            status,
            message: message.into(),
        }
    }

    #[test]
    fn predicates_follow_status_and_engine_message() {
        assert!(api(404, "No such container: x").is_not_found());
        assert!(api(409, "Conflict. The container name is in use").is_conflict());
        assert!(api(500, "network with name n already exists").is_conflict());
        assert!(api(403, "Pool overlaps with other one on this address space").is_pool_overlap());
        assert!(api(400, "invalid pool request").is_bad_request());
        assert!(api(500, "Invalid subnet x : invalid CIDR address: x").is_bad_request());
        assert!(!api(500, "driver failed programming external connectivity").is_bad_request());
        assert!(api(304, "").is_not_modified());
        assert!(
            api(
                400,
                "network n_internal is ambiguous (2 matches found on name)"
            )
            .is_ambiguous()
        );
        assert!(!api(404, "network n not found").is_ambiguous());
        assert!(!api(500, "boom").is_transport());
        let e = Error::Unreachable {
            socket: "/nope".into(),
            source: "refused".into(),
        };
        assert!(e.is_transport() && e.is_unreachable() && !e.is_not_found());
        assert_eq!(api(418, "teapot").status(), Some(418));
    }
}
