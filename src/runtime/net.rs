//! IPv4 subnet and MAC address value types with the parsing and arithmetic the runtime module needs
//! (CIDRs, dotted netmasks, containment, unicast MACs). Pure: no I/O, no Docker, no allocation beyond
//! the returned strings.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet: an address and a prefix length (0..=32). The address may carry host bits (an
/// interface address such as `192.168.1.7/24`); [`Ipv4Net::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Builds a subnet; `None` when `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Net { addr, prefix })
    }

    /// The address as given (host bits kept).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a 32-bit value.
    pub fn mask_bits(&self) -> u32 {
        prefix_to_mask(self.prefix)
    }

    /// The netmask in dotted form.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The same subnet with the host bits cleared (`192.168.1.7/24` → `192.168.1.0/24`).
    pub fn network(&self) -> Ipv4Net {
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask_bits()),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = self.mask_bits();
        u32::from(ip) & m == u32::from(self.addr) & m
    }

    /// Whether `ip` is this subnet's network or broadcast address (only meaningful below /31).
    pub fn is_network_or_broadcast(&self, ip: Ipv4Addr) -> bool {
        if self.prefix >= 31 {
            return false;
        }
        let m = self.mask_bits();
        let net = u32::from(self.addr) & m;
        let ip = u32::from(ip);
        ip == net || ip == net | !m
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a subnet, netmask or MAC text was refused (the message says what was expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);

impl FromStr for Ipv4Net {
    type Err = ParseError;

    /// Parses `a.b.c.d/p` (strict dotted quad, decimal prefix 0..=32).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or(ParseError("expected an IPv4 CIDR such as 192.168.1.0/24"))?;
        let addr = parse_ipv4(addr)?;
        let prefix = parse_prefix(prefix)?;
        Ok(Ipv4Net { addr, prefix })
    }
}

/// Parses a strict dotted-quad IPv4 address (no leading/trailing space, no shorthand forms).
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, ParseError> {
    // std's parser already refuses leading zeros, shorthand and surrounding space.
    Ipv4Addr::from_str(s).map_err(|_| ParseError("expected an IPv4 address such as 192.168.1.10"))
}

/// Parses a decimal prefix length 0..=32.
pub fn parse_prefix(s: &str) -> Result<u8, ParseError> {
    if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError(
            "the prefix length must be a number from 0 to 32",
        ));
    }
    match s.parse::<u8>() {
        Ok(p) if p <= 32 => Ok(p),
        _ => Err(ParseError(
            "the prefix length must be a number from 0 to 32",
        )),
    }
}

/// Parses a dotted netmask (`255.255.255.0`) into its prefix length; the one bits must be
/// contiguous from the top.
pub fn parse_netmask(s: &str) -> Result<u8, ParseError> {
    let m = u32::from(
        parse_ipv4(s).map_err(|_| ParseError("expected a dotted netmask such as 255.255.255.0"))?,
    );
    // At most 32 one bits in a u32.
    let prefix = u8::try_from(m.leading_ones()).unwrap_or(32);
    if prefix_to_mask(prefix) != m {
        return Err(ParseError(
            "the netmask's one bits are not contiguous (e.g. 255.255.0.255)",
        ));
    }
    Ok(prefix)
}

fn prefix_to_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// A unicast Ethernet MAC address; displayed lower-case with colons, the form Docker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = ParseError;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), then refuses the all-zero address and any
    /// multicast/broadcast address (low bit of the first octet set): Docker would accept some of
    /// them and the kernel would then refuse the interface, or the LAN would misbehave.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const SHAPE: ParseError = ParseError("expected six hex pairs such as 02:42:ac:11:00:02");
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SHAPE);
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| SHAPE)?;
            n += 1;
        }
        if n != 6 {
            return Err(SHAPE);
        }
        if out == [0; 6] {
            return Err(ParseError("the all-zero MAC address cannot be used"));
        }
        if out[0] & 1 == 1 {
            return Err(ParseError(
                "a multicast or broadcast MAC address cannot be used (low bit of the first octet is set)",
            ));
        }
        Ok(MacAddr(out))
    }
}

impl MacAddr {
    /// A random locally administered unicast MAC, as the original generates them (spec §9.1.6):
    /// the first octet's low two bits `10`, the rest random. Given to a vNIC without a MAC at
    /// create and persisted, so the LAN's DHCP reservations keep matching the runtime.
    pub fn random_local() -> Self {
        use rand::RngExt;
        let mut b: [u8; 6] = rand::rng().random();
        b[0] = (b[0] & 0xfc) | 0x02;
        MacAddr(b)
    }

    /// Locally administered (second-lowest bit of the first octet set).
    pub fn is_local(self) -> bool {
        self.0[0] & 0x02 == 0x02
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_macs_are_local_unicast_in_the_originals_shape() {
        for _ in 0..200 {
            let m = MacAddr::random_local();
            assert!(m.is_local());
            assert_eq!(m.0[0] & 1, 0, "unicast");
            let s = m.to_string();
            assert_eq!(s.parse::<MacAddr>().unwrap(), m);
            // spec §9.1.6: ^[0-9a-f][26ae](:[0-9a-f]{2}){5}$
            assert!(matches!(s.as_bytes()[1], b'2' | b'6' | b'a' | b'e'), "{s}");
        }
    }

    #[test]
    fn cidr_parses_and_normalises() {
        let n: Ipv4Net = "192.168.1.7/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "192.168.1.0/24");
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(n.contains(Ipv4Addr::new(192, 168, 1, 200)));
        assert!(!n.contains(Ipv4Addr::new(192, 168, 2, 1)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        let host: Ipv4Net = "10.0.0.1/32".parse().unwrap();
        assert!(host.contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!host.contains(Ipv4Addr::new(10, 0, 0, 2)));
        for bad in [
            "192.168.1.0",
            "192.168.1.0/33",
            "192.168.1/24",
            "192.168.1.0/",
            "192.168.1.0/-1",
            "192.168.1.0/+4",
            " 192.168.1.0/24",
            "192.168.001.0/24",
            "1.2.3.4/024",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn network_and_broadcast_addresses_are_recognised() {
        let n: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        assert!(n.is_network_or_broadcast(Ipv4Addr::new(10, 1, 2, 0)));
        assert!(n.is_network_or_broadcast(Ipv4Addr::new(10, 1, 2, 255)));
        assert!(!n.is_network_or_broadcast(Ipv4Addr::new(10, 1, 2, 1)));
        let p2p: Ipv4Net = "10.1.2.0/31".parse().unwrap();
        assert!(!p2p.is_network_or_broadcast(Ipv4Addr::new(10, 1, 2, 0)));
    }

    #[test]
    fn netmasks_must_be_contiguous() {
        assert_eq!(parse_netmask("255.255.255.0"), Ok(24));
        assert_eq!(parse_netmask("255.255.240.0"), Ok(20));
        assert_eq!(parse_netmask("255.255.255.255"), Ok(32));
        assert_eq!(parse_netmask("0.0.0.0"), Ok(0));
        assert!(parse_netmask("255.0.255.0").is_err());
        assert!(parse_netmask("255.255.255.1").is_err());
        assert!(parse_netmask("24").is_err());
    }

    #[test]
    fn macs_must_be_unicast_and_well_formed() {
        let m: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(
            "02-42-ac-11-00-03".parse::<MacAddr>().unwrap().to_string(),
            "02:42:ac:11:00:03"
        );
        for bad in [
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02:42:ac:11:0:02",
            "0242ac110002",
            "02:42:ac:11:00:gg",
            "02:42-ac:11:00:02",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
