//! Serial ports as sysfs and `/dev` show them (upstream-head §7.2, without udev's database):
//! which ttys there are (`/sys/class/tty/*`), their numbers (`stat` of the node), their USB ids
//! (the USB device's attributes, found by walking up from the tty's `device`) and their
//! `/dev/serial/by-id/` name (the existing link, else the one systemd's `60-serial.rules`
//! gives). Blocking file reads: callers run these off the event loop. Never writes.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use netmon_proto::SerialDevice;

use super::uevent::is_serial_port;

/// Where sysfs and the device nodes are: the real `/sys` and `/dev` in production, a fake tree
/// in unit tests. Reported paths always say `/dev/…`.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// Every serial port there is now, by path.
pub fn enumerate(roots: &Roots) -> Vec<SerialDevice> {
    let Ok(entries) = fs::read_dir(roots.sys.join("class/tty")) else {
        return Vec::new();
    };
    let mut devices: Vec<SerialDevice> = entries
        .filter_map(Result::ok)
        .filter_map(|e| describe(roots, e.file_name().to_str()?))
        .collect();
    devices.sort_by(|a, b| a.path.cmp(&b.path));
    devices
}

/// The port whose node is `/dev/<name>`, if it is one netmon reports: the node can be
/// `stat`-ed and passes [`is_serial_port`].
pub fn describe(roots: &Roots, name: &str) -> Option<SerialDevice> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let node = roots.dev.join(name);
    let meta = fs::metadata(&node).ok()?;
    let class = roots.sys.join("class/tty").join(name);
    let from_sysfs = read_attr(&class.join("dev")).and_then(|d| parse_dev(&d));
    let (major, minor) = if meta.file_type().is_char_device() {
        // Linux majors have 12 bits and minors 20: both fit.
        let stat = (
            u32::try_from(nix::sys::stat::major(meta.rdev())).ok()?,
            u32::try_from(nix::sys::stat::minor(meta.rdev())).ok()?,
        );
        if from_sysfs.is_some_and(|s| s != stat) {
            // The node is what a container gets; sysfs only says what the kernel meant.
            tracing::warn!(
                node = %node.display(),
                ?stat,
                ?from_sysfs,
                "a serial node's numbers differ from sysfs; reporting the node's"
            );
        }
        stat
    } else {
        // Not a device node (a fake tree): sysfs's numbers are all there is.
        from_sysfs?
    };
    if !is_serial_port(name, major, minor) {
        return None;
    }
    let usb = UsbIds::find(roots, &class);
    let path = format!("/dev/{name}");
    let by_id = existing_by_id(roots, &node)
        .or_else(|| usb.as_ref().and_then(UsbIds::by_id_name))
        .map(|entry| format!("/dev/serial/by-id/{entry}"));
    let usb = usb.unwrap_or_default();
    Some(SerialDevice {
        path,
        by_id,
        major: Some(major),
        minor: Some(minor),
        vendor_id: usb.vendor_id,
        product_id: usb.product_id,
        serial: usb.serial,
        subsystem: "tty".to_owned(),
        manufacturer: usb.manufacturer,
        product: usb.product,
    })
}

fn read_attr(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim_end().to_owned())
}

fn read_attr_bytes(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = fs::read(path).ok()?;
    while bytes.last().is_some_and(|b| *b == b'\n') {
        bytes.pop();
    }
    Some(bytes)
}

/// `188:0` → (188, 0).
fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The entry of `/dev/serial/by-id/` that resolves to `node`.
fn existing_by_id(roots: &Roots, node: &Path) -> Option<String> {
    let node = fs::canonicalize(node).ok()?;
    let mut names: Vec<String> = fs::read_dir(roots.dev.join("serial/by-id"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| fs::canonicalize(e.path()).is_ok_and(|t| t == node))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Deterministic if several point at it.
    names.sort();
    names.into_iter().next()
}

/// What udev's `usb_id` builtin would say of the port's USB device, sanitised as udev does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsbIds {
    /// `ID_VENDOR_ID`, `ID_MODEL_ID`.
    pub vendor_id: Option<String>,
    pub product_id: Option<String>,
    /// `ID_SERIAL_SHORT`.
    pub serial: Option<String>,
    /// `ID_VENDOR`, `ID_MODEL` (the strings, else the numeric ids).
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// `ID_USB_INTERFACE_NUM`: the interface's `bInterfaceNumber`.
    pub interface: Option<String>,
    /// `.ID_PORT`: the usb-serial port's `port_number`.
    pub port: Option<String>,
}

