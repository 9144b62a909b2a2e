//! Raw rtnetlink datagrams (link, address and route messages, dumps and events): parsing never
//! panics, and whatever parses flows through the whole sidecar pipeline to the agent: the
//! snapshot model, netmon's discovery and change lines, and the agent's line decoder, which must
//! read back every interface netmon reported, field for field.
#![no_main]

use fuzz_support::netmon_model::{Filter, interface_info};
use libfuzzer_sys::fuzz_target;
use netlink::{Body, Event, MAIN_TABLE, Snapshot, parse_datagram};
use netmon_proto::{InterfaceInfo, change_line, discovery_line};
use orchestrator_agent::fuzzing::{Message, NetmonEvent, decode_message};

/// What netmon discovers in `snap`: every reportable interface whose name is not ignored, in
/// index order.
fn discover(snap: &Snapshot, filter: &Filter, timestamp: &str) -> Vec<InterfaceInfo> {
    let mut links: Vec<_> = snap
        .links
        .iter()
        .filter(|l| !filter.ignores(&l.name))
        .collect();
    links.sort_by_key(|l| l.index);
    links
        .into_iter()
        .filter_map(|l| interface_info(snap, l.index, timestamp))
        .filter(InterfaceInfo::is_reportable)
        .collect()
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
    let Ok(Message::Event(NetmonEvent::Discovery(seen))) =
        decode_message(line.trim_end().as_bytes())
    else {
        panic!("the agent cannot read netmon's discovery line {line:?}")
    };
    let reported: Vec<InterfaceInfo> = infos
        .iter()
        .filter(|i| !i.interface.is_empty())
        .cloned()
        .collect();
    assert_eq!(seen, reported, "{line:?}");
    for info in &infos {
        let line = change_line(info);
        match decode_message(line.trim_end().as_bytes()) {
            Ok(Message::Event(NetmonEvent::Change(got))) => assert_eq!(&got, info),
            Ok(Message::Event(NetmonEvent::Other)) if info.interface.is_empty() => {}
            other => panic!("the agent read netmon's {line:?} as {other:?}"),
        }
    }
});
