//! `devcloud`: a development cloud for the agent (see docs/devcloud.md).
//!
//! `devcloud init` writes the dev PKI; `devcloud serve` (which also initializes) serves Socket.IO over
//! mTLS, prints every agent event as one JSON line on stdout, reads commands from stdin and offers a
//! loopback HTTP endpoint. Logs go to stderr.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use devcloud::{DevCloud, ServerConfig, console, http_api, pki};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};

#[derive(Debug, Parser)]
#[command(
    name = "devcloud",
    version,
    about = "Development cloud: mTLS Socket.IO server for the orchestrator agent"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create (or reuse) the dev CA, server certificate and agent client certificate.
    Init(PkiArgs),
    /// Serve Socket.IO over mTLS (initializing the PKI first if needed).
    Serve {
        #[command(flatten)]
        pki: PkiArgs,
        /// Socket.IO listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Control endpoint (plain HTTP, loopback only): GET /agents, POST /emit/<topic>.
        #[arg(long, default_value = "127.0.0.1:8444")]
        http: SocketAddr,
        /// Do not start the HTTP control endpoint.
        #[arg(long)]
        no_http: bool,
        /// Engine.IO ping interval (e.g. 25s, 500ms).
        #[arg(long, default_value = "25s", value_parser = parse_duration)]
        ping_interval: Duration,
        /// Engine.IO ping timeout.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        ping_timeout: Duration,
        /// How long to wait for an agent's ack by default.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ack_timeout: Duration,
    },
}

#[derive(Debug, Args)]
struct PkiArgs {
    /// Directory of the PKI (ca.crt, server.crt, agent/client.crt, ...).
    #[arg(long, env = "DEVCLOUD_DIR", default_value = "devcloud-pki")]
    dir: PathBuf,
    /// CN of the agent's client certificate.
    #[arg(long, default_value = pki::DEFAULT_AGENT_ID)]
    agent_id: String,
    /// Extra server certificate name (DNS name or IP); repeatable.
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Regenerate every certificate even if the files exist.
    #[arg(long)]
    force: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Init(args) => {
                let paths = init(&args).await?;
                eprintln!("{}", agent_command(&paths, 8443));
                Ok(())
            }
            Cmd::Serve {
                pki,
                listen,
                http,
                no_http,
                ping_interval,
                ping_timeout,
                ack_timeout,
            } => {
                let paths = init(&pki).await?;
                let cfg = ServerConfig {
                    ping_interval,
                    ping_timeout,
                    ..ServerConfig::from_pki(&paths, listen)
                };
                serve(cfg, &paths, (!no_http).then_some(http), ack_timeout).await
            }
        }
    });
    // tokio's stdin reader is a blocking thread that may sit in read(2) forever; do not wait for it.
    rt.shutdown_background();
    result
}

async fn init(args: &PkiArgs) -> anyhow::Result<pki::PkiPaths> {
    let dir = absolute(&args.dir)?;
    let opts = pki::PkiOptions {
        agent_id: args.agent_id.clone(),
        extra_server_names: args.server_names.clone(),
        regenerate: args.force,
        ..pki::PkiOptions::default()
    };
    let paths = tokio::task::spawn_blocking(move || pki::generate(&dir, &opts))
        .await
        .context("PKI generation task")??;
    Ok(paths)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(p))
    }
}

fn agent_command(paths: &pki::PkiPaths, port: u16) -> String {
    format!(
        "run the agent with:\n  orchestrator-agent --server https://localhost:{port} --ca-file {} --mtls-dir {} --state-dir {}",
        paths.ca_cert.display(),
        paths.agent_dir.display(),
        paths.dir.join("agent-state").display(),
    )
}

async fn serve(
    cfg: ServerConfig,
    paths: &pki::PkiPaths,
    http: Option<SocketAddr>,
    ack_timeout: Duration,
) -> anyhow::Result<()> {
    let cloud = DevCloud::start(cfg).await?;
    let port = cloud.local_addr().port();
    eprintln!("devcloud: Socket.IO over mTLS on {}", cloud.local_addr());
    eprintln!("{}", agent_command(paths, port));

    // One writer owns stdout so event lines and ack lines never interleave.
    let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            let ok = stdout.write_all(line.as_bytes()).await.is_ok()
                && stdout.write_all(b"\n").await.is_ok()
                && stdout.flush().await.is_ok();
            if !ok {
                break;
            }
        }
    });

    let mut events = cloud.subscribe();
    let events_out = out_tx.clone();
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    if events_out.send(console::event_line(&ev)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("stdout is slow: {n} events not printed");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let http_task = match http {
        Some(addr) => {
            let listener = http_api::bind_loopback(addr).await?;
            let bound = listener.local_addr().context("control endpoint address")?;
            eprintln!(
                "devcloud: control endpoint on http://{bound} (GET /agents, POST /emit/<topic>); e.g.\n  curl -s -XPOST 'http://{bound}/emit/get_device_status' -d '{{\"correlation_id\":1}}'"
            );
            Some(tokio::spawn(http_api::serve(
                cloud.clone(),
                listener,
                ack_timeout,
                stop_rx,
            )))
        }
        None => None,
    };
    eprintln!("devcloud: stdin {}", console::HELP);

    // stdin EOF ends the console, not the server (devcloud may run with stdin closed).
    let console_task = tokio::spawn(console::run(
        cloud.clone(),
        tokio::io::BufReader::new(tokio::io::stdin()),
        ack_timeout,
        out_tx,
    ));

    wait_for_signal().await;
    eprintln!("devcloud: shutting down");
    let _ = stop_tx.send(true);
    cloud.shutdown().await;
    if let Some(t) = http_task {
        let _ = t.await;
    }
    // The console may be blocked reading stdin; it holds nothing that needs a goodbye.
    console_task.abort();
    printer.abort();
    let _ = writer.await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
