//! Pure decoding: raw rtnetlink bytes to this crate's types. No I/O, no panics on any input, so
//! fuzz targets can feed it arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage, State};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::types::{Ipv4Address, Ipv4Route, Link, NextHop, OperState};

/// `sizeof(struct nlmsghdr)`.
const HEADER_LEN: usize = 16;

/// A change the kernel announced (or, for [`Event::Resync`], the fact that some were lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `RTM_NEWLINK`: a link appeared or changed (state, flags, name, ...).
    LinkChanged(Link),
    /// `RTM_DELLINK`.
    LinkRemoved(Link),
    AddressAdded(Ipv4Address),
    AddressRemoved(Ipv4Address),
    /// `RTM_NEWROUTE` (any table; callers filter).
    RouteAdded(Ipv4Route),
    RouteRemoved(Ipv4Route),
    /// The receive queue overflowed (ENOBUFS): changes were lost, re-read everything from a dump.
    Resync,
}

impl Event {
    /// Interface indices whose reported state this event may change. Routes count only when they
    /// are main-table default routes (the gateway); other routes follow address changes anyway.
    pub fn interfaces(&self) -> Vec<u32> {
        match self {
            Event::LinkChanged(l) | Event::LinkRemoved(l) => vec![l.index],
            Event::AddressAdded(a) | Event::AddressRemoved(a) => vec![a.index],
            Event::RouteAdded(r) | Event::RouteRemoved(r) if r.is_main_default() => {
                let mut v: Vec<u32> = r.output_interfaces().collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            _ => Vec::new(),
        }
    }
}

/// What one netlink message in a datagram was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Event(Event),
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// `NLMSG_ERROR` with code 0.
    Ack,
    /// `NLMSG_ERROR` with a negative errno.
    Error(i32),
    /// Anything else (IPv6, neighbours, ...), skipped.
    Other,
}

/// One decoded netlink message and the sequence number it answers (0 for multicast events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub sequence: u32,
    pub body: Body,
}

/// Decodes every message of one datagram. Fails on the first malformed message (a datagram
/// from the kernel is either all good or something is badly wrong).
pub fn parse_datagram(bytes: &[u8]) -> Result<Vec<Frame>> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < HEADER_LEN {
            return Err(malformed(offset, format!("{} trailing bytes", rest.len())));
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if !(HEADER_LEN..=rest.len()).contains(&len) {
            return Err(malformed(
                offset,
                format!("length field {len} with {} bytes left", rest.len()),
            ));
        }
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
            .map_err(|e| malformed(offset, e.to_string()))?;
        frames.push(Frame {
            sequence: msg.header.sequence_number,
            body: body_of(msg.payload),
        });
        // Messages are 4-byte aligned; the last one's padding may be absent.
        offset += (len + 3) & !3;
    }
    Ok(frames)
}

fn malformed(offset: usize, reason: String) -> Error {
    Error::Malformed { offset, reason }
}

fn body_of(payload: NetlinkPayload<RouteNetlinkMessage>) -> Body {
    match payload {
        NetlinkPayload::Done(_) => Body::Done,
        NetlinkPayload::Error(e) => match e.code {
            None => Body::Ack,
            Some(code) => Body::Error(code.get()),
        },
        NetlinkPayload::InnerMessage(m) => event_of(m).map_or(Body::Other, Body::Event),
        _ => Body::Other,
    }
}

fn event_of(msg: RouteNetlinkMessage) -> Option<Event> {
    Some(match msg {
        RouteNetlinkMessage::NewLink(m) => Event::LinkChanged(link_of(m)),
        RouteNetlinkMessage::DelLink(m) => Event::LinkRemoved(link_of(m)),
        RouteNetlinkMessage::NewAddress(m) => Event::AddressAdded(address_of(m)?),
        RouteNetlinkMessage::DelAddress(m) => Event::AddressRemoved(address_of(m)?),
        RouteNetlinkMessage::NewRoute(m) => Event::RouteAdded(route_of(m)?),
        RouteNetlinkMessage::DelRoute(m) => Event::RouteRemoved(route_of(m)?),
        _ => return None,
    })
}

