//! The command line of `orchestrator-agent` (spec §3), with environment fallbacks.
//!
//! This module owns flag names, defaults and their documentation, nothing else: it does not read
//! files or touch the network. Flag names are fixed (deployment scripts use them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cloud::LinkConfig;
use crate::logging::{MIN_FILE_BYTES, Retention};

/// Default cloud.
pub const DEFAULT_SERVER: &str = "https://api.getedge.me";
/// Default shared state directory (the volume shared with the Python agent's layout).
pub const DEFAULT_STATE_DIR: &str = "/var/orchestrator";
/// Default Docker engine address when `DOCKER_HOST` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Default OpenPLC runtime image.
pub const DEFAULT_RUNTIME_IMAGE: &str = "ghcr.io/autonomy-logic/openplc-runtime:latest";

/// Edge agent: keeps a mutual-TLS Socket.IO link to the cloud and runs the OpenPLC runtime
/// containers it commands on the local Docker engine.
///
/// Every flag can also be given through the environment variable shown with it; a flag on the
/// command line wins over the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "orchestrator-agent", version)]
pub struct Config {
    /// The cloud to connect to: `https://host[:port]`. The link uses
    /// `wss://host[:port]/socket.io/` (Engine.IO v4, WebSocket only) with mutual TLS; plain http is
    /// refused.
    #[arg(long, value_name = "URL", env = "ORCHESTRATOR_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,

    /// Extra trusted root certificates (PEM, one or more) for verifying the server, added to the
    /// bundled web roots.
    #[arg(long, value_name = "PEM", env = "ORCHESTRATOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Directory holding the agent's client certificate (client.crt) and key (client.key). The
    /// agent id is the certificate's subject CN. The agent waits for these files if they do not
    /// exist yet. A leading ~/ means $HOME.
    #[arg(
        long,
        value_name = "DIR",
        env = "ORCHESTRATOR_MTLS_DIR",
        default_value = "~/.mtls"
    )]
    pub mtls_dir: PathBuf,

    /// State directory: runtime_vnics.json, data/clients.json, netmon.sock, agent-health.sock and
    /// logs/.
    #[arg(long, value_name = "DIR", env = "ORCHESTRATOR_STATE_DIR", default_value = DEFAULT_STATE_DIR, global = true)]
    pub state_dir: PathBuf,

    /// Docker engine address (unix:///path/to/docker.sock). An empty value means the default, as
    /// for the docker CLI.
    #[arg(
        long,
        value_name = "URL",
        env = "DOCKER_HOST",
        default_value = DEFAULT_DOCKER_HOST,
        value_parser = docker_host_or_default
    )]
    pub docker_host: String,

    /// Image of the OpenPLC runtime containers (always pulled with a tag).
    #[arg(long, value_name = "REF", env = "ORCHESTRATOR_RUNTIME_IMAGE", default_value = DEFAULT_RUNTIME_IMAGE)]
    pub runtime_image: String,

    /// Log level (error, warn, info, debug, trace; WARNING and CRITICAL are accepted too). It is the
    /// default of the filter; RUST_LOG directives (e.g. orchestrator_agent::cloud=debug) refine it
    /// per module. [default: info]
    #[arg(long, value_name = "LEVEL", env = "ORCHESTRATOR_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// How long a runtime gets to shut down on stop, restart and delete before it is killed (the
    /// engine's SIGTERM-then-SIGKILL grace period; e.g. 10s, 1m; a bare number is seconds).
    #[arg(
        long,
        value_name = "DURATION",
        env = "ORCHESTRATOR_STOP_GRACE",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub stop_grace: Duration,

    /// A numeric uid, besides root and the agent's own, trusted to serve `<state-dir>/netmon.sock`
    /// (for a netmon that runs unprivileged). Events from a socket served by any other uid are
    /// refused: they would move runtimes between networks.
    #[arg(long, value_name = "UID", env = "ORCHESTRATOR_NETMON_UID")]
    pub netmon_uid: Option<u32>,

    /// At most one re-home per parent interface within this window (e.g. 3s, 500ms, 1m); changes
    /// inside it are coalesced and the latest state is applied when it ends. Set it to netmon's
    /// --debounce.
    #[arg(
        long,
        value_name = "DURATION",
        env = "ORCHESTRATOR_REHOME_WINDOW",
        default_value = "3s",
        value_parser = parse_duration
    )]
    pub rehome_window: Duration,

    /// Size at which a log file is closed and the day's next part begins
    /// (orchestrator-logs-YYYY-MM-DD.N.log). Bytes, or with a K/M/G (KiB/MiB/GiB) suffix.
    #[arg(long, value_name = "SIZE", env = "ORCHESTRATOR_LOG_MAX_FILE_SIZE", default_value = "10MiB", value_parser = parse_size)]
    pub log_max_file_size: u64,

    /// Most log files kept, the current one included; the oldest go first.
    #[arg(long, value_name = "N", env = "ORCHESTRATOR_LOG_MAX_FILES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub log_max_files: u32,

    /// Most bytes in all log files together (the current one counted at its full size); the
    /// oldest files go first. Bytes, or with a K/M/G (KiB/MiB/GiB) suffix.
    #[arg(long, value_name = "SIZE", env = "ORCHESTRATOR_LOG_MAX_TOTAL", default_value = "50MiB", value_parser = parse_size)]
    pub log_max_total: u64,

    /// Log files dated this many days ago or earlier are deleted (today counts as one).
    #[arg(long, value_name = "DAYS", env = "ORCHESTRATOR_LOG_KEEP_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub log_keep_days: u16,

    /// The netmon sidecar's container, which `delete_orchestrator` removes before the agent's own.
    #[arg(long, value_name = "NAME", env = "ORCHESTRATOR_NETMON_CONTAINER", default_value = crate::runtime::naming::NETMON_CONTAINER)]
    pub netmon_container: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of running the agent.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Exit 0 when the agent running on this state dir answers on `<state-dir>/agent-health.sock`
    /// within 3 s (prints its answer), 1 otherwise. For a container HEALTHCHECK: it needs neither
    /// the cloud nor the Docker engine.
    Health,
}

