//! JSON lines on the netmon socket, both ends. The socket sits on a shared volume, so any
//! container could write there: the agent's decoder must take any bytes without panicking
//! (mode byte even). And what netmon writes, for any interface state it can hold, the agent must
//! read back field for field (mode byte odd: a structure-aware interface model).
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use netmon_proto::{
    InterfaceInfo, InterfaceStatus, InterfaceType, Ipv4Entry, change_line, discovery_line,
};
use orchestrator_agent::fuzzing::{Message, NetmonEvent, decode_message};

struct Infos(Vec<InterfaceInfo>);

fn info(u: &mut Unstructured) -> Result<InterfaceInfo> {
    let mut ipv4_addresses = Vec::new();
    u.arbitrary_loop(None, Some(3), |u| {
        let address = Ipv4Addr::from(u.arbitrary::<u32>()?);
        let prefixlen = u.int_in_range(0..=32)?;
        ipv4_addresses.push(Ipv4Entry {
            address: address.to_string(),
            prefixlen,
            subnet: format!("{address}/{prefixlen}"),
            network_address: address.to_string(),
        });
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(InterfaceInfo {
        interface: u.arbitrary()?,
        index: Some(u.arbitrary()?),
        operstate: Some(u.arbitrary()?),
        kind: *u.choose(&[None, Some(InterfaceType::Ethernet), Some(InterfaceType::Wifi)])?,
        ipv4_addresses,
        gateway: u
            .arbitrary::<Option<u32>>()?
            .map(|g| Ipv4Addr::from(g).to_string()),
        timestamp: Some(u.arbitrary()?),
        status: *u.choose(&[
            None,
            Some(InterfaceStatus::Down),
            Some(InterfaceStatus::Removed),
        ])?,
        mac_address: None,
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = decode_message(rest);
        return;
    }
    let Ok(Infos(infos)) = Infos::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let line = discovery_line(&infos, "2025-11-20T20:30:45.123456+00:00");
    match decode_message(line.trim_end().as_bytes()) {
        Ok(Message::Event(NetmonEvent::Discovery(seen))) => {
            let sent: Vec<InterfaceInfo> = infos
                .iter()
                .filter(|i| !i.interface.is_empty())
                .cloned()
                .collect();
            assert_eq!(seen, sent, "{line:?}");
        }
        other => panic!("the agent read netmon's {line:?} as {other:?}"),
    }
    for info in &infos {
        let line = change_line(info);
        match decode_message(line.trim_end().as_bytes()) {
            Ok(Message::Event(NetmonEvent::Change(got))) => assert_eq!(&got, info),
            Ok(Message::Event(NetmonEvent::Other)) if info.interface.is_empty() => {}
            other => panic!("the agent read netmon's {line:?} as {other:?}"),
        }
    }
});
