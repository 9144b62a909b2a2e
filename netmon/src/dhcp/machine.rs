//! The DHCP client's state machine (RFC 2131 §4.4), pure: time comes in as an argument (a
//! monotonic offset from the client's start), packets come in decoded and go out as
//! [`Packet`] descriptions, and what the shell must do is returned as [`Action`]s. No sockets,
//! no clock, no randomness of its own (a seeded generator for the jitter), so every timer is
//! testable with a fake clock.
//!
//! States: INIT → SELECTING (DISCOVER, first OFFER wins) → REQUESTING (broadcast REQUEST) →
//! BOUND; at T1 RENEWING (REQUEST unicast to the server), at T2 REBINDING (broadcast), at expiry
//! the lease is lost and the client starts over. INIT-REBOOT (a lease remembered from before a
//! restart) asks for the same address first and falls back to the remembered lease while it is
//! valid. A NAK at any point drops the lease and starts over (after a delay when NAKs repeat).

use std::net::Ipv4Addr;
use std::time::Duration;

/// First retransmission delay (RFC 2131 §4.1: 4 s, doubling, ±1 s of jitter, at most 64 s).
pub const RETRANSMIT_BASE: Duration = Duration::from_secs(4);
/// Longest retransmission delay.
pub const RETRANSMIT_CAP: Duration = Duration::from_secs(64);
/// REQUESTs sent for one OFFER before starting over with a DISCOVER.
pub const REQUEST_TRIES: u32 = 4;
/// REQUESTs sent in INIT-REBOOT before falling back.
pub const REBOOT_TRIES: u32 = 2;
/// Shortest wait between retransmissions while RENEWING or REBINDING (RFC 2131 §4.4.5).
pub const RENEW_RETRY_MIN: Duration = Duration::from_secs(60);

/// A lease as the server granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Option 3, in the server's order; the first is the default gateway.
    pub routers: Vec<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 28.
    pub broadcast: Option<Ipv4Addr>,
    /// Option 54 (else the reply's source).
    pub server: Ipv4Addr,
    /// Option 51, seconds; `u32::MAX` is infinite.
    pub lease_time: u32,
    /// Option 58 (T1), seconds from the REQUEST.
    pub renew: u32,
    /// Option 59 (T2), seconds from the REQUEST.
    pub rebind: u32,
}

impl Lease {
    /// Whether what the agent is told about (address, prefix, gateways, DNS) is the same.
    pub fn same_report(&self, other: &Lease) -> bool {
        self.ip == other.ip
            && self.prefix == other.prefix
            && self.routers == other.routers
            && self.dns == other.dns
    }

    /// The default gateway (the first router).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routers.first().copied()
    }
}

/// A decoded reply from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An OFFER of `ip` from `server`.
    Offer {
        xid: u32,
        ip: Ipv4Addr,
        server: Ipv4Addr,
    },
    /// An ACK granting the lease.
    Ack { xid: u32, lease: Lease },
    /// A NAK.
    Nak { xid: u32 },
}

impl Reply {
    fn xid(&self) -> u32 {
        match self {
            Reply::Offer { xid, .. } | Reply::Ack { xid, .. } | Reply::Nak { xid } => *xid,
        }
    }
}

/// What to send (the codec turns it into bytes with the client's MAC and client id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Discover,
    /// `requested`: option 50; `server`: option 54; `ciaddr`: the address held (renew/rebind).
    Request {
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    },
    Release {
        ip: Ipv4Addr,
        server: Ipv4Addr,
    },
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 out of the interface.
    Broadcast,
    /// The server's address, port 67.
    Unicast(Ipv4Addr),
}

/// One packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub xid: u32,
    pub message: Message,
    pub to: Destination,
}

