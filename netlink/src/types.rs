//! Plain data the kernel reports: links, IPv4 addresses, IPv4 routes and a snapshot of all three.
//! Owns no sockets; everything here is built by `parse` and read by `model`.

use std::fmt;
use std::net::Ipv4Addr;

/// The main routing table's id (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;

/// RFC 2863 operational state as the kernel reports it (`IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    Other(u8),
}

impl OperState {
    /// The name `ip` and pyroute2 print (`UP`, `LOWERLAYERDOWN`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            OperState::Unknown => "UNKNOWN",
            OperState::NotPresent => "NOTPRESENT",
            OperState::Down => "DOWN",
            OperState::LowerLayerDown => "LOWERLAYERDOWN",
            OperState::Testing => "TESTING",
            OperState::Dormant => "DORMANT",
            OperState::Up => "UP",
            OperState::Other(_) => "OTHER",
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `IFF_UP`: administratively up.
pub const IFF_UP: u32 = 1 << 0;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 1 << 3;
/// `IFF_RUNNING`.
pub const IFF_RUNNING: u32 = 1 << 6;
/// `IFF_LOWER_UP`: the driver signals carrier.
pub const IFF_LOWER_UP: u32 = 1 << 16;

/// One network link (`RTM_NEWLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub oper_state: OperState,
    /// `IFF_*` flags (see the constants of this module).
    pub flags: u32,
    /// Link-layer address (6 bytes for Ethernet), when the link has one.
    pub mac: Option<Vec<u8>>,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, ...) when the kernel says it; physical ports have none.
    pub kind: Option<String>,
    /// `IFLA_IFALIAS` (`ip link set ... alias`), when set.
    pub alias: Option<String>,
}

impl Link {
    /// Whether the link carries traffic: operstate `UP`, or `UNKNOWN` while administratively up
    /// with carrier (some drivers never set an operstate; the original sidecar dropped them).
    pub fn is_operational(&self) -> bool {
        match self.oper_state {
            OperState::Up => true,
            OperState::Unknown => self.flags & IFF_UP != 0 && self.flags & IFF_LOWER_UP != 0,
            _ => false,
        }
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff` (lowercase, as `ip` prints it).
    pub fn mac_string(&self) -> Option<String> {
        self.mac.as_ref().map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
    }
}

/// One IPv4 address of an interface (`RTM_NEWADDR`, family `AF_INET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Address {
    /// Interface index the address belongs to.
    pub index: u32,
    /// The interface's own address (`IFA_LOCAL`; `IFA_ADDRESS` is the peer on point-to-point links).
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Address {
    /// The network address: host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        let bits = u32::from(self.address);
        let mask = match self.prefix_len {
            0 => 0,
            n if n >= 32 => u32::MAX,
            n => u32::MAX << (32 - u32::from(n)),
        };
        Ipv4Addr::from(bits & mask)
    }

    /// The subnet in CIDR notation, e.g. `192.168.1.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/{}", self.network(), self.prefix_len.min(32))
    }
}

/// One next hop of a route: its output interface and gateway (either may be absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

/// One IPv4 route (`RTM_NEWROUTE`, family `AF_INET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Route {
    /// Table id, from `RTA_TABLE` when present (the header field is only 8 bits).
    pub table: u32,
    /// Destination network; `0.0.0.0` with `prefix_len` 0 for a default route.
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// `RTA_OIF`: route messages carry no interface index in their header.
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    /// `RTA_PRIORITY` (the metric).
    pub metric: Option<u32>,
    /// `RTA_MULTIPATH` next hops of a multipath route (empty otherwise).
    pub multipath: Vec<NextHop>,
}

impl Ipv4Route {
    /// A default route of the main table.
    pub fn is_main_default(&self) -> bool {
        self.table == MAIN_TABLE && self.prefix_len == 0
    }

    /// Every (interface, gateway) pair this route sends through: its own `oif`/gateway and each
    /// multipath next hop.
    pub fn next_hops(&self) -> impl Iterator<Item = NextHop> + '_ {
        let single = (self.oif.is_some() || self.gateway.is_some()).then_some(NextHop {
            oif: self.oif,
            gateway: self.gateway,
        });
        single.into_iter().chain(self.multipath.iter().copied())
    }

    /// The interfaces this route uses.
    pub fn output_interfaces(&self) -> impl Iterator<Item = u32> + '_ {
        self.next_hops().filter_map(|h| h.oif)
    }
}

/// Links, IPv4 addresses and the main table's IPv4 routes at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<Link>,
    pub addresses: Vec<Ipv4Address>,
    /// Routes of the main table only.
    pub routes: Vec<Ipv4Route>,
}

impl Snapshot {
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// IPv4 addresses of one interface, in kernel order.
    pub fn addresses_of(&self, index: u32) -> impl Iterator<Item = &Ipv4Address> + '_ {
        self.addresses.iter().filter(move |a| a.index == index)
    }

    /// The default gateway through this interface: the main-table default route (or multipath
    /// next hop) whose output interface is `index` and that has a gateway; lowest metric wins,
    /// kernel order breaks ties.
    pub fn gateway_of(&self, index: u32) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .filter(|r| r.is_main_default())
            .flat_map(|r| {
                let metric = r.metric.unwrap_or(0);
                r.next_hops()
                    .filter(|h| h.oif == Some(index))
                    .filter_map(move |h| h.gateway.map(|g| (metric, g)))
            })
            .enumerate()
            .min_by_key(|(order, (metric, _))| (*metric, *order))
            .map(|(_, (_, g))| g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(index: u32, a: [u8; 4], prefix_len: u8) -> Ipv4Address {
        Ipv4Address {
            index,
            address: Ipv4Addr::from(a),
            prefix_len,
        }
    }

    fn default_route(oif: Option<u32>, gw: Option<[u8; 4]>, metric: Option<u32>) -> Ipv4Route {
        Ipv4Route {
            table: MAIN_TABLE,
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            oif,
            gateway: gw.map(Ipv4Addr::from),
            metric,
            multipath: Vec::new(),
        }
    }

    #[test]
    fn gateway_comes_from_main_default_route_through_the_interface_including_multipath() {
        let mut multi = default_route(None, None, Some(50));
        multi.multipath = vec![
            NextHop {
                oif: Some(7),
                gateway: Some(Ipv4Addr::new(10, 202, 7, 1)),
            },
            NextHop {
                oif: Some(8),
                gateway: Some(Ipv4Addr::new(10, 202, 8, 1)),
            },
        ];
        let mut other_table = default_route(Some(6), Some([10, 202, 6, 9]), None);
        other_table.table = 100;
        let snap = Snapshot {
            links: vec![],
            addresses: vec![],
            routes: vec![
                other_table,
                default_route(Some(6), Some([10, 202, 6, 2]), Some(200)),
                default_route(Some(6), Some([10, 202, 6, 1]), Some(100)),
                multi,
            ],
        };
        assert_eq!(snap.gateway_of(6), Some(Ipv4Addr::new(10, 202, 6, 1)));
        assert_eq!(snap.gateway_of(8), Some(Ipv4Addr::new(10, 202, 8, 1)));
        assert_eq!(snap.gateway_of(9), None);
    }

    #[test]
    fn subnet_clears_host_bits() {
        let a = addr(1, [10, 202, 3, 77], 20);
        assert_eq!(a.subnet(), "10.202.0.0/20");
        assert_eq!(addr(1, [10, 0, 0, 1], 0).subnet(), "0.0.0.0/0");
        assert_eq!(addr(1, [10, 0, 0, 1], 32).subnet(), "10.0.0.1/32");
    }
}
