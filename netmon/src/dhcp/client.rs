//! One DHCP client: a dedicated OS thread that enters the container's network namespace
//! (`setns` through `/proc/<pid>/ns/net`), opens its sockets there (a socket stays in the
//! namespace it was created in), and runs the [`Machine`] against the real clock: it sends and
//! receives on a UDP socket bound to `0.0.0.0:68` on the vNIC (`SO_BINDTODEVICE`,
//! `SO_BROADCAST`), configures the address and default route over rtnetlink
//! ([`netlink::ConfigSocket`]), writes the lease file and reports changes.
//!
//! The thread sleeps in `poll(2)` on three descriptors (the UDP socket, the stop channel, a pidfd
//! of the container's process) with the machine's next deadline as timeout, so an idle client
//! costs no CPU; it ends on stop, when the container's process exits (releasing the lease
//! while the vNIC may still be there), or when its interface is gone. It never touches a tokio worker: results go out through a oneshot and an unbounded
//! channel, whose senders work from any thread.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use netlink::ConfigSocket;
use netmon_proto::DhcpUpdate;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::lease_file::{self, LeaseFile};
use super::machine::{Action, Destination, Lease, LossReason, Machine, Remembered};
use super::wifi::Wifi;

/// Attempts to find the interface by MAC, and the pause between them (upstream-head §4.5.1:
/// Docker may still be moving the vNIC into the namespace).
pub const FIND_TRIES: u32 = 10;
pub const FIND_PAUSE: Duration = Duration::from_millis(300);
/// Metric of the default route through the vNIC (the original script's).
pub const ROUTE_METRIC: u32 = 100;
/// Thread stack: the client needs little (the codec's buffers are on the heap).
const STACK: usize = 256 * 1024;
const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// What a client is for.
#[derive(Debug, Clone)]
pub struct Spec {
    pub container_name: String,
    pub vnic_name: String,
    pub target: Target,
    /// The container's process (for a Wi-Fi client: when it started; [`Wifi`] has the current).
    pub pid: u32,
    /// Where lease files go (`/var/orchestrator/dhcp`).
    pub lease_dir: PathBuf,
}

impl Spec {
    /// `container:vnic`, the original's key.
    pub fn key(&self) -> String {
        format!("{}:{}", self.container_name, self.vnic_name)
    }
}

/// Where a client asks and what it does with a lease.
#[derive(Debug, Clone)]
pub enum Target {
    /// A MACVLAN vNIC, found by its MAC in the container's namespace; the lease goes on it.
    Vnic { mac: [u8; 6] },
    /// A Wi-Fi vNIC: the host's parent, in the host's namespace; the lease goes to the bridge,
    /// never on the parent.
    Wifi(Wifi),
}

impl Target {
    /// Whether the client may change its interface (addresses, routes). Never on the host's
    /// Wi-Fi: its addresses are the host's.
    pub fn configures_interface(&self) -> bool {
        matches!(self, Target::Vnic { .. })
    }

    /// What the client puts on its interface for `lease`: nothing on the host's Wi-Fi.
    fn configuration(&self, lease: &Lease) -> Option<Applied> {
        self.configures_interface().then(|| Applied {
            ip: lease.ip,
            prefix: lease.prefix,
            gateway: lease.gateway(),
        })
    }

    pub fn wifi(&self) -> Option<&Wifi> {
        match self {
            Target::Wifi(w) => Some(w),
            Target::Vnic { .. } => None,
        }
    }
}

/// A MAC as the original writes it: lower-case, colon-separated.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a client could not start; the texts are the original's answers (upstream-head §4.5.1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Invalid container PID: {0}")]
    InvalidPid(u32),
    #[error("Container PID {0} network namespace not found")]
    NamespaceNotFound(u32),
    #[error("Permission denied accessing container PID {0} network namespace")]
    PermissionDenied(u32),
    #[error("Cannot access container PID {pid} network namespace: {source}")]
    Namespace {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("Interface with MAC {0} not found in container after {FIND_TRIES} retries")]
    InterfaceNotFound(String),
    #[error("Interface {0} not found")]
    ParentNotFound(String),
    #[error("DHCP client set-up failed: {0}")]
    Setup(String),
}

