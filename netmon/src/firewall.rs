//! FORWARD accept rules for the proxy-ARP bridges (upstream-head §5.4 step 9), over nftables
//! netlink: the image has no `iptables`. A Docker host drops forwarded traffic by default
//! (`-P FORWARD DROP`), so without these a Wi-Fi runtime reaches nothing past the host.
//!
//! The rules go where the host's `iptables` (nft variant, Debian's default) keeps `FORWARD`:
//! chain `FORWARD` of table `ip filter`, at the top, in the exact form `iptables-nft -I FORWARD
//! -i <veth> -o <parent> -j ACCEPT` writes (meta iifname/oifname compared with the NUL-terminated
//! name, a counter, an accept verdict), so `iptables -S` shows them as ordinary rules. Each
//! carries a comment (rule user data, as `-m comment` stores it) naming netmon and the veth, which
//! is how netmon finds its own rules again and never touches anyone else's. A rule in a separate
//! nftables table would not do: a drop in any base chain at the hook is final.
//!
//! Hosts without that chain need nothing (no firewall), except hosts on `iptables-legacy`,
//! whose tables nftables cannot reach: there the set-up says so and the owner must allow the
//! forwarding.
//!
//! Blocking; runs on the proxy-ARP job thread.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_IPV4: u8 = 2;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_ACCEPT: u32 = 1;
/// libnftnl's `NFTNL_UDATA_RULE_COMMENT`: how `-m comment` is stored by iptables-nft.
const UDATA_RULE_COMMENT: u8 = 0;

/// The kernel's answer for a table or chain (or rule) that does not exist.
const ENOENT: i32 = nix::libc::ENOENT;

const TABLE: &str = "filter";
const CHAIN: &str = "FORWARD";
/// Every comment of netmon's rules starts so; then the host veth's name.
const MARK: &str = "autonomy-netmon proxy-arp ";

/// What [`allow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// The two rules are in `ip filter FORWARD`.
    Inserted,
    /// The host has no nftables `FORWARD` chain and no legacy filter table: nothing drops.
    NoFirewall,
}

/// Lets forwarded traffic between `veth` and `parent` through the host's `FORWARD` chain, both
/// ways; replaces netmon's earlier rules for `veth`. Fails on an `iptables-legacy` host (with
/// what the owner must do) or when the kernel refuses.
pub fn allow(veth: &str, parent: &str) -> Result<Allowed, String> {
    let mut nft = Nft::open().map_err(|e| format!("nftables netlink: {e}"))?;
    let stale = nft.own_rules(|c| c == comment(veth));
    let stale = match stale {
        Ok(handles) => handles,
        Err(e) if e.raw_os_error() == Some(ENOENT) => return no_chain(veth, parent),
        Err(e) => return Err(format!("listing FORWARD rules: {e}")),
    };
    for handle in stale {
        nft.delete(handle)
            .map_err(|e| format!("removing an old FORWARD rule: {e}"))?;
    }
    let inserted = nft
        .insert_accept(veth, parent, &comment(veth))
        .and_then(|()| nft.insert_accept(parent, veth, &comment(veth)));
    match inserted {
        Ok(()) => Ok(Allowed::Inserted),
        Err(e) if e.raw_os_error() == Some(ENOENT) => no_chain(veth, parent),
        Err(e) => {
            // Never half: one direction without the other helps no one.
            let _ = revoke(veth);
            Err(format!("inserting FORWARD rules: {e}"))
        }
    }
}

/// Removes netmon's rules for `veth`; the number removed. No chain is nothing to remove.
pub fn revoke(veth: &str) -> Result<usize, String> {
    remove_where(|c| c == comment(veth))
}

/// Removes every rule netmon put in `FORWARD` (self-destruct, netmon's stop).
pub fn revoke_all() -> Result<usize, String> {
    remove_where(|c| c.starts_with(MARK))
}

fn remove_where(keep: impl Fn(&str) -> bool) -> Result<usize, String> {
    let mut nft = Nft::open().map_err(|e| format!("nftables netlink: {e}"))?;
    let handles = match nft.own_rules(keep) {
        Ok(h) => h,
        Err(e) if e.raw_os_error() == Some(ENOENT) => return Ok(0),
        Err(e) => return Err(format!("listing FORWARD rules: {e}")),
    };
    let mut removed = 0;
    for handle in handles {
        match nft.delete(handle) {
            Ok(()) => removed += 1,
            // Someone flushed it meanwhile: gone is what was wanted.
            Err(e) if e.raw_os_error() == Some(ENOENT) => {}
            Err(e) => return Err(format!("removing a FORWARD rule: {e}")),
        }
    }
    Ok(removed)
}

fn comment(veth: &str) -> String {
    format!("{MARK}{veth}")
}

