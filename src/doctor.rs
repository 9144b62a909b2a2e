//! `orchestrator-agent doctor` and `certs status`: the troubleshooting guide's checks, run on the
//! device by hand. Each check has a stable id (the headings of `docs/troubleshooting.md`), a
//! result, what it found and a one-line fix hint; the exit code is the worst result (0 passed,
//! 1 warning, 2 failure).
//!
//! It only looks: it never changes a file, a container or a network, never talks to the cloud on
//! its own and never prints key material (certificates are summarised by `certs`). Every outside
//! call is bounded by a timeout, so a hung engine or netmon shows up as a failed check.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::certs::{self, FileState, Inspection, Validity};

/// How long one outside call (engine, netmon) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Free space under the state dir below which `state.disk_space` fails / warns.
pub const DISK_FAIL_BYTES: u64 = 32 << 20;
pub const DISK_WARN_BYTES: u64 = 256 << 20;

/// A clock before this (2025-01-01T00:00:00Z) is certainly wrong: the device has no RTC and NTP
/// has not set it yet.
pub const CLOCK_FLOOR: i64 = 1_735_689_600;

/// A check's result, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Not applicable here (e.g. no key to check the mode of); counts as passed.
    Skip,
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skip => "skip",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }

    /// The process exit code for this worst result.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok | Self::Skip => 0,
            Self::Warn => 1,
            Self::Fail => 2,
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable id, e.g. `cert.expiry`; the heading in docs/troubleshooting.md.
    pub id: &'static str,
    pub status: Status,
    /// What was found.
    pub message: String,
    /// One line: what to do when it is not `ok`.
    pub hint: &'static str,
}

impl Check {
    fn new(id: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self {
            id,
            status,
            message: message.into(),
            hint: hint(id),
        }
    }
}

/// Every check id, in the order they run: the contract with docs/troubleshooting.md.
pub const CHECK_IDS: &[&str] = &[
    "cert.present",
    "cert.key_permissions",
    "cert.cn",
    "cert.key_match",
    "cert.expiry",
    "clock.sane",
    "cloud.handshake",
    "state.dir",
    "state.volume",
    "state.disk_space",
    "docker.engine",
    "netmon.socket",
    "runtime.macvlan_parent",
    "runtime.state",
    "network.overlap",
];

/// The fix hint of a check id.
pub fn hint(id: &str) -> &'static str {
    match id {
        "cert.present" => {
            "enroll the device (install/install.sh) or copy client.crt and client.key into --mtls-dir"
        }
        "cert.key_permissions" => "chmod 600 client.key (and chown it to the agent's user)",
        "cert.cn" => "re-enroll: the certificate must carry the agent id as its subject CN",
        "cert.key_match" => {
            "put the client.key that signed the CSR of this client.crt beside it, or re-enroll"
        }
        "cert.expiry" => {
            "renew the certificate (re-enroll); the agent reloads client.crt/client.key without a restart"
        }
        "clock.sane" => "set the clock: enable NTP (timedatectl set-ntp true) or check the RTC",
        "cloud.handshake" => {
            "fix what the message names: the network/DNS to --server, our certificate (cert.*), or --ca-file"
        }
        "state.dir" => {
            "create the state dir (--state-dir) writable by the agent, or mount the volume"
        }
        "state.volume" => {
            "run the agent with -v orchestrator-shared:/var/orchestrator (install/install.sh does), the same volume as netmon"
        }
        "state.disk_space" => {
            "free space on the state dir's filesystem (old images: docker image ls; logs: --log-max-total)"
        }
        "docker.engine" => {
            "start the engine (systemctl start docker) or point --docker-host/DOCKER_HOST at its socket"
        }
        "netmon.socket" => {
            "start the sidecar (docker start autonomy_netmon) with the same state dir volume"
        }
        "runtime.macvlan_parent" => {
            "bring the parent interface back (cable, driver, name, DHCP) or recreate the runtime on an existing NIC"
        }
        "network.overlap" => {
            "recreate the runtime (its internal network gets a free subnet) or move the host route off that range"
        }
        "runtime.state" => {
            "see get_device_status of the runtime and docker logs <runtime>; a gone container needs a new create"
        }
        _ => "",
    }
}

/// What the checks look at.
#[derive(Debug, Clone)]
pub struct Input {
    /// `--server` and `--ca-file`, for the handshake.
    pub server: String,
    pub ca_file: Option<PathBuf>,
    pub mtls_dir: PathBuf,
    pub state_dir: PathBuf,
    pub docker_host: String,
}

