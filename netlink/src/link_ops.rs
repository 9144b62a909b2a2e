//! Link writes for dedicated NICs and vNICs: look a link up by name, set it up or down, set its
//! MAC (`IFLA_ADDRESS`), move it into another network namespace (`IFLA_NET_NS_FD`), and run such
//! requests from inside another namespace ([`in_netns`]). Blocking calls on a plain netlink socket: callers run them off the
//! async runtime (a dedicated thread). Knows nothing of containers or of who asked.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::parse::{Body, Event, parse_datagram};

/// Receive buffer: an answer to one request is one small datagram (a link message or an ack).
const RECV_BUF: usize = 64 * 1024;
/// How long one request may wait for its answer.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A blocking rtnetlink socket for link requests, in the network namespace of the thread that
/// opened it (a netlink socket stays in the namespace it was created in).
pub struct LinkOps {
    sock: Socket,
    buf: Vec<u8>,
    sequence: u32,
}

impl LinkOps {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("socket", e))?;
        sock.bind_auto().map_err(|e| Error::io("bind", e))?;
        set_recv_timeout(&sock)?;
        Ok(Self {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
            sequence: 0,
        })
    }

    /// The index of the link called `name` in this socket's namespace, `None` when there is none.
    pub fn index_of(&mut self, name: &str) -> Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request("getlink", RouteNetlinkMessage::GetLink(msg), false) {
            Ok(Some(index)) => Ok(Some(index)),
            Ok(None) => Ok(None),
            Err(Error::Kernel { code, .. }) if code == -libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the link administratively up or down.
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        self.request("setlink", RouteNetlinkMessage::SetLink(msg), true)
            .map(drop)
    }

    /// Sets the link's hardware address. The kernel checks it (a multicast address is refused with
    /// `EADDRNOTAVAIL`, one another MACVLAN of the same parent uses with `EADDRINUSE`); MACVLAN
    /// and veth links take the change while up.
    pub fn set_address(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request("setlink address", RouteNetlinkMessage::SetLink(msg), true)
            .map(drop)
    }

    /// Moves the link into the network namespace `netns` (an open `/proc/<pid>/ns/net` or
    /// `/run/netns/<name>`). It keeps its name; the kernel sets it down.
    pub fn move_to_netns(&mut self, index: u32, netns: &File) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_fd().as_raw_fd()));
        self.request("setlink netns", RouteNetlinkMessage::SetLink(msg), true)
            .map(drop)
    }

    /// Sends one request; with `ack`, waits for the kernel's ack, else for one link message
    /// (whose index is returned).
    fn request(
        &mut self,
        request: &'static str,
        msg: RouteNetlinkMessage,
        ack: bool,
    ) -> Result<Option<u32>> {
        self.sequence = self.sequence.wrapping_add(1);
        let seq = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock
            .send_to(&out, &SocketAddr::new(0, 0), 0)
            .map_err(|e| Error::io("send", e))?;
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0).map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    Error::Timeout { request }
                } else {
                    Error::io("recv", e)
                }
            })?;
            if n >= self.buf.capacity() {
                return Err(Error::Truncated {
                    len: n,
                    capacity: self.buf.capacity(),
                });
            }
            for frame in parse_datagram(&self.buf)? {
                if frame.sequence != seq {
                    continue;
                }
                match frame.body {
                    Body::Error(code) => return Err(Error::Kernel { request, code }),
                    Body::Ack | Body::Done => return Ok(None),
                    Body::Event(Event::LinkChanged(link)) if !ack => return Ok(Some(link.index)),
                    Body::Event(_) | Body::Other => {}
                }
            }
        }
    }
}

fn set_recv_timeout(sock: &Socket) -> Result<()> {
    use nix::sys::time::TimeValLike;
    let secs = i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(5);
    let tv = nix::sys::time::TimeVal::seconds(secs);
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| Error::io("setsockopt", e.into()))
}

/// Runs `f` on a new thread that first joins the network namespace at `netns` (e.g.
/// `/proc/<pid>/ns/net`), so netlink sockets `f` opens live there. The calling thread's
/// namespace is untouched (setns applies to one thread; the thread ends with `f`). Needs
/// `CAP_SYS_ADMIN` (and `CAP_NET_ADMIN` for whatever `f` changes).
pub fn in_netns<T, F>(netns: &File, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("setns", e.into()))?;
            f()
        });
        handle.join().unwrap_or_else(|_| {
            Err(Error::io(
                "thread",
                std::io::Error::other("the namespace thread panicked"),
            ))
        })
    })
}

/// Opens a network namespace file (`/proc/<pid>/ns/net`, `/run/netns/<name>`).
pub fn open_netns(path: &Path) -> std::io::Result<File> {
    File::open(path)
}
