//! JSON lines on the netmon socket, both ends. The socket sits on a shared volume, so any
//! container could write there: the agent's decoder must take any bytes without panicking
//! (mode byte even). And what netmon writes, for any interface state it can hold, the agent must
//! read back field for field (mode byte odd: a structure-aware interface model).
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Result, Unstructured};
use fuzz_support::netmon_protocol::{change_line, discovery_line};
use libfuzzer_sys::fuzz_target;
use netlink::{InterfaceInfo, Ipv4Entry, Status};
use orchestrator_agent::fuzzing::{NetmonEvent, decode_line};

struct Infos(Vec<InterfaceInfo>);

fn info(u: &mut Unstructured) -> Result<InterfaceInfo> {
    let mut ipv4_addresses = Vec::new();
    u.arbitrary_loop(None, Some(3), |u| {
        let address = Ipv4Addr::from(u.arbitrary::<u32>()?);
        let prefixlen = u.int_in_range(0..=32)?;
        ipv4_addresses.push(Ipv4Entry {
            address,
            prefixlen,
            subnet: format!("{address}/{prefixlen}"),
            network_address: address,
        });
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(InterfaceInfo {
        interface: u.arbitrary()?,
        index: u.arbitrary()?,
        operstate: u.arbitrary()?,
        ipv4_addresses,
        gateway: u.arbitrary::<Option<u32>>()?.map(Ipv4Addr::from),
        timestamp: u.arbitrary()?,
        status: *u.choose(&[None, Some(Status::Down), Some(Status::Removed)])?,
    })
}

impl<'a> Arbitrary<'a> for Infos {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut infos = Vec::new();
        u.arbitrary_loop(None, Some(4), |u| {
            infos.push(info(u)?);
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        Ok(Infos(infos))
    }
}

fn same(sent: &InterfaceInfo, got: &orchestrator_agent::fuzzing::InterfaceInfo) {
    assert_eq!(got.interface, sent.interface);
    assert_eq!(got.index, Some(sent.index));
    assert_eq!(got.operstate.as_deref(), Some(sent.operstate.as_str()));
    assert_eq!(got.ipv4_addresses.len(), sent.ipv4_addresses.len());
    for (g, s) in got.ipv4_addresses.iter().zip(&sent.ipv4_addresses) {
        assert_eq!(g.address, s.address.to_string());
        assert_eq!(g.prefixlen, s.prefixlen);
        assert_eq!(g.subnet, s.subnet);
        assert_eq!(g.network_address, s.network_address.to_string());
    }
    assert_eq!(got.gateway, sent.gateway.map(|g| g.to_string()));
    let status = sent.status.map(|s| match s {
        Status::Down => "down",
        Status::Removed => "removed",
    });
    assert_eq!(got.status.as_deref(), status);
    assert_eq!(got.timestamp.as_deref(), Some(sent.timestamp.as_str()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = decode_line(rest);
        return;
    }
    let Ok(Infos(infos)) = Infos::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let line = discovery_line(&infos, "2025-11-20T20:30:45.123456Z");
    match decode_line(line.trim_end().as_bytes()) {
        Ok(NetmonEvent::Discovery(seen)) => {
            let sent: Vec<&InterfaceInfo> =
                infos.iter().filter(|i| !i.interface.is_empty()).collect();
            assert_eq!(seen.len(), sent.len(), "{line:?}");
            for (s, g) in sent.iter().zip(&seen) {
                same(s, g);
            }
        }
        other => panic!("the agent read netmon's {line:?} as {other:?}"),
    }
    for info in &infos {
        let line = change_line(info);
        match decode_line(line.trim_end().as_bytes()) {
            Ok(NetmonEvent::Change(got)) => same(info, &got),
            Ok(NetmonEvent::Ignored) if info.interface.is_empty() => {}
            other => panic!("the agent read netmon's {line:?} as {other:?}"),
        }
    }
});