/// The host's interfaces, IPv4 addresses and routes, as the parent and overlap checks see them.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// Where it came from, for the messages: netmon's discovery, or this process's namespace.
    pub source: &'static str,
    pub interfaces: Vec<String>,
    pub ipv4: Vec<(String, std::net::Ipv4Addr)>,
    pub routes: Vec<Route>,
}

impl HostView {
    /// From netmon's `network_discovery`: the host's view even when doctor runs in the agent's
    /// container (on a bridge network, whose own interfaces say nothing about the host). Routes
    /// are the interfaces' connected subnets. netmon leaves out lo, docker0, veth* and Docker's
    /// bridges, which are never MACVLAN parents.
    pub fn from_netmon(interfaces: &[netmon_proto::InterfaceInfo]) -> Self {
        let mut view = Self {
            source: "netmon",
            ..Self::default()
        };
        for i in interfaces.iter().filter(|i| i.is_reportable()) {
            view.interfaces.push(i.interface.clone());
            for a in &i.ipv4_addresses {
                let Ok(ip) = a.address.parse::<std::net::Ipv4Addr>() else {
                    continue;
                };
                view.ipv4.push((i.interface.clone(), ip));
                let net = parse_cidr(&a.subnet).map_or(ip, |(net, _)| net);
                view.routes.push(Route {
                    iface: i.interface.clone(),
                    net,
                    prefix: a.prefixlen.min(32),
                });
            }
        }
        view
    }

    /// This process's own network namespace: the host's when doctor runs on the host.
    pub fn local() -> Self {
        let interfaces = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            source: "this namespace",
            interfaces,
            ipv4: host_ipv4(),
            routes: host_routes(),
        }
    }
}

/// Runs every check (blocking; each outside call bounded by [`CALL_TIMEOUT`]).
pub fn run_checks(input: &Input) -> Vec<Check> {
    let now = crate::timefmt::now_unix();
    let inspection = certs::inspect(&input.mtls_dir);
    let mut checks = cert_checks(&inspection, now);
    checks.push(clock_check(now));
    checks.push(cloud_check(input));
    checks.extend(state_checks(&input.state_dir));
    checks.push(docker_check(&input.docker_host));
    let (netmon, discovery) = netmon_check(&input.state_dir.join("netmon.sock"));
    checks.push(netmon);
    let view = discovery.map_or_else(HostView::local, |d| HostView::from_netmon(&d));
    checks.push(macvlan_parent_check(&input.state_dir, &view));
    checks.push(runtime_state_check(&input.docker_host, &input.state_dir));
    checks.push(overlap_check(&input.docker_host, &input.state_dir, &view));
    checks
}

/// A host IPv4 route: interface, destination network, prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub net: std::net::Ipv4Addr,
    pub prefix: u8,
}

/// The host's IPv4 routes from `/proc/net/route` (empty when it cannot be read).
pub fn host_routes() -> Vec<Route> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_routes(&t))
        .unwrap_or_default()
}

/// Parses `/proc/net/route`: addresses are the kernel's network-order words printed in host order.
pub fn parse_proc_routes(text: &str) -> Vec<Route> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (f.first()?, word(f.get(1)?)?, word(f.get(7)?)?);
            let prefix = u8::try_from(u32::from_be_bytes(mask).count_ones()).ok()?;
            Some(Route {
                iface: (*iface).to_owned(),
                net: std::net::Ipv4Addr::from(dest),
                prefix,
            })
        })
        .collect()
}

