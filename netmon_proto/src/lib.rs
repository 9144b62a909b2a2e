//! The protocol on `<state-dir>/netmon.sock` between the `autonomy-netmon` sidecar and the agent
//! (spec upstream-head §4): one JSON object per `\n`-terminated line, both directions on one
//! connection.
//!
//! - netmon → agent: events, which carry a top-level `type` ([`Event`]: `network_discovery` on
//!   every new connection, `network_change` per interface), and responses, which never do
//!   ([`Response`], one per command, in command order). [`decode_message`] tells them apart;
//!   [`discovery_line`] and [`change_line`] write events.
//! - agent → netmon: commands, a line with a `command` key ([`Request`], [`Command`]);
//!   [`request_line`] writes one, [`decode_request`] reads one and says what to answer when it
//!   cannot, [`response_line`] writes the answer.
//!
//! Also the formats both programs share: the one timestamp format of the project
//! ([`format_timestamp`]) and the duration syntax of their flags ([`parse_duration`]).
//!
//! Pure data and functions: no I/O, no sockets, no netlink. Field names and shapes are the
//! original's (the Python netmon and agent may be on the other end); unknown keys are ignored so
//! either side can evolve.

mod command;
mod dhcp;
mod duration;
mod event;
mod interface;
mod line;
mod serial;
mod time;

pub use command::{
    Command, Pid, Request, RequestError, Response, decode_request, valid_interface_name,
};
pub use dhcp::{DhcpUpdate, dhcp_update_line};
pub use duration::parse_duration;
pub use event::{DecodeError, Event, Message, decode_message};
pub use interface::{InterfaceInfo, InterfaceStatus, InterfaceType, Ipv4Entry};
pub use line::{MAX_LINE, change_line, discovery_line, request_line, response_line};
pub use serial::{DeviceAction, SerialDevice, device_change_line, device_discovery_line};
pub use time::{format_timestamp, timestamp_now};
