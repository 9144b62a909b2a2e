//! DHCPv4 bytes ↔ the state machine's types, through `dhcproto`. Pure.
//!
//! What the client sends is what busybox udhcpc sent for the original (upstream-head §4.5.1):
//! `chaddr` = the vNIC's MAC, client identifier (option 61) = `01` + MAC, no hostname; plus the
//! broadcast flag, so that servers broadcast their replies: the client receives on a UDP socket
//! and the kernel drops unicast to an address the interface does not have yet.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use super::machine::{Lease, Message, Packet, Reply};

/// Parameters asked for (option 55).
const REQUESTED: [OptionCode; 8] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::BroadcastAddr,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

/// The prefix when a server sends no (or a non-contiguous) subnet mask: the original script's.
const DEFAULT_PREFIX: u8 = 24;

/// busybox's default client identifier: type 1 (Ethernet) and the MAC.
pub fn mac_client_id(mac: [u8; 6]) -> Vec<u8> {
    let mut id = vec![1u8];
    id.extend_from_slice(&mac);
    id
}

/// Encodes `packet` from the client with hardware address `mac` (client identifier `01` + MAC).
#[allow(dead_code)] // for the tests and the `dhcp_reply` fuzz target
pub fn encode(packet: &Packet, mac: [u8; 6]) -> Vec<u8> {
    encode_with_id(packet, mac, &mac_client_id(mac))
}

/// Encodes `packet` from the client with hardware address `mac` and option 61 = `client_id`,
/// exactly those bytes (a Wi-Fi vNIC's: the UTF-8 of `<container>:<vnic>`, no type byte, as the
/// original's `udhcpc -x 0x3d:<hex>`, upstream-head §5.3). At most 255 bytes (an option's
/// length); the caller checks.
pub fn encode_with_id(packet: &Packet, mac: [u8; 6], client_id: &[u8]) -> Vec<u8> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let ciaddr = match packet.message {
        Message::Request {
            ciaddr: Some(ip), ..
        } => ip,
        Message::Release { ip, .. } => ip,
        _ => zero,
    };
    let mut msg = v4::Message::new_with_id(packet.xid, ciaddr, zero, zero, zero, &mac);
    msg.set_opcode(Opcode::BootRequest);
    // Broadcast replies while the client has no address (not when renewing: RFC 2131 §4.1).
    if ciaddr.is_unspecified() {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    let kind = match &packet.message {
        Message::Discover => MessageType::Discover,
        Message::Request { .. } => MessageType::Request,
        Message::Release { .. } => MessageType::Release,
    };
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(client_id.to_vec()));
    match &packet.message {
        Message::Discover => {
            opts.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        }
        Message::Request {
            requested, server, ..
        } => {
            if let Some(ip) = requested {
                opts.insert(DhcpOption::RequestedIpAddress(*ip));
            }
            if let Some(server) = server {
                opts.insert(DhcpOption::ServerIdentifier(*server));
            }
            opts.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        }
        Message::Release { server, .. } => {
            opts.insert(DhcpOption::ServerIdentifier(*server));
        }
    }
    // A message of known options and addresses always encodes.
    msg.to_vec().unwrap_or_default()
}

/// Decodes a server's reply to the client with hardware address `mac`. `None` for anything
/// else: undecodable bytes, requests (ours, looped back), replies for another client, message
/// types the client does not take, an ACK without an address.
pub fn decode(bytes: &[u8], mac: [u8; 6], source: Ipv4Addr) -> Option<Reply> {
    if !fixed_lengths_hold(bytes) {
        return None;
    }
    let msg = v4::Message::from_bytes(bytes).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.chaddr().get(..6) != Some(&mac[..]) {
        return None;
    }
    let opts = msg.opts();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ if !msg.siaddr().is_unspecified() => msg.siaddr(),
        _ => source,
    };
    let xid = msg.xid();
    match opts.msg_type()? {
        MessageType::Offer if !msg.yiaddr().is_unspecified() => Some(Reply::Offer {
            xid,
            ip: msg.yiaddr(),
            server,
        }),
        MessageType::Ack if !msg.yiaddr().is_unspecified() => Some(Reply::Ack {
            xid,
            lease: lease_of(&msg, server),
        }),
        MessageType::Nak => Some(Reply::Nak { xid }),
        _ => None,
    }
}