/// `network.overlap`: the internal network of each recorded runtime (`<name>_internal`) shares no
/// addresses with a host route other than its own bridge's: the runtime (or the host) could not
/// reach the other side. The default route does not count.
pub fn overlap_check(docker_host: &str, state_dir: &Path, view: &HostView) -> Check {
    let routes = &view.routes;
    let id = "network.overlap";
    let map = match recorded_vnics(state_dir) {
        Ok(Some(map)) if !map.is_empty() => map,
        Ok(_) => return Check::new(id, Status::Skip, "no runtimes recorded"),
        Err(e) => return Check::new(id, Status::Fail, e),
    };
    let Ok(config) = docker_api::DockerConfig::from_host(docker_host) else {
        return Check::new(id, Status::Skip, "no engine (see docker.engine)");
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Check::new(id, Status::Skip, "no async runtime");
    };
    rt.block_on(async {
        let docker = docker_api::Docker::new(config);
        if !matches!(
            tokio::time::timeout(CALL_TIMEOUT, docker.ping()).await,
            Ok(Ok(_))
        ) {
            return Check::new(
                id,
                Status::Skip,
                "the engine does not answer (see docker.engine)",
            );
        }
        let mut conflicts = Vec::new();
        let mut checked = 0usize;
        for runtime in map.keys() {
            let name = format!("{runtime}{}", crate::runtime::naming::INTERNAL_SUFFIX);
            let Ok(Ok(net)) =
                tokio::time::timeout(CALL_TIMEOUT, docker.inspect_network(&name)).await
            else {
                continue;
            };
            let bridge = net
                .options
                .get("com.docker.network.bridge.name")
                .cloned()
                .unwrap_or_else(|| format!("br-{}", net.id.get(..12).unwrap_or(&net.id)));
            for pool in &net.ipam.config {
                let Some((subnet, prefix)) = pool.subnet.as_deref().and_then(parse_cidr) else {
                    continue;
                };
                checked += 1;
                for r in routes.iter().filter(|r| r.prefix > 0 && r.iface != bridge) {
                    if in_subnet(r.net, subnet, prefix.min(r.prefix)) {
                        conflicts.push(format!(
                            "{name} ({subnet}/{prefix}) overlaps the host route {}/{} on {} (seen by {})",
                            r.net, r.prefix, r.iface, view.source
                        ));
                    }
                }
            }
        }
        if conflicts.is_empty() {
            Check::new(
                id,
                if checked == 0 {
                    Status::Skip
                } else {
                    Status::Ok
                },
                format!("{checked} internal subnets clear of the host's routes"),
            )
        } else {
            Check::new(id, Status::Fail, conflicts.join("; "))
        }
    })
}

/// The host's IPv4 addresses with their interface (empty when they cannot be listed).
pub fn host_ipv4() -> Vec<(String, std::net::Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect()
}

/// The worst result (`Ok` when every check passed or was skipped).
pub fn worst(checks: &[Check]) -> Status {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Ok)
        .max(Status::Ok)
}

/// The `--json` document.
pub fn to_json(checks: &[Check]) -> Value {
    json!({
        "status": worst(checks).as_str(),
        "checks": checks.iter().map(|c| json!({
            "id": c.id,
            "status": c.status.as_str(),
            "message": c.message,
            "hint": c.hint,
        })).collect::<Vec<_>>(),
    })
}

/// The human report: one line per check, the hint under each that did not pass.
pub fn to_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "[ ok ]",
            Status::Skip => "[skip]",
            Status::Warn => "[warn]",
            Status::Fail => "[FAIL]",
        };
        out.push_str(&format!("{tag} {:<24} {}\n", c.id, c.message));
        if matches!(c.status, Status::Warn | Status::Fail) {
            out.push_str(&format!("       {:<24} fix: {}\n", "", c.hint));
        }
    }
    let worst = worst(checks);
    out.push_str(&format!(
        "\n{}: see docs/troubleshooting.md for each id\n",
        match worst {
            Status::Ok | Status::Skip => "all checks passed",
            Status::Warn => "passed with warnings",
            Status::Fail => "some checks failed",
        }
    ));
    out
}

/// `orchestrator-agent doctor`: prints the report, returns the exit code.
pub fn doctor_command(input: &Input, json: bool) -> u8 {
    let checks = run_checks(input);
    if json {
        println!("{}", to_json(&checks));
    } else {
        print!("{}", to_text(&checks));
    }
    worst(&checks).exit_code()
}

/// `orchestrator-agent certs status`: the pair's details and the certificate checks; returns the
/// exit code (the worst of those checks).
pub fn certs_status_command(mtls_dir: &Path, json: bool) -> u8 {
    let now = crate::timefmt::now_unix();
    let inspection = certs::inspect(mtls_dir);
    let checks = cert_checks(&inspection, now);
    if json {
        let mut v = inspection.to_json(now);
        if let Some(obj) = v.as_object_mut()
            && let Value::Object(report) = to_json(&checks)
        {
            obj.extend(report);
        }
        println!("{v}");
    } else {
        print!("{}", certs_text(&inspection, now));
        println!();
        print!("{}", to_text(&checks));
    }
    worst(&checks).exit_code()
}