impl Packet {
    /// The packet as a client on the host's Wi-Fi sends it for a vNIC (upstream-head §5.3): the
    /// leased address is not the host's (it lives in a container behind a proxy-ARP bridge), so
    /// a reply sent to it (RFC 2131 §4.1: to `ciaddr` when set) would be routed into the
    /// container, never to the client. So a renewal or rebinding asks in the INIT-REBOOT form
    /// (option 50, no `ciaddr`, no server id; servers extend the lease just the same) with the
    /// broadcast flag, and everything goes out broadcast, which needs no address on the parent.
    /// A RELEASE keeps `ciaddr` (servers find the lease by it; no reply comes).
    pub fn for_host(self) -> Packet {
        let message = match self.message {
            Message::Request {
                ciaddr: Some(ip), ..
            } => Message::Request {
                requested: Some(ip),
                server: None,
                ciaddr: None,
            },
            other => other,
        };
        Packet {
            xid: self.xid,
            message,
            to: Destination::Broadcast,
        }
    }
}

/// Why a lease was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The server said NAK.
    Nak,
    /// It expired without a renewal.
    Expired,
    /// The client released it (stop).
    Released,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Packet),
    /// Configure the lease (address, default route) and record it. `renewal`: the same binding
    /// extended (RENEWING, REBINDING), rather than a new one. `age`: how long ago the lease was
    /// granted (its timers count from the REQUEST; a remembered lease is older than the client).
    Bound {
        lease: Lease,
        renewal: bool,
        age: Duration,
    },
    /// Remove the lease's configuration.
    Lost {
        lease: Lease,
        reason: LossReason,
    },
}

/// A lease remembered from before a restart, `age` after it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub lease: Lease,
    pub age: Duration,
}

/// The timers of a held lease, as instants of the machine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub expiry: Duration,
}

impl Timers {
    /// Timers of `lease` granted at `granted` (may lie before the clock's zero: `age`).
    fn of(lease: &Lease, now: Duration, age: Duration) -> Timers {
        let at = |secs: u32| {
            if secs == u32::MAX {
                Duration::MAX
            } else {
                (now + Duration::from_secs(u64::from(secs))).saturating_sub(age)
            }
        };
        Timers {
            t1: at(lease.renew),
            t2: at(lease.rebind),
            expiry: at(lease.lease_time),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing sent yet, or starting over; DISCOVER at `next`.
    Init,
    Selecting {
        xid: u32,
        tries: u32,
    },
    Requesting {
        xid: u32,
        tries: u32,
        ip: Ipv4Addr,
        server: Ipv4Addr,
        sent: Duration,
    },
    Rebooting {
        xid: u32,
        tries: u32,
        remembered: Lease,
        timers: Timers,
        sent: Duration,
    },
    Bound {
        lease: Lease,
        timers: Timers,
    },
    Renewing {
        xid: u32,
        lease: Lease,
        timers: Timers,
        sent: Duration,
    },
    Rebinding {
        xid: u32,
        lease: Lease,
        timers: Timers,
        sent: Duration,
    },
    Stopped,
}

/// The client.
#[derive(Debug)]
pub struct Machine {
    state: State,
    /// When the current state's next thing happens (retransmission, T1, ...).
    next: Duration,
    /// NAKs in a row: the next DISCOVER waits longer each time.
    naks: u32,
    rng: u64,
}

impl Machine {
    /// A client in INIT; `seed` drives transaction ids and jitter (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Machine {
            state: State::Init,
            next: Duration::ZERO,
            naks: 0,
            rng: seed | 1,
        }
    }

    /// Starts: INIT-REBOOT when a lease is remembered and still valid, else DISCOVER.
    pub fn start(&mut self, now: Duration, remembered: Option<Remembered>) -> Vec<Action> {
        if let Some(r) = remembered {
            let timers = Timers::of(&r.lease, now, r.age);
            if timers.expiry > now {
                let xid = self.xid();
                let packet = Packet {
                    xid,
                    message: Message::Request {
                        requested: Some(r.lease.ip),
                        server: None,
                        ciaddr: None,
                    },
                    to: Destination::Broadcast,
                };
                self.state = State::Rebooting {
                    xid,
                    tries: 1,
                    remembered: r.lease,
                    timers,
                    sent: now,
                };
                self.next = now + self.backoff(1);
                return vec![Action::Send(packet)];
            }
        }
        self.state = State::Init;
        self.next = now;
        self.on_timeout(now)
    }

