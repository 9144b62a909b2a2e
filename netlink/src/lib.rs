//! rtnetlink snapshot and event stream, and the host interface model the netmon sidecar reports.
