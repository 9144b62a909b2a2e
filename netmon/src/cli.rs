//! Command line of `autonomy-netmon` (spec §3) and parsing of its values. Pure.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use netmon_proto::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "autonomy-netmon",
    version,
    about = "Watches host interfaces over rtnetlink and serves JSON-lines events on a Unix socket"
)]
pub struct Args {
    /// Unix socket to serve (also the one `health` probes).
    #[arg(
        long,
        env = "NETMON_SOCKET",
        default_value = "/var/orchestrator/netmon.sock",
        global = true
    )]
    pub socket: PathBuf,

    /// Quiet period per interface before a change is reported (e.g. 3s, 500ms, 1m).
    #[arg(long, env = "NETMON_DEBOUNCE", default_value = "3s", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Log filter: a level (info, debug, ...) or a RUST_LOG-style directive list.
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_level: String,

    /// Extra interface name pattern to ignore (`*` and `?` wildcards); repeatable. Always
    /// ignored: lo, docker0, veth*, and Docker's bridges (br- and 12 hex digits).
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,

    /// A numeric uid, besides root and netmon's own, allowed to connect (the agent's, when it
    /// runs unprivileged). Clients of any other uid are disconnected before anything is sent.
    #[arg(long, env = "NETMON_CLIENT_UID", value_name = "UID")]
    pub client_uid: Option<u32>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if the socket accepts a connection, 1 otherwise (for a container HEALTHCHECK).
    Health,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let a = Args::try_parse_from(["autonomy-netmon"]).unwrap();
        assert_eq!(a.socket, PathBuf::from("/var/orchestrator/netmon.sock"));
        assert_eq!(a.debounce, Duration::from_secs(3));
        assert!(a.command.is_none());
        assert_eq!(a.client_uid, None);
        let a = Args::try_parse_from(["autonomy-netmon", "--client-uid", "1000"]).unwrap();
        assert_eq!(a.client_uid, Some(1000));
        assert!(Args::try_parse_from(["autonomy-netmon", "--client-uid", "agent"]).is_err());
        let a =
            Args::try_parse_from(["autonomy-netmon", "health", "--socket", "/tmp/x.sock"]).unwrap();
        assert!(matches!(a.command, Some(Command::Health)));
        assert_eq!(a.socket, PathBuf::from("/tmp/x.sock"));
    }
}