    /// When [`Machine::on_timeout`] wants to be called next (`None`: never, stopped).
    pub fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Stopped => None,
            _ => Some(self.next),
        }
    }

    /// The lease held (bound, renewing or rebinding), if any.
    #[allow(dead_code)] // for the tests and the `dhcp_reply` fuzz target
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// The held lease's timers, if any.
    #[allow(dead_code)] // for the tests and the `dhcp_reply` fuzz target
    pub fn timers(&self) -> Option<Timers> {
        match &self.state {
            State::Bound { timers, .. }
            | State::Renewing { timers, .. }
            | State::Rebinding { timers, .. } => Some(*timers),
            _ => None,
        }
    }

    /// A short name of the state, for logs and status.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "init",
            State::Selecting { .. } => "selecting",
            State::Requesting { .. } => "requesting",
            State::Rebooting { .. } => "init-reboot",
            State::Bound { .. } => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
            State::Stopped => "stopped",
        }
    }

    /// Time passed: retransmit, move to RENEWING/REBINDING, expire. Nothing before the deadline.
    pub fn on_timeout(&mut self, now: Duration) -> Vec<Action> {
        if now < self.next {
            return Vec::new();
        }
        let state = std::mem::replace(&mut self.state, State::Stopped);
        match state {
            State::Init => self.discover_fresh(now),
            State::Selecting { xid, tries } => self.discover(now, xid, tries + 1),
            State::Requesting {
                xid,
                tries,
                ip,
                server,
                sent,
            } => {
                if tries >= REQUEST_TRIES {
                    return self.discover_fresh(now);
                }
                self.state = State::Requesting {
                    xid,
                    tries: tries + 1,
                    ip,
                    server,
                    sent,
                };
                self.next = now + self.backoff(tries + 1);
                vec![Action::Send(select_request(xid, ip, server))]
            }
            State::Rebooting {
                xid,
                tries,
                remembered,
                timers,
                sent,
            } => {
                if tries >= REBOOT_TRIES {
                    // No server answered: keep using the remembered lease while it lasts.
                    let age = if remembered.lease_time == u32::MAX {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(u64::from(remembered.lease_time))
                            .saturating_sub(timers.expiry.saturating_sub(now))
                    };
                    return self.hold(now, remembered, timers, false, age);
                }
                self.state = State::Rebooting {
                    xid,
                    tries: tries + 1,
                    remembered: remembered.clone(),
                    timers,
                    sent,
                };
                self.next = now + self.backoff(tries + 1);
                vec![Action::Send(Packet {
                    xid,
                    message: Message::Request {
                        requested: Some(remembered.ip),
                        server: None,
                        ciaddr: None,
                    },
                    to: Destination::Broadcast,
                })]
            }
            State::Bound { lease, timers }
            | State::Renewing { lease, timers, .. }
            | State::Rebinding { lease, timers, .. }
                if now >= timers.expiry =>
            {
                let mut actions = vec![Action::Lost {
                    lease,
                    reason: LossReason::Expired,
                }];
                actions.extend(self.discover_fresh(now));
                actions
            }
            State::Bound { lease, timers } | State::Renewing { lease, timers, .. }
                if now >= timers.t2 =>
            {
                let xid = self.xid();
                self.rebind(now, xid, lease, timers)
            }
            State::Rebinding {
                xid, lease, timers, ..
            } => self.rebind(now, xid, lease, timers),
            State::Bound { lease, timers } => {
                let xid = self.xid();
                self.renew(now, xid, lease, timers)
            }
            State::Renewing {
                xid, lease, timers, ..
            } => self.renew(now, xid, lease, timers),
            State::Stopped => Vec::new(),
        }
    }

    /// A reply arrived. Replies to other transactions, and replies a state does not expect, are
    /// ignored.
    pub fn on_reply(&mut self, now: Duration, reply: Reply) -> Vec<Action> {
        let current_xid = match &self.state {
            State::Selecting { xid, .. }
            | State::Requesting { xid, .. }
            | State::Rebooting { xid, .. }
            | State::Renewing { xid, .. }
            | State::Rebinding { xid, .. } => *xid,
            _ => return Vec::new(),
        };
        if reply.xid() != current_xid {
            return Vec::new();
        }
        let state = std::mem::replace(&mut self.state, State::Stopped);
        match (state, reply) {
            (State::Selecting { xid, .. }, Reply::Offer { ip, server, .. }) => {
                self.state = State::Requesting {
                    xid,
                    tries: 1,
                    ip,
                    server,
                    sent: now,
                };
                self.next = now + self.backoff(1);
                vec![Action::Send(select_request(xid, ip, server))]
            }
            (
                state @ (State::Requesting { sent, .. }
                | State::Rebooting { sent, .. }
                | State::Renewing { sent, .. }
                | State::Rebinding { sent, .. }),
                Reply::Ack { lease, .. },
            ) => {
                let renewal = match &state {
                    State::Renewing { lease: held, .. } | State::Rebinding { lease: held, .. } => {
                        held.ip == lease.ip
                    }
                    _ => false,
                };
                self.naks = 0;
                let age = now.saturating_sub(sent);
                let timers = Timers::of(&lease, now, age);
                self.hold(now, lease, timers, renewal, age)
            }
            (
                state @ (State::Requesting { .. }
                | State::Rebooting { .. }
                | State::Renewing { .. }
                | State::Rebinding { .. }),
                Reply::Nak { .. },
            ) => {
                let mut actions = Vec::new();
                match state {
                    State::Rebooting {
                        remembered: lease, ..
                    }
                    | State::Renewing { lease, .. }
                    | State::Rebinding { lease, .. } => actions.push(Action::Lost {
                        lease,
                        reason: LossReason::Nak,
                    }),
                    _ => {}
                }
                self.naks += 1;
                // The first NAK starts over at once; repeated ones back off.
                let wait = if self.naks <= 1 {
                    Duration::ZERO
                } else {
                    self.backoff(self.naks - 1)
                };
                self.state = State::Init;
                self.next = now + wait;
                if wait.is_zero() {
                    actions.extend(self.on_timeout(now));
                }
                actions
            }
            (state, _) => {
                // Not expected here (an OFFER while requesting, ...): ignored.
                self.state = state;
                Vec::new()
            }
        }
    }

    /// Stops: a held lease is released (RELEASE unicast to its server) and unconfigured.
    pub fn stop(&mut self) -> Vec<Action> {
        let state = std::mem::replace(&mut self.state, State::Stopped);
        match state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => {
                let packet = Packet {
                    xid: self.xid(),
                    message: Message::Release {
                        ip: lease.ip,
                        server: lease.server,
                    },
                    to: Destination::Unicast(lease.server),
                };
                vec![
                    Action::Send(packet),
                    Action::Lost {
                        lease,
                        reason: LossReason::Released,
                    },
                ]
            }
            _ => Vec::new(),
        }
    }

    fn hold(
        &mut self,
        now: Duration,
        lease: Lease,
        timers: Timers,
        renewal: bool,
        age: Duration,
    ) -> Vec<Action> {
        self.state = State::Bound {
            lease: lease.clone(),
            timers,
        };
        self.next = timers.t1.min(timers.t2).min(timers.expiry).max(now);
        vec![Action::Bound {
            lease,
            renewal,
            age,
        }]
    }

    fn discover_fresh(&mut self, now: Duration) -> Vec<Action> {
        let xid = self.xid();
        self.discover(now, xid, 1)
    }

    fn discover(&mut self, now: Duration, xid: u32, tries: u32) -> Vec<Action> {
        self.state = State::Selecting { xid, tries };
        self.next = now + self.backoff(tries);
        vec![Action::Send(Packet {
            xid,
            message: Message::Discover,
            to: Destination::Broadcast,
        })]
    }

    fn renew(&mut self, now: Duration, xid: u32, lease: Lease, timers: Timers) -> Vec<Action> {
        let packet = Packet {
            xid,
            message: Message::Request {
                requested: None,
                server: None,
                ciaddr: Some(lease.ip),
            },
            to: Destination::Unicast(lease.server),
        };
        self.next = retry_before(now, timers.t2);
        self.state = State::Renewing {
            xid,
            lease,
            timers,
            sent: now,
        };
        vec![Action::Send(packet)]
    }

    fn rebind(&mut self, now: Duration, xid: u32, lease: Lease, timers: Timers) -> Vec<Action> {
        let packet = Packet {
            xid,
            message: Message::Request {
                requested: None,
                server: None,
                ciaddr: Some(lease.ip),
            },
            to: Destination::Broadcast,
        };
        self.next = retry_before(now, timers.expiry);
        self.state = State::Rebinding {
            xid,
            lease,
            timers,
            sent: now,
        };
        vec![Action::Send(packet)]
    }

    /// `RETRANSMIT_BASE · 2^(tries-1)`, at most `RETRANSMIT_CAP`, ±1 s of jitter.
    fn backoff(&mut self, tries: u32) -> Duration {
        let doubling = 1u32
            .checked_shl(tries.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        let base = RETRANSMIT_BASE.saturating_mul(doubling).min(RETRANSMIT_CAP);
        // Uniform in [-1000, +1000] ms.
        let jitter_ms = self.next_random() % 2001;
        (base + Duration::from_millis(jitter_ms)).saturating_sub(Duration::from_secs(1))
    }

    fn xid(&mut self) -> u32 {
        // The upper half of the generator's output.
        u32::try_from(self.next_random() >> 32).unwrap_or(0)
    }

    /// xorshift64*: plenty for transaction ids and jitter.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The REQUEST that selects an OFFER (SELECTING → REQUESTING), broadcast so other servers see
/// their offer declined.
fn select_request(xid: u32, ip: Ipv4Addr, server: Ipv4Addr) -> Packet {
    Packet {
        xid,
        message: Message::Request {
            requested: Some(ip),
            server: Some(server),
            ciaddr: None,
        },
        to: Destination::Broadcast,
    }
}

/// RFC 2131 §4.4.5: wait half the time left until `limit`, at least 60 s, never past `limit`.
fn retry_before(now: Duration, limit: Duration) -> Duration {
    let half = limit.saturating_sub(now) / 2;
    (now + half.max(RENEW_RETRY_MIN)).min(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn lease(ip: [u8; 4], lease_time: u32) -> Lease {
        Lease {
            ip: ip.into(),
            prefix: 24,
            routers: vec![Ipv4Addr::new(10, 213, 0, 1)],
            dns: vec![Ipv4Addr::new(10, 213, 0, 1)],
            domain: None,
            mtu: None,
            broadcast: None,
            server: Ipv4Addr::new(10, 213, 0, 1),
            lease_time,
            renew: if lease_time == u32::MAX {
                u32::MAX
            } else {
                lease_time / 2
            },
            rebind: if lease_time == u32::MAX {
                u32::MAX
            } else {
                lease_time / 8 * 7
            },
        }
    }

    fn sent(actions: &[Action]) -> Vec<&Packet> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn only_packet(actions: &[Action]) -> Packet {
        let p = sent(actions);
        assert_eq!(p.len(), 1, "{actions:?}");
        p[0].clone()
    }

    /// Runs DISCOVER/OFFER/REQUEST/ACK at t=0 with a lease of `secs`; returns the machine bound.
    fn bound(secs: u32) -> Machine {
        let mut m = Machine::new(7);
        let discover = only_packet(&m.start(S(0), None));
        assert_eq!(discover.message, Message::Discover);
        let offer = Reply::Offer {
            xid: discover.xid,
            ip: Ipv4Addr::new(10, 213, 0, 50),
            server: Ipv4Addr::new(10, 213, 0, 1),
        };
        let request = only_packet(&m.on_reply(S(0), offer));
        assert_eq!(request.xid, discover.xid);
        let ack = Reply::Ack {
            xid: request.xid,
            lease: lease([10, 213, 0, 50], secs),
        };
        let actions = m.on_reply(S(0), ack);
        assert_eq!(
            actions,
            [Action::Bound {
                lease: lease([10, 213, 0, 50], secs),
                renewal: false,
                age: Duration::ZERO
            }]
        );
        m
    }

    #[test]
    fn dora_selects_the_offer_with_a_broadcast_request_naming_server_and_address() {
        let mut m = Machine::new(1);
        let discover = only_packet(&m.start(S(0), None));
        assert_eq!(discover.to, Destination::Broadcast);
        let offer = Reply::Offer {
            xid: discover.xid,
            ip: Ipv4Addr::new(10, 213, 0, 50),
            server: Ipv4Addr::new(10, 213, 0, 1),
        };
        // An offer for another transaction is ignored.
        let other = Reply::Offer {
            xid: discover.xid ^ 1,
            ip: Ipv4Addr::new(10, 213, 0, 99),
            server: Ipv4Addr::new(10, 213, 0, 9),
        };
        assert!(m.on_reply(S(1), other).is_empty());
        let request = only_packet(&m.on_reply(S(1), offer));
        assert_eq!(
            request.message,
            Message::Request {
                requested: Some(Ipv4Addr::new(10, 213, 0, 50)),
                server: Some(Ipv4Addr::new(10, 213, 0, 1)),
                ciaddr: None
            }
        );
        assert_eq!(request.to, Destination::Broadcast);
        assert_eq!(m.state_name(), "requesting");
    }

    #[test]
    fn discover_retransmits_with_doubling_jittered_capped_delays() {
        let mut m = Machine::new(42);
        let first = only_packet(&m.start(S(0), None));
        let mut now = S(0);
        let mut delays = Vec::new();
        for _ in 0..8 {
            let next = m.deadline().expect("a deadline");
            delays.push(next - now);
            // Nothing happens before the deadline.
            assert!(m.on_timeout(next - Duration::from_millis(1)).is_empty());
            now = next;
            let p = only_packet(&m.on_timeout(now));
            assert_eq!((p.message, p.xid), (Message::Discover, first.xid));
        }
        for (i, d) in delays.iter().enumerate() {
            let base = (4u64 << i).min(64);
            assert!(
                *d >= S(base - 1) && *d <= S(base + 1),
                "retransmission {i}: {d:?} not {base} s ± 1 s"
            );
        }
        // Jitter: not all exactly on the second.
        assert!(delays.iter().any(|d| d.subsec_millis() != 0));
    }

    #[test]
    fn bound_renews_at_t1_unicast_then_rebinds_at_t2_broadcast_then_expires() {
        let mut m = bound(120);
        assert_eq!(m.deadline(), Some(S(60)));
        assert!(m.on_timeout(S(59)).is_empty());
        let renew = only_packet(&m.on_timeout(S(60)));
        assert_eq!(renew.to, Destination::Unicast(Ipv4Addr::new(10, 213, 0, 1)));
        assert_eq!(
            renew.message,
            Message::Request {
                requested: None,
                server: None,
                ciaddr: Some(Ipv4Addr::new(10, 213, 0, 50))
            }
        );
        assert_eq!(m.state_name(), "renewing");
        // T2 = 105 s: the renew retry (≥ 60 s) is cut to T2.
        assert_eq!(m.deadline(), Some(S(105)));
        let rebind = only_packet(&m.on_timeout(S(105)));
        assert_eq!(rebind.to, Destination::Broadcast);
        assert_ne!(rebind.xid, renew.xid);
        assert_eq!(m.state_name(), "rebinding");
        assert_eq!(m.deadline(), Some(S(120)));
        let actions = m.on_timeout(S(120));
        assert!(matches!(
            &actions[0],
            Action::Lost {
                reason: LossReason::Expired,
                ..
            }
        ));
        assert_eq!(only_packet(&actions).message, Message::Discover);
        assert_eq!(m.lease(), None);
    }

    #[test]
    fn an_ack_while_renewing_extends_the_lease_from_the_request() {
        let mut m = bound(3600);
        let renew = only_packet(&m.on_timeout(S(1800)));
        let actions = m.on_reply(
            S(1802),
            Reply::Ack {
                xid: renew.xid,
                lease: lease([10, 213, 0, 50], 3600),
            },
        );
        assert_eq!(
            actions,
            [Action::Bound {
                lease: lease([10, 213, 0, 50], 3600),
                renewal: true,
                age: S(2)
            }]
        );
        // Counted from when the REQUEST went out (RFC 2131 §4.4.5).
        let t = m.timers().expect("timers");
        assert_eq!((t.t1, t.t2, t.expiry), (S(3600), S(1800 + 3150), S(5400)));
    }

    #[test]
    fn a_changed_address_on_renewal_is_a_new_binding() {
        let mut m = bound(3600);
        let renew = only_packet(&m.on_timeout(S(1800)));
        let actions = m.on_reply(
            S(1800),
            Reply::Ack {
                xid: renew.xid,
                lease: lease([10, 213, 0, 77], 3600),
            },
        );
        assert_eq!(
            actions,
            [Action::Bound {
                lease: lease([10, 213, 0, 77], 3600),
                renewal: false,
                age: Duration::ZERO
            }]
        );
    }

    #[test]
    fn renewing_retries_at_half_the_time_to_t2_but_at_least_a_minute() {
        let mut m = bound(86_400);
        let _ = m.on_timeout(S(43_200));
        // T2 = 75 600: half of 32 400 s.
        assert_eq!(m.deadline(), Some(S(43_200 + 16_200)));
        // 100 s before T2: the minute wins; 40 s before: T2 caps it.
        let _ = m.on_timeout(S(75_500));
        assert_eq!(m.deadline(), Some(S(75_560)));
        let _ = m.on_timeout(S(75_560));
        assert_eq!(m.deadline(), Some(S(75_600)));
        assert_eq!(m.state_name(), "renewing");
    }

    #[test]
    fn a_nak_while_renewing_drops_the_lease_and_starts_over_at_once() {
        let mut m = bound(3600);
        let renew = only_packet(&m.on_timeout(S(1800)));
        let actions = m.on_reply(S(1801), Reply::Nak { xid: renew.xid });
        assert_eq!(
            actions[0],
            Action::Lost {
                lease: lease([10, 213, 0, 50], 3600),
                reason: LossReason::Nak
            }
        );
        assert_eq!(only_packet(&actions).message, Message::Discover);
        assert_eq!(m.state_name(), "selecting");
    }

    #[test]
    fn repeated_naks_back_off_before_discovering_again() {
        let mut m = Machine::new(3);
        let mut now = S(0);
        let mut discover = only_packet(&m.start(now, None));
        for round in 0..3u32 {
            let offer = Reply::Offer {
                xid: discover.xid,
                ip: Ipv4Addr::new(10, 213, 0, 50),
                server: Ipv4Addr::new(10, 213, 0, 1),
            };
            let request = only_packet(&m.on_reply(now, offer));
            let actions = m.on_reply(now, Reply::Nak { xid: request.xid });
            if round == 0 {
                discover = only_packet(&actions);
                continue;
            }
            assert!(actions.is_empty(), "waits after NAK {}", round + 1);
            let wait = m.deadline().expect("deadline") - now;
            let base = 4u64 << (round - 1);
            assert!(wait >= S(base - 1) && wait <= S(base + 1), "{wait:?}");
            now += wait;
            discover = only_packet(&m.on_timeout(now));
        }
        // A successful binding resets the count.
        let offer = Reply::Offer {
            xid: discover.xid,
            ip: Ipv4Addr::new(10, 213, 0, 50),
            server: Ipv4Addr::new(10, 213, 0, 1),
        };
        let request = only_packet(&m.on_reply(now, offer));
        let _ = m.on_reply(
            now,
            Reply::Ack {
                xid: request.xid,
                lease: lease([10, 213, 0, 50], 3600),
            },
        );
        assert_eq!(m.naks, 0);
    }

    #[test]
    fn an_unanswered_request_goes_back_to_discover_after_its_tries() {
        let mut m = Machine::new(5);
        let discover = only_packet(&m.start(S(0), None));
        let offer = Reply::Offer {
            xid: discover.xid,
            ip: Ipv4Addr::new(10, 213, 0, 50),
            server: Ipv4Addr::new(10, 213, 0, 1),
        };
        let _ = m.on_reply(S(0), offer);
        for _ in 1..REQUEST_TRIES {
            let at = m.deadline().expect("deadline");
            assert!(matches!(
                only_packet(&m.on_timeout(at)).message,
                Message::Request { .. }
            ));
        }
        let at = m.deadline().expect("deadline");
        assert_eq!(only_packet(&m.on_timeout(at)).message, Message::Discover);
    }

    #[test]
    fn init_reboot_asks_for_the_remembered_address_and_keeps_it_when_nobody_answers() {
        let mut m = Machine::new(9);
        let remembered = Remembered {
            lease: lease([10, 213, 0, 50], 3600),
            age: S(1000),
        };
        let request = only_packet(&m.start(S(0), Some(remembered)));
        assert_eq!(
            request.message,
            Message::Request {
                requested: Some(Ipv4Addr::new(10, 213, 0, 50)),
                server: None,
                ciaddr: None
            }
        );
        assert_eq!(m.state_name(), "init-reboot");
        let at = m.deadline().expect("deadline");
        let _ = only_packet(&m.on_timeout(at));
        let at = m.deadline().expect("deadline");
        let actions = m.on_timeout(at);
        // Still the remembered lease's age: granted 1000 s before the start, `at` later now.
        assert_eq!(
            actions,
            [Action::Bound {
                lease: lease([10, 213, 0, 50], 3600),
                renewal: false,
                age: S(1000) + at
            }]
        );
        // The remembered lease's clock: T1 at 1800 s after it was granted, 800 s from the start.
        assert_eq!(m.timers().expect("timers").t1, S(800));
    }

    #[test]
    fn init_reboot_nak_drops_the_remembered_address() {
        let mut m = Machine::new(9);
        let remembered = Remembered {
            lease: lease([10, 213, 0, 50], 3600),
            age: S(10),
        };
        let request = only_packet(&m.start(S(0), Some(remembered)));
        let actions = m.on_reply(S(1), Reply::Nak { xid: request.xid });
        assert!(matches!(
            actions[0],
            Action::Lost {
                reason: LossReason::Nak,
                ..
            }
        ));
        assert_eq!(only_packet(&actions).message, Message::Discover);
    }

    #[test]
    fn an_expired_remembered_lease_is_not_asked_for() {
        let mut m = Machine::new(9);
        let remembered = Remembered {
            lease: lease([10, 213, 0, 50], 60),
            age: S(61),
        };
        assert_eq!(
            only_packet(&m.start(S(0), Some(remembered))).message,
            Message::Discover
        );
    }

    #[test]
    fn stop_releases_a_held_lease_to_its_server_and_nothing_otherwise() {
        let mut m = bound(3600);
        let actions = m.stop();
        assert_eq!(
            only_packet(&actions),
            Packet {
                xid: only_packet(&actions).xid,
                message: Message::Release {
                    ip: Ipv4Addr::new(10, 213, 0, 50),
                    server: Ipv4Addr::new(10, 213, 0, 1)
                },
                to: Destination::Unicast(Ipv4Addr::new(10, 213, 0, 1))
            }
        );
        assert!(matches!(
            actions[1],
            Action::Lost {
                reason: LossReason::Released,
                ..
            }
        ));
        assert_eq!(m.deadline(), None);
        let mut idle = Machine::new(1);
        let _ = idle.start(S(0), None);
        assert!(idle.stop().is_empty());
    }

    #[test]
    fn for_the_host_renewals_ask_by_option_50_and_everything_is_broadcast() {
        let mut m = bound(120);
        let renew = only_packet(&m.on_timeout(Duration::from_secs(61))).for_host();
        assert_eq!(renew.to, Destination::Broadcast);
        assert_eq!(
            renew.message,
            Message::Request {
                requested: Some(Ipv4Addr::new(10, 213, 0, 50)),
                server: None,
                ciaddr: None
            }
        );
        let release = only_packet(&m.stop()).for_host();
        assert_eq!(release.to, Destination::Broadcast);
        assert!(
            matches!(release.message, Message::Release { ip, .. } if ip == Ipv4Addr::new(10, 213, 0, 50))
        );
    }

    #[test]
    fn an_infinite_lease_never_renews() {
        let m = bound(u32::MAX);
        assert_eq!(m.deadline(), Some(Duration::MAX));
    }
}