fn certs_text(ins: &Inspection, now: i64) -> String {
    let mut out = format!("mTLS dir     {}\n", ins.dir.display());
    let file = |f: &FileState| match f {
        FileState::Missing => "missing".to_owned(),
        FileState::Unreadable(e) => format!("unreadable: {e}"),
        FileState::Present { mode } => format!("mode {mode:04o}"),
    };
    out.push_str(&format!(
        "certificate  {} ({})\n",
        ins.cert_path.display(),
        file(&ins.cert_file)
    ));
    match &ins.cert {
        Some(Ok(c)) => {
            out.push_str(&format!("  CN         {}\n", c.cn));
            out.push_str(&format!("  issuer     {}\n", c.issuer));
            out.push_str(&format!("  serial     {}\n", c.serial));
            out.push_str(&format!("  not before {}\n", certs::rfc3339(c.not_before)));
            out.push_str(&format!(
                "  not after  {} ({}, {} days left)\n",
                certs::rfc3339(c.not_after),
                c.validity(now).as_str(),
                (c.not_after - now).div_euclid(86_400)
            ));
        }
        Some(Err(e)) => out.push_str(&format!("  unusable: {e}\n")),
        None => {}
    }
    out.push_str(&format!(
        "key          {} ({})\n",
        ins.key_path.display(),
        file(&ins.key_file)
    ));
    match &ins.key_match {
        Some(Ok(())) => out.push_str("  matches the certificate\n"),
        Some(Err(e)) => out.push_str(&format!("  {e}\n")),
        None => {}
    }
    out
}

/// `cert.*`: the pair on disk.
pub fn cert_checks(ins: &Inspection, now: i64) -> Vec<Check> {
    let mut checks = Vec::new();
    let missing: Vec<String> = [
        (&ins.cert_file, &ins.cert_path),
        (&ins.key_file, &ins.key_path),
    ]
    .into_iter()
    .filter_map(|(f, p)| match f {
        FileState::Present { .. } => None,
        FileState::Missing => Some(format!("{} is missing", p.display())),
        FileState::Unreadable(e) => Some(format!("{} is unreadable: {e}", p.display())),
    })
    .collect();
    checks.push(if missing.is_empty() {
        Check::new(
            "cert.present",
            Status::Ok,
            format!("client.crt and client.key in {}", ins.dir.display()),
        )
    } else {
        Check::new("cert.present", Status::Fail, missing.join("; "))
    });

    checks.push(match (&ins.key_file, ins.key_too_open()) {
        (FileState::Present { .. }, Some(mode)) => Check::new(
            "cert.key_permissions",
            Status::Warn,
            format!("client.key has mode {mode:04o}: group or others may read it"),
        ),
        (FileState::Present { mode }, None) => Check::new(
            "cert.key_permissions",
            Status::Ok,
            format!("client.key mode {mode:04o}"),
        ),
        _ => Check::new("cert.key_permissions", Status::Skip, "no key to check"),
    });

    checks.push(match &ins.cert {
        Some(Ok(c)) => Check::new("cert.cn", Status::Ok, format!("agent id (CN) {}", c.cn)),
        Some(Err(e)) => Check::new("cert.cn", Status::Fail, format!("client.crt: {e}")),
        None => Check::new("cert.cn", Status::Skip, "no certificate"),
    });

    checks.push(match &ins.key_match {
        Some(Ok(())) => Check::new(
            "cert.key_match",
            Status::Ok,
            "client.key belongs to client.crt",
        ),
        Some(Err(e)) => Check::new("cert.key_match", Status::Fail, format!("client.key: {e}")),
        None => Check::new(
            "cert.key_match",
            Status::Skip,
            "no certificate and key pair",
        ),
    });

    checks.push(match &ins.cert {
        Some(Ok(c)) => {
            let until = certs::rfc3339(c.not_after);
            match c.validity(now) {
                Validity::Valid { days_left } => Check::new(
                    "cert.expiry",
                    Status::Ok,
                    format!("valid until {until} ({days_left} days left)"),
                ),
                Validity::Expiring { days_left } => Check::new(
                    "cert.expiry",
                    Status::Warn,
                    format!("expires {until}: {days_left} days left"),
                ),
                Validity::Expired => Check::new(
                    "cert.expiry",
                    Status::Fail,
                    format!("expired on {until}: the cloud refuses it"),
                ),
                Validity::NotYetValid => Check::new(
                    "cert.expiry",
                    Status::Fail,
                    format!(
                        "not valid before {} (is the clock right?)",
                        certs::rfc3339(c.not_before)
                    ),
                ),
            }
        }
        _ => Check::new("cert.expiry", Status::Skip, "no readable certificate"),
    });
    checks
}

