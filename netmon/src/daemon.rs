//! The event loop: netlink events mark interfaces dirty, the debouncer says when to look, a
//! fresh dump says what to report, and the server fans the lines out. One task owns all state;
//! nothing runs while nothing changes (no polling, no timer unless a change is pending).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use netlink::{Event, EventStream, Filter, RouteSocket, timestamp_now};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::debounce::Debouncer;
use crate::protocol::{change_line, discovery_line};
use crate::server::{Clients, Socket, TrustedClients};
use crate::tracker::Tracker;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

pub struct Config {
    pub socket: PathBuf,
    pub debounce: Duration,
    pub filter: Filter,
    /// A uid besides root and our own that may connect.
    pub client_uid: Option<u32>,
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    // Subscribe before the baseline dump so no change between the two is missed.
    let mut events = EventStream::subscribe().context("subscribing to rtnetlink")?;
    let mut route = RouteSocket::new().context("opening rtnetlink")?;
    let mut tracker = Tracker::new(cfg.filter);
    let snap = route.snapshot().await.context("initial netlink dump")?;
    tracker.set_baseline(&snap, &timestamp_now());

    let socket = Socket::bind(&cfg.socket).await?;
    tracing::info!(
        "serving network events on {} (debounce {:?})",
        cfg.socket.display(),
        cfg.debounce
    );

    let mut clients = Clients::new();
    let mut trusted = TrustedClients::new(cfg.client_uid);
    let mut debouncer = Debouncer::new(cfg.debounce);
    let result = loop {
        let deadline = debouncer.next_deadline();
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break Ok(()); }
            r = events.next() => {
                let now = Instant::now().into_std();
                match r {
                    Ok(batch) => {
                        for event in batch {
                            if event == Event::Resync {
                                tracing::warn!("netlink receive queue overflowed; resynchronising from a dump");
                                mark_everything(&mut route, &tracker, &mut debouncer, now).await;
                                continue;
                            }
                            tracing::debug!(?event, "netlink event");
                            tracker.note(&event);
                            for index in event.interfaces() {
                                debouncer.mark(index, now);
                            }
                        }
                    }
                    Err(e) if e.is_malformed() => {
                        tracing::warn!("undecodable netlink datagram ({e}); resynchronising");
                        mark_everything(&mut route, &tracker, &mut debouncer, now).await;
                    }
                    Err(e) => break Err(e).context("receiving netlink events"),
                }
            }
            _ = tokio::time::sleep_until(deadline.map_or_else(Instant::now, Instant::from_std)), if deadline.is_some() => {
                let due = debouncer.take_due(Instant::now().into_std());
                if due.is_empty() {
                    continue;
                }
                match route.snapshot().await {
                    Ok(snap) => {
                        for info in tracker.changes(&snap, &due, &timestamp_now()) {
                            tracing::info!(
                                interface = %info.interface,
                                addresses = info.ipv4_addresses.len(),
                                gateway = ?info.gateway,
                                status = ?info.status,
                                clients = clients.len(),
                                "network change"
                            );
                            clients.broadcast(&Arc::from(change_line(&info)));
                        }
                    }
                    Err(e) => {
                        // Try again after another debounce period rather than lose the change.
                        tracing::error!("netlink dump failed: {e}");
                        let now = Instant::now().into_std();
                        for index in due {
                            debouncer.mark(index, now);
                        }
                    }
                }
            }
            accepted = socket.listener.accept() => match accepted {
                // Refused: closed before anything is sent or read.
                Ok((stream, _)) if trusted.admit(&stream).is_err() => drop(stream),
                Ok((stream, _)) => match route.snapshot().await {
                    Ok(snap) => {
                        let ts = timestamp_now();
                        let interfaces = tracker.discovery(&snap, &ts);
                        let id = clients.add(stream, Arc::from(discovery_line(&interfaces, &ts)));
                        tracing::debug!(client = id, interfaces = interfaces.len(), "client connected");
                    }
                    Err(e) => tracing::error!("netlink dump for a new client failed: {e}"),
                },
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = clients.reap() => {}
        }
    };
    clients.shutdown().await;
    socket.remove().await;
    result
}

/// After lost events: every interface we know of, and every link there is now, gets a fresh look.
async fn mark_everything(
    route: &mut RouteSocket,
    tracker: &Tracker,
    debouncer: &mut Debouncer,
    now: std::time::Instant,
) {
    let mut all = tracker.known();
    match route.snapshot().await {
        Ok(snap) => all.extend(snap.links.iter().map(|l| l.index)),
        Err(e) => tracing::error!("netlink dump failed during resync: {e}"),
    }
    for index in all {
        debouncer.mark(index, now);
    }
}