/// No nftables `ip filter FORWARD`: either no firewall, or the legacy one nftables cannot reach.
fn no_chain(veth: &str, parent: &str) -> Result<Allowed, String> {
    if legacy_filter_loaded() {
        return Err(format!(
            "this host uses iptables-legacy, which netmon cannot reach without an iptables binary; \
             allow the forwarding yourself: iptables -I FORWARD -i {veth} -o {parent} -j ACCEPT; \
             iptables -I FORWARD -i {parent} -o {veth} -j ACCEPT"
        ));
    }
    Ok(Allowed::NoFirewall)
}

/// Whether x_tables has a `filter` table for IPv4 (the legacy `iptables`).
fn legacy_filter_loaded() -> bool {
    // thread-self: this thread may be in another namespace than the process (tests, setns).
    std::fs::read_to_string("/proc/thread-self/net/ip_tables_names")
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"))
}

/// A netlink attribute writer: type, length, value, padded to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        // Values here are names, numbers and small nests: far below 64 KiB.
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }
    fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }
    fn be64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }
    fn nest(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

/// One expression of a rule: `{name, data}`.
fn expr(name: &str, data: &Attrs) -> Attrs {
    let mut e = Attrs::default();
    e.str(NFTA_EXPR_NAME, name).nest(NFTA_EXPR_DATA, data);
    e
}

/// `-i <iif> -o <oif> -j ACCEPT` as iptables-nft writes it, with `comment`.
fn accept_rule(iif: &str, oif: &str, comment: &str) -> Attrs {
    let mut list = Attrs::default();
    for (key, name) in [(NFT_META_IIFNAME, iif), (NFT_META_OIFNAME, oif)] {
        let mut meta = Attrs::default();
        meta.be32(NFTA_META_KEY, key)
            .be32(NFTA_META_DREG, NFT_REG_1);
        list.nest(NFTA_LIST_ELEM, &expr("meta", &meta));
        // The name with its NUL: an exact match (iptables' `eth+` wildcards omit it).
        let mut value = Attrs::default();
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(0);
        value.put(NFTA_DATA_VALUE, &bytes);
        let mut cmp = Attrs::default();
        cmp.be32(NFTA_CMP_SREG, NFT_REG_1)
            .be32(NFTA_CMP_OP, NFT_CMP_EQ)
            .nest(NFTA_CMP_DATA, &value);
        list.nest(NFTA_LIST_ELEM, &expr("cmp", &cmp));
    }
    let mut counter = Attrs::default();
    counter
        .be64(NFTA_COUNTER_BYTES, 0)
        .be64(NFTA_COUNTER_PACKETS, 0);
    list.nest(NFTA_LIST_ELEM, &expr("counter", &counter));
    let mut code = Attrs::default();
    code.be32(NFTA_VERDICT_CODE, NF_ACCEPT);
    let mut verdict = Attrs::default();
    verdict.nest(NFTA_DATA_VERDICT, &code);
    let mut imm = Attrs::default();
    imm.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
        .nest(NFTA_IMMEDIATE_DATA, &verdict);
    list.nest(NFTA_LIST_ELEM, &expr("immediate", &imm));

    let mut rule = Attrs::default();
    rule.str(NFTA_RULE_TABLE, TABLE)
        .str(NFTA_RULE_CHAIN, CHAIN)
        .nest(NFTA_RULE_EXPRESSIONS, &list)
        .put(NFTA_RULE_USERDATA, &udata_comment(comment));
    rule
}

/// libnftnl's user-data TLV for a comment: type, length, the NUL-terminated text.
fn udata_comment(comment: &str) -> Vec<u8> {
    let mut text = comment.as_bytes().to_vec();
    text.truncate(254);
    text.push(0);
    let mut v = vec![
        UDATA_RULE_COMMENT,
        u8::try_from(text.len()).unwrap_or(u8::MAX),
    ];
    v.extend_from_slice(&text);
    v
}

/// The comment in a rule's user data, if it has one.
fn udata_comment_of(udata: &[u8]) -> Option<&str> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let text = value.split(|b| *b == 0).next()?;
            return std::str::from_utf8(text).ok();
        }
        rest = &rest[2 + len..];
    }
    None
}

/// The attributes of one message payload: `(type without flags, value)`.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value))
    })
}

/// A rule of a dump: its handle and comment, when in `ip filter FORWARD`.
fn rule_of(payload: &[u8]) -> Option<(u64, Option<String>)> {
    let (mut table, mut chain, mut handle, mut comment) = (None, None, None, None);
    for (kind, value) in attrs(payload) {
        match kind {
            NFTA_RULE_TABLE => table = Some(value.split(|b| *b == 0).next()?.to_vec()),
            NFTA_RULE_CHAIN => chain = Some(value.split(|b| *b == 0).next()?.to_vec()),
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(value.try_into().ok()?)),
            NFTA_RULE_USERDATA => comment = udata_comment_of(value).map(str::to_owned),
            _ => {}
        }
    }
    (table.as_deref() == Some(TABLE.as_bytes()) && chain.as_deref() == Some(CHAIN.as_bytes()))
        .then_some((handle?, comment))
}

