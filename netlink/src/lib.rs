//! rtnetlink snapshot and event stream, and the host interface model the netmon sidecar reports.
//!
//! Built directly on netlink-sys and netlink-packet-route. Layers: `parse` (pure bytes → types,
//! never panics), `socket` (dumps and the multicast subscription), `model` (the reported
//! interface shape and the port filter). This crate must never know about Unix sockets, JSON
//! lines or debouncing: that is the sidecar's business.

mod error;
mod model;
mod parse;
mod socket;
mod types;

pub use error::{Error, Result};
pub use model::{
    Filter, InterfaceInfo, Ipv4Entry, Status, discover, format_timestamp, interface_info,
    timestamp_now,
};
pub use parse::{Body, Event, Frame, parse_datagram};
pub use socket::{EventStream, RouteSocket};
pub use types::{
    IFF_LOOPBACK, IFF_LOWER_UP, IFF_RUNNING, IFF_UP, Ipv4Address, Ipv4Route, Link, MAIN_TABLE,
    NextHop, OperState, Snapshot,
};