impl UsbIds {
    /// Walks up from `<class>/device` to the first directory with `idVendor` (the USB device),
    /// noting the first `bInterfaceNumber` on the way (the interface). `None` if the port is not
    /// on USB.
    fn find(roots: &Roots, class: &Path) -> Option<UsbIds> {
        let device = class.join("device");
        let start = fs::canonicalize(&device).ok()?;
        let sys = fs::canonicalize(&roots.sys).ok()?;
        let mut interface = None;
        let mut dir = start.as_path();
        loop {
            if interface.is_none() {
                interface = read_attr(&dir.join("bInterfaceNumber"));
            }
            if dir.join("idVendor").is_file() {
                break;
            }
            dir = dir.parent().filter(|p| p.starts_with(&sys) && *p != sys)?;
        }
        let raw = |attr: &str| read_attr_bytes(&dir.join(attr)).filter(|v| !v.is_empty());
        let vendor_id = read_attr(&dir.join("idVendor"));
        let product_id = read_attr(&dir.join("idProduct"));
        let manufacturer = raw("manufacturer")
            .map(|m| sanitise(&m))
            .or_else(|| vendor_id.clone());
        let product = raw("product")
            .map(|p| sanitise(&p))
            .or_else(|| product_id.clone());
        // usb_id ignores a serial with control, non-ASCII or `,` bytes (Microsoft's rule).
        let serial = raw("serial")
            .filter(|s| s.iter().all(|b| (0x20..=0x7f).contains(b) && *b != b','))
            .map(|s| sanitise(&s))
            .filter(|s| !s.is_empty());
        Some(UsbIds {
            vendor_id,
            product_id,
            serial,
            manufacturer,
            product,
            interface,
            port: read_attr(&device.join("port_number")),
        })
    }

    /// `ID_SERIAL`: `<vendor>_<model>[_<serial>]`.
    pub fn id_serial(&self) -> Option<String> {
        let mut s = format!("{}_{}", self.manufacturer.as_ref()?, self.product.as_ref()?);
        if let Some(serial) = &self.serial {
            s.push('_');
            s.push_str(serial);
        }
        Some(s)
    }

    /// The `/dev/serial/by-id/` entry `60-serial.rules` creates:
    /// `usb-<ID_SERIAL>-if<NN>[-port<n>]`; none without an interface number.
    pub fn by_id_name(&self) -> Option<String> {
        let mut name = format!("usb-{}-if{}", self.id_serial()?, self.interface.as_ref()?);
        if let Some(port) = &self.port {
            name.push_str("-port");
            name.push_str(port);
        }
        Some(name)
    }
}

/// udev's `udev_replace_whitespace` then `udev_replace_chars(…, NULL)`: leading and trailing
/// whitespace dropped, each inner run of it one `_`; ASCII outside `[A-Za-z0-9#+-.:=@_]` → `_`
/// (a `\x` escape is kept); valid multi-byte UTF-8 kept, each invalid byte → `_`.
pub fn sanitise(raw: &[u8]) -> String {
    let trimmed = raw.trim_ascii();
    let mut collapsed = Vec::with_capacity(trimmed.len());
    let mut in_space = false;
    for &b in trimmed {
        if b.is_ascii_whitespace() || b == 0x0b {
            in_space = true;
            continue;
        }
        if in_space {
            collapsed.push(b'_');
            in_space = false;
        }
        collapsed.push(b);
    }
    let mut out = String::with_capacity(collapsed.len());
    for chunk in collapsed.utf8_chunks() {
        let mut chars = chunk.valid().chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
                out.push(c);
            } else if c == '\\' && chars.peek() == Some(&'x') {
                out.push('\\');
            } else {
                out.push('_');
            }
        }
        out.extend(std::iter::repeat_n('_', chunk.invalid().len()));
    }
    out
}

