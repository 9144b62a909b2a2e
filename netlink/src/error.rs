//! The one error type of the `netlink` crate.

use std::io;

/// What went wrong talking to (or decoding what came from) the kernel's rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket call failed (`op` names it: "socket", "bind", "send", "recv", ...).
    #[error("netlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Bytes from the kernel (or a fuzzer) that are not a well-formed rtnetlink message.
    #[error("malformed netlink message at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    /// The kernel answered a request with an error code (negative errno).
    #[error("kernel refused the {request} request: {}", io::Error::from_raw_os_error(-*code))]
    Kernel { request: &'static str, code: i32 },
    /// A datagram did not fit the receive buffer; its content was cut off.
    #[error("netlink datagram of {len} bytes truncated by a {capacity}-byte buffer")]
    Truncated { len: usize, capacity: usize },
    /// A dump did not finish in time.
    #[error("netlink {request} dump timed out")]
    Timeout { request: &'static str },
}

impl Error {
    /// True when the input bytes were not valid netlink (as opposed to an I/O failure).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Error::Malformed { .. })
    }

    /// True when the receive queue overflowed (ENOBUFS) or a datagram was cut off: changes may
    /// have been lost and the consumer must resynchronise from a fresh dump.
    pub fn is_overrun(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOBUFS),
            Error::Truncated { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
