//! The two kernel conversations: request/response dumps ([`RouteSocket`]) and the multicast
//! event stream ([`EventStream`]). Moves bytes and hands them to `parse`; knows nothing of the
//! interface model or of who consumes the results.

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::parse::{Body, Event, parse_datagram};
use crate::types::{MAIN_TABLE, Snapshot};

/// Receive buffer for one datagram. Dump replies are at most 32 KiB (the kernel's dump skb
/// limit); multicast events are far smaller. netlink-sys reads into the spare capacity, so the
/// buffer must be allocated with capacity, not grown on demand (it would read 64 bytes).
const RECV_BUF: usize = 64 * 1024;

/// Kernel-side queue for multicast events: a burst of changes must not overflow it (ENOBUFS).
/// Capped by `net.core.rmem_max`; overflow is still handled with [`Event::Resync`].
const EVENT_SOCKET_RCVBUF: usize = 1024 * 1024;

/// How long a dump may take before we give up (they take well under a millisecond).
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives one datagram into `buf` (cleared first, capacity kept).
async fn recv_datagram(sock: &mut TokioSocket, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    std::future::poll_fn(|cx| sock.poll_recv(cx, buf))
        .await
        .map_err(|e| Error::io("recv", e))?;
    let len = buf.len();
    if len >= buf.capacity() {
        // A datagram exactly filling the buffer may have been cut off: treat it as lost.
        return Err(Error::Truncated {
            len,
            capacity: buf.capacity(),
        });
    }
    Ok(())
}

/// A netlink socket for dumps of links, IPv4 addresses and IPv4 routes.
pub struct RouteSocket {
    sock: TokioSocket,
    buf: Vec<u8>,
    sequence: u32,
}

impl RouteSocket {
    /// Opens the socket (in the calling thread's network namespace). Needs a tokio runtime.
    pub fn new() -> Result<Self> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(|e| Error::io("socket", e))?;
        sock.socket_mut()
            .bind_auto()
            .map_err(|e| Error::io("bind", e))?;
        Ok(Self {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
            sequence: 0,
        })
    }

    /// Links, IPv4 addresses and the main table's IPv4 routes, as three consecutive dumps.
    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let link = RouteNetlinkMessage::GetLink(LinkMessage::default());
        for event in self.dump("link", link).await? {
            if let Event::LinkChanged(l) = event {
                snap.links.push(l);
            }
        }
        let mut am = AddressMessage::default();
        am.header.family = AddressFamily::Inet;
        for event in self
            .dump("address", RouteNetlinkMessage::GetAddress(am))
            .await?
        {
            if let Event::AddressAdded(a) = event {
                snap.addresses.push(a);
            }
        }
        let mut rm = RouteMessage::default();
        rm.header.address_family = AddressFamily::Inet;
        for event in self
            .dump("route", RouteNetlinkMessage::GetRoute(rm))
            .await?
        {
            if let Event::RouteAdded(r) = event
                && r.table == MAIN_TABLE
            {
                snap.routes.push(r);
            }
        }
        Ok(snap)
    }

    async fn dump(
        &mut self,
        request: &'static str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<Event>> {
        self.sequence = self.sequence.wrapping_add(1);
        let seq = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);

        let work = async {
            self.sock
                .send_to(&out, &SocketAddr::new(0, 0))
                .await
                .map_err(|e| Error::io("send", e))?;
            let mut events = Vec::new();
            loop {
                recv_datagram(&mut self.sock, &mut self.buf).await?;
                for frame in parse_datagram(&self.buf)? {
                    // Replies to an earlier, abandoned dump are skipped.
                    if frame.sequence != seq {
                        continue;
                    }
                    match frame.body {
                        Body::Event(e) => events.push(e),
                        Body::Done => return Ok(events),
                        Body::Error(code) => return Err(Error::Kernel { request, code }),
                        Body::Ack | Body::Other => {}
                    }
                }
            }
        };
        tokio::time::timeout(DUMP_TIMEOUT, work)
            .await
            .map_err(|_| Error::Timeout { request })?
    }
}

/// Multicast subscription to link, IPv4 address and IPv4 route changes.
pub struct EventStream {
    sock: TokioSocket,
    buf: Vec<u8>,
}

impl EventStream {
    /// Subscribes (in the calling thread's network namespace) with a 1 MiB kernel receive
    /// queue. Needs a tokio runtime.
    pub fn subscribe() -> Result<Self> {
        Self::subscribe_with_queue(EVENT_SOCKET_RCVBUF)
    }

    /// Subscribes with a kernel receive queue of `bytes` (`SO_RCVBUF`, best effort: the kernel
    /// caps it at `net.core.rmem_max` and doubles it for bookkeeping).
    pub fn subscribe_with_queue(bytes: usize) -> Result<Self> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(|e| Error::io("socket", e))?;
        {
            let s = sock.socket_mut();
            // Best effort: the kernel caps it at rmem_max; overruns are handled anyway.
            let _ = s.set_rx_buf_sz(bytes);
            s.bind_auto().map_err(|e| Error::io("bind", e))?;
            for group in [
                libc::RTNLGRP_LINK,
                libc::RTNLGRP_IPV4_IFADDR,
                libc::RTNLGRP_IPV4_ROUTE,
            ] {
                s.add_membership(group)
                    .map_err(|e| Error::io("add_membership", e))?;
            }
        }
        Ok(Self {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Waits for the next datagram and returns its events (possibly none: IPv6 or other
    /// messages are skipped). An overrun yields `[Event::Resync]`: the consumer must re-dump.
    /// Cancel-safe: nothing is consumed until a datagram is ready.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        match recv_datagram(&mut self.sock, &mut self.buf).await {
            Ok(()) => {}
            Err(e) if e.is_overrun() => return Ok(vec![Event::Resync]),
            Err(e) => return Err(e),
        }
        Ok(parse_datagram(&self.buf)?
            .into_iter()
            .filter_map(|f| match f.body {
                Body::Event(e) => Some(e),
                _ => None,
            })
            .collect())
    }
}