#[cfg(test)]
mod tests {
    // Tests: a failed expectation is the test's message.
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn names_are_sanitised_as_udev_does() {
        assert_eq!(sanitise(b"FT232R USB UART"), "FT232R_USB_UART");
        assert_eq!(sanitise(b"  Silicon  Labs \t"), "Silicon_Labs");
        assert_eq!(
            sanitise(b"CP2102 (USB/UART) Bridge"),
            "CP2102__USB_UART__Bridge"
        );
        assert_eq!(sanitise(b"a#b+c-d.e:f=g@h_i"), "a#b+c-d.e:f=g@h_i");
        assert_eq!(sanitise(b"Caf\xc3\xa9 \xff!"), "Caf\u{e9}___");
        assert_eq!(sanitise(b"x\\x20y"), "x\\x20y");
        assert_eq!(sanitise(b""), "");
    }

    #[test]
    fn by_id_names_follow_60_serial_rules() {
        let ids = UsbIds {
            vendor_id: Some("0403".into()),
            product_id: Some("6001".into()),
            serial: Some("A50285BI".into()),
            manufacturer: Some("FTDI".into()),
            product: Some("FT232R_USB_UART".into()),
            interface: Some("00".into()),
            port: Some("0".into()),
        };
        assert_eq!(
            ids.by_id_name().unwrap(),
            "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
        );
        let acm = UsbIds {
            serial: None,
            port: None,
            interface: Some("02".into()),
            ..ids.clone()
        };
        assert_eq!(acm.by_id_name().unwrap(), "usb-FTDI_FT232R_USB_UART-if02");
        let no_interface = UsbIds {
            interface: None,
            ..ids
        };
        assert_eq!(no_interface.by_id_name(), None);
    }

