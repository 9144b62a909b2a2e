//! The lease file: `<lease dir>/<container>_<vnic>.lease`, the original's shape (upstream-head
//! §4.5.4: JSON, 4-space indentation, the udhcpc script's keys and string types), written
//! atomically (temporary file, fsync, rename, fsync of the directory) so a reader or a crash
//! never sees half a file. Read back when a client starts, to ask for the same lease after a
//! netmon restart (INIT-REBOOT). Deleted when a client is stopped (the original never deleted
//! it, Defect N12).

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::codec::mask_of;
use super::machine::Lease;

/// The file's content, keys in the original's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseFile {
    pub interface: String,
    pub ip: String,
    /// Dotted mask.
    pub subnet: String,
    /// Prefix length as a string.
    pub mask: String,
    pub prefix: u8,
    pub broadcast: String,
    /// Routers, space-separated.
    pub router: String,
    /// DNS servers, space-separated.
    pub dns: String,
    pub domain: String,
    pub mtu: String,
    pub hostname: String,
    pub ntpsrv: String,
    /// Lease time in seconds, as a string.
    pub lease: String,
    pub serverid: String,
    pub timestamp: String,
    /// `bound` or `renew`.
    pub event: String,
}

/// `<dir>/<container>_<vnic>.lease` (the original's `ORCH_DHCP_KEY`: the key with `:` → `_`).
pub fn path(dir: &Path, container: &str, vnic: &str) -> PathBuf {
    dir.join(format!("{container}_{vnic}.lease").replace([':', '/'], "_"))
}

fn join(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn split(s: &str) -> Vec<Ipv4Addr> {
    s.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

impl LeaseFile {
    /// The file for `lease` on `interface`, granted at `timestamp`.
    pub fn new(interface: &str, lease: &Lease, timestamp: String, renewal: bool) -> Self {
        let broadcast = lease.broadcast.unwrap_or_else(|| {
            Ipv4Addr::from(u32::from(lease.ip) | !u32::from(mask_of(lease.prefix)))
        });
        LeaseFile {
            interface: interface.to_owned(),
            ip: lease.ip.to_string(),
            subnet: mask_of(lease.prefix).to_string(),
            mask: lease.prefix.to_string(),
            prefix: lease.prefix,
            broadcast: broadcast.to_string(),
            router: join(&lease.routers),
            dns: join(&lease.dns),
            domain: lease.domain.clone().unwrap_or_default(),
            mtu: lease.mtu.map(|m| m.to_string()).unwrap_or_default(),
            hostname: String::new(),
            ntpsrv: String::new(),
            lease: lease.lease_time.to_string(),
            serverid: lease.server.to_string(),
            timestamp,
            event: if renewal { "renew" } else { "bound" }.to_owned(),
        }
    }

    /// The lease back, and how long ago it was granted (`now` is the current wall-clock time).
    /// `None` when the file does not describe a lease (a failure file, unparseable values).
    pub fn lease(&self, now: OffsetDateTime) -> Option<(Lease, Duration)> {
        let ip: Ipv4Addr = self.ip.parse().ok()?;
        let lease_time: u32 = self.lease.parse().ok()?;
        let granted = OffsetDateTime::parse(&self.timestamp, &Rfc3339).ok()?;
        let age = Duration::try_from(now - granted).unwrap_or(Duration::ZERO);
        let (renew, rebind) = if lease_time == u32::MAX {
            (u32::MAX, u32::MAX)
        } else {
            (lease_time / 2, lease_time / 8 * 7)
        };
        let lease = Lease {
            ip,
            prefix: self.prefix.min(32),
            routers: split(&self.router),
            dns: split(&self.dns),
            domain: (!self.domain.is_empty()).then(|| self.domain.clone()),
            mtu: self.mtu.parse().ok(),
            broadcast: self.broadcast.parse().ok(),
            server: self.serverid.parse().ok()?,
            lease_time,
            renew,
            rebind,
        };
        Some((lease, age))
    }

    /// The JSON text: 4-space indentation, a trailing newline.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        // Strings and a number: cannot fail.
        let _ = self.serialize(&mut ser);
        let mut s = String::from_utf8(out).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Reads a lease file; `None` when it is missing or not a lease.
pub fn read(path: &Path) -> Option<LeaseFile> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `file` to `path` atomically, creating the directory.
pub fn write(path: &Path, file: &LeaseFile) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(file.render().as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Deletes a lease file; a missing one is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(192, 168, 1, 77),
            prefix: 24,
            routers: vec![Ipv4Addr::new(192, 168, 1, 1)],
            dns: vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(8, 8, 8, 8)],
            domain: Some("lan".into()),
            mtu: None,
            broadcast: None,
            server: Ipv4Addr::new(192, 168, 1, 1),
            lease_time: 86_400,
            renew: 43_200,
            rebind: 75_600,
        }
    }

    #[test]
    fn the_file_has_the_originals_keys_values_and_indentation() {
        let f = LeaseFile::new("eth1", &lease(), "2026-04-10T15:04:05+00:00".into(), false);
        let text = f.render();
        assert_eq!(
            text,
            "{\n    \"interface\": \"eth1\",\n    \"ip\": \"192.168.1.77\",\n    \"subnet\": \"255.255.255.0\",\n    \
             \"mask\": \"24\",\n    \"prefix\": 24,\n    \"broadcast\": \"192.168.1.255\",\n    \"router\": \"192.168.1.1\",\n    \
             \"dns\": \"192.168.1.1 8.8.8.8\",\n    \"domain\": \"lan\",\n    \"mtu\": \"\",\n    \"hostname\": \"\",\n    \
             \"ntpsrv\": \"\",\n    \"lease\": \"86400\",\n    \"serverid\": \"192.168.1.1\",\n    \
             \"timestamp\": \"2026-04-10T15:04:05+00:00\",\n    \"event\": \"bound\"\n}\n"
        );
    }

    #[test]
    fn a_written_file_reads_back_as_the_lease_with_its_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(&dir.path().join("dhcp"), "plc-01", "eth0");
        assert!(p.ends_with("dhcp/plc-01_eth0.lease"));
        let f = LeaseFile::new(
            "eth1",
            &lease(),
            "2026-04-10T15:04:05.000000+00:00".into(),
            true,
        );
        write(&p, &f).expect("written");
        let back = read(&p).expect("read back");
        assert_eq!(back, f);
        let now = time::macros::datetime!(2026-04-10 15:14:05 UTC);
        let (l, age) = back.lease(now).expect("a lease");
        assert_eq!(l, lease_with_broadcast());
        assert_eq!(age, Duration::from_secs(600));
        // No temporary file is left behind.
        assert_eq!(
            fs::read_dir(p.parent().expect("dir")).expect("ls").count(),
            1
        );
        remove(&p).expect("removed");
        remove(&p).expect("removing twice is fine");
        assert!(read(&p).is_none());
    }

    fn lease_with_broadcast() -> Lease {
        Lease {
            broadcast: Some(Ipv4Addr::new(192, 168, 1, 255)),
            ..lease()
        }
    }

    #[test]
    fn the_originals_failure_file_is_not_a_lease() {
        let failure: LeaseFile = match serde_json::from_str::<LeaseFile>(
            r#"{"interface": "eth1", "error": "lease_failed", "timestamp": "t", "event": "nak"}"#,
        ) {
            Ok(f) => f,
            Err(_) => return, // not even the shape: read() gives None
        };
        assert!(failure.lease(OffsetDateTime::now_utc()).is_none());
    }
}