impl Config {
    /// The mTLS directory with a leading `~/` expanded from `$HOME`.
    pub fn mtls_dir(&self) -> PathBuf {
        expand_home(
            &self.mtls_dir,
            std::env::var_os("HOME").map(PathBuf::from).as_deref(),
        )
    }

    /// `<state-dir>/logs`.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// The log file caps of the `--log-*` flags.
    pub fn log_retention(&self) -> Retention {
        Retention {
            keep_days: i64::from(self.log_keep_days),
            max_file_bytes: self.log_max_file_size,
            max_files: usize::try_from(self.log_max_files).unwrap_or(usize::MAX),
            max_total_bytes: self.log_max_total,
        }
        .normalized()
    }

    /// What the cloud link needs.
    pub fn link(&self) -> LinkConfig {
        LinkConfig {
            server: self.server.clone(),
            ca_file: self.ca_file.clone(),
            mtls_dir: self.mtls_dir(),
        }
    }
}

/// Expands a leading `~` / `~/` with `home` (left as is when there is no home).
pub fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    let Some(home) = home else {
        return path.to_owned();
    };
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_owned(),
    }
}

/// A size in bytes: digits, optionally followed by `K`, `M`, `G` (powers of 1024; `KiB`, `MiB`,
/// `GiB`, `KB`... and lower case accepted). At least [`MIN_FILE_BYTES`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 10MiB, 512K, 1048576)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes < MIN_FILE_BYTES {
        return Err(format!(
            "{text:?} is below the minimum of {MIN_FILE_BYTES} bytes"
        ));
    }
    Ok(bytes)
}

/// `--docker-host` / `DOCKER_HOST`: blank is unset (the docker CLI treats it so; an image or unit
/// file that exports `DOCKER_HOST=` must not stop the agent).
fn docker_host_or_default(value: &str) -> Result<String, String> {
    let value = value.trim();
    Ok(if value.is_empty() {
        DEFAULT_DOCKER_HOST
    } else {
        value
    }
    .to_owned())
}

