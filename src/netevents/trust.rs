//! Who may serve the netmon socket: whoever can write the shared volume could bind `netmon.sock`,
//! and netmon's events move PLCs between networks, so a socket served by a process the agent does
//! not trust is never read.

use tokio::net::UnixStream;

/// Who may serve the netmon socket: root, the agent's own uid (a process of that uid can already
/// do anything the agent can), and one configured uid (`--netmon-uid`, for a netmon that runs
/// unprivileged). Judged by `SO_PEERCRED` of the connected socket: the uid of the process that
/// created the listening socket, which a client cannot forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedPeers {
    own: u32,
    extra: Option<u32>,
}

impl Default for TrustedPeers {
    /// Root and the agent's own uid.
    fn default() -> Self {
        Self::new(None)
    }
}

impl TrustedPeers {
    /// Root, the agent's own effective uid, and `extra` when given.
    pub fn new(extra: Option<u32>) -> Self {
        Self {
            own: nix::unistd::geteuid().as_raw(),
            extra,
        }
    }

    /// Whether a socket served by `uid` is trusted.
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own || Some(uid) == self.extra
    }

    /// `root, uid 1000 (the agent's), uid 998 (--netmon-uid)`, for the refusal message.
    fn describe(&self) -> String {
        let mut out = "root".to_owned();
        if self.own != 0 {
            out.push_str(&format!(", uid {} (the agent's)", self.own));
        }
        if let Some(uid) = self.extra.filter(|u| *u != 0 && *u != self.own) {
            out.push_str(&format!(", uid {uid} (--netmon-uid)"));
        }
        out
    }
}

/// Why a connected netmon socket is not read: who serves it, or that nobody could tell.
pub(super) fn untrusted_peer(stream: &UnixStream, trusted: &TrustedPeers) -> Option<String> {
    match stream.peer_cred() {
        Ok(cred) if trusted.allows(cred.uid()) => None,
        Ok(cred) => Some(format!(
            "refusing the network monitor socket: it is served by uid {}{}, which is not trusted \
             (trusted: {}; see --netmon-uid); none of its events are used",
            cred.uid(),
            cred.pid()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default(),
            trusted.describe()
        )),
        Err(e) => Some(format!(
            "refusing the network monitor socket: cannot tell who serves it ({e})"
        )),
    }
}
