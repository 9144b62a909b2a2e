//! Kernel uevents for serial ports: the `ACTION@DEVPATH\0KEY=VALUE\0…` datagrams of a
//! `NETLINK_KOBJECT_UEVENT` socket (group 1, the kernel's own broadcasts; no udevd, no libudev),
//! parsed by pure functions, and the socket that reads them. Knows nothing of clients or JSON.

use std::collections::BTreeMap;
use std::io;

use netlink_sys::protocols::NETLINK_KOBJECT_UEVENT;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

/// The kernel's uevent multicast group (udevd re-broadcasts on group 2, in libudev's format).
const KERNEL_GROUP: u32 = 1;
/// Receive buffer: a burst of hot-plug events (a hub with many adapters) must not overrun it.
const RECEIVE_BUFFER: usize = 1 << 20;

/// Majors of the serial drivers netmon reports: ttyUSB (usb-serial), ttyACM (cdc-acm), ttyS
/// (8250). The runtimes' device-cgroup rules allow exactly these.
pub const SERIAL_MAJORS: [u32; 3] = [188, 166, 4];

/// Whether a tty node is a serial port netmon reports (upstream-head §7.2): basename `ttyUSB*`,
/// `ttyACM*` or `ttyS*` (the last only from minor 64: lower minors of major 4 are virtual
/// consoles `tty0`…), with one of [`SERIAL_MAJORS`].
pub fn is_serial_port(name: &str, major: u32, minor: u32) -> bool {
    let known = name.starts_with("ttyUSB")
        || name.starts_with("ttyACM")
        || (name.starts_with("ttyS") && minor >= 64);
    known && SERIAL_MAJORS.contains(&major)
}

/// One uevent: its action, device path and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub vars: BTreeMap<String, String>,
}

/// Parses a kernel uevent datagram. `None` for libudev's re-broadcasts (they start
/// `libudev\0`), for anything not shaped `ACTION@DEVPATH` and for text that is not UTF-8.
pub fn parse(datagram: &[u8]) -> Option<Uevent> {
    let mut fields = datagram
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| std::str::from_utf8(f).ok());
    let (action, devpath) = fields.next()??.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut vars = BTreeMap::new();
    for field in fields {
        if let Some((key, value)) = field?.split_once('=') {
            vars.insert(key.to_owned(), value.to_owned());
        }
    }
    // The header must agree with the body where both say it.
    if vars.get("ACTION").is_some_and(|a| a != action) {
        return None;
    }
    Some(Uevent {
        action: action.to_owned(),
        devpath: devpath.to_owned(),
        vars,
    })
}

/// What a uevent means for serial ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialEvent {
    /// A port appeared: its node's basename (under `/dev`).
    Added(String),
    /// A port went: its node's basename.
    Removed(String),
}

impl Uevent {
    /// The serial-port event this is, if any: `add`/`remove` of a tty that passes
    /// [`is_serial_port`] by its `DEVNAME` and `MAJOR`/`MINOR`. Other actions (`change`, `bind`,
    /// …) and other subsystems are `None`.
    pub fn serial(&self) -> Option<SerialEvent> {
        if self.vars.get("SUBSYSTEM").map(String::as_str) != Some("tty") {
            return None;
        }
        let devname = self.vars.get("DEVNAME")?;
        let name = devname.rsplit('/').next().unwrap_or(devname);
        let number = |key: &str| self.vars.get(key)?.parse::<u32>().ok();
        if name.is_empty() || !is_serial_port(name, number("MAJOR")?, number("MINOR")?) {
            return None;
        }
        match self.action.as_str() {
            "add" => Some(SerialEvent::Added(name.to_owned())),
            "remove" => Some(SerialEvent::Removed(name.to_owned())),
            _ => None,
        }
    }
}

/// A socket on the kernel's uevent broadcasts.
pub struct UeventSocket(TokioSocket);

impl UeventSocket {
    /// Opens and binds the socket. Receiving needs no capability, but only sockets in a network
    /// namespace of the initial user namespace get the broadcasts (netmon: `--network host`).
    pub fn open() -> io::Result<Self> {
        let mut socket = TokioSocket::new(NETLINK_KOBJECT_UEVENT)?;
        // A larger buffer is best effort: the default still works, with less slack.
        let _ = socket.socket_ref().set_rx_buf_sz(RECEIVE_BUFFER);
        socket
            .socket_mut()
            .bind(&SocketAddr::new(0, KERNEL_GROUP))?;
        Ok(UeventSocket(socket))
    }