/// `clock.sane`: the clock is not before [`CLOCK_FLOOR`] (no RTC, no NTP yet).
pub fn clock_check(now: i64) -> Check {
    if now < CLOCK_FLOOR {
        Check::new(
            "clock.sane",
            Status::Fail,
            format!(
                "the clock says {}: before this agent was built",
                certs::rfc3339(now)
            ),
        )
    } else {
        Check::new(
            "clock.sane",
            Status::Ok,
            format!("UTC {}", certs::rfc3339(now)),
        )
    }
}

/// `cloud.handshake`: TCP, mutual TLS with our certificate, the WebSocket upgrade and the
/// Engine.IO open against `--server` (see [`crate::cloud::probe`]).
pub fn cloud_check(input: &Input) -> Check {
    let id = "cloud.handshake";
    let config = crate::cloud::LinkConfig {
        server: input.server.clone(),
        ca_file: input.ca_file.clone(),
        mtls_dir: input.mtls_dir.clone(),
        certificate: certs::InUse::default(),
        status: Default::default(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Check::new(id, Status::Fail, format!("no async runtime: {e}")),
    };
    // Each connection step has its own 10 s bound; this caps the whole.
    let probe = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), crate::cloud::probe(&config)).await
    });
    // Never a password of the URL in a report.
    let server = crate::config::strip_userinfo(&input.server);
    match probe {
        Ok(Ok(ok)) => Check::new(
            id,
            Status::Ok,
            format!(
                "{server} accepted CN={} (ping every {} s)",
                ok.agent_id,
                ok.ping_interval.as_secs()
            ),
        ),
        Ok(Err(e)) => Check::new(id, Status::Fail, format!("{server}: {e}")),
        Err(_) => Check::new(id, Status::Fail, format!("{server}: no answer within 30 s")),
    }
}

/// `state.dir` and `state.disk_space`.
pub fn state_checks(dir: &Path) -> Vec<Check> {
    use nix::unistd::{AccessFlags, access};
    let dir_check = match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Check::new(
            "state.dir",
            Status::Fail,
            format!("{} is not a directory", dir.display()),
        ),
        Ok(_) => match access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
            Ok(()) => Check::new(
                "state.dir",
                Status::Ok,
                format!("{} writable", dir.display()),
            ),
            Err(e) => Check::new(
                "state.dir",
                Status::Fail,
                format!("{} is not writable: {e}", dir.display()),
            ),
        },
        Err(e) => Check::new("state.dir", Status::Fail, format!("{}: {e}", dir.display())),
    };
    let ok = dir_check.status == Status::Ok;
    let disk = if !ok {
        Check::new("state.disk_space", Status::Skip, "no state dir")
    } else {
        match nix::sys::statvfs::statvfs(dir) {
            Ok(st) => {
                // Field types differ per target (u32 on 32-bit ARM).
                #[allow(clippy::useless_conversion)]
                let free =
                    u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
                let mib = free >> 20;
                let status = if free < DISK_FAIL_BYTES {
                    Status::Fail
                } else if free < DISK_WARN_BYTES {
                    Status::Warn
                } else {
                    Status::Ok
                };
                Check::new(
                    "state.disk_space",
                    status,
                    format!("{mib} MiB free under {}", dir.display()),
                )
            }
            Err(e) => Check::new(
                "state.disk_space",
                Status::Fail,
                format!("statvfs {}: {e}", dir.display()),
            ),
        }
    };
    let in_container = Path::new("/.dockerenv").exists();
    vec![dir_check, volume_check(dir, in_container), disk]
}