struct Nft {
    socket: Socket,
    seq: u32,
}

impl Nft {
    fn open() -> io::Result<Nft> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        Ok(Nft { socket, seq: 1 })
    }

    /// Appends one netlink message (header, nfgenmsg, attributes) to `out`.
    fn message(
        &mut self,
        out: &mut Vec<u8>,
        kind: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        attrs: &[u8],
    ) {
        let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        self.seq = self.seq.wrapping_add(1);
        out.push(family);
        out.push(0); // NFNETLINK_V0
        out.extend_from_slice(&res_id.to_be_bytes());
        out.extend_from_slice(attrs);
        out.resize(out.len().next_multiple_of(4), 0);
    }

    /// Sends one change in a batch (nftables takes changes only so) and waits for its ack.
    fn change(&mut self, kind: u16, flags: u16, attrs: &Attrs) -> io::Result<()> {
        let mut out = Vec::new();
        self.message(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        let acked = self.seq;
        self.message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_IPV4,
            0,
            &attrs.0,
        );
        self.message(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.socket.send(&out, 0)?;
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            for (kind, _, seq, payload) in messages(&buf) {
                if kind == NLMSG_ERROR && seq == acked {
                    return ack_result(payload);
                }
            }
        }
    }

    fn insert_accept(&mut self, iif: &str, oif: &str, comment: &str) -> io::Result<()> {
        // No NLM_F_APPEND: at the top of the chain, as `iptables -I`.
        self.change(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE,
            &accept_rule(iif, oif, comment),
        )
    }

    fn delete(&mut self, handle: u64) -> io::Result<()> {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, CHAIN)
            .be64(NFTA_RULE_HANDLE, handle);
        self.change(NFT_MSG_DELRULE, 0, &a)
    }

    /// Handles of the rules in `ip filter FORWARD` whose comment passes `mine`. ENOENT when
    /// the table or chain does not exist.
    fn own_rules(&mut self, mine: impl Fn(&str) -> bool) -> io::Result<Vec<u64>> {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, CHAIN);
        let mut out = Vec::new();
        let asked = self.seq;
        self.message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            NFPROTO_IPV4,
            0,
            &a.0,
        );
        self.socket.send(&out, 0)?;
        let mut handles = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            for (kind, flags, seq, payload) in messages(&buf) {
                if seq != asked {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(handles),
                    NLMSG_ERROR => {
                        ack_result(payload)?;
                        return Ok(handles);
                    }
                    _ => {
                        let found = payload.get(4..).and_then(rule_of);
                        if let Some((handle, Some(c))) = found
                            && mine(&c)
                        {
                            handles.push(handle);
                        }
                        if flags & NLM_F_MULTI == 0 {
                            return Ok(handles);
                        }
                    }
                }
            }
        }
    }
}

/// The messages of one datagram: `(type, flags, seq, payload)`.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        let payload = &buf[16..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, flags, seq, payload))
    })
}

/// An `NLMSG_ERROR` payload: 0 is an ack, else `-errno`.
fn ack_result(payload: &[u8]) -> io::Result<()> {
    let code = payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(-5);
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_through_user_data() {
        let u = udata_comment("autonomy-netmon proxy-arp vpa0123456789");
        assert_eq!(u[0], UDATA_RULE_COMMENT);
        assert_eq!(
            udata_comment_of(&u),
            Some("autonomy-netmon proxy-arp vpa0123456789")
        );
        assert_eq!(udata_comment_of(&[1, 2, b'a', 0]), None);
        assert_eq!(udata_comment_of(&[0, 9, b'a']), None);
    }

    #[test]
    fn a_rule_is_read_back_with_its_handle_and_comment() {
        let mut rule = accept_rule("vpa1", "wlan0", &comment("vpa1"));
        rule.be64(NFTA_RULE_HANDLE, 42);
        assert_eq!(rule_of(&rule.0), Some((42, Some(comment("vpa1")))));
        let mut other = Attrs::default();
        other
            .str(NFTA_RULE_TABLE, "nat")
            .str(NFTA_RULE_CHAIN, CHAIN)
            .be64(NFTA_RULE_HANDLE, 7);
        assert_eq!(rule_of(&other.0), None);
    }

    #[test]
    fn names_are_compared_exactly() {
        let rule = accept_rule("vpa1", "wlan0", "c");
        // The interface names appear with their NUL (exact match, not a wildcard).
        let bytes = &rule.0;
        assert!(bytes.windows(5).any(|w| w == b"vpa1\0"));
        assert!(bytes.windows(6).any(|w| w == b"wlan0\0"));
    }
}
