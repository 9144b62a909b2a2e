//! The command line of `orchestrator-agent` (spec §3), with environment fallbacks.
//!
//! This module owns flag names, defaults and their documentation, nothing else: it does not read
//! files or touch the network. Flag names are fixed (deployment scripts use them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use netmon_proto::parse_duration;

use crate::cloud::LinkConfig;
use crate::logging::{MIN_FILE_BYTES, Retention};

/// Default cloud: the one the original agent connects to today (upstream-head §11.1,
/// `src/index.py`); 3d2c700's `https://api.getedge.me` is the older cloud.
pub const DEFAULT_SERVER: &str = "https://api.autonomylogic.com:3001";
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
    #[arg(long, value_name = "URL", env = "ORCHESTRATOR_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,

    /// Extra trusted root certificates (PEM, one or more) for verifying the server, added to the
    /// bundled web roots.
    #[arg(long, value_name = "PEM", env = "ORCHESTRATOR_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Directory holding the agent's client certificate (client.crt) and key (client.key). The
    /// agent id is the certificate's subject CN. The agent waits for these files if they do not
    /// exist yet. A leading ~/ means $HOME.
    #[arg(
        long,
        value_name = "DIR",
        env = "ORCHESTRATOR_MTLS_DIR",
        default_value = "~/.mtls",
        global = true
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
        value_parser = docker_host_or_default,
        global = true
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

    /// A debugger session (run_command with api "debug") without a command for this long is
    /// closed, as the original does after 5 minutes.
    #[arg(
        long,
        value_name = "DURATION",
        env = "ORCHESTRATOR_DEBUG_IDLE",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub debug_idle: Duration,

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

    /// Serve local Prometheus metrics (`/metrics`) and a readiness check (`/healthz`: cloud link,
    /// engine, netmon) on this address: IP:PORT (e.g. 127.0.0.1:9464), localhost:PORT, or a Unix
    /// socket (unix:/run/orchestrator/metrics.sock, mode 0660). Off unless given. Unauthenticated:
    /// keep it on loopback or a socket (docs/metrics.md). An empty value means off.
    #[arg(long, value_name = "ADDR", env = "ORCHESTRATOR_METRICS_LISTEN", value_parser = metrics_listen_or_off)]
    pub metrics_listen: Option<String>,

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
    /// The client certificate and key in the mTLS dir: CN, issuer, validity, file modes and
    /// whether the key belongs to the certificate. Exit 0 when usable, 1 on a warning (expiring
    /// within 30 days, key readable by others), 2 when the link could not use them.
    Certs {
        #[command(subcommand)]
        action: CertsCommand,
    },
    /// Checks this device the way the troubleshooting guide does (docs/troubleshooting.md, by
    /// check id) and prints each result with a fix hint. Exit code: 0 all passed, 1 a warning,
    /// 2 a failure.
    Doctor {
        /// One JSON document instead of the human report.
        #[arg(long)]
        json: bool,
    },
    /// Writes one tar.gz for a support ticket: doctor's report, the redacted configuration, the
    /// certificate's details (never the key), logs, state files, the engine's view of what this
    /// agent owns. Prints the path. Default: <state-dir>/support/ (the newest 3 kept).
    SupportBundle {
        /// Where to write it; `-` for stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
}

/// `certs` actions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CertsCommand {
    /// Show the client certificate and key (never key material).
    Status {
        /// One JSON document instead of the human report.
        #[arg(long)]
        json: bool,
    },
}

impl Config {
    /// The effective configuration for a support bundle: every setting, the server URL without
    /// credentials, and the `ORCHESTRATOR_*` environment with secret-looking values redacted. No
    /// setting holds key material (keys are files in the mTLS dir, never read here).
    pub fn redacted(&self) -> serde_json::Value {
        let secs = |d: Duration| d.as_secs_f64();
        serde_json::json!({
            "server": strip_userinfo(&self.server),
            "ca_file": self.ca_file,
            "mtls_dir": self.mtls_dir(),
            "state_dir": self.state_dir,
            "docker_host": self.docker_host,
            "runtime_image": self.runtime_image,
            "log_level": self.log_level,
            "stop_grace_s": secs(self.stop_grace),
            "netmon_uid": self.netmon_uid,
            "rehome_window_s": secs(self.rehome_window),
            "debug_idle_s": secs(self.debug_idle),
            "log_max_file_size": self.log_max_file_size,
            "log_max_files": self.log_max_files,
            "log_max_total": self.log_max_total,
            "log_keep_days": self.log_keep_days,
            "netmon_container": self.netmon_container,
            "metrics_listen": self.metrics_listen,
            "environment": crate::bundle::redacted_environment(),
        })
    }

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

