//! Writes to the IPv4 configuration of the calling thread's network namespace: add and delete an
//! address, add or replace and delete a default route; plus the blocking dumps a writer needs
//! (links, addresses, routes). For the DHCP client, which runs on a thread that entered a
//! container's namespace (`setns`) and must not depend on a tokio runtime there.
//!
//! Blocking: rtnetlink answers a request during the `sendmsg` call itself, so the `recv` that
//! follows returns at once; no timeout is needed. Every write asks for an ACK (`NLM_F_ACK`) and a
//! refusal comes back as [`Error::Kernel`] with the errno. Knows nothing of DHCP.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::parse::{Body, Event, parse_datagram};
use crate::types::{Ipv4Address, Ipv4Route, Link, MAIN_TABLE};

/// Receive buffer: one dump datagram is at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// A blocking rtnetlink socket in the namespace of the thread that opened it (a socket stays in
/// the namespace it was created in, whatever the thread does later).
pub struct ConfigSocket {
    sock: Socket,
    buf: Vec<u8>,
    sequence: u32,
}

impl ConfigSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("socket", e))?;
        sock.bind_auto().map_err(|e| Error::io("bind", e))?;
        Ok(Self {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
            sequence: 0,
        })
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
        Ok(self
            .request("link dump", msg, NLM_F_DUMP)?
            .into_iter()
            .filter_map(|e| match e {
                Event::LinkChanged(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Every IPv4 address.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<Ipv4Address>> {
        let mut am = AddressMessage::default();
        am.header.family = AddressFamily::Inet;
        Ok(self
            .request(
                "address dump",
                RouteNetlinkMessage::GetAddress(am),
                NLM_F_DUMP,
            )?
            .into_iter()
            .filter_map(|e| match e {
                Event::AddressAdded(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// The main table's IPv4 routes.
    pub fn ipv4_routes(&mut self) -> Result<Vec<Ipv4Route>> {
        let mut rm = RouteMessage::default();
        rm.header.address_family = AddressFamily::Inet;
        Ok(self
            .request("route dump", RouteNetlinkMessage::GetRoute(rm), NLM_F_DUMP)?
            .into_iter()
            .filter_map(|e| match e {
                Event::RouteAdded(r) if r.table == MAIN_TABLE => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Puts `address/prefix_len` (with its broadcast address) on interface `index`; an address
    /// already there is refreshed, not duplicated (`NLM_F_REPLACE`). The kernel adds the
    /// connected route of the subnet.
    pub fn add_ipv4_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<()> {
        let msg = RouteNetlinkMessage::NewAddress(address_message(index, address, prefix_len));
        self.request("add address", msg, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK)
            .map(drop)
    }

    /// Removes `address/prefix_len` from interface `index` (and with it the routes that use it).
    /// `EADDRNOTAVAIL` when it is not there ([`Error::is_not_found`]).
    pub fn del_ipv4_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<()> {
        let msg = RouteNetlinkMessage::DelAddress(address_message(index, address, prefix_len));
        self.request("delete address", msg, NLM_F_ACK).map(drop)
    }

    /// Adds the main-table default route `via gateway dev index metric metric`, replacing one
    /// with the same metric (`ip route replace default via ... metric ...`).
    pub fn replace_default_route(
        &mut self,
        index: u32,
        gateway: Ipv4Addr,
        metric: u32,
    ) -> Result<()> {
        let msg = RouteNetlinkMessage::NewRoute(default_route(index, gateway, metric));
        self.request(
            "add default route",
            msg,
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes the main-table default route `via gateway dev index metric metric`. `ESRCH` when
    /// it is not there ([`Error::is_not_found`]).
    pub fn del_default_route(&mut self, index: u32, gateway: Ipv4Addr, metric: u32) -> Result<()> {
        let mut msg = default_route(index, gateway, metric);
        // Any protocol: match what is there.
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
        let msg = RouteNetlinkMessage::DelRoute(msg);
        self.request("delete default route", msg, NLM_F_ACK)
            .map(drop)
    }

    /// Sends one request and collects the events of its answer, until `NLMSG_DONE` (dumps) or the
    /// ACK (writes).
    pub(crate) fn request(
        &mut self,
        request: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<Event>> {
        self.sequence = self.sequence.wrapping_add(1);
        let seq = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock
            .send_to(&out, &SocketAddr::new(0, 0), 0)
            .map_err(|e| Error::io("send", e))?;
        let mut events = Vec::new();
        loop {
            self.buf.clear();
            let len = self
                .sock
                .recv(&mut self.buf, 0)
                .map_err(|e| Error::io("recv", e))?;
            if len >= self.buf.capacity() {
                return Err(Error::Truncated {
                    len,
                    capacity: self.buf.capacity(),
                });
            }
            for frame in parse_datagram(&self.buf)? {
                if frame.sequence != seq {
                    continue;
                }
                match frame.body {
                    Body::Event(e) => events.push(e),
                    Body::Done | Body::Ack => return Ok(events),
                    Body::Error(code) => return Err(Error::Kernel { request, code }),
                    Body::Other => {}
                }
            }
        }
    }
}

fn address_message(index: u32, address: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix_len;
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    m.attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    m.attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    if prefix_len < 31 {
        let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(address) | host_bits);
        m.attributes.push(AddressAttribute::Broadcast(broadcast));
    }
    m
}

fn default_route(index: u32, gateway: Ipv4Addr, metric: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 0;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Dhcp;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    m.attributes.push(RouteAttribute::Oif(index));
    m.attributes.push(RouteAttribute::Priority(metric));
    m
}

impl Error {
    /// True when a delete found nothing to delete (`EADDRNOTAVAIL` for an address, `ESRCH` for a
    /// route, `ENOENT` for a neighbour): the state the caller wanted is already there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kernel { code, .. }
            if -*code == libc::EADDRNOTAVAIL || -*code == libc::ESRCH || -*code == libc::ENOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_message_carries_local_address_and_broadcast() {
        let m = address_message(7, Ipv4Addr::new(10, 213, 0, 50), 24);
        assert_eq!((m.header.index, m.header.prefix_len), (7, 24));
        assert!(
            m.attributes
                .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 213, 0, 255)))
        );
        assert!(
            m.attributes
                .contains(&AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
                    10, 213, 0, 50
                ))))
        );
        // No broadcast on point-to-point sized subnets.
        let p2p = address_message(7, Ipv4Addr::new(10, 213, 0, 50), 31);
        assert!(
            !p2p.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Broadcast(_)))
        );
        let host = address_message(7, Ipv4Addr::new(10, 213, 0, 50), 32);
        assert_eq!(host.attributes.len(), 2);
    }

    #[test]
    fn a_default_route_is_main_table_via_the_gateway_with_the_metric() {
        let m = default_route(3, Ipv4Addr::new(10, 213, 0, 1), 100);
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(m.attributes.contains(&RouteAttribute::Priority(100)));
        assert!(m.attributes.contains(&RouteAttribute::Oif(3)));
    }
}
