//! Raw rtnetlink datagrams from the kernel: parsing must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netlink::parse_datagram(data);
});