/// Converts a decoded link message.
pub fn link_of(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        oper_state: OperState::Unknown,
        flags: m.header.flags.bits(),
        mac: None,
        kind: None,
        alias: None,
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::OperState(s) => link.oper_state = oper_state_of(s),
            LinkAttribute::Address(a) => link.mac = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn oper_state_of(s: State) -> OperState {
    match s {
        State::Unknown => OperState::Unknown,
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        State::Other(v) => OperState::Other(v),
        // The enum is non-exhaustive; a future state is simply not "up".
        _ => OperState::Other(u8::MAX),
    }
}

/// Converts a decoded address message; `None` unless it is an IPv4 address.
pub fn address_of(m: AddressMessage) -> Option<Ipv4Address> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in m.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => local = Some(a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(a),
            _ => {}
        }
    }
    Some(Ipv4Address {
        index: m.header.index,
        // IFA_LOCAL is our own address; IFA_ADDRESS is the peer on point-to-point links.
        address: local.or(address)?,
        prefix_len: m.header.prefix_len,
    })
}

/// Converts a decoded route message; `None` unless it is an IPv4 route.
pub fn route_of(m: RouteMessage) -> Option<Ipv4Route> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut route = Ipv4Route {
        table: u32::from(m.header.table),
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_len: m.header.destination_prefix_length,
        oif: None,
        gateway: None,
        metric: None,
        multipath: Vec::new(),
    };
    for attr in m.attributes {
        match attr {
            // The header's table is 8 bits; RTA_TABLE holds the real id.
            RouteAttribute::Table(t) => route.table = t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => route.destination = d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(g),
            RouteAttribute::Oif(i) => route.oif = Some(i),
            RouteAttribute::Priority(p) => route.metric = Some(p),
            RouteAttribute::MultiPath(hops) => {
                route.multipath = hops
                    .into_iter()
                    .map(|h| NextHop {
                        oif: (h.interface_index != 0).then_some(h.interface_index),
                        gateway: h.attributes.into_iter().find_map(|a| match a {
                            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(g),
                            _ => None,
                        }),
                    })
                    .collect();
            }
            _ => {}
        }
    }
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator so the no-panic test needs no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn header(len: u32, kind: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&7u32.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    #[test]
    fn garbage_bytes_give_a_parse_error_not_a_panic() {
        let err = parse_datagram(b"\xff\xff\xff\xffgarbage garbage").unwrap_err();
        assert!(err.is_malformed(), "{err}");
        let err = parse_datagram(&[1, 2, 3]).unwrap_err();
        assert!(err.is_malformed(), "{err}");
        // A header claiming a link message with a body too short for ifinfomsg.
        let mut bytes = header(20, 16);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        assert!(parse_datagram(&bytes).unwrap_err().is_malformed());
    }

    #[test]
    fn empty_input_is_no_frames() {
        assert_eq!(parse_datagram(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn done_message_decodes() {
        let mut bytes = header(20, 3);
        bytes.extend_from_slice(&0i32.to_ne_bytes());
        let frames = parse_datagram(&bytes).unwrap();
        assert_eq!(
            frames,
            vec![Frame {
                sequence: 7,
                body: Body::Done
            }]
        );
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)] // random test bytes
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Valid-looking headers of every rtnetlink type we decode, followed by random bodies.
        for kind in [16u16, 17, 20, 21, 24, 25, 2, 3, 1] {
            for _ in 0..2000 {
                let body_len = (rng.next() % 200) as usize;
                let mut bytes = header((HEADER_LEN + body_len) as u32, kind);
                bytes.extend((0..body_len).map(|_| rng.next() as u8));
                let _ = parse_datagram(&bytes);
            }
        }
        for _ in 0..5000 {
            let len = (rng.next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = parse_datagram(&bytes);
        }
    }
}
