//! Wi-Fi vNICs' proxy-ARP bridges (upstream-head §5.4, §5.7): a veth pair from the host into a
//! container's network namespace, the container end carrying the vNIC's LAN address and default
//! route, the host end no address; the host answers ARP on both sides (proxy ARP on the veth, a
//! proxy neighbour entry for the vNIC's address on the Wi-Fi parent) and routes between them
//! (`<ip>/32 dev <veth>`). MACVLAN cannot do this on Wi-Fi: a station may use one MAC only.
//!
//! Everything over rtnetlink (`netlink::ConfigSocket`, `LinkOps`, `in_netns`): the image has no
//! `ip`, `sysctl` or `iptables`. Forwarding and proxy ARP are switched on per link through
//! `IFLA_INET_CONF`, not `/proc/sys` (read-only in a container, also with `--network host`), so
//! neither the global `ip_forward` nor the parent's `proxy_arp` is touched: forwarding on the two
//! links concerned is all the kernel checks, and the proxy entry answers for exactly the vNIC's
//! address where `proxy_arp` on the Wi-Fi would answer for everything the host routes elsewhere.
//! The original's FORWARD ACCEPT rules are inserted over nftables netlink (`crate::firewall`):
//! Docker's hosts drop forwarded traffic by default.
//!
//! Fixes of the original's defects: names are derived from a hash of container and address
//! (W1: `veth-<8 chars>` collided), the container end is created under a temporary name and
//! renamed inside the container to the first free `ethN` (W1: `eth1` fixed), a set-up for a
//! bridge that exists replaces it (W12), a failed set-up removes only what it made (W2), and only
//! netmon's own bridges are ever removed (W9): its host ends are named `vpa<10 hex>` and carry an
//! alias saying which address and parent they serve, so a restarted netmon finds them again.
//!
//! Blocking; the daemon runs these jobs on a blocking thread, one at a time. Knows nothing of the
//! socket or of Docker.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use netlink::{ConfigSocket, LinkOps, in_netns};
use netmon_proto::{Command, Response, valid_interface_name};
use serde_json::{Value, json};

/// Host ends of netmon's bridges: this prefix and 10 lowercase hex digits.
pub const HOST_PREFIX: &str = "vpa";
/// Container ends, before they are moved and renamed.
const PEER_PREFIX: &str = "vpb";
const HASH_DIGITS: usize = 10;
/// The host end's alias starts so; then ` ip=<ip> parent=<if> container=<name>`.
const ALIAS_MARK: &str = "autonomy-netmon proxy-arp";
/// `IFALIASZ - 1`: the kernel refuses longer aliases.
const ALIAS_MAX: usize = 255;
/// Container ends are named `eth<N>`, N from 1 (eth0 is usually the runtime's own network).
const MAX_ETH: u32 = 4096;
/// Default route metric in the container: replaces Docker's default route (metric 0).
const DEFAULT_ROUTE_METRIC: u32 = 0;

/// A `setup_proxy_arp_bridge` request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub container_name: String,
    pub pid: u32,
    pub parent: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
}

impl Setup {
    /// Checks the fields; the error is the answer's text.
    pub fn parse(
        container_name: &str,
        pid: u32,
        parent: &str,
        ip: &str,
        gateway: &str,
        subnet_mask: &str,
    ) -> Result<Setup, String> {
        if container_name.trim().is_empty() || pid == 0 {
            return Err("Missing required parameters for Proxy ARP setup".to_owned());
        }
        if !valid_interface_name(parent) {
            return Err(format!("Invalid interface name: {parent}"));
        }
        let ip: Ipv4Addr = ip
            .trim()
            .parse()
            .map_err(|_| format!("Invalid ip_address: {ip}"))?;
        let gateway: Ipv4Addr = gateway
            .trim()
            .parse()
            .map_err(|_| format!("Invalid gateway: {gateway}"))?;
        let prefix_len = prefix_len(subnet_mask)?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            return Err(format!("Invalid ip_address: {ip} is not a unicast address"));
        }
        if gateway == ip || !same_subnet(ip, gateway, prefix_len) {
            return Err(format!(
                "Invalid gateway: {gateway} is not another address of {ip}/{prefix_len}"
            ));
        }
        Ok(Setup {
            container_name: container_name.to_owned(),
            pid,
            parent: parent.to_owned(),
            ip,
            gateway,
            prefix_len,
        })
    }
}