    /// Where `--metrics-listen` asks for the metrics; `None` when off (not given, or blank).
    pub fn metrics_listen(&self) -> Option<crate::telemetry::Listen> {
        let text = self.metrics_listen.as_deref()?;
        // Checked when parsed: only a blank value fails here.
        crate::telemetry::Listen::parse(text).ok()
    }

    /// What the cloud link needs.
    pub fn link(&self) -> LinkConfig {
        LinkConfig {
            server: self.server.clone(),
            ca_file: self.ca_file.clone(),
            mtls_dir: self.mtls_dir(),
            certificate: crate::certs::InUse::default(),
            status: crate::cloud::LinkStatus::default(),
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

/// `--metrics-listen` / `ORCHESTRATOR_METRICS_LISTEN`: a valid address, or blank for off (a unit
/// file or `docker run -e` that exports the variable empty must not stop the agent).
fn metrics_listen_or_off(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() {
        crate::telemetry::Listen::parse(value)?;
    }
    Ok(value.to_owned())
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

/// `scheme://user:pass@host/…` → `scheme://[redacted]@host/…`; anything else unchanged.
pub fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_url_loses_its_credentials_in_the_redacted_view() {
        assert_eq!(
            strip_userinfo("https://u:p@cloud.example:443/x?y=1"),
            "https://[redacted]@cloud.example:443/x?y=1"
        );
        assert_eq!(
            strip_userinfo("https://cloud.example/a@b"),
            "https://cloud.example/a@b"
        );
        assert_eq!(strip_userinfo("not a url"), "not a url");
    }

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::try_parse_from(["orchestrator-agent"]).expect("parse");
        // The environment of the test process may set DOCKER_HOST or ORCHESTRATOR_*: only check
        // the values no variable overrides.
        if std::env::var_os("ORCHESTRATOR_SERVER").is_none() {
            assert_eq!(c.server, "https://api.autonomylogic.com:3001");
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
            assert_eq!(c.debug_idle, Duration::from_secs(300));
        }
        if std::env::var_os("ORCHESTRATOR_NETMON_CONTAINER").is_none() {
            assert_eq!(c.netmon_container, "autonomy_netmon");
        }
        if std::env::var_os("ORCHESTRATOR_METRICS_LISTEN").is_none() {
            assert_eq!(c.metrics_listen(), None, "metrics are off by default");
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
            "--metrics-listen",
            "127.0.0.1:9464",
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
        assert_eq!(
            c.metrics_listen(),
            Some(crate::telemetry::Listen::Tcp(
                "127.0.0.1:9464".parse().expect("addr")
            ))
        );
        let link = c.link();
        assert_eq!(link.mtls_dir, Path::new("/etc/mtls"));
    }

    #[test]
    fn durations_and_uids_are_checked() {
        for bad in ["fast", "3h", "", "-1s"] {
            assert!(
                Config::try_parse_from(["orchestrator-agent", "--stop-grace", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            Config::try_parse_from(["orchestrator-agent", "--netmon-uid", "nobody"]).is_err(),
            "a uid is numeric"
        );
        assert!(
            Config::try_parse_from(["orchestrator-agent", "--metrics-listen", "example.com:80"])
                .is_err(),
            "a metrics address is an IP address or a socket"
        );
        for blank in ["", "  "] {
            let c = Config::try_parse_from(["orchestrator-agent", "--metrics-listen", blank])
                .expect("blank is off");
            assert_eq!(c.metrics_listen(), None);
        }
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
            "--metrics-listen",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        Config::command().debug_assert();
    }
}