/// `3s`, `300ms`, `1m`, `1.5s`, or a bare number of seconds (netmon's `--debounce` syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 3s, 500ms, 1m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::try_parse_from(["orchestrator-agent"]).expect("parse");
        // The environment of the test process may set DOCKER_HOST or ORCHESTRATOR_*: only check
        // the values no variable overrides.
        if std::env::var_os("ORCHESTRATOR_SERVER").is_none() {
            assert_eq!(c.server, "https://api.getedge.me");
        }
        if std::env::var_os("ORCHESTRATOR_STATE_DIR").is_none() {
            assert_eq!(c.state_dir, Path::new("/var/orchestrator"));
            assert_eq!(c.log_dir(), Path::new("/var/orchestrator/logs"));
        }
        if std::env::var_os("DOCKER_HOST").is_none() {
            assert_eq!(c.docker_host, "unix:///var/run/docker.sock");
        }
        if std::env::var_os("ORCHESTRATOR_RUNTIME_IMAGE").is_none() {
            assert_eq!(
                c.runtime_image,
                "ghcr.io/autonomy-logic/openplc-runtime:latest"
            );
        }
        if std::env::var_os("ORCHESTRATOR_MTLS_DIR").is_none() {
            assert_eq!(c.mtls_dir, Path::new("~/.mtls"));
        }
        if std::env::var_os("ORCHESTRATOR_NETMON_UID").is_none() {
            assert_eq!(c.netmon_uid, None);
        }
        if std::env::var_os("ORCHESTRATOR_REHOME_WINDOW").is_none() {
            assert_eq!(c.rehome_window, Duration::from_secs(3));
        }
        if std::env::var_os("ORCHESTRATOR_NETMON_CONTAINER").is_none() {
            assert_eq!(c.netmon_container, "autonomy_netmon");
        }
        assert_eq!(c.command, None);
    }

    #[test]
    fn health_is_a_subcommand_that_reads_the_state_dir_on_either_side() {
        for args in [
            &["orchestrator-agent", "health", "--state-dir", "/s"][..],
            &["orchestrator-agent", "--state-dir", "/s", "health"][..],
        ] {
            let c = Config::try_parse_from(args).expect("parse");
            assert_eq!(c.command, Some(Command::Health));
            assert_eq!(c.state_dir, Path::new("/s"));
        }
    }

    #[test]
    fn a_blank_docker_host_means_the_default_socket() {
        for blank in ["", "  "] {
            let c = Config::try_parse_from(["orchestrator-agent", "--docker-host", blank])
                .expect("parse");
            assert_eq!(c.docker_host, DEFAULT_DOCKER_HOST);
        }
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "orchestrator-agent",
            "--server",
            "https://localhost:8443",
            "--ca-file",
            "/tmp/ca.pem",
            "--mtls-dir",
            "/etc/mtls",
            "--state-dir",
            "/tmp/state",
            "--docker-host",
            "unix:///tmp/d.sock",
            "--runtime-image",
            "img:1",
            "--log-level",
            "debug",
            "--netmon-uid",
            "998",
            "--rehome-window",
            "500ms",
            "--netmon-container",
            "netmon-2",
        ])
        .expect("parse");
        assert_eq!(c.server, "https://localhost:8443");
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/tmp/ca.pem")));
        assert_eq!(c.mtls_dir(), Path::new("/etc/mtls"));
        assert_eq!(c.state_dir, Path::new("/tmp/state"));
        assert_eq!(c.docker_host, "unix:///tmp/d.sock");
        assert_eq!(c.runtime_image, "img:1");
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.netmon_uid, Some(998));
        assert_eq!(c.rehome_window, Duration::from_millis(500));
        assert_eq!(c.netmon_container, "netmon-2");
        let link = c.link();
        assert_eq!(link.mtls_dir, Path::new("/etc/mtls"));
    }

    #[test]
    fn durations_parse_with_units_and_bad_values_are_refused() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        for bad in ["fast", "3h", "", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(
            Config::try_parse_from(["orchestrator-agent", "--netmon-uid", "nobody"]).is_err(),
            "a uid is numeric"
        );
    }

    #[test]
    fn log_caps_have_sd_card_defaults_and_accept_sizes_with_units() {
        let c = Config::try_parse_from(["orchestrator-agent"]).expect("parse");
        let env_free = [
            "ORCHESTRATOR_LOG_MAX_FILE_SIZE",
            "ORCHESTRATOR_LOG_MAX_FILES",
            "ORCHESTRATOR_LOG_MAX_TOTAL",
            "ORCHESTRATOR_LOG_KEEP_DAYS",
        ]
        .iter()
        .all(|v| std::env::var_os(v).is_none());
        if env_free {
            assert_eq!(c.log_retention(), Retention::default());
        }
        let c = Config::try_parse_from([
            "orchestrator-agent",
            "--log-max-file-size",
            "512K",
            "--log-max-files",
            "3",
            "--log-max-total",
            "2MiB",
            "--log-keep-days",
            "2",
        ])
        .expect("parse");
        assert_eq!(
            c.log_retention(),
            Retention {
                keep_days: 2,
                max_file_bytes: 512 << 10,
                max_files: 3,
                max_total_bytes: 2 << 20,
            }
        );
        for bad in [
            ["--log-max-files", "0"],
            ["--log-max-file-size", "10X"],
            ["--log-max-total", "12"],
            ["--log-keep-days", "0"],
        ] {
            assert!(
                Config::try_parse_from(["orchestrator-agent", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(parse_size(" 10mb "), Ok(10 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("99999999999G").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = Path::new("/home/pi");
        assert_eq!(
            expand_home(Path::new("~/.mtls"), Some(home)),
            Path::new("/home/pi/.mtls")
        );
        assert_eq!(
            expand_home(Path::new("~"), Some(home)),
            Path::new("/home/pi")
        );
        assert_eq!(
            expand_home(Path::new("/x/~/y"), Some(home)),
            Path::new("/x/~/y")
        );
        assert_eq!(
            expand_home(Path::new("~/.mtls"), None),
            Path::new("~/.mtls")
        );
    }

    #[test]
    fn help_documents_every_flag() {
        let help = Config::command().render_long_help().to_string();
        for flag in [
            "--server",
            "--ca-file",
            "--mtls-dir",
            "--state-dir",
            "--docker-host",
            "--runtime-image",
            "--log-level",
            "--netmon-uid",
            "--rehome-window",
            "--stop-grace",
            "--log-max-file-size",
            "--log-max-files",
            "--log-max-total",
            "--log-keep-days",
            "--netmon-container",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        Config::command().debug_assert();
    }
}
