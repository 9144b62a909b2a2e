//! rtnetlink: a snapshot of the host's links, IPv4 addresses and routes, and the event stream.
//!
//! Built directly on netlink-sys and netlink-packet-route. Layers: `parse` (pure bytes → types,
//! never panics), `socket` (dumps and the multicast subscription), `types` (the model: links,
//! addresses, routes, the gateway of an interface). This crate must never know about Unix
//! sockets, JSON lines, which interfaces are reported or debouncing: that is the sidecar's
//! business (and the wire shape `netmon_proto`'s).

mod addr_ops;
mod bridge_ops;
mod error;
mod link_ops;
mod parse;
mod socket;
mod types;

pub use addr_ops::ConfigSocket;
pub use error::{Error, Result};
pub use link_ops::{LinkOps, in_netns, open_netns};
pub use parse::{Body, Event, Frame, parse_datagram};
pub use socket::{EventStream, RouteSocket};
pub use types::{
    IFF_LOOPBACK, IFF_LOWER_UP, IFF_RUNNING, IFF_UP, Ipv4Address, Ipv4Route, Link, MAIN_TABLE,
    NextHop, OperState, Snapshot,
};
