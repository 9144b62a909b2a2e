//! Raw rtnetlink datagrams (link, address and route messages, dumps and events): parsing never
//! panics, and whatever parses flows through the whole sidecar pipeline to the agent: the
//! snapshot model, netmon's discovery and change lines, and the agent's line decoder, which must
//! read back every interface netmon reported, with the same addresses and gateway.
#![no_main]

use fuzz_support::netmon_protocol::{change_line, discovery_line};
use libfuzzer_sys::fuzz_target;
use netlink::{Body, Event, Filter, InterfaceInfo, MAIN_TABLE, Snapshot, discover, parse_datagram};
use orchestrator_agent::fuzzing::{NetmonEvent, decode_line};

fn agent_sees(sent: &InterfaceInfo, got: &orchestrator_agent::fuzzing::InterfaceInfo) {
    assert_eq!(got.interface, sent.interface);
    assert_eq!(got.index, Some(sent.index));
    let addresses: Vec<String> = got
        .ipv4_addresses
        .iter()
        .map(|a| a.address.clone())
        .collect();
    let expected: Vec<String> = sent
        .ipv4_addresses
        .iter()
        .map(|a| a.address.to_string())
        .collect();
    assert_eq!(addresses, expected);
    assert_eq!(got.gateway, sent.gateway.map(|g| g.to_string()));
}

fuzz_target!(|data: &[u8]| {
    let Ok(frames) = parse_datagram(data) else {
        return;
    };
    let mut snap = Snapshot::default();
    for frame in frames {
        let Body::Event(event) = frame.body else {
            continue;
        };
        match event {
            Event::LinkChanged(l) => {
                snap.links.retain(|x| x.index != l.index);
                snap.links.push(l);
            }
            Event::LinkRemoved(l) => snap.links.retain(|x| x.index != l.index),
            Event::AddressAdded(a) => snap.addresses.push(a),
            Event::AddressRemoved(a) => snap.addresses.retain(|x| *x != a),
            Event::RouteAdded(r) if r.table == MAIN_TABLE => snap.routes.push(r),
            Event::RouteRemoved(r) => snap.routes.retain(|x| *x != r),
            _ => {}
        }
    }
    let infos = discover(
        &snap,
        &Filter::new(Vec::<String>::new()),
        "2025-11-20T20:30:45.123456Z",
    );
    let line = discovery_line(&infos, "2025-11-20T20:30:45.123456Z");
    let Ok(NetmonEvent::Discovery(seen)) = decode_line(line.trim_end().as_bytes()) else {
        panic!("the agent cannot read netmon's discovery line {line:?}")
    };
    let reported: Vec<&InterfaceInfo> = infos.iter().filter(|i| !i.interface.is_empty()).collect();
    assert_eq!(seen.len(), reported.len(), "{line:?}");
    for (sent, got) in reported.iter().zip(&seen) {
        agent_sees(sent, got);
    }
    for info in &infos {
        let line = change_line(info);
        match decode_line(line.trim_end().as_bytes()) {
            Ok(NetmonEvent::Change(got)) => agent_sees(info, &got),
            Ok(NetmonEvent::Ignored) if info.interface.is_empty() => {}
            other => panic!("the agent read netmon's {line:?} as {other:?}"),
        }
    }
});