/// Whether every option of a fixed (or minimum) length has it. `dhcproto` 0.15 only
/// `debug_assert!`s these lengths (rapid commit, client FQDN, client network interface, the bulk
/// leasequery times), so in a debug build one crafted packet from the LAN would panic the client,
/// and in a release build it reads past the option; such a packet is dropped here instead (found
/// by the `dhcp_reply` fuzz target). A truncated option list is left to `dhcproto` to refuse.
fn fixed_lengths_hold(bytes: &[u8]) -> bool {
    // Options start after the fixed header (236 bytes) and the magic cookie.
    let mut i = 240;
    while let Some(&code) = bytes.get(i) {
        match code {
            0 => i += 1,
            255 => return true,
            _ => {
                let Some(&len) = bytes.get(i + 1) else {
                    return true;
                };
                let ok = match code {
                    80 => len == 0,
                    94 => len == 3,
                    152..=155 => len == 4,
                    81 => len >= 3,
                    _ => true,
                };
                if !ok {
                    return false;
                }
                i += 2 + usize::from(len);
            }
        }
    }
    true
}

fn lease_of(msg: &v4::Message, server: Ipv4Addr) -> Lease {
    let opts = msg.opts();
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask).unwrap_or(DEFAULT_PREFIX),
        _ => DEFAULT_PREFIX,
    };
    let ips = |code| match opts.get(code) {
        Some(DhcpOption::Router(v) | DhcpOption::DomainNameServer(v)) => v.clone(),
        _ => Vec::new(),
    };
    // No lease time: RFC 2131 requires one in an ACK; take it as infinite rather than fail.
    let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => u32::MAX,
    };
    let fraction = |num: u64, den: u64| {
        if lease_time == u32::MAX {
            u32::MAX
        } else {
            u32::try_from(u64::from(lease_time) * num / den).unwrap_or(u32::MAX)
        }
    };
    let rebind = match opts.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) if *t <= lease_time => *t,
        _ => fraction(7, 8),
    };
    let renew = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) if *t <= rebind => *t,
        _ => fraction(1, 2).min(rebind),
    };
    Lease {
        ip: msg.yiaddr(),
        prefix,
        routers: ips(OptionCode::Router),
        dns: ips(OptionCode::DomainNameServer),
        domain: match opts.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) if !d.is_empty() => Some(d.clone()),
            _ => None,
        },
        mtu: match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
            _ => None,
        },
        broadcast: match opts.get(OptionCode::BroadcastAddr) {
            Some(DhcpOption::BroadcastAddr(b)) => Some(*b),
            _ => None,
        },
        server,
        lease_time,
        renew,
        rebind,
    }
}

/// The prefix length of a contiguous mask.
pub fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap_or(32))
}