    /// A fake sysfs and /dev: an FTDI adapter (ttyUSB0, usb-serial, with a by-id link), a CDC
    /// ACM device with awkward strings and no by-id link (ttyACM0), a native port (ttyS0), a
    /// virtual console (tty1), a ttyS below minor 64 and a tty whose node is missing.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let f = Fake { dir };
            let usb = "devices/pci0000:00/0000:00:14.0/usb1/1-1";
            f.attrs(
                usb,
                &[
                    ("idVendor", "0403\n"),
                    ("idProduct", "6001\n"),
                    ("manufacturer", "FTDI\n"),
                    ("product", "FT232R USB UART\n"),
                    ("serial", "A50285BI\n"),
                ],
            );
            f.attrs(&format!("{usb}/1-1:1.0"), &[("bInterfaceNumber", "00\n")]);
            f.attrs(&format!("{usb}/1-1:1.0/ttyUSB0"), &[("port_number", "0\n")]);
            f.tty("ttyUSB0", &format!("{usb}/1-1:1.0/ttyUSB0"), "188:0");
            let acm = "devices/pci0000:00/0000:00:14.0/usb1/1-2";
            f.attrs(
                acm,
                &[
                    ("idVendor", "2341\n"),
                    ("idProduct", "0043\n"),
                    ("manufacturer", " Arduino (www.arduino.cc) \n"),
                    ("serial", "7583,1\n"),
                ],
            );
            f.attrs(&format!("{acm}/1-2:1.0"), &[("bInterfaceNumber", "00\n")]);
            f.tty("ttyACM0", &format!("{acm}/1-2:1.0"), "166:0");
            f.tty(
                "ttyS0",
                "devices/platform/serial8250/serial8250:0.0",
                "4:64",
            );
            f.tty("ttyS4", "devices/platform/serial8250/serial8250:0.4", "4:4");
            f.tty("tty1", "devices/virtual/tty/tty1", "4:1");
            fs::create_dir_all(f.sys().join("class/tty/ttyUSB9")).unwrap();
            fs::write(f.sys().join("class/tty/ttyUSB9/dev"), "188:9\n").unwrap();
            let by_id = f.dev().join("serial/by-id");
            fs::create_dir_all(&by_id).unwrap();
            symlink(
                "../../ttyUSB0",
                by_id.join("usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"),
            )
            .unwrap();
            f
        }

        fn sys(&self) -> PathBuf {
            self.dir.path().join("sys")
        }

        fn dev(&self) -> PathBuf {
            self.dir.path().join("dev")
        }

        fn roots(&self) -> Roots {
            Roots {
                sys: self.sys(),
                dev: self.dev(),
            }
        }

        fn attrs(&self, dir: &str, attrs: &[(&str, &str)]) {
            let dir = self.sys().join(dir);
            fs::create_dir_all(&dir).unwrap();
            for (name, value) in attrs {
                fs::write(dir.join(name), value).unwrap();
            }
        }

        /// `/sys/class/tty/<name>` with `dev` and a `device` link to `device` (relative, as the
        /// kernel's), and the node `/dev/<name>` (a plain file: sysfs gives the numbers).
        fn tty(&self, name: &str, device: &str, dev: &str) {
            let class = self.sys().join("class/tty").join(name);
            fs::create_dir_all(&class).unwrap();
            fs::write(class.join("dev"), format!("{dev}\n")).unwrap();
            fs::create_dir_all(self.sys().join(device)).unwrap();
            symlink(format!("../../../{device}"), class.join("device")).unwrap();
            fs::create_dir_all(self.dev()).unwrap();
            fs::write(self.dev().join(name), "").unwrap();
        }
    }

    #[test]
    fn enumeration_reports_serial_ports_with_ids_from_sysfs() {
        let fake = Fake::new();
        let devices = enumerate(&fake.roots());
        let paths: Vec<&str> = devices.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/dev/ttyACM0", "/dev/ttyS0", "/dev/ttyUSB0"]);

        let ftdi = &devices[2];
        assert_eq!(
            ftdi,
            &SerialDevice {
                path: "/dev/ttyUSB0".into(),
                by_id: Some(
                    "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0".into()
                ),
                major: Some(188),
                minor: Some(0),
                vendor_id: Some("0403".into()),
                product_id: Some("6001".into()),
                serial: Some("A50285BI".into()),
                subsystem: "tty".into(),
                manufacturer: Some("FTDI".into()),
                product: Some("FT232R_USB_UART".into()),
            }
        );
        // No link: the name udev would give; the serial with a `,` is not one; no product string.
        let acm = &devices[0];
        assert_eq!(
            acm.by_id.as_deref(),
            Some("/dev/serial/by-id/usb-Arduino__www.arduino.cc__0043-if00")
        );
        assert_eq!((acm.major, acm.minor), (Some(166), Some(0)));
        assert_eq!(acm.serial, None);
        assert_eq!(
            acm.manufacturer.as_deref(),
            Some("Arduino__www.arduino.cc_")
        );
        assert_eq!(acm.product.as_deref(), Some("0043"));
        // Native: no USB ids, no by-id.
        assert_eq!(
            devices[1],
            SerialDevice {
                major: Some(4),
                minor: Some(64),
                ..SerialDevice::removed("/dev/ttyS0")
            }
        );
        assert_eq!(describe(&fake.roots(), "ttyS0"), Some(devices[1].clone()));
        for not_reported in ["tty1", "ttyS4", "ttyUSB9", "ttyUSB7", "../ttyS0", ""] {
            assert_eq!(
                describe(&fake.roots(), not_reported),
                None,
                "{not_reported}"
            );
        }
    }

    #[test]
    fn a_missing_sysfs_is_no_devices() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            sys: dir.path().join("sys"),
            dev: dir.path().join("dev"),
        };
        assert!(enumerate(&roots).is_empty());
    }
}