/// `state.volume`: in a container, the state dir must be a mounted volume (the one netmon
/// shares), not the container's own filesystem, which is lost when the container is recreated.
pub fn volume_check(dir: &Path, in_container: bool) -> Check {
    let id = "state.volume";
    if !in_container {
        return Check::new(
            id,
            Status::Skip,
            "not in a container: the state dir is the host's",
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    if mount_points(&mounts).any(|m| Path::new(&m) == dir) {
        Check::new(
            id,
            Status::Ok,
            format!("{} is a mounted volume", dir.display()),
        )
    } else {
        Check::new(
            id,
            Status::Warn,
            format!(
                "{} is in the container's own filesystem: state is lost when the container is recreated and netmon cannot share it",
                dir.display()
            ),
        )
    }
}

/// The mount points of `/proc/self/mountinfo` (field 5, octal escapes undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo.lines().filter_map(|l| {
        let field = l.split(' ').nth(4)?;
        let mut out = Vec::with_capacity(field.len());
        let b = field.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let octal = b.get(i + 1..i + 4).and_then(|d| {
                std::str::from_utf8(d)
                    .ok()
                    .and_then(|d| u8::from_str_radix(d, 8).ok())
            });
            match (b[i], octal) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    i += 4;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).ok()
    })
}

/// `docker.engine`: the engine answers `/_ping` and `/version` within [`CALL_TIMEOUT`].
pub fn docker_check(docker_host: &str) -> Check {
    let id = "docker.engine";
    let config = match docker_api::DockerConfig::from_host(docker_host) {
        Ok(c) => c,
        Err(e) => return Check::new(id, Status::Fail, format!("{docker_host}: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Check::new(id, Status::Fail, format!("no async runtime: {e}")),
    };
    rt.block_on(async {
        let docker = docker_api::Docker::new(config);
        let ping = tokio::time::timeout(CALL_TIMEOUT, docker.ping()).await;
        let max = match ping {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Check::new(id, Status::Fail, format!("{docker_host}: {e}"));
            }
            Err(_) => {
                return Check::new(
                    id,
                    Status::Fail,
                    format!("{docker_host}: no answer within {CALL_TIMEOUT:?}"),
                );
            }
        };
        if max < docker_api::ApiVersion::MIN_SUPPORTED {
            return Check::new(
                id,
                Status::Fail,
                format!(
                    "engine API {max} is older than the oldest supported ({})",
                    docker_api::ApiVersion::MIN_SUPPORTED
                ),
            );
        }
        let release = match tokio::time::timeout(CALL_TIMEOUT, docker.version()).await {
            Ok(Ok(v)) => format!("Docker {}", v.version),
            _ => "Docker (version unknown)".to_owned(),
        };
        Check::new(
            id,
            Status::Ok,
            format!("{release}, API {max} at {docker_host}"),
        )
    })
}

/// `netmon.socket`: the sidecar's socket exists and answers with its `network_discovery` line,
/// which is returned too (the host's interfaces, for the parent and overlap checks).
pub fn netmon_check(socket: &Path) -> (Check, Option<Vec<netmon_proto::InterfaceInfo>>) {
    let id = "netmon.socket";
    let shown = socket.display();
    let fail = |message: String| (Check::new(id, Status::Fail, message), None);
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!("{shown} does not exist: netmon is not running"));
        }
        Err(e) => {
            return fail(format!(
                "{shown}: {e} (a socket left by a netmon that is gone?)"
            ));
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(CALL_TIMEOUT)) {
        return fail(format!("{shown}: {e}"));
    }
    let mut line = Vec::new();
    // At most one protocol line: netmon never sends more, and a stranger must not fill memory.
    let limit = u64::try_from(netmon_proto::MAX_LINE).unwrap_or(u64::MAX);
    let read = std::io::Read::take(BufReader::new(stream), limit).read_until(b'\n', &mut line);
    match read {
        Ok(0) => fail(format!(
            "{shown}: closed without a word (is this agent's uid trusted by netmon?)"
        )),
        Ok(_) => match netmon_proto::decode_message(&line) {
            Ok(netmon_proto::Message::Event(netmon_proto::Event::Discovery(interfaces))) => (
                Check::new(
                    id,
                    Status::Ok,
                    format!(
                        "{shown} answered: network_discovery of {} interfaces",
                        interfaces.len()
                    ),
                ),
                Some(interfaces),
            ),
            _ => (
                Check::new(
                    id,
                    Status::Warn,
                    format!("{shown} answered, but not with a network_discovery line"),
                ),
                None,
            ),
        },
        Err(e) => fail(format!("{shown}: no answer within {CALL_TIMEOUT:?}: {e}")),
    }
}

