//! `dnsmasq` (Debian's `dnsmasq-base`) as a LAN's DHCP server, in a network namespace a test made,
//! on one interface: 2-minute leases (dnsmasq's shortest) with T1 = 10 s and T2 = 20 s (options 58
//! and 59), so renewals and rebinding happen within a test; a MAC may be reserved at an address.
//! Stopped on drop; its lease database and pid file live in a directory removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Proc;

/// T1 and T2 the server sends (seconds).
pub const T1: u64 = 10;
pub const T2: u64 = 20;

/// What the server hands out.
#[derive(Debug, Clone)]
pub struct Pool {
    /// First and last address of the dynamic range (a /24).
    pub first: String,
    pub last: String,
    /// Option 3 (router) and option 6 (DNS server).
    pub router: String,
    pub dns: String,
}

/// A dnsmasq serving DHCP on `iface` in namespace `ns`; not running until [`Dnsmasq::start`].
pub struct Dnsmasq {
    proc: Option<Proc>,
    dir: PathBuf,
    ns: String,
    iface: String,
    pool: Pool,
}

impl Dnsmasq {
    pub fn new(ns: &str, iface: &str, pool: Pool) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("orch-dnsmasq-"));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Dnsmasq {
            proc: None,
            dir,
            ns: ns.to_owned(),
            iface: iface.to_owned(),
            pool,
        }
    }

    /// (Re)starts the server, with `(mac, address)` reserved if given; waits until it listens.
    pub fn start(&mut self, reserved: Option<(&str, &str)>) {
        let hosts: Vec<String> = reserved
            .map(|(mac, ip)| format!("{mac},{ip}"))
            .into_iter()
            .collect();
        self.start_hosts(&hosts);
    }

    /// (Re)starts the server with these reservations (`--dhcp-host=` values without the lease
    /// time: `<mac>,<ip>` or `id:<client id>,<ip>`); waits until it listens.
    pub fn start_hosts(&mut self, hosts: &[String]) {
        self.stop();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "dnsmasq", "--no-daemon"]);
        cmd.args([
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--log-dhcp",
            "--log-facility=-",
        ]);
        cmd.arg(format!("--interface={}", self.iface));
        let p = &self.pool;
        cmd.arg(format!(
            "--dhcp-range={},{},255.255.255.0,2m",
            p.first, p.last
        ));
        for host in hosts {
            cmd.arg(format!("--dhcp-host={host},2m"));
        }
        cmd.arg(format!("--dhcp-option=option:router,{}", p.router));
        cmd.arg(format!("--dhcp-option=option:dns-server,{}", p.dns));
        cmd.arg(format!("--dhcp-option=option:T1,{T1}"));
        cmd.arg(format!("--dhcp-option=option:T2,{T2}"));
        cmd.arg(format!("--dhcp-leasefile={}", self.leases_path().display()));
        cmd.arg(format!(
            "--pid-file={}",
            self.dir.join("dnsmasq.pid").display()
        ));
        let proc = Proc::spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc.out.contains("DHCP, IP range") {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start: {}",
                proc.out.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    pub fn leases_path(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    /// The lease database (`<expiry> <mac> <ip> <host> <client id>` lines).
    pub fn leases(&self) -> String {
        std::fs::read_to_string(self.leases_path()).unwrap_or_default()
    }

    /// What the running server logged (its DHCP exchanges).
    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.out.text()).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
