//! `autonomy-netmon`: the host network monitor sidecar. Watches rtnetlink (links, IPv4
//! addresses, IPv4 routes), debounces per interface and serves JSON lines on a Unix socket.
//! Wiring only: the pure parts live in `debounce`, `tracker`, `model` and `cli`; the wire format
//! is `netmon_proto`'s.

mod cli;
mod commands;
mod daemon;
mod debounce;
mod dhcp;
mod model;
mod nic;
mod proxy_arp;
mod serial;
mod server;
mod tracker;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use cli::{Args, Command};

/// How long the health probe waits for the socket to accept.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args = Args::parse();
    // `Targets` takes RUST_LOG-style `level` / `target=level` lists without EnvFilter's regex
    // engine, which would add ~150 KiB to a binary whose idle RSS is budgeted at 3 MiB.
    let filter: Targets = args.log_level.parse().unwrap_or_else(|e| {
        eprintln!(
            "autonomy-netmon: invalid --log-level `{}` ({e}); using info",
            args.log_level
        );
        Targets::new().with_default(tracing::Level::INFO)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();

    // One thread: the sidecar does little, and a single-threaded runtime keeps RSS minimal.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Some(Command::Health) => runtime.block_on(health(&args.socket)),
        None => {
            let cfg = daemon::Config {
                socket: args.socket,
                debounce: args.debounce,
                filter: model::Filter::new(args.ignore),
                client_uid: args.client_uid,
            };
            match runtime.block_on(daemon::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn health(path: &std::path::Path) -> ExitCode {
    match tokio::time::timeout(HEALTH_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("unhealthy: {}: {e}", path.display());
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "unhealthy: {}: no answer within {HEALTH_TIMEOUT:?}",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}
