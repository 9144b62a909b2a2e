//! `autonomy-netmon`: the host network monitor sidecar.

fn main() {}