/// The runtimes recorded in `runtime_vnics.json`: `Ok(None)` when there is no such file.
fn recorded_vnics(state_dir: &Path) -> Result<Option<serde_json::Map<String, Value>>, String> {
    let path = state_dir.join("runtime_vnics.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    crate::state::decode_vnics(&bytes)
        .map(|(map, _odd)| Some(map))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `runtime.macvlan_parent`: every vNIC's parent interface in `runtime_vnics.json` exists
/// (failure) and, when the vNIC names its `parent_subnet`, still has an address in it (warning:
/// the network moved and the runtime was not re-homed yet, or the link is down).
pub fn macvlan_parent_check(state_dir: &Path, view: &HostView) -> Check {
    let id = "runtime.macvlan_parent";
    let map = match recorded_vnics(state_dir) {
        Ok(Some(map)) => map,
        Ok(None) => return Check::new(id, Status::Skip, "no runtimes recorded"),
        Err(e) => return Check::new(id, Status::Fail, e),
    };
    let mut missing = Vec::new();
    let mut moved = Vec::new();
    let mut seen = 0usize;
    for (runtime, vnics) in &map {
        for vnic in vnics.as_array().into_iter().flatten() {
            let Some(parent) = vnic.get("parent_interface").and_then(Value::as_str) else {
                continue;
            };
            seen += 1;
            if !view.interfaces.iter().any(|i| i == parent) {
                missing.push(format!(
                    "{runtime}: parent {parent:?} does not exist (seen by {})",
                    view.source
                ));
                continue;
            }
            let Some((net, prefix)) = vnic
                .get("parent_subnet")
                .and_then(Value::as_str)
                .and_then(parse_cidr)
            else {
                continue;
            };
            let inside = view
                .ipv4
                .iter()
                .any(|(ifname, ip)| ifname == parent && in_subnet(*ip, net, prefix));
            if !inside {
                moved.push(format!(
                    "{runtime}: parent {parent} has no address in {net}/{prefix}"
                ));
            }
        }
    }
    if !missing.is_empty() {
        missing.extend(moved);
        Check::new(id, Status::Fail, missing.join("; "))
    } else if !moved.is_empty() {
        Check::new(id, Status::Warn, moved.join("; "))
    } else {
        Check::new(
            id,
            if seen == 0 { Status::Skip } else { Status::Ok },
            format!("{seen} vNIC parents present ({} runtimes)", map.len()),
        )
    }
}

/// `a.b.c.d/n` as network address and prefix.
fn parse_cidr(text: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, prefix) = text.trim().split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((ip.parse().ok()?, prefix))
}

fn in_subnet(ip: std::net::Ipv4Addr, net: std::net::Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// `runtime.state`: every runtime of `runtime_vnics.json` has its container, and it runs.
/// Skipped when the engine does not answer (that is `docker.engine`'s failure).
pub fn runtime_state_check(docker_host: &str, state_dir: &Path) -> Check {
    let id = "runtime.state";
    let map = match recorded_vnics(state_dir) {
        Ok(Some(map)) if !map.is_empty() => map,
        Ok(_) => return Check::new(id, Status::Skip, "no runtimes recorded"),
        Err(e) => return Check::new(id, Status::Fail, e),
    };
    let Ok(config) = docker_api::DockerConfig::from_host(docker_host) else {
        return Check::new(id, Status::Skip, "no engine (see docker.engine)");
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Check::new(id, Status::Skip, "no async runtime");
    };
    rt.block_on(async {
        let docker = docker_api::Docker::new(config);
        if !matches!(
            tokio::time::timeout(CALL_TIMEOUT, docker.ping()).await,
            Ok(Ok(_))
        ) {
            return Check::new(
                id,
                Status::Skip,
                "the engine does not answer (see docker.engine)",
            );
        }
        let mut worst = Status::Ok;
        let mut notes = Vec::new();
        let mut running = 0usize;
        for name in map.keys() {
            let inspected =
                tokio::time::timeout(CALL_TIMEOUT, docker.inspect_container(name)).await;
            let (status, note) = match inspected {
                Ok(Ok(c)) if c.state.running && !c.state.restarting => {
                    running += 1;
                    continue;
                }
                Ok(Ok(c)) if c.state.restarting => {
                    (Status::Warn, format!("{name}: restarting (crash loop?)"))
                }
                Ok(Ok(c)) => (
                    Status::Warn,
                    format!(
                        "{name}: not running ({:?}, exit code {})",
                        c.state.status, c.state.exit_code
                    )
                    .to_lowercase(),
                ),
                Ok(Err(e)) if e.is_not_found() => (
                    Status::Fail,
                    format!("{name}: recorded, but its container does not exist"),
                ),
                Ok(Err(e)) => (Status::Fail, format!("{name}: {e}")),
                Err(_) => (
                    Status::Fail,
                    format!("{name}: no answer within {CALL_TIMEOUT:?}"),
                ),
            };
            worst = worst.max(status);
            notes.push(note);
        }
        let mut message = format!("{running} of {} runtimes running", map.len());
        if !notes.is_empty() {
            message.push_str(": ");
            message.push_str(&notes.join("; "));
        }
        Check::new(id, worst, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_a_hint_and_the_exit_code_is_the_worst() {
        for id in CHECK_IDS {
            assert!(!hint(id).is_empty(), "{id}");
        }
        let c = |s| Check::new("cert.cn", s, "x");
        assert_eq!(worst(&[c(Status::Ok), c(Status::Skip)]), Status::Ok);
        assert_eq!(worst(&[c(Status::Skip)]), Status::Ok);
        assert_eq!(worst(&[c(Status::Ok), c(Status::Warn)]).exit_code(), 1);
        assert_eq!(
            worst(&[c(Status::Fail), c(Status::Warn), c(Status::Ok)]).exit_code(),
            2
        );
    }

    #[test]
    fn the_troubleshooting_guide_has_a_section_per_check_and_no_other() {
        let guide = include_str!("../docs/troubleshooting.md");
        let headings: Vec<&str> = guide
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(str::trim)
            .collect();
        assert_eq!(
            headings, CHECK_IDS,
            "docs/troubleshooting.md sections vs doctor's ids"
        );
    }

    #[test]
    fn a_clock_before_the_floor_fails() {
        assert_eq!(clock_check(0).status, Status::Fail);
        assert_eq!(clock_check(CLOCK_FLOOR + 1).status, Status::Ok);
    }

    #[test]
    fn proc_net_route_is_read_in_network_order() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_proc_routes(text);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].net, std::net::Ipv4Addr::new(192, 168, 0, 0));
        assert_eq!(routes[1].prefix, 24);
        assert_eq!(routes[0].prefix, 0);
    }

    #[test]
    fn the_state_dir_must_be_a_mounted_volume_in_a_container() {
        // /proc is a mount point on every Linux; a fresh temporary directory is not.
        assert_eq!(volume_check(Path::new("/proc"), true).status, Status::Ok);
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(volume_check(dir.path(), true).status, Status::Warn);
        assert_eq!(volume_check(dir.path(), false).status, Status::Skip);
        let line = "36 35 98:0 /mnt1 /mnt/with\\040space rw - ext3 /dev/root rw";
        assert_eq!(mount_points(line).collect::<Vec<_>>(), ["/mnt/with space"]);
    }

    #[test]
    fn netmon_discovery_is_the_host_view() {
        let line = netmon_proto::discovery_line(&[serde_json::from_value(json!({
            "interface": "eth1",
            "ipv4_addresses": [{"address": "10.203.186.7", "prefixlen": 24,
                                "subnet": "10.203.186.0/24", "network_address": "10.203.186.0"}],
        }))
        .expect("interface")], "2026-01-01T00:00:00.000000+00:00");
        let Ok(netmon_proto::Message::Event(netmon_proto::Event::Discovery(list))) =
            netmon_proto::decode_message(line.as_bytes())
        else {
            panic!("not a discovery: {line}");
        };
        let view = HostView::from_netmon(&list);
        assert_eq!(view.interfaces, ["eth1"]);
        assert_eq!(
            view.ipv4,
            [("eth1".to_owned(), "10.203.186.7".parse().expect("ip"))]
        );
        assert_eq!(
            view.routes,
            [Route {
                iface: "eth1".into(),
                net: "10.203.186.0".parse().expect("ip"),
                prefix: 24
            }]
        );
    }

    #[test]
    fn subnets_contain_their_addresses() {
        let (net, prefix) = parse_cidr("10.203.186.0/24").expect("cidr");
        assert!(in_subnet("10.203.186.9".parse().expect("ip"), net, prefix));
        assert!(!in_subnet("10.203.187.9".parse().expect("ip"), net, prefix));
        assert!(in_subnet("1.2.3.4".parse().expect("ip"), net, 0));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("255.255.255.0"), None);
    }
}
