//! The event loop: netlink events mark interfaces dirty, the debouncer says when to look, a
//! fresh dump says what to report, and the server fans the lines out. Commands arrive as jobs
//! from the client tasks: status ones are answered here, dedicated-NIC ones run on a blocking
//! thread, one at a time (proxy-ARP bridge ones likewise). One task owns all state; nothing runs
//! while nothing changes (no polling, no timer unless a change is pending). At shutdown, NICs
//! still lent to containers are returned to the host and netmon's proxy-ARP bridges removed.
//! Serial ports: listed to each new client after its network discovery, hot-plug changes (from
//! `crate::serial::watch`) broadcast; their jobs run on blocking threads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use netlink::{Event, EventStream, RouteSocket};
use netmon_proto::{
    Response, SerialDevice, change_line, device_discovery_line, dhcp_update_line, discovery_line,
    timestamp_now,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::commands::{View, Work, dispatch};
use crate::debounce::Debouncer;
use crate::model::Filter;
use crate::nic::Nics;
use crate::proxy_arp::Bridges;
use crate::serial::{Change, Devices, Roots};
use crate::server::{Clients, Job, Socket, TrustedClients};
use crate::tracker::Tracker;

/// Commands waiting for the daemon (every client has at most one in flight).
const JOB_QUEUE: usize = 64;

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

    // Serial ports: like rtnetlink, subscribe before the first enumeration. Without uevents
    // (no host network, an old kernel) only hot-plug is lost: each client still gets a fresh list.
    let roots = Roots::default();
    let mut devices = Devices::default();
    let (mut device_changes, watcher) = match crate::serial::watch(roots.clone()) {
        Ok((changes, task)) => {
            devices.watching = true;
            (Some(changes), Some(task))
        }
        Err(e) => {
            tracing::warn!(
                "cannot open the kernel's uevent socket ({e}): no serial hot-plug events; \
                 serial ports are still listed to each new client"
            );
            (None, None)
        }
    };
    devices.replace(&serial_ports(&roots).await);

    let socket = Socket::bind(&cfg.socket).await?;
    tracing::info!(
        "serving network events on {} (debounce {:?})",
        cfg.socket.display(),
        cfg.debounce
    );

    let nics = Arc::new(Mutex::new(
        Nics::new().context("opening netmon's own network namespace (/proc/self/ns/net)")?,
    ));
    let bridges = Arc::new(Mutex::new(Bridges::default()));
    // DHCP clients (lease files beside the socket, `dhcp/`, as the original's /var/orchestrator/dhcp);
    // their lease changes go to every client as `dhcp_update` events.
    let lease_dir = cfg
        .socket
        .parent()
        .map_or_else(|| PathBuf::from("dhcp"), |d| d.join("dhcp"));
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let (dhcp, dhcp_task) = crate::dhcp::spawn(lease_dir, updates_tx);
    let (jobs_tx, mut jobs) = mpsc::channel::<Job>(JOB_QUEUE);
    let mut running = JoinSet::new();
    let mut clients = Clients::new(jobs_tx);
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
                        // The greeting (upstream-head §4.1): network_discovery, then
                        // device_discovery from a fresh enumeration, before anything is read.
                        let ports = serial_ports(&roots).await;
                        devices.replace(&ports);
                        let mut greeting = discovery_line(&interfaces, &ts);
                        greeting.push_str(&device_discovery_line(&ports, &timestamp_now()));
                        let id = clients.add(stream, Arc::from(greeting));
                        tracing::debug!(client = id, interfaces = interfaces.len(), serial_ports = ports.len(), "client connected");
                    }
                    Err(e) => tracing::error!("netlink dump for a new client failed: {e}"),
                },
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = clients.reap() => {}
            Some(update) = updates.recv() => {
                tracing::info!(
                    container = %update.container_name,
                    vnic = %update.vnic_name,
                    ip = %update.ip,
                    "DHCP lease"
                );
                clients.broadcast(&Arc::from(dhcp_update_line(&update)));
            }
            change = next_change(&mut device_changes) => match change {
                Some(change) => {
                    match &change {
                        Change::Added(d) => tracing::info!(path = %d.path, by_id = ?d.by_id, clients = clients.len(), "serial port added"),
                        Change::Removed(path) => tracing::info!(%path, clients = clients.len(), "serial port removed"),
                    }
                    clients.broadcast(&Arc::from(devices.apply(change)));
                }
                None => {
                    device_changes = None;
                    devices.watching = false;
                }
            },
            Some(job) = jobs.recv() => {
                let view = View {
                    clients: clients.len(),
                    pending_changes: debouncer.pending().into_iter().filter_map(|i| tracker.name_of(i).map(str::to_owned)).collect(),
                    devices: devices.status(),
                };
                match dispatch(job.command, &view) {
                    Work::Answer(response) => { let _ = job.reply.send(response); }
                    Work::Nic(nic_job) => {
                        let nics = nics.clone();
                        running.spawn(async move {
                            let response = tokio::task::spawn_blocking(move || {
                                nic_job.run(&mut nics.lock().unwrap_or_else(PoisonError::into_inner))
                            })
                            .await
                            .unwrap_or_else(|e| Response::error(format!("netmon failed to run the command: {e}")));
                            let _ = job.reply.send(response);
                        });
                    }
                    Work::ProxyArp(proxy_job) => {
                        let bridges = bridges.clone();
                        running.spawn(async move {
                            let response = tokio::task::spawn_blocking(move || {
                                proxy_job.run(&mut bridges.lock().unwrap_or_else(PoisonError::into_inner))
                            })
                            .await
                            .unwrap_or_else(|e| Response::error(format!("netmon failed to run the command: {e}")));
                            let _ = job.reply.send(response);
                        });
                    }
                    Work::Serial(serial_job) => {
                        let roots = roots.clone();
                        running.spawn(async move {
                            let response = tokio::task::spawn_blocking(move || serial_job.run(&roots))
                                .await
                                .unwrap_or_else(|e| Response::error(format!("netmon failed to run the command: {e}")));
                            let _ = job.reply.send(response);
                        });
                    }
                    Work::Dhcp(dhcp_job) => {
                        let dhcp = dhcp.clone();
                        running.spawn(async move {
                            let _ = job.reply.send(dhcp_job.run(&dhcp).await);
                        });
                    }
                }
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    clients.shutdown().await;
    running.shutdown().await;
    // DHCP clients end keeping their leases: the next netmon resumes them (INIT-REBOOT).
    dhcp.shutdown().await;
    let _ = dhcp_task.await;
    // Links lent to containers go back to the host (a command still running finishes first: it
    // holds the lock).
    let lent = tokio::task::spawn_blocking(move || {
        nics.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .return_all();
    });
    if let Err(e) = lent.await {
        tracing::error!("returning dedicated NICs failed: {e}");
    }
    // Wi-Fi vNICs' bridges go: netmon leaves nothing of its own on the host (the agent rebuilds
    // them through the next netmon).
    let removed = tokio::task::spawn_blocking(move || {
        bridges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove_all()
    });
    match removed.await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(bridges = n, "removed the proxy-ARP bridges"),
        Ok(Err(e)) => tracing::error!("removing the proxy-ARP bridges failed: {e}"),
        Err(e) => tracing::error!("removing the proxy-ARP bridges failed: {e}"),
    }
    socket.remove().await;
    result
}

/// The serial ports there are now (sysfs and `/dev` reads, off the event loop).
async fn serial_ports(roots: &Roots) -> Vec<SerialDevice> {
    let roots = roots.clone();
    tokio::task::spawn_blocking(move || crate::serial::enumerate(&roots))
        .await
        .unwrap_or_else(|e| {
            tracing::error!("enumerating serial ports failed: {e}");
            Vec::new()
        })
}

/// The next hot-plug change; `None` once the watcher has ended; pending forever without one.
async fn next_change(changes: &mut Option<mpsc::Receiver<Change>>) -> Option<Change> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
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
