//! `orchestrator-agent`: parses the command line and wires the library's modules together.
//!
//! The order is: configuration (`health`, `certs status` and `doctor` answer and exit here, before logging touches the state
//! dir), logging, then (inside the async runtime) the health socket, the shutdown signal, the
//! agent's services ([`build_services`], the one place to add a service), the metrics listener
//! when `--metrics-listen` asks for it, and the cloud link, which runs until SIGTERM or SIGINT. Nothing here exits because the cloud, the certificate or
//! the Docker engine is unavailable; only a malformed command line ends the process early.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use orchestrator_agent::cloud::{self, Handler};
use orchestrator_agent::config::{CertsCommand, Command, Config};
use orchestrator_agent::{
    certs, doctor, health, host, logging, netevents, runtime, telemetry, topics,
};
use tokio::sync::watch;
use tracing::{error, info};

/// How long exit waits for blocking tasks still running.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> ExitCode {
    let started = Instant::now();
    let config = Config::parse();
    match &config.command {
        Some(Command::Certs {
            action: CertsCommand::Status { json },
        }) => return ExitCode::from(doctor::certs_status_command(&config.mtls_dir(), *json)),
        Some(Command::Doctor { json }) => {
            let input = doctor::Input {
                server: config.server.clone(),
                ca_file: config.ca_file.clone(),
                mtls_dir: config.mtls_dir(),
                state_dir: config.state_dir.clone(),
                docker_host: config.docker_host.clone(),
            };
            return ExitCode::from(doctor::doctor_command(&input, *json));
        }
        Some(Command::SupportBundle { output }) => {
            let input = orchestrator_agent::bundle::Input {
                doctor: doctor::Input {
                    server: config.server.clone(),
                    ca_file: config.ca_file.clone(),
                    mtls_dir: config.mtls_dir(),
                    state_dir: config.state_dir.clone(),
                    docker_host: config.docker_host.clone(),
                },
                config: config.redacted(),
                output: output.clone(),
            };
            return ExitCode::from(orchestrator_agent::bundle::support_bundle_command(&input));
        }
        Some(Command::Health) | None => {}
    }
    if config.command == Some(Command::Health) {
        return match health::probe(&health::socket_path(&config.state_dir)) {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let _log_guard = match logging::init(
        config.log_level.as_deref(),
        &config.log_dir(),
        config.log_retention(),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("orchestrator-agent: {e}");
            return ExitCode::from(2);
        }
    };
    log_panics();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, started));
    // Dropping the runtime would wait for every blocking task, and some may never end (statvfs on
    // a dead network mount, a hung /proc read): bound the wait so SIGTERM always exits and the
    // log guard still flushes.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, started: Instant) -> anyhow::Result<()> {
    // A malformed --server is the one error no retry fixes: say so now, not after waiting.
    cloud::Endpoint::parse(&config.server)?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        server = %config.server,
        state_dir = %config.state_dir.display(),
        "orchestrator-agent starting"
    );
    health::spawn(health::socket_path(&config.state_dir), started).await;
    let stop = shutdown_signal()?;

    let link = config.link();
    certs::spawn_expiry_watch(link.certificate.clone());
    let Some(services) = wait_or_stop(&stop, build_services(&config, started, &link)).await else {
        info!("stopped before the agent was ready");
        return Ok(());
    };
    // Keeps the background tasks started there alive until the link stops.
    let Built {
        handler,
        host_sampler: _host_sampler,
        telemetry: sources,
    } = services?;
    let metrics = match config.metrics_listen() {
        Some(listen) => telemetry::spawn(listen, sources).await,
        None => None,
    };
    let mut stop_link = stop.clone();
    let result = cloud::run(link, handler, async move {
        let _ = stop_link.wait_for(|stop| *stop).await;
    })
    .await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    result?;
    info!("orchestrator-agent stopped");
    Ok(())
}

/// What [`build_services`] starts.
struct Built {
    /// The topics handler the cloud link dispatches to.
    handler: Arc<dyn Handler>,
    /// The host sampler's task, alive as long as this handle.
    host_sampler: host::SamplerTask,
    /// What the metrics read.
    telemetry: telemetry::Sources,
}