/// What a running client shows (`get_dhcp_status`).
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub running: bool,
    pub interface: String,
    pub last_ip: Option<String>,
    pub state: &'static str,
    /// The last `dhcp_update` sent for the lease held now, to announce it again on request.
    pub last_update: Option<DhcpUpdate>,
}

/// How the client thread is told to end.
const STOP_RELEASE: u8 = b'r';
const STOP_KEEP: u8 = b'k';

/// A running client; dropping it ends the thread without a RELEASE (the lease stays on the
/// interface and in the lease file, for the next netmon to pick up).
#[derive(Debug)]
pub struct Client {
    pub spec: Spec,
    status: Arc<Mutex<Status>>,
    stop: UnixStream,
    done: Option<oneshot::Receiver<()>>,
}

impl Client {
    /// Starts the client thread and waits until it has found the interface and opened its
    /// sockets (up to `FIND_TRIES × FIND_PAUSE` when the interface is not there yet).
    pub async fn start(
        spec: Spec,
        updates: mpsc::UnboundedSender<DhcpUpdate>,
    ) -> Result<Client, StartError> {
        if spec.pid == 0 {
            return Err(StartError::InvalidPid(spec.pid));
        }
        let (stop, stop_far) = UnixStream::pair().map_err(setup)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let status = Arc::new(Mutex::new(Status {
            running: true,
            state: "init",
            ..Status::default()
        }));
        let thread_spec = spec.clone();
        let thread_status = Arc::clone(&status);
        std::thread::Builder::new()
            .name(format!("dhcp-{}", spec.pid))
            .stack_size(STACK)
            .spawn(move || {
                let run = Runner::open(thread_spec, stop_far, thread_status.clone(), updates);
                match run {
                    Ok(mut runner) => {
                        let _ = ready_tx.send(Ok(runner.ifname.clone()));
                        runner.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
                lock(&thread_status).running = false;
                let _ = done_tx.send(());
            })
            .map_err(setup)?;
        match ready_rx.await {
            Ok(Ok(ifname)) => {
                lock(&status).interface = ifname;
                Ok(Client {
                    spec,
                    status,
                    stop,
                    done: Some(done_rx),
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::Setup("the client thread ended".into())),
        }
    }

    /// The update to announce again on request (a Wi-Fi bridge rebuilt for a new PID).
    pub fn set_last_update(&self, update: DhcpUpdate) {
        lock(&self.status).last_update = Some(update);
    }

    /// The client's status now.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Whether the thread still runs.
    pub fn is_running(&self) -> bool {
        lock(&self.status).running
    }

    /// Stops the client: a held lease is released and removed from the interface, the lease file
    /// deleted. Waits for the thread (at most `timeout`).
    pub async fn stop(mut self, timeout: Duration) {
        self.end(STOP_RELEASE, timeout).await;
    }

    /// Ends the client keeping its lease (netmon shutting down: the next netmon asks for it
    /// again).
    pub async fn shutdown(mut self, timeout: Duration) {
        self.end(STOP_KEEP, timeout).await;
    }

    async fn end(&mut self, how: u8, timeout: Duration) {
        // The thread may be gone already (EPIPE): nothing to tell.
        let _ = (&self.stop).write_all(&[how]);
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(timeout, done).await;
        }
    }
}

fn setup(e: io::Error) -> StartError {
    StartError::Setup(e.to_string())
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the client put on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
}

/// The thread's side.
struct Runner {
    spec: Spec,
    ifname: String,
    index: u32,
    /// The interface's MAC: chaddr, and whose replies are ours.
    mac: [u8; 6],
    /// Option 61.
    client_id: Vec<u8>,
    udp: UdpSocket,
    rtnl: ConfigSocket,
    stop: UnixStream,
    pidfd: Option<OwnedFd>,
    status: Arc<Mutex<Status>>,
    updates: mpsc::UnboundedSender<DhcpUpdate>,
    lease_path: PathBuf,
    applied: Option<Applied>,
    reported: Option<Lease>,
    machine: Machine,
    epoch: Instant,
}

impl Runner {
    /// Enters the namespace (the container's, or for Wi-Fi the host's), finds the interface (by
    /// MAC, or for Wi-Fi the parent by name), opens the sockets.
    fn open(
        spec: Spec,
        stop: UnixStream,
        status: Arc<Mutex<Status>>,
        updates: mpsc::UnboundedSender<DhcpUpdate>,
    ) -> Result<Runner, StartError> {
        let pid = spec.pid;
        let entered = match &spec.target {
            Target::Vnic { .. } => {
                let ns = container_netns(pid)?;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            }
            Target::Wifi(w) => nix::sched::setns(&*w.netns, nix::sched::CloneFlags::CLONE_NEWNET),
        };
        entered.map_err(|e| StartError::Namespace {
            pid,
            source: e.into(),
        })?;
        // A Wi-Fi client outlives the container's process: a restart brings a new PID to the
        // same lease (`request_wifi_dhcp` again), a deletion sends `stop_dhcp`.
        let pidfd = match spec.target {
            Target::Vnic { .. } => pidfd_open(pid),
            Target::Wifi(_) => None,
        };
        let mut rtnl = ConfigSocket::new().map_err(|e| StartError::Setup(e.to_string()))?;
        let mut found = None;
        for attempt in 0..FIND_TRIES {
            if attempt > 0 {
                std::thread::sleep(FIND_PAUSE);
            }
            let links = rtnl.links().map_err(|e| StartError::Setup(e.to_string()))?;
            found = links.into_iter().find(|l| match &spec.target {
                Target::Vnic { mac } => l.mac.as_deref() == Some(&mac[..]),
                Target::Wifi(w) => l.name == w.parent,
            });
            if found.is_some() {
                break;
            }
        }
        let link = found.ok_or_else(|| match &spec.target {
            Target::Vnic { mac } => StartError::InterfaceNotFound(mac_text(*mac)),
            Target::Wifi(w) => StartError::ParentNotFound(w.parent.clone()),
        })?;
        let mac: [u8; 6] = link
            .mac
            .as_deref()
            .and_then(|m| m.try_into().ok())
            .ok_or_else(|| StartError::Setup(format!("{} has no Ethernet address", link.name)))?;
        let client_id = match &spec.target {
            Target::Vnic { .. } => codec::mac_client_id(mac),
            Target::Wifi(w) => w.client_id.clone(),
        };
        let udp = client_socket(&link.name).map_err(setup)?;
        let lease_path = lease_file::path(&spec.lease_dir, &spec.container_name, &spec.vnic_name);
        let seed = u64::from(rand::random::<u32>()) << 32 | u64::from(spec.pid);
        Ok(Runner {
            ifname: link.name,
            index: link.index,
            mac,
            client_id,
            udp,
            rtnl,
            stop,
            pidfd,
            status,
            updates,
            lease_path,
            applied: None,
            reported: None,
            machine: Machine::new(seed),
            epoch: Instant::now(),
            spec,
        })
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The client loop, until told to stop or the container is gone.
    fn run(&mut self) {
        let key = self.spec.key();
        tracing::info!(key, interface = self.ifname, "DHCP client started");
        let remembered = self.remembered();
        if self.spec.target.configures_interface() {
            self.clear_placeholders(remembered.as_ref().map(|r| r.lease.ip));
        }
        if let Some(r) = &remembered {
            // The address is on the interface already: what the client holds until told otherwise.
            self.applied = self.spec.target.configuration(&r.lease);
        }
        let actions = self.machine.start(self.now(), remembered);
        if !self.perform(actions) {
            return;
        }
        let mut buf = vec![0u8; 1536];
        loop {
            lock(&self.status).state = self.machine.state_name();
            let timeout = match self.machine.deadline() {
                None => PollTimeout::NONE,
                // Rounded up: waking a little early would only spin.
                Some(d) => {
                    PollTimeout::try_from(d.saturating_sub(self.now()) + Duration::from_millis(1))
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let (udp_ready, stop_ready, gone) = {
                let mut fds = vec![
                    PollFd::new(self.udp.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(p) = &self.pidfd {
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(key, "DHCP client poll failed: {e}");
                        return;
                    }
                }
                let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                (
                    ready(&fds[0]),
                    ready(&fds[1]),
                    fds.get(2).is_some_and(ready),
                )
            };
            if stop_ready {
                let mut how = [0u8; 1];
                let release =
                    matches!((&self.stop).read(&mut how), Ok(1) if how[0] == STOP_RELEASE);
                if release {
                    let actions = self.machine.stop();
                    self.perform(actions);
                    let _ = lease_file::remove(&self.lease_path);
                    tracing::info!(key, "DHCP client stopped, lease released");
                } else {
                    tracing::info!(key, "DHCP client ended, lease kept");
                }
                return;
            }
            if gone {
                // The runtime stopped or was deleted: release while the vNIC may still be there
                // (best effort: the engine removes it soon after), and forget the lease, which
                // belonged to that namespace.
                tracing::info!(
                    key,
                    pid = self.spec.pid,
                    "container process exited: DHCP client releases and ends"
                );
                let actions = self.machine.stop();
                self.perform(actions);
                let _ = lease_file::remove(&self.lease_path);
                return;
            }
            if udp_ready {
                match self.udp.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        let source = match from.ip() {
                            std::net::IpAddr::V4(v4) => v4,
                            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                        };
                        let reply = buf
                            .get(..len)
                            .and_then(|b| codec::decode(b, self.mac, source));
                        if let Some(reply) = reply {
                            tracing::debug!(key, ?reply, "DHCP reply");
                            let actions = self.machine.on_reply(self.now(), reply);
                            if !self.perform(actions) {
                                return;
                            }
                        }
                    }
                    Err(e) if is_gone(&e) => {
                        tracing::info!(key, "interface gone: DHCP client ends");
                        return;
                    }
                    Err(e) => tracing::debug!(key, "DHCP receive: {e}"),
                }
            }
            let actions = self.machine.on_timeout(self.now());
            if !self.perform(actions) {
                return;
            }
        }
    }

    /// The lease of the lease file when its address is still on the interface (netmon
    /// restarted, the container kept its lease).
    fn remembered(&mut self) -> Option<Remembered> {
        let file = lease_file::read(&self.lease_path)?;
        let (lease, age) = file.lease(OffsetDateTime::now_utc())?;
        if !self.spec.target.configures_interface() {
            // Never on the host's Wi-Fi: the file is all there is.
            return Some(Remembered { lease, age });
        }
        let on_interface = self.rtnl.ipv4_addresses().ok()?.iter().any(|a| {
            a.index == self.index && a.address == lease.ip && a.prefix_len == lease.prefix
        });
        on_interface.then_some(Remembered { lease, age })
    }

    /// Removes every IPv4 address on the interface but `keep`: the engine's placeholder
    /// (Docker IPAM gives a DHCP vNIC an address of the MACVLAN network) must not stay beside the
    /// lease, nor be the source of the DISCOVER.
    fn clear_placeholders(&mut self, keep: Option<Ipv4Addr>) {
        let Ok(addresses) = self.rtnl.ipv4_addresses() else {
            return;
        };
        for a in addresses {
            if a.index == self.index && Some(a.address) != keep {
                match self
                    .rtnl
                    .del_ipv4_address(self.index, a.address, a.prefix_len)
                {
                    Ok(()) => tracing::info!(
                        key = self.spec.key(),
                        "removed the placeholder {}/{} from {}",
                        a.address,
                        a.prefix_len,
                        self.ifname
                    ),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        tracing::warn!(key = self.spec.key(), "cannot remove {}: {e}", a.address)
                    }
                }
            }
        }
    }

    /// Carries out the machine's actions; `false` when the client must end (interface gone).
    fn perform(&mut self, actions: Vec<Action>) -> bool {
        for action in actions {
            match action {
                Action::Send(packet) => {
                    let packet = match self.spec.target {
                        Target::Vnic { .. } => packet,
                        Target::Wifi(_) => packet.for_host(),
                    };
                    let bytes = codec::encode_with_id(&packet, self.mac, &self.client_id);
                    let to = match packet.to {
                        Destination::Broadcast => Ipv4Addr::BROADCAST,
                        Destination::Unicast(ip) => ip,
                    };
                    tracing::debug!(key = self.spec.key(), ?packet, "DHCP send");
                    if let Err(e) = self.udp.send_to(&bytes, SocketAddrV4::new(to, SERVER_PORT)) {
                        if is_gone(&e) {
                            tracing::info!(
                                key = self.spec.key(),
                                "interface gone: DHCP client ends"
                            );
                            return false;
                        }
                        // Retransmission covers it (no route yet, a full queue...).
                        tracing::debug!(key = self.spec.key(), "DHCP send to {to}: {e}");
                    }
                }
                Action::Bound {
                    lease,
                    renewal,
                    age,
                } => self.bound(&lease, renewal, age),
                Action::Lost { lease, reason } => self.lost(&lease, reason),
            }
        }
        true
    }

    fn bound(&mut self, lease: &Lease, renewal: bool, age: Duration) {
        let key = self.spec.key();
        // The file's timestamp is when the lease was granted: a restarted netmon counts its
        // timers from there.
        let granted = OffsetDateTime::now_utc() - age;
        if let Err(e) = self.apply(lease) {
            tracing::warn!(key, "cannot configure {} on {}: {e}", lease.ip, self.ifname);
        }
        let file = LeaseFile::new(
            &self.ifname,
            lease,
            netmon_proto::format_timestamp(granted),
            renewal,
        );
        if let Err(e) = lease_file::write(&self.lease_path, &file) {
            tracing::warn!(key, "cannot write {}: {e}", self.lease_path.display());
        }
        lock(&self.status).last_ip = Some(lease.ip.to_string());
        let changed = self.reported.as_ref().is_none_or(|r| !r.same_report(lease));
        // A Wi-Fi lease becomes the vNIC's bridge: rebuilt when the lease changed, built at a
        // renewal when an earlier attempt failed (the container was not up yet, ...).
        let bridge = self
            .spec
            .target
            .wifi()
            .and_then(|w| w.bound(&self.spec.container_name, lease, changed));
        if changed || bridge.is_some() {
            tracing::info!(
                key,
                "DHCP lease {}/{} on {} (gateway {}, {} s)",
                lease.ip,
                lease.prefix,
                self.ifname,
                file.router,
                lease.lease_time
            );
            let update = DhcpUpdate {
                container_name: self.spec.container_name.clone(),
                vnic_name: self.spec.vnic_name.clone(),
                // Wi-Fi: the original's null (the MAC in the request is the host's).
                mac_address: match self.spec.target {
                    Target::Vnic { mac } => Some(mac_text(mac)),
                    Target::Wifi(_) => None,
                },
                ip: file.ip.clone(),
                mask: file.mask.clone(),
                prefix: file.prefix,
                gateway: file.router.clone(),
                dns: file.dns.clone(),
                lease_time: file.lease.clone(),
                timestamp: file.timestamp.clone(),
                proxy_arp_config: bridge.as_ref().map(crate::proxy_arp::Bridge::config),
            };
            lock(&self.status).last_update = Some(update.clone());
            let _ = self.updates.send(update);
            self.reported = Some(lease.clone());
        } else {
            tracing::debug!(key, "DHCP lease {} renewed", lease.ip);
        }
    }

    fn lost(&mut self, lease: &Lease, reason: LossReason) {
        let key = self.spec.key();
        match reason {
            LossReason::Released => tracing::info!(key, "releasing {}", lease.ip),
            _ => tracing::warn!(key, "DHCP lease {} lost ({reason:?})", lease.ip),
        }
        self.unapply();
        if let Some(w) = self.spec.target.wifi() {
            w.lost(&self.spec.container_name);
        }
        self.reported = None;
        let mut status = lock(&self.status);
        status.last_ip = None;
        status.last_update = None;
        drop(status);
        let _ = lease_file::remove(&self.lease_path);
    }

    /// Puts the lease's address and default route on the interface, replacing what the client
    /// put there before. Idempotent: a renewal refreshes without removing anything.
    fn apply(&mut self, lease: &Lease) -> netlink::Result<()> {
        let Some(new) = self.spec.target.configuration(lease) else {
            return Ok(());
        };
        self.rtnl.add_ipv4_address(self.index, new.ip, new.prefix)?;
        if let Some(old) = self.applied.take() {
            if (old.ip, old.prefix) != (new.ip, new.prefix) {
                ignore_missing(self.rtnl.del_ipv4_address(self.index, old.ip, old.prefix))?;
            }
            if let Some(gw) = old.gateway
                && old.gateway != new.gateway
            {
                ignore_missing(self.rtnl.del_default_route(self.index, gw, ROUTE_METRIC))?;
            }
        }
        self.applied = Some(new.clone());
        if let Some(gw) = new.gateway {
            self.rtnl
                .replace_default_route(self.index, gw, ROUTE_METRIC)?;
        }
        Ok(())
    }

    fn unapply(&mut self) {
        let Some(old) = self.applied.take() else {
            return;
        };
        if let Some(gw) = old.gateway
            && let Err(e) =
                ignore_missing(self.rtnl.del_default_route(self.index, gw, ROUTE_METRIC))
        {
            tracing::debug!(key = self.spec.key(), "default route via {gw}: {e}");
        }
        if let Err(e) = ignore_missing(self.rtnl.del_ipv4_address(self.index, old.ip, old.prefix)) {
            tracing::warn!(key = self.spec.key(), "cannot remove {}: {e}", old.ip);
        }
    }
}

/// The container's namespace, with the original's texts for what can be wrong.
pub fn container_netns(pid: u32) -> Result<File, StartError> {
    File::open(format!("/proc/{pid}/ns/net")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StartError::NamespaceNotFound(pid),
        io::ErrorKind::PermissionDenied => StartError::PermissionDenied(pid),
        _ => StartError::Namespace { pid, source: e },
    })
}

fn ignore_missing(r: netlink::Result<()>) -> netlink::Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// The interface (or the namespace) went away under the socket.
fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::ENODEV | nix::libc::ENXIO))
}