/// The dotted mask of a prefix length.
pub fn mask_of(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::machine::Destination;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn reply(kind: MessageType, xid: u32, yiaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = v4::Message::new_with_id(xid, z, yiaddr, z, z, &MAC);
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m.to_vec().expect("encodes")
    }

    #[test]
    fn a_discover_carries_the_mac_client_id_and_broadcast_flag() {
        let bytes = encode(
            &Packet {
                xid: 0xdead_beef,
                message: Message::Discover,
                to: Destination::Broadcast,
            },
            MAC,
        );
        let m = v4::Message::from_bytes(&bytes).expect("decodes");
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 2, 0x42, 0xac, 0x11, 0, 2
            ]))
        );
        assert!(m.opts().get(OptionCode::Hostname).is_none());
    }

    #[test]
    fn a_wifi_client_id_is_option_61_with_exactly_the_utf8_bytes_and_the_host_mac() {
        let bytes = encode_with_id(
            &Packet {
                xid: 7,
                message: Message::Discover,
                to: Destination::Broadcast,
            },
            MAC,
            "plc-01:wlan-ü".as_bytes(),
        );
        let m = v4::Message::from_bytes(&bytes).expect("decodes");
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(
                b"plc-01:wlan-\xc3\xbc".to_vec()
            ))
        );
        // On the wire: code 61, the length, the bytes; no type byte before them.
        let wire = [&[61u8, 14][..], b"plc-01:wlan-\xc3\xbc"].concat();
        assert!(bytes.windows(wire.len()).any(|w| w == wire));
        assert!(m.opts().get(OptionCode::Hostname).is_none());
    }

    #[test]
    fn requests_carry_requested_address_server_or_ciaddr() {
        let select = encode(
            &Packet {
                xid: 1,
                message: Message::Request {
                    requested: Some(Ipv4Addr::new(10, 213, 0, 50)),
                    server: Some(Ipv4Addr::new(10, 213, 0, 1)),
                    ciaddr: None,
                },
                to: Destination::Broadcast,
            },
            MAC,
        );
        let m = v4::Message::from_bytes(&select).expect("decodes");
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                10, 213, 0, 50
            )))
        );
        assert!(m.opts().get(OptionCode::ServerIdentifier).is_some());
        let renew = encode(
            &Packet {
                xid: 2,
                message: Message::Request {
                    requested: None,
                    server: None,
                    ciaddr: Some(Ipv4Addr::new(10, 213, 0, 50)),
                },
                to: Destination::Unicast(Ipv4Addr::new(10, 213, 0, 1)),
            },
            MAC,
        );
        let m = v4::Message::from_bytes(&renew).expect("decodes");
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 213, 0, 50));
        assert!(!m.flags().broadcast());
        assert!(m.opts().get(OptionCode::RequestedIpAddress).is_none());
        let release = encode(
            &Packet {
                xid: 3,
                message: Message::Release {
                    ip: Ipv4Addr::new(10, 213, 0, 50),
                    server: Ipv4Addr::new(10, 213, 0, 1),
                },
                to: Destination::Unicast(Ipv4Addr::new(10, 213, 0, 1)),
            },
            MAC,
        );
        let m = v4::Message::from_bytes(&release).expect("decodes");
        assert_eq!(m.opts().msg_type(), Some(MessageType::Release));
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 213, 0, 50));
    }

    #[test]
    fn an_ack_becomes_a_lease_with_defaults_for_missing_timers() {
        let bytes = reply(
            MessageType::Ack,
            9,
            Ipv4Addr::new(10, 213, 0, 50),
            vec![
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                DhcpOption::Router(vec![
                    Ipv4Addr::new(10, 213, 0, 1),
                    Ipv4Addr::new(10, 213, 0, 2),
                ]),
                DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 213, 0, 1)]),
                DhcpOption::AddressLeaseTime(120),
                DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 213, 0, 1)),
                DhcpOption::DomainName("lan".into()),
            ],
        );
        let Some(Reply::Ack { xid: 9, lease }) = decode(&bytes, MAC, Ipv4Addr::UNSPECIFIED) else {
            panic!("an ack")
        };
        assert_eq!(lease.ip, Ipv4Addr::new(10, 213, 0, 50));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.gateway(), Some(Ipv4Addr::new(10, 213, 0, 1)));
        assert_eq!(lease.domain.as_deref(), Some("lan"));
        assert_eq!(
            (lease.lease_time, lease.renew, lease.rebind),
            (120, 60, 105)
        );
    }

    #[test]
    fn replies_for_other_macs_requests_and_garbage_are_ignored() {
        let mut other = reply(MessageType::Offer, 1, Ipv4Addr::new(10, 213, 0, 50), vec![]);
        assert!(decode(&other, MAC, Ipv4Addr::UNSPECIFIED).is_some());
        other[28] ^= 0xff; // chaddr's first byte
        assert!(decode(&other, MAC, Ipv4Addr::UNSPECIFIED).is_none());
        let ours = encode(
            &Packet {
                xid: 1,
                message: Message::Discover,
                to: Destination::Broadcast,
            },
            MAC,
        );
        assert!(decode(&ours, MAC, Ipv4Addr::UNSPECIFIED).is_none());
        assert!(decode(b"\x02\x01garbage", MAC, Ipv4Addr::UNSPECIFIED).is_none());
        let no_address = reply(MessageType::Ack, 1, Ipv4Addr::UNSPECIFIED, vec![]);
        assert!(decode(&no_address, MAC, Ipv4Addr::UNSPECIFIED).is_none());
        let nak = reply(MessageType::Nak, 4, Ipv4Addr::UNSPECIFIED, vec![]);
        assert_eq!(
            decode(&nak, MAC, Ipv4Addr::UNSPECIFIED),
            Some(Reply::Nak { xid: 4 })
        );
    }

    /// `dhcproto` only debug-asserts these option lengths: such a packet is dropped, in debug and
    /// release builds alike (the `dhcp_reply` fuzz target's first finding: a 152 of length 1).
    #[test]
    fn options_of_a_wrong_fixed_length_drop_the_packet() {
        let good = reply(MessageType::Offer, 1, Ipv4Addr::new(10, 213, 0, 50), vec![]);
        assert!(decode(&good, MAC, Ipv4Addr::UNSPECIFIED).is_some());
        for (code, len) in [(152u8, 1u8), (80, 1), (94, 2), (81, 2)] {
            let mut bad = good.clone();
            // Before the end option: code, length, and that many bytes.
            let end = bad.iter().rposition(|&b| b == 255).unwrap();
            let mut opt = vec![code, len];
            opt.extend(std::iter::repeat_n(7, usize::from(len)));
            bad.splice(end..end, opt);
            assert!(
                decode(&bad, MAC, Ipv4Addr::UNSPECIFIED).is_none(),
                "option {code} of length {len}"
            );
        }
    }

    #[test]
    fn masks_and_prefixes_convert_both_ways() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_of(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(mask_of(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask_of(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
