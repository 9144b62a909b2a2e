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
    pub mac: [u8; 6],
    pub pid: u32,
    /// Where lease files go (`/var/orchestrator/dhcp`).
    pub lease_dir: PathBuf,
}

impl Spec {
    /// `container:vnic`, the original's key.
    pub fn key(&self) -> String {
        format!("{}:{}", self.container_name, self.vnic_name)
    }

    /// The MAC as the original writes it: lower-case, colon-separated.
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
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
    /// Enters the namespace, finds the interface by MAC, opens the sockets.
    fn open(
        spec: Spec,
        stop: UnixStream,
        status: Arc<Mutex<Status>>,
        updates: mpsc::UnboundedSender<DhcpUpdate>,
    ) -> Result<Runner, StartError> {
        let pid = spec.pid;
        let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StartError::NamespaceNotFound(pid),
            io::ErrorKind::PermissionDenied => StartError::PermissionDenied(pid),
            _ => StartError::Namespace { pid, source: e },
        })?;
        let pidfd = pidfd_open(pid);
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            StartError::Namespace {
                pid,
                source: e.into(),
            }
        })?;
        let mut rtnl = ConfigSocket::new().map_err(|e| StartError::Setup(e.to_string()))?;
        let mut found = None;
        for attempt in 0..FIND_TRIES {
            if attempt > 0 {
                std::thread::sleep(FIND_PAUSE);
            }
            let links = rtnl.links().map_err(|e| StartError::Setup(e.to_string()))?;
            found = links
                .into_iter()
                .find(|l| l.mac.as_deref() == Some(&spec.mac[..]));
            if found.is_some() {
                break;
            }
        }
        let link = found.ok_or_else(|| StartError::InterfaceNotFound(spec.mac_text()))?;
        let udp = client_socket(&link.name).map_err(setup)?;
        let lease_path = lease_file::path(&spec.lease_dir, &spec.container_name, &spec.vnic_name);
        let seed = u64::from(rand::random::<u32>()) << 32 | u64::from(spec.pid);
        Ok(Runner {
            ifname: link.name,
            index: link.index,
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
        self.clear_placeholders(remembered.as_ref().map(|r| r.lease.ip));
        if let Some(r) = &remembered {
            // The address is on the interface already: what the client holds until told otherwise.
            self.applied = Some(Applied {
                ip: r.lease.ip,
                prefix: r.lease.prefix,
                gateway: r.lease.gateway(),
            });
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
                            .and_then(|b| codec::decode(b, self.spec.mac, source));
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
                    let bytes = codec::encode(&packet, self.spec.mac);
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
        if changed {
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
                mac_address: Some(self.spec.mac_text()),
                ip: file.ip.clone(),
                mask: file.mask.clone(),
                prefix: file.prefix,
                gateway: file.router.clone(),
                dns: file.dns.clone(),
                lease_time: file.lease.clone(),
                timestamp: file.timestamp.clone(),
                proxy_arp_config: None,
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
        let new = Applied {
            ip: lease.ip,
            prefix: lease.prefix,
            gateway: lease.gateway(),
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
