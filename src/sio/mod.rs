//! The project's one Engine.IO v4 / Socket.IO v5 client, over a WebSocket on any byte stream (TLS or
//! plain TCP). Two users: the cloud link (`crate::cloud`, namespace `/`, mutual TLS, its own
//! reader and writer with per-topic limits and dispatch) and the runtime debugger bridge
//! (`crate::runtime::debug`, namespace `/api/debug` with a token, a [`Client`] session).
//!
//! Owns: the wire codec ([`packet`], pure), reading the Engine.IO open packet ([`read_open`]), the
//! namespace connect with its auth payload, answering pings meanwhile and keeping the events of
//! that namespace that arrive before the CONNECT reply ([`join_namespace`]; python-socketio
//! servers send events emitted in their connect handler first), and a namespace session
//! ([`Client`], [`connect`]): one task owning the WebSocket that answers pings, enforces the
//! pingInterval + pingTimeout deadline from the open packet, delivers the namespace's events in
//! order and says goodbye (`41<nsp>,`) on close.
//!
//! Must never: know topics, TLS identities, URLs of a particular peer or reconnect policy (those
//! are its users'); block without a timeout.

mod client;
pub mod packet;

pub use client::{
    Client, ConnectError, Event, Incoming, JoinError, Joined, OpenError, SendError, connect,
    join_namespace, read_open, send_text,
};
