//! `devcloud`: a development cloud for the orchestrator agent.
//!
//! An independent Socket.IO v5 / Engine.IO v4 server (socketioxide) on namespace `/`, path
//! `/socket.io/`, served over mutual TLS (rustls, ring). It makes its own PKI ([`pki`]), prints and
//! publishes what agents send ([`DevCloud::subscribe`]) and lets a person or a test send any topic
//! with JSON arguments to a connected agent and see the ack ([`DevCloud::emit_with_ack`]).
//!
//! It is a development and test tool, never part of the agent image. It knows nothing of the agent's
//! topics: it moves events and acks.
//!
//! ```no_run
//! # async fn demo() -> devcloud::Result<()> {
//! use std::time::Duration;
//! let pki = devcloud::pki::generate("/tmp/devcloud".as_ref(), &Default::default())?;
//! let cloud = devcloud::DevCloud::start(devcloud::ServerConfig::from_pki(
//!     &pki,
//!     "127.0.0.1:0".parse().expect("literal address"),
//! ))
//! .await?;
//! let cn = cloud.wait_for_agent(None, Duration::from_secs(30)).await?;
//! let ack = cloud
//!     .emit_with_ack(Some(&cn), "get_device_status", vec![serde_json::json!({"correlation_id": 1})],
//!         Duration::from_secs(10))
//!     .await?;
//! println!("{ack:?}");
//! cloud.shutdown().await;
//! # Ok(()) }
//! ```

pub mod console;
mod error;
mod gate;
pub mod http_api;
pub mod pki;
mod server;
mod wire;

pub use error::{Error, Result};
pub use server::{AgentEvent, CloudEvent, DevCloud, ServerConfig};
