//! A one-off check that the cloud accepts this device: TCP, the mutual-TLS handshake with the
//! client certificate, the WebSocket upgrade and the Engine.IO open, then a close. For `doctor`.
//!
//! It stops before the Socket.IO namespace connect, so the cloud never sees a second session of
//! this agent id (a running agent on the same device keeps its own), and it runs no topic.

use std::time::Duration;

use super::credentials::Credentials;
use super::tls::Endpoint;
use super::{Error, LinkConfig, connect};

/// What a successful probe saw.
#[derive(Debug, Clone)]
pub struct ProbeOk {
    /// The agent id (certificate CN) the cloud accepted.
    pub agent_id: String,
    /// The Engine.IO ping cadence the server announced.
    pub ping_interval: Duration,
}

/// Connects once as the link would and closes again; the error is the link's own, so it says what
/// to fix (our certificate, the server's, the network, the URL).
pub async fn probe(config: &LinkConfig) -> Result<ProbeOk, Error> {
    let endpoint = Endpoint::parse(&config.server)?;
    let current = Credentials::new(config).current().await?;
    let (mut ws, open, _resumed) =
        connect::open(&endpoint, &current.identity, current.config).await?;
    // Best effort: the server drops the half-open session after its ping timeout anyway.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(ProbeOk {
        agent_id: current.identity.agent_id.clone(),
        ping_interval: Duration::from_millis(open.ping_interval_ms),
    })
}
