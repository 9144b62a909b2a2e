//! Writes a routed veth "bridge" needs (a proxy-ARP bridge for a Wi-Fi vNIC): create a veth pair,
//! rename a link, label it (`IFLA_IFALIAS`), delete it, switch on IPv4 forwarding and proxy ARP on
//! one link, add and delete a host route (`<ip>/32 dev <link>`) and a proxy neighbour entry
//! (`ip neighbour add proxy <ip> dev <link>`). All rtnetlink, on [`ConfigSocket`] (blocking, in the
//! namespace of the thread that opened it): no `ip`, no `sysctl`. Knows nothing of containers.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr_ops::ConfigSocket;
use crate::error::{Error, Result};

impl ConfigSocket {
    /// Creates the veth pair `name`/`peer` (both down). `EEXIST` when either name is taken
    /// ([`Error::is_exists`]).
    pub fn add_veth(&mut self, name: &str, peer: &str) -> Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            "create veth",
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Renames link `index` (it must be down).
    pub fn rename_link(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.request("rename link", RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets the alias of link `index` (`ip link set … alias …`; at most 255 bytes).
    pub fn set_link_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_owned()));
        self.request(
            "set link alias",
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes link `index` (for a veth, both ends, wherever the peer is). `ENODEV` when it is
    /// gone ([`Error::is_no_device`]).
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request("delete link", RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets `net.ipv4.conf.<link>.forwarding` to 1 on link `index`, and `….proxy_arp` too when
    /// `proxy_arp`, through `IFLA_AF_SPEC`/`IFLA_INET_CONF` rather than `/proc/sys` (read-only
    /// in a container). Only these are sent: the link's other settings are untouched (which is
    /// also why this cannot switch anything off).
    pub fn enable_ipv4_forwarding(&mut self, index: u32, proxy_arp: bool) -> Result<()> {
        let mut conf = InetDevConf::default();
        conf.forwarding = 1;
        conf.proxy_arp = i32::from(proxy_arp);
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.request(
            "set ipv4 devconf",
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Adds (or replaces) the main-table route `<destination>/32 dev <index>` (`ip route replace
    /// <ip>/32 dev <link>`: scope link, protocol boot). The link must be up (`ENETDOWN`).
    pub fn replace_host_route(&mut self, destination: Ipv4Addr, index: u32) -> Result<()> {
        let msg = RouteNetlinkMessage::NewRoute(host_route(destination, index));
        self.request(
            "add host route",
            msg,
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes the main-table route `<destination>/32 dev <index>`, whatever its protocol.
    /// `ESRCH` when it is not there ([`Error::is_not_found`]).
    pub fn del_host_route(&mut self, destination: Ipv4Addr, index: u32) -> Result<()> {
        let mut msg = host_route(destination, index);
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
        self.request(
            "delete host route",
            RouteNetlinkMessage::DelRoute(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Adds the proxy neighbour entry `<address> dev <index>`: the host answers ARP requests for
    /// `address` received on that link (given forwarding on it). Adding one that exists is fine.
    pub fn add_proxy_neighbour(&mut self, address: Ipv4Addr, index: u32) -> Result<()> {
        let msg = RouteNetlinkMessage::NewNeighbour(proxy_neighbour(address, index));
        self.request(
            "add proxy neighbour",
            msg,
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes the proxy neighbour entry `<address> dev <index>`. `ENOENT` when it is not there
    /// ([`Error::is_not_found`]).
    pub fn del_proxy_neighbour(&mut self, address: Ipv4Addr, index: u32) -> Result<()> {
        let msg = RouteNetlinkMessage::DelNeighbour(proxy_neighbour(address, index));
        self.request("delete proxy neighbour", msg, NLM_F_ACK)
            .map(drop)
    }
}

fn host_route(destination: Ipv4Addr, index: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(destination)));
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

fn proxy_neighbour(address: Ipv4Addr, index: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Proxy;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            address,
        )));
    m
}

impl Error {
    /// True when a create found the object already there (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Kernel { code, .. } if -*code == libc::EEXIST)
    }

    /// True when the link named or indexed is gone (`ENODEV`).
    pub fn is_no_device(&self) -> bool {
        matches!(self, Error::Kernel { code, .. } if -*code == libc::ENODEV)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_route_is_a_main_table_slash_32_on_the_link() {
        let m = host_route(Ipv4Addr::new(10, 214, 0, 50), 9);
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert!(m.attributes.contains(&RouteAttribute::Oif(9)));
    }

    #[test]
    fn a_proxy_neighbour_carries_the_proxy_flag_and_the_address() {
        let m = proxy_neighbour(Ipv4Addr::new(10, 214, 0, 50), 4);
        assert_eq!(m.header.flags, NeighbourFlags::Proxy);
        assert_eq!(m.header.ifindex, 4);
        assert_eq!(
            m.attributes,
            vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(10, 214, 0, 50)
            ))]
        );
    }
}