    /// The next datagram the kernel sent (others' are dropped: a process with `CAP_NET_ADMIN`
    /// could send to the group, and only the kernel's word counts).
    pub async fn next(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let (datagram, from) = self.0.recv_from_full().await?;
            if from.port_number() == 0 {
                return Ok(datagram);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(action: &str, devpath: &str, vars: &[(&str, &str)]) -> Vec<u8> {
        let mut d = format!("{action}@{devpath}\0").into_bytes();
        d.extend(format!("ACTION={action}\0DEVPATH={devpath}\0").bytes());
        for (k, v) in vars {
            d.extend(format!("{k}={v}\0").bytes());
        }
        d
    }

    fn usb(action: &str) -> Vec<u8> {
        datagram(
            action,
            "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0",
            &[
                ("SUBSYSTEM", "tty"),
                ("MAJOR", "188"),
                ("MINOR", "0"),
                ("DEVNAME", "ttyUSB0"),
                ("SEQNUM", "4711"),
            ],
        )
    }

    #[test]
    fn add_and_remove_of_serial_ttys_are_events_change_and_bind_are_not() {
        let add = parse(&usb("add")).unwrap();
        assert_eq!(add.action, "add");
        assert_eq!(
            add.devpath,
            "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0"
        );
        assert_eq!(add.vars["SEQNUM"], "4711");
        assert_eq!(add.serial(), Some(SerialEvent::Added("ttyUSB0".into())));
        assert_eq!(
            parse(&usb("remove")).unwrap().serial(),
            Some(SerialEvent::Removed("ttyUSB0".into()))
        );
        for action in ["change", "bind", "move", "online"] {
            assert_eq!(parse(&usb(action)).unwrap().serial(), None, "{action}");
        }
    }

    #[test]
    fn only_serial_names_and_majors_pass_the_filter() {
        let tty = |name: &str, major: &str, minor: &str| {
            parse(&datagram(
                "add",
                &format!("/devices/virtual/tty/{name}"),
                &[
                    ("SUBSYSTEM", "tty"),
                    ("MAJOR", major),
                    ("MINOR", minor),
                    ("DEVNAME", name),
                ],
            ))
            .unwrap()
            .serial()
        };
        assert_eq!(
            tty("ttyACM1", "166", "1"),
            Some(SerialEvent::Added("ttyACM1".into()))
        );
        assert_eq!(
            tty("ttyS0", "4", "64"),
            Some(SerialEvent::Added("ttyS0".into()))
        );
        // Virtual consoles share major 4 below minor 64; other drivers' majors are not allowed.
        assert_eq!(tty("ttyS9", "4", "63"), None);
        assert_eq!(tty("tty1", "4", "1"), None);
        assert_eq!(tty("ttyAMA0", "204", "64"), None);
        assert_eq!(tty("ttySAC0", "204", "64"), None);
        assert_eq!(tty("ttyUSB0", "189", "0"), None);
        assert_eq!(tty("ttyUSB0", "x", "0"), None);
        // Another subsystem, or no DEVNAME/MAJOR.
        let block = parse(&datagram(
            "add",
            "/devices/virtual/block/loop0",
            &[
                ("SUBSYSTEM", "block"),
                ("MAJOR", "7"),
                ("MINOR", "0"),
                ("DEVNAME", "ttyUSB0"),
            ],
        ))
        .unwrap();
        assert_eq!(block.serial(), None);
        let bare = parse(&datagram(
            "add",
            "/devices/x/ttyUSB0",
            &[("SUBSYSTEM", "tty")],
        ))
        .unwrap();
        assert_eq!(bare.serial(), None);
    }

    #[test]
    fn libudev_messages_and_garbage_are_not_uevents() {
        // udevd's re-broadcast: a binary header after the magic.
        let mut libudev = b"libudev\0\xfe\xed\xca\xfe".to_vec();
        libudev.extend(usb("add"));
        assert_eq!(parse(&libudev), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"\0\0\0"), None);
        assert_eq!(parse(b"add"), None);
        assert_eq!(parse(b"add@\0SUBSYSTEM=tty\0"), None);
        assert_eq!(parse(b"@/devices/x\0"), None);
        assert_eq!(parse(b"add@/devices/\xff\0"), None);
        // A body that contradicts the header.
        let mut d = b"add@/devices/x\0ACTION=remove\0".to_vec();
        assert_eq!(parse(&d), None);
        // Fields without `=` are skipped, not fatal.
        d = b"add@/devices/x\0junk\0SUBSYSTEM=tty\0".to_vec();
        assert_eq!(parse(&d).unwrap().vars["SUBSYSTEM"], "tty");
    }
}