/// The prefix length of `subnet_mask`: a dotted mask (contiguous ones only), `a.b.c.d/len`, or a
/// bare length; 1 to 32.
pub fn prefix_len(subnet_mask: &str) -> Result<u8, String> {
    let invalid = || format!("Invalid subnet_mask: {subnet_mask}");
    let text = subnet_mask.trim();
    let len = if let Some((_, len)) = text.split_once('/') {
        len.parse::<u8>().map_err(|_| invalid())?
    } else if text.contains('.') {
        let mask = u32::from(text.parse::<Ipv4Addr>().map_err(|_| invalid())?);
        let ones = mask.leading_ones();
        if mask.checked_shl(ones).unwrap_or(0) != 0 {
            return Err(format!(
                "Invalid subnet_mask: {subnet_mask} (the ones are not contiguous)"
            ));
        }
        u8::try_from(ones).map_err(|_| invalid())?
    } else {
        text.parse::<u8>().map_err(|_| invalid())?
    };
    if (1..=32).contains(&len) {
        Ok(len)
    } else {
        Err(invalid())
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// FNV-1a, 64 bits: stable across Rust releases and netmon versions (std's hasher is not), so a
/// new netmon derives the same names as the one that made a bridge.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn name_hash(container_name: &str, ip: Ipv4Addr) -> String {
    let h = fnv1a(
        container_name
            .bytes()
            .chain([0])
            .chain(ip.to_string().into_bytes()),
    );
    format!("{:010x}", h >> (64 - 4 * HASH_DIGITS))
}

/// The host end's name for this container's bridge with this address.
pub fn host_name(container_name: &str, ip: Ipv4Addr) -> String {
    format!("{HOST_PREFIX}{}", name_hash(container_name, ip))
}

/// The container end's name until it is renamed inside the container.
fn peer_name(container_name: &str, ip: Ipv4Addr) -> String {
    format!("{PEER_PREFIX}{}", name_hash(container_name, ip))
}

/// Whether `name` is the host end of one of netmon's bridges.
pub fn is_own_name(name: &str) -> bool {
    name.strip_prefix(HOST_PREFIX).is_some_and(|h| {
        h.len() == HASH_DIGITS
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The first `eth<N>` (N ≥ 1) not among `taken`.
fn free_eth_name(taken: &[String]) -> Option<String> {
    (1..MAX_ETH)
        .map(|n| format!("eth{n}"))
        .find(|name| !taken.contains(name))
}

/// What netmon knows of one of its bridges (from its registry or its host end's alias).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    container_name: String,
    ip: Ipv4Addr,
    parent: String,
}

fn alias_of(k: &Known) -> String {
    let mut alias = format!(
        "{ALIAS_MARK} ip={} parent={} container={}",
        k.ip, k.parent, k.container_name
    );
    if alias.len() > ALIAS_MAX {
        let mut end = ALIAS_MAX;
        while !alias.is_char_boundary(end) {
            end -= 1;
        }
        alias.truncate(end);
    }
    alias
}

fn parse_alias(alias: &str) -> Option<Known> {
    let rest = alias.strip_prefix(ALIAS_MARK)?.strip_prefix(' ')?;
    let rest = rest.strip_prefix("ip=")?;
    let (ip, rest) = rest.split_once(" parent=")?;
    let (parent, container) = rest.split_once(" container=")?;
    Some(Known {
        container_name: container.to_owned(),
        ip: ip.parse().ok()?,
        parent: parent.to_owned(),
    })
}

/// A bridge as the answer describes it (the original's `proxy_arp_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub veth_host: String,
    pub veth_container: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub parent: String,
    /// Why forwarded traffic may still be dropped by the host's firewall, if it may.
    pub firewall_warning: Option<String>,
}

impl Bridge {
    pub fn config(&self) -> Value {
        json!({
            "veth_host": self.veth_host,
            "veth_container": self.veth_container,
            "ip_address": self.ip.to_string(),
            "gateway": self.gateway.to_string(),
            "parent_interface": self.parent,
        })
    }
}

/// netmon's bridges: those it built since it started (host end name → what it serves). Bridges
/// of an earlier netmon are found from the kernel (host ends' names and aliases). Operates on
/// the network namespace of the calling thread (netmon's: the host's).
#[derive(Debug, Default)]
pub struct Bridges {
    built: BTreeMap<String, Known>,
}

/// The one registry of netmon's bridges, shared by the two places that change them: the
/// proxy-ARP commands (`setup_proxy_arp_bridge`, ...) and the Wi-Fi DHCP clients (a lease
/// builds or moves its vNIC's bridge). Both go through this lock, so a set-up and a clean-up of
/// the same bridge never interleave. Lock it only on a blocking thread: the calls are blocking
/// netlink calls in the calling thread's namespace.
#[derive(Debug, Clone, Default)]
pub struct SharedBridges(Arc<Mutex<Bridges>>);

impl SharedBridges {
    pub fn lock(&self) -> MutexGuard<'_, Bridges> {
        // A panic half-way through a set-up leaves nothing the next call does not check anew.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A step that failed: `<what>: <why>`.
fn step(what: &str) -> impl FnOnce(netlink::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Bridges {
    /// Builds (or rebuilds) the bridge of `s`; the error is the text after `Proxy ARP bridge
    /// setup failed: `.
    pub fn setup(&mut self, s: &Setup) -> Result<Bridge, String> {
        let ns = container_netns(s.pid)?;
        let mut cfg = ConfigSocket::new().map_err(step("netlink"))?;
        let mut ops = LinkOps::new().map_err(step("netlink"))?;
        // Checked first: a bridge to a parent that is not there is not worth building.
        ops.index_of(&s.parent)
            .map_err(step("parent interface"))?
            .ok_or_else(|| format!("Device \"{}\" does not exist.", s.parent))?;
        let veth_host = host_name(&s.container_name, s.ip);
        let temp = peer_name(&s.container_name, s.ip);
        let links = cfg.links().map_err(step("listing links"))?;
        // One address, one bridge: another container's live bridge would lose its route.
        if let Some(other) = links
            .iter()
            .filter(|l| is_own_name(&l.name) && l.name != veth_host)
            .filter_map(|l| {
                self.built
                    .get(&l.name)
                    .cloned()
                    .or_else(|| l.alias.as_deref().and_then(parse_alias))
            })
            .find(|k| k.ip == s.ip && k.container_name != s.container_name)
        {
            return Err(format!(
                "{} is already bridged for container '{}'",
                s.ip, other.container_name
            ));
        }
        // Bridges of containers that died (the pair went with the namespace) leave their proxy
        // entry: the address is free again, the entry goes with the registry's record.
        let dead: Vec<String> = self
            .built
            .iter()
            .filter(|(name, k)| k.ip == s.ip && !links.iter().any(|l| &l.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in dead.iter().filter(|n| **n != veth_host) {
            self.remove(&mut cfg, &mut ops, name);
        }
        // The same bridge asked again (the container restarted, the agent retried): replaced.
        if links.iter().any(|l| l.name == veth_host) || self.built.contains_key(&veth_host) {
            tracing::info!(veth_host = %veth_host, ip = %s.ip, "replacing an existing proxy-ARP bridge");
            self.remove(&mut cfg, &mut ops, &veth_host);
        }
        // A container end left on the host by a set-up that died half-way.
        if let Some(l) = links.iter().find(|l| l.name == temp) {
            let _ = cfg.del_link(l.index);
        }
        let known = Known {
            container_name: s.container_name.clone(),
            ip: s.ip,
            parent: s.parent.clone(),
        };
        cfg.add_veth(&veth_host, &temp)
            .map_err(step("creating the veth pair"))?;
        let wired = match ops.index_of(&veth_host) {
            Ok(Some(host_index)) => wire(
                &mut cfg, &mut ops, s, &ns, &known, host_index, &veth_host, &temp,
            ),
            Ok(None) => Err(format!("the new veth {veth_host} vanished")),
            Err(e) => Err(format!("finding the new veth: {e}")),
        };
        let veth_container = match wired {
            Ok(name) => name,
            Err(e) => {
                // Only what this call made: the pair (both ends, wherever the peer is now; the
                // host route goes with it). The proxy entry is the last step, so never made.
                if let Ok(Some(index)) = ops.index_of(&veth_host)
                    && let Err(e) = cfg.del_link(index)
                    && !e.is_no_device()
                {
                    tracing::warn!(veth_host = %veth_host, "cannot remove a half-built bridge: {e}");
                }
                return Err(e);
            }
        };
        self.built.insert(veth_host.clone(), known);
        // Not fatal, as in the original: the bridge is right, the host's policy is the owner's.
        let firewall_warning = match crate::firewall::allow(&veth_host, &s.parent) {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(veth_host = %veth_host, "forwarding not allowed by the firewall: {e}");
                Some(e)
            }
        };
        Ok(Bridge {
            veth_host,
            veth_container,
            ip: s.ip,
            gateway: s.gateway,
            parent: s.parent.clone(),
            firewall_warning,
        })
    }

    /// Removes netmon's bridge whose host end is `veth_host`: the proxy entry, then the pair
    /// (the host route goes with it). True when a link was removed. Best effort, logged.
    fn remove(&mut self, cfg: &mut ConfigSocket, ops: &mut LinkOps, veth_host: &str) -> bool {
        let link = cfg
            .links()
            .ok()
            .and_then(|ls| ls.into_iter().find(|l| l.name == veth_host));
        let known = self.built.remove(veth_host).or_else(|| {
            link.as_ref()
                .and_then(|l| l.alias.as_deref())
                .and_then(parse_alias)
        });
        if let Some(k) = &known {
            del_proxy(cfg, ops, k.ip, &k.parent);
        }
        // Also when the link is gone already (the container died): the rules outlive it.
        if let Err(e) = crate::firewall::revoke(veth_host) {
            tracing::warn!(veth_host, "cannot remove FORWARD rules: {e}");
        }
        let Some(link) = link else {
            return false;
        };
        match cfg.del_link(link.index) {
            Ok(()) => {
                tracing::info!(veth_host, "proxy-ARP bridge removed");
                true
            }
            Err(e) if e.is_no_device() => false,
            Err(e) => {
                tracing::warn!(veth_host, "cannot remove a proxy-ARP bridge: {e}");
                false
            }
        }
    }

    /// `cleanup_proxy_arp_bridge`: the bridges of `container_name` (all, or the one with
    /// `ip`), and as asked the proxy entry `ip` on `parent` and the link `veth_host` when it
    /// is one of netmon's. Best effort, as the original.
    pub fn cleanup(
        &mut self,
        container_name: &str,
        ip: Option<Ipv4Addr>,
        parent: Option<&str>,
        veth_host: Option<&str>,
    ) -> Result<(), String> {
        let mut cfg = ConfigSocket::new().map_err(step("netlink"))?;
        let mut ops = LinkOps::new().map_err(step("netlink"))?;
        if let (Some(ip), Some(parent)) = (ip, parent) {
            del_proxy(&mut cfg, &mut ops, ip, parent);
        }
        let mut names: Vec<String> = self
            .known(&mut cfg)
            .into_iter()
            .filter(|(_, k)| k.container_name == container_name && ip.is_none_or(|ip| k.ip == ip))
            .map(|(name, _)| name)
            .collect();
        if let Some(ip) = ip {
            names.push(host_name(container_name, ip));
        }
        match veth_host {
            Some(v) if is_own_name(v) => names.push(v.to_owned()),
            // The original agent sends `veth-<8 chars>` whatever netmon built; never ours.
            Some(v) => tracing::debug!(veth_host = v, "not a netmon bridge: left alone"),
            None => {}
        }
        names.sort();
        names.dedup();
        for name in names {
            self.remove(&mut cfg, &mut ops, &name);
        }
        Ok(())
    }

    /// `cleanup_all_proxy_arp` and netmon's stop: every bridge of netmon's, built by this
    /// netmon or found by name; the number of links removed.
    pub fn remove_all(&mut self) -> Result<usize, String> {
        let mut cfg = ConfigSocket::new().map_err(step("netlink"))?;
        let mut ops = LinkOps::new().map_err(step("netlink"))?;
        let names: Vec<String> = self.known(&mut cfg).into_keys().collect();
        let removed = names
            .iter()
            .filter(|name| self.remove(&mut cfg, &mut ops, name))
            .count();
        // Rules of bridges no netmon knows any more (their links went with their containers).
        if let Err(e) = crate::firewall::revoke_all() {
            tracing::warn!("cannot remove FORWARD rules: {e}");
        }
        Ok(removed)
    }

    /// Every bridge of netmon's: built by this netmon (also those whose container died, taking
    /// the pair but not the proxy entry) and host ends on the host (an earlier netmon's).
    fn known(&self, cfg: &mut ConfigSocket) -> BTreeMap<String, Known> {
        let mut all = self.built.clone();
        match cfg.links() {
            Ok(links) => {
                for l in links.into_iter().filter(|l| is_own_name(&l.name)) {
                    if let Some(k) = l.alias.as_deref().and_then(parse_alias) {
                        all.entry(l.name).or_insert(k);
                    } else {
                        // Died before it was labelled: no proxy entry was made.
                        all.entry(l.name).or_insert(Known {
                            container_name: String::new(),
                            ip: Ipv4Addr::UNSPECIFIED,
                            parent: String::new(),
                        });
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list links for proxy-ARP bridges: {e}"),
        }
        all
    }
}

/// Steps 2–8 of §5.4 on a fresh pair; returns the container end's name.
#[allow(clippy::too_many_arguments)]
fn wire(
    cfg: &mut ConfigSocket,
    ops: &mut LinkOps,
    s: &Setup,
    ns: &File,
    known: &Known,
    host_index: u32,
    veth_host: &str,
    temp: &str,
) -> Result<String, String> {
    cfg.set_link_alias(host_index, &alias_of(known))
        .map_err(step("labelling the veth"))?;
    let temp_index = ops
        .index_of(temp)
        .map_err(step("finding the container end"))?
        .ok_or_else(|| format!("the container end {temp} vanished"))?;
    ops.move_to_netns(temp_index, ns)
        .map_err(step("moving the veth into the container"))?;
    let (ip, prefix_len, gateway) = (s.ip, s.prefix_len, s.gateway);
    let veth_container = in_netns(ns, || {
        let mut cfg = ConfigSocket::new()?;
        let mut ops = LinkOps::new()?;
        let links = cfg.links()?;
        let Some(index) = links.iter().find(|l| l.name == temp).map(|l| l.index) else {
            return Ok(Err(format!("the veth {temp} is not in the container")));
        };
        let taken: Vec<String> = links.into_iter().map(|l| l.name).collect();
        let Some(name) = free_eth_name(&taken) else {
            return Ok(Err("no free ethN name in the container".to_owned()));
        };
        let steps = (|| {
            cfg.rename_link(index, &name)
                .map_err(step("renaming the veth in the container"))?;
            cfg.add_ipv4_address(index, ip, prefix_len)
                .map_err(step("adding the address in the container"))?;
            ops.set_up(index, true)
                .map_err(step("setting the veth up in the container"))?;
            cfg.replace_default_route(index, gateway, DEFAULT_ROUTE_METRIC)
                .map_err(step("replacing the container's default route"))?;
            Ok(name)
        })();
        Ok(steps)
    })
    .map_err(step("entering the container's network namespace"))??;
    ops.set_up(host_index, true)
        .map_err(step("setting the host veth up"))?;
    cfg.enable_ipv4_forwarding(host_index, true)
        .map_err(step("enabling forwarding and proxy ARP on the host veth"))?;
    let parent = ops
        .index_of(&s.parent)
        .map_err(step("parent interface"))?
        .ok_or_else(|| format!("Device \"{}\" does not exist.", s.parent))?;
    cfg.enable_ipv4_forwarding(parent, false)
        .map_err(step("enabling forwarding on the parent"))?;
    cfg.replace_host_route(s.ip, host_index)
        .map_err(step("adding the host route"))?;
    cfg.add_proxy_neighbour(s.ip, parent)
        .map_err(step("adding the proxy neighbour entry"))?;
    tracing::info!(
        container = %s.container_name,
        veth_host,
        veth_container = %veth_container,
        ip = %s.ip,
        parent = %s.parent,
        "proxy-ARP bridge built"
    );
    Ok(veth_container)
}

/// Deletes the proxy entry `ip` on `parent`, best effort.
fn del_proxy(cfg: &mut ConfigSocket, ops: &mut LinkOps, ip: Ipv4Addr, parent: &str) {
    if ip.is_unspecified() || parent.is_empty() {
        return;
    }
    let index = match ops.index_of(parent) {
        Ok(Some(index)) => index,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%ip, parent, "cannot look the parent up: {e}");
            return;
        }
    };
    match cfg.del_proxy_neighbour(ip, index) {
        Ok(()) => tracing::debug!(%ip, parent, "proxy neighbour entry removed"),
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!(%ip, parent, "cannot remove a proxy neighbour entry: {e}"),
    }
}

/// The network namespace of `pid`, which must not be the calling thread's (a bridge "into"
/// netmon's own namespace would put the vNIC's address and default route on the host).
fn container_netns(pid: u32) -> Result<File, String> {
    let path = format!("/proc/{pid}/ns/net");
    let file = File::open(&path)
        .map_err(|e| format!("Container PID {pid} network namespace not found ({path}: {e})"))?;
    let own = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
    let theirs = file.metadata().map_err(|e| e.to_string())?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(format!(
            "process {pid} is in netmon's own (the host's) network namespace"
        ));
    }
    Ok(file)
}

/// A proxy-ARP command (`setup_proxy_arp_bridge`, `cleanup_proxy_arp_bridge`,
/// `cleanup_all_proxy_arp`), run on a blocking thread.
#[derive(Debug)]
pub struct Job(pub Command);

impl Job {
    /// Runs the command and says what to answer (the original's shapes).
    pub fn run(self, bridges: &mut Bridges) -> Response {
        match self.0 {
            Command::SetupProxyArpBridge {
                container_name,
                container_pid,
                parent_interface,
                ip_address,
                gateway,
                subnet_mask,
            } => {
                let setup = match Setup::parse(
                    &container_name,
                    container_pid.0,
                    &parent_interface,
                    &ip_address,
                    &gateway,
                    &subnet_mask,
                ) {
                    Ok(s) => s,
                    Err(e) => return Response::error(e),
                };
                match bridges.setup(&setup) {
                    Ok(bridge) => {
                        let mut answer = Response::ok().with("proxy_arp_config", bridge.config());
                        if let Some(w) = &bridge.firewall_warning {
                            answer = answer.with("warning", json!(w));
                        }
                        answer
                    }
                    Err(e) => {
                        tracing::warn!(container = %container_name, ip = %ip_address, "proxy-ARP bridge set-up failed: {e}");
                        Response::error(format!("Proxy ARP bridge setup failed: {e}"))
                    }
                }
            }
            Command::CleanupProxyArpBridge {
                container_name,
                ip_address,
                parent_interface,
                veth_host,
            } => {
                let present = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
                let ip = match present(ip_address) {
                    Some(ip) => match ip.trim().parse::<Ipv4Addr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => return Response::error(format!("Invalid ip_address: {ip}")),
                    },
                    None => None,
                };
                let parent = present(parent_interface);
                if let Some(p) = parent.as_deref().filter(|p| !valid_interface_name(p)) {
                    return Response::error(format!("Invalid interface name: {p}"));
                }
                let veth_host = present(veth_host);
                match bridges.cleanup(&container_name, ip, parent.as_deref(), veth_host.as_deref())
                {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::error(e),
                }
            }
            Command::CleanupAllProxyArp => match bridges.remove_all() {
                Ok(n) => Response::ok().with("veths_removed", json!(n)),
                Err(e) => Response::error(e),
            },
            other => Response::error(format!("not a proxy-ARP command: {other:?}")),
        }
    }
}

#[cfg(test)]
mod kernel_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_masks_become_prefix_lengths() {
        assert_eq!(prefix_len("255.255.255.0"), Ok(24));
        assert_eq!(prefix_len("255.255.240.0"), Ok(20));
        assert_eq!(prefix_len("255.255.255.255"), Ok(32));
        assert_eq!(prefix_len("192.168.1.0/24"), Ok(24));
        assert_eq!(prefix_len("24"), Ok(24));
        assert_eq!(prefix_len(" 16 "), Ok(16));
        assert!(
            prefix_len("255.0.255.0")
                .unwrap_err()
                .contains("not contiguous")
        );
        for bad in [
            "",
            "0",
            "33",
            "0.0.0.0",
            "255.255.255",
            "x",
            "10.0.0.0/40",
            "-1",
        ] {
            assert!(prefix_len(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn setups_are_checked_with_clear_errors() {
        let ok = Setup::parse("plc", 42, "wlan0", "10.214.0.50", "10.214.0.1", "24").unwrap();
        assert_eq!(ok.prefix_len, 24);
        let err = |c: &str, pid, p: &str, ip: &str, gw: &str, m: &str| {
            Setup::parse(c, pid, p, ip, gw, m).unwrap_err()
        };
        assert_eq!(
            err("plc", 0, "wlan0", "10.214.0.50", "10.214.0.1", "24"),
            "Missing required parameters for Proxy ARP setup"
        );
        assert_eq!(
            err("plc", 1, "wlan 0", "10.214.0.50", "10.214.0.1", "24"),
            "Invalid interface name: wlan 0"
        );
        assert_eq!(
            err("plc", 1, "wlan0", "10.214.0.500", "10.214.0.1", "24"),
            "Invalid ip_address: 10.214.0.500"
        );
        assert_eq!(
            err("plc", 1, "wlan0", "10.214.0.50", "gw", "24"),
            "Invalid gateway: gw"
        );
        assert!(err("plc", 1, "wlan0", "10.214.0.50", "10.215.0.1", "24").contains("not another"));
        assert!(err("plc", 1, "wlan0", "10.214.0.50", "10.214.0.50", "24").contains("not another"));
        assert!(err("plc", 1, "wlan0", "127.0.0.5", "127.0.0.1", "8").contains("unicast"));
        assert_eq!(
            err(
                "plc",
                1,
                "wlan0",
                "10.214.0.50",
                "10.214.0.1",
                "255.0.255.0"
            ),
            "Invalid subnet_mask: 255.0.255.0 (the ones are not contiguous)"
        );
    }

    #[test]
    fn names_are_short_stable_distinct_and_recognised() {
        let ip = Ipv4Addr::new(10, 214, 0, 50);
        let a = host_name("plc-01-long-name", ip);
        assert_eq!(a.len(), 13);
        assert!(valid_interface_name(&a) && is_own_name(&a));
        assert_eq!(a, host_name("plc-01-long-name", ip));
        // W1: the original's `veth-plc-01-l` for both.
        assert_ne!(a, host_name("plc-01-long-other", ip));
        assert_ne!(
            a,
            host_name("plc-01-long-name", Ipv4Addr::new(10, 214, 0, 51))
        );
        // A fixed value: names must not change between netmon versions.
        assert_eq!(host_name("plc", ip), host_name("plc", ip));
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        let peer = peer_name("plc", ip);
        assert!(!is_own_name(&peer) && valid_interface_name(&peer));
        for foreign in [
            "veth-plc",
            "vpa",
            "vpa012345678",
            "vpa0123456789a",
            "vpaABCDEF0123",
        ] {
            assert!(!is_own_name(foreign), "{foreign}");
        }
    }

    #[test]
    fn the_container_end_gets_the_first_free_eth_name() {
        let taken = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            free_eth_name(&taken(&["lo", "eth0"])).as_deref(),
            Some("eth1")
        );
        assert_eq!(
            free_eth_name(&taken(&["lo", "eth0", "eth1", "eth3"])).as_deref(),
            Some("eth2")
        );
    }

    #[test]
    fn aliases_round_trip_and_foreign_ones_are_ignored() {
        let k = Known {
            container_name: "plc 01".into(),
            ip: Ipv4Addr::new(10, 214, 0, 50),
            parent: "wlan0".into(),
        };
        assert_eq!(parse_alias(&alias_of(&k)), Some(k));
        assert_eq!(parse_alias("my uplink"), None);
        let long = Known {
            container_name: "é".repeat(200),
            ip: Ipv4Addr::new(10, 214, 0, 50),
            parent: "wlan0".into(),
        };
        let alias = alias_of(&long);
        assert!(alias.len() <= ALIAS_MAX);
        assert_eq!(parse_alias(&alias).map(|k| k.ip), Some(long.ip));
    }
}
