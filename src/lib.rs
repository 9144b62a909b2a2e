//! orchestrator-agent: the edge agent that keeps a mutual-TLS Socket.IO link to the cloud and runs
//! OpenPLC runtime containers on the local Docker engine as the cloud commands.
//!
//! The binary (`src/main.rs`) only parses the command line and wires these modules together.
//! One module per concern:
//! - [`config`]: command line and environment (spec §3);
//! - [`logging`]: tracing set-up, console and rotated log files;
//! - [`health`]: the liveness socket and the `health` probe of the container image;
//! - [`telemetry`]: local Prometheus metrics and the readiness check (`--metrics-listen`, off by
//!   default), and the command counters behind them;
//! - [`certs`]: the client certificate's lifecycle: inspection, checks before use, expiry;
//! - [`doctor`]: `doctor` and `certs status`, the troubleshooting guide's checks by id;
//! - [`cloud`]: the cloud link over a mutual-TLS WebSocket: identity, session, reconnect;
//! - [`sio`]: the one Engine.IO v4 / Socket.IO v5 client (codec, open, namespace connect, a
//!   namespace session), used by the cloud link and the runtime debugger bridge;
//! - [`topics`]: one small type per cloud topic (its contract, typed request and answer), the
//!   dispatch table and the heartbeat; the generic message checker is [`topics::contract`];
//! - [`metrics`]: host CPU, memory, disk and static system info from /proc and statvfs;
//! - [`host`]: the host sampler, a 5 s background task independent of the link;
//! - [`usage`]: the two-tier 48 h usage history and the period syntax of `get_consumption_*`;
//! - [`runtime`]: runtime (vPLC) orchestration on the Docker engine;
//! - [`netevents`]: client of the `autonomy-netmon` socket and the host interface cache;
//! - [`state`]: atomic, serialized persistence of the state files under the state dir;
//! - `attachments`: upload files decoded on arrival by the link, taken by the command;
//! - [`timefmt`]: ISO 8601 / RFC 3339 parsing and formatting shared by the modules above.

pub(crate) mod attachments;
pub mod bundle;
pub mod certs;
pub mod cloud;
pub mod config;
pub mod doctor;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod netevents;
pub mod runtime;
pub mod sio;
pub mod state;
pub mod telemetry;
pub mod timefmt;
pub mod topics;
pub mod usage;
