//! What a LAN sends netmon's DHCP client: arbitrary datagrams on port 68, decoded by the codec
//! (`dhcproto`) and fed, with timer expiries in between, to the client's state machine.
//! Properties: nothing panics; the client's own requests looped back are never taken as replies;
//! a decoded lease's timers are ordered (T1 ≤ T2 ≤ lease time) and its prefix is at most 32; the
//! machine always has a next deadline while it runs, never one in the past, and the lease it
//! holds is one an ACK it accepted carried.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use fuzz_support::netmon_dhcp::codec::{decode, encode};
use fuzz_support::netmon_dhcp::machine::{Action, Machine, Reply};
use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xd5, 0x00, 0x09];

#[derive(Debug, Arbitrary)]
enum Step {
    /// A datagram from `source`; `own_mac` makes it about this client (the codec drops others).
    Datagram {
        bytes: Vec<u8>,
        source: [u8; 4],
        own_mac: bool,
    },
    /// Time passes: up to about 18 hours, then the machine's timeout handling.
    Wait(u16),
    /// Time passes to exactly the machine's deadline.
    ToDeadline,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(seed) = u64::arbitrary(&mut u) else {
        return;
    };
    let mut m = Machine::new(seed);
    let mut now = Duration::ZERO;
    let mut granted = Vec::new();
    let mut actions = m.start(now, None);
    for _ in 0..64 {
        for a in &actions {
            match a {
                Action::Send(p) => {
                    // Our own request, looped back (a broadcast we receive), is not a reply.
                    let bytes = encode(p, MAC);
                    assert!(
                        decode(&bytes, MAC, Ipv4Addr::UNSPECIFIED).is_none(),
                        "{p:?}"
                    );
                }
                Action::Bound { lease, .. } => {
                    assert!(granted.contains(lease), "{lease:?} was never granted");
                }
                Action::Lost { .. } => {}
            }
        }
        if let Some(d) = m.deadline() {
            assert!(d >= now, "deadline {d:?} before now {now:?}");
        } else {
            panic!("a running client without a deadline ({})", m.state_name());
        }
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        actions = match step {
            Step::Datagram {
                mut bytes,
                source,
                own_mac,
            } => {
                // chaddr is at offset 28: make the reply about this client often.
                if own_mac && bytes.len() >= 34 {
                    bytes[28..34].copy_from_slice(&MAC);
                }
                match decode(&bytes, MAC, Ipv4Addr::from(source)) {
                    Some(reply) => {
                        if let Reply::Ack { lease, .. } = &reply {
                            assert!(lease.prefix <= 32, "{lease:?}");
                            assert!(lease.renew <= lease.rebind, "{lease:?}");
                            assert!(lease.rebind <= lease.lease_time, "{lease:?}");
                            granted.push(lease.clone());
                        }
                        m.on_reply(now, reply)
                    }
                    None => Vec::new(),
                }
            }
            Step::Wait(s) => {
                now += Duration::from_secs(u64::from(s));
                m.on_timeout(now)
            }
            Step::ToDeadline => {
                now = m.deadline().unwrap_or(now).max(now);
                m.on_timeout(now)
            }
        };
    }
    for a in m.stop() {
        if let Action::Send(p) = a {
            assert!(decode(&encode(&p, MAC), MAC, Ipv4Addr::UNSPECIFIED).is_none());
        }
    }
});
