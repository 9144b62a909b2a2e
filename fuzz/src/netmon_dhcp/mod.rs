//! netmon's DHCP client state machine and codec, from netmon's sources (a binary crate): the
//! codec refers to the machine as `super::machine`, as in netmon.

#[path = "../../../netmon/src/dhcp/machine.rs"]
pub mod machine;

#[path = "../../../netmon/src/dhcp/codec.rs"]
pub mod codec;