/// A UDP socket on `0.0.0.0:68` that only sees and sends through `ifname`, may broadcast, and
/// can share the port with the clients of the namespace's other vNICs.
fn client_socket(ifname: &str) -> io::Result<UdpSocket> {
    let fd = sock::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    sock::setsockopt(&fd, sockopt::Broadcast, &true)?;
    sock::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    sock::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT),
    )?;
    Ok(UdpSocket::from(fd))
}

/// A pidfd of `pid` (readable when the process exits); `None` on kernels before 5.3.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is
    // passed. A non-negative result is a descriptor this process now owns.
    #[allow(unsafe_code)]
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    #[allow(unsafe_code)]
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_arp::SharedBridges;

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 215, 0, 50),
            prefix: 24,
            routers: vec![Ipv4Addr::new(10, 215, 0, 1)],
            dns: Vec::new(),
            domain: None,
            mtu: None,
            broadcast: None,
            server: Ipv4Addr::new(10, 215, 0, 1),
            lease_time: 120,
            renew: 60,
            rebind: 105,
        }
    }

    #[test]
    fn on_the_host_wifi_a_lease_never_becomes_interface_configuration() {
        let ns = File::open("/proc/self/ns/net").expect("own namespace");
        let wifi = Target::Wifi(Wifi::new(
            "wlan0".into(),
            b"plc:eth1".to_vec(),
            1,
            Arc::new(ns),
            SharedBridges::default(),
        ));
        assert!(!wifi.configures_interface());
        assert_eq!(wifi.configuration(&lease()), None);
        let vnic = Target::Vnic {
            mac: [2, 0, 0, 0, 0, 1],
        };
        assert!(vnic.configures_interface());
        assert_eq!(
            vnic.configuration(&lease()),
            Some(Applied {
                ip: Ipv4Addr::new(10, 215, 0, 50),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 215, 0, 1)),
            })
        );
    }
}