/// Builds the agent's services and the topics handler the cloud link dispatches to, and starts
/// the host sampler (first, so the usage history starts at once, whether or not the cloud or the
/// engine is there; its task lives as long as the returned handle), and gathers what the metrics
/// read.
async fn build_services(
    config: &Config,
    started: Instant,
    link: &cloud::LinkConfig,
) -> anyhow::Result<Built> {
    let host = host::HostMonitor::new();
    let host_sampler = host.spawn();
    let interfaces = netevents::InterfaceCache::new();
    netevents::spawn_listener_trusting(
        config.state_dir.join("netmon.sock"),
        interfaces.clone(),
        netevents::TrustedPeers::new(config.netmon_uid),
    );

    // Runtimes first: the boot reconcile must not wait for the certificate or the cloud.
    let docker = docker_api::Docker::new(docker_api::DockerConfig::from_host(&config.docker_host)?);
    let mut runtime_config = runtime::RuntimeConfig::new(&config.state_dir);
    runtime_config.runtime_image = config.runtime_image.clone();
    runtime_config.stop_grace = config.stop_grace;
    runtime_config.rehome_window = config.rehome_window;
    runtime_config.debug_idle = config.debug_idle;
    runtime_config.netmon_container = config.netmon_container.clone();
    let runtimes = runtime::Runtimes::open(docker, interfaces.clone(), runtime_config)
        .await
        .context("cannot open the state files")?;
    runtimes.start_background();
    #[cfg(feature = "bench-hooks")]
    prefill_for_benchmark(&host, &runtimes);

    let commands = telemetry::Commands::default();
    let telemetry = telemetry::Sources {
        started,
        link: link.status.clone(),
        interfaces: interfaces.clone(),
        runtimes: runtimes.clone(),
        commands: commands.clone(),
    };
    let services = topics::Services {
        started,
        interfaces,
        host,
        runtime: runtimes,
        certificate: link.certificate.clone(),
        commands,
    };
    Ok(Built {
        handler: Arc::new(topics::App::new(services)),
        host_sampler,
        telemetry,
    })
}

/// Benchmark hook, compiled only with the `bench-hooks` feature (never in shipped builds): with
/// `ORCHESTRATOR_BENCH_PREFILL_RUNTIMES=N` the host history and N synthetic runtime histories
/// start out holding 48 h of samples, so `scripts/bench-agent.sh --prefill N` measures the RSS of
/// an agent that has run for two days with N runtimes (`docs/benchmarks.md`).
#[cfg(feature = "bench-hooks")]
fn prefill_for_benchmark(host: &host::HostMonitor, runtimes: &runtime::Runtimes) {
    let Some(n) = std::env::var("ORCHESTRATOR_BENCH_PREFILL_RUNTIMES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return;
    };
    let now = orchestrator_agent::timefmt::now_unix();
    host.prefill_for_benchmark(now);
    runtimes.device_usage().prefill_for_benchmark(n, now);
    tracing::warn!(
        runtimes = n,
        "benchmark mode: usage histories prefilled with 48 h of synthetic samples"
    );
}

/// Release builds abort on a panic (`panic = "abort"`): unwinding, which would let one command's
/// panic be answered while the agent runs on, costs 556 KiB on armv7 (2.60 → 3.14 MiB, over that
/// target's 3 MiB budget). A panic is a bug (outside input is validated, fuzzed and never
/// unwrapped), and the agent is built to crash safely: every operation's intent is on disk and the
/// next start finishes it, and the container's restart policy brings the agent back within a second.
/// This hook puts the panic in the log file, not only on stderr, before the process ends, with
/// the stack's frame addresses when `RUST_BACKTRACE` is set (release builds carry no symbolizer:
/// their std is built without its `backtrace` feature, so its own hook prints no frames).
fn log_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let frames = std::backtrace::Backtrace::capture();
        if frames.status() == std::backtrace::BacktraceStatus::Captured {
            error!(panic = %info, "the agent panicked and stops; it resumes recorded operations when it starts again; stack:\n{frames:#}");
        } else {
            error!(panic = %info, "the agent panicked and stops; it resumes recorded operations when it starts again");
        }
        // The log file is written by its own thread: give it a moment before the abort.
        std::thread::sleep(std::time::Duration::from_millis(100));
        default_hook(info);
    }));
}

/// Runs `fut` unless shutdown is asked first (then `None`).
async fn wait_or_stop<T>(stop: &watch::Receiver<bool>, fut: impl Future<Output = T>) -> Option<T> {
    let mut stop = stop.clone();
    tokio::select! {
        v = fut => Some(v),
        _ = stop.wait_for(|stop| *stop) => None,
    }
}

/// A flag that turns true on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{name} received: shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}
