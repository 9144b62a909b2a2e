//! Serial ports against the real kernel (as root): hot-plug through a netmon started in-process,
//! with the kernel's own uevents for this machine's `ttyS0` (4:64), synthesised by writing
//! `add`/`remove` to its sysfs `uevent` file (no udevd here, so nothing else reacts; the node
//! stays), and device nodes in the mount namespace of a process that has its own tmpfs on
//! `/dev`, as a runtime container has. Everything is undone on drop, also when a test fails.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::stat::makedev;
use serde_json::{Value, json};
use test_support::Proc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Job, Roots, sysfs};

const TTY: &str = "ttyS0";
const UEVENT: &str = "/sys/class/tty/ttyS0/uevent";
const WAIT: Duration = Duration::from_secs(10);

/// Root on the real kernel only: qemu-user (the armv7 unit tests) cannot enter namespaces or
/// receive uevents, and without root nothing here is allowed.
fn skipped() -> bool {
    if std::env::var_os("ORCH_QEMU_USER").is_some() {
        eprintln!(
            "skipped: qemu-user cannot enter mount namespaces or read uevents (run natively)"
        );
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    false
}

/// Synthesises a uevent for ttyS0.
fn uevent(action: &str) {
    fs::write(UEVENT, action).unwrap_or_else(|e| panic!("writing {action} to {UEVENT}: {e}"));
}

/// Whatever the test did, ttyS0's last word is `add`.
struct AddAgain;

impl Drop for AddAgain {
    fn drop(&mut self) {
        let _ = fs::write(UEVENT, "add");
    }
}

/// Through netmon's socket, as the agent sees it: the greeting lists ttyS0 after the network
/// discovery; `add` and `remove` uevents become `device_change` lines; the status and
/// `discover_devices` answer with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttys0_uevents_reach_a_client_whose_greeting_listed_it() {
    if skipped() {
        return;
    }
    let expected = sysfs::describe(&Roots::default(), TTY)
        .expect("this machine's ttyS0 (4:64) is a reported serial port");
    assert_eq!((expected.major, expected.minor), (Some(4), Some(64)));

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("netmon.sock");
    let daemon = tokio::spawn(crate::daemon::run(crate::daemon::Config {
        socket: socket.clone(),
        debounce: Duration::from_millis(200),
        filter: crate::model::Filter::default(),
        client_uid: None,
    }));
    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "netmon never served its socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (r, mut w) = tokio::net::UnixStream::connect(&socket)
        .await
        .unwrap()
        .into_split();
    let mut lines = BufReader::new(r).lines();
    let mut next = async |what: &str| -> Value {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .unwrap()
            .expect("netmon keeps the connection");
        serde_json::from_str(&line).unwrap()
    };

    let first = next("network_discovery").await;
    assert_eq!(first["type"], "network_discovery", "{first}");
    let second = next("device_discovery").await;
    assert_eq!(second["type"], "device_discovery", "{second}");
    let listed = second["data"]["devices"].as_array().unwrap();
    assert!(
        listed.contains(&json!(expected)),
        "ttyS0 missing from {second}"
    );

    let _add_again = AddAgain;
    let mut change = async |action: &str| -> Value {
        loop {
            let v = next(&format!("device_change {action}")).await;
            if v["type"] == "device_change"
                && v["data"]["action"] == action
                && v["data"]["device"]["path"] == "/dev/ttyS0"
            {
                return v["data"]["device"].clone();
            }
        }
    };
    uevent("add");
    let added = change("add").await;
    assert_eq!(added, json!(expected));
    assert_eq!(
        (added["major"].clone(), added["minor"].clone()),
        (json!(4), json!(64))
    );
    uevent("remove");
    // The cached object, not the bare one.
    assert_eq!(change("remove").await, json!(expected));
    uevent("add");
    assert_eq!(change("add").await, json!(expected));

    w.write_all(b"{\"command\":\"get_device_status\",\"id\":1}\n{\"command\":\"discover_devices\",\"id\":2}\n")
        .await
        .unwrap();
    let mut answer = async |id: u64| -> Value {
        loop {
            let v = next(&format!("answer {id}")).await;
            if v["id"] == id {
                return v;
            }
        }
    };
    let status = answer(1).await;
    assert_eq!(status["success"], true, "{status}");
    assert_eq!(status["status"]["running"], true, "{status}");
    assert_eq!(status["status"]["pyudev_available"], false, "{status}");
    assert!(
        status["status"]["devices"]
            .as_array()
            .unwrap()
            .contains(&json!(expected)),
        "{status}"
    );
    assert_eq!(
        status["status"]["cached_devices"],
        status["status"]["devices"].as_array().unwrap().len()
    );
    let discovered = answer(2).await;
    assert_eq!(discovered["success"], true, "{discovered}");
    assert!(
        discovered["devices"]
            .as_array()
            .unwrap()
            .contains(&json!(expected)),
        "{discovered}"
    );
    daemon.abort();
}

/// A stand-in runtime: a process in its own mount namespace with a fresh tmpfs on `/dev`.
struct Runtime(Proc);

impl Runtime {
    fn start() -> Runtime {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /dev && exec sleep 60",
        ]);
        let runtime = Runtime(Proc::spawn(cmd));
        // `exec sleep` comes after the mount.
        let deadline = Instant::now() + WAIT;
        while fs::read_to_string(format!("/proc/{}/comm", runtime.pid()))
            .ok()
            .as_deref()
            != Some("sleep\n")
        {
            assert!(
                Instant::now() < deadline,
                "the runtime never mounted its /dev"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        runtime
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `path` (`/dev/…`) as the runtime sees it.
    fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }
}

fn run(job: Result<Job, String>) -> Result<String, String> {
    let r = job?.run(&Roots::default());
    if r.success {
        Ok(r.message
            .or_else(|| r.data["message"].as_str().map(str::to_owned))
            .unwrap_or_default())
    } else {
        Err(r.error.unwrap_or_default())
    }
}

fn provision(pid: u32, path: &str, major: u32, minor: u32) -> Result<String, String> {
    run(Job::provision(pid, path.into(), major, minor))
}

fn remove(pid: u32, path: &str) -> Result<String, String> {
    run(Job::remove(pid, path.into()))
}

fn assert_node(path: &Path, major: u32, minor: u32) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(m.file_type().is_char_device(), "{}: {m:?}", path.display());
    assert_eq!(m.rdev(), makedev(major.into(), minor.into()));
    assert_eq!(m.mode() & 0o7777, 0o666, "mode {:o}", m.mode());
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

#[test]
fn a_node_is_created_replaced_and_removed_in_the_runtimes_dev_only() {
    if skipped() {
        return;
    }
    let rt = Runtime::start();
    let pid = rt.pid();
    let node = rt.inside("/dev/modbus0");

    let created = provision(pid, "/dev/modbus0", 4, 64).unwrap();
    assert!(created.starts_with("Created /dev/modbus0"), "{created}");
    assert_node(&node, 4, 64);
    assert!(
        !Path::new("/dev/modbus0").exists(),
        "netmon's own /dev was touched"
    );
    // Again (idempotent), and with other numbers: replaced.
    provision(pid, "/dev/modbus0", 4, 64).unwrap();
    assert_node(&node, 4, 64);
    let replaced = provision(pid, "/dev/modbus0", 188, 3).unwrap();
    assert!(replaced.starts_with("Replaced"), "{replaced}");
    assert_node(&node, 188, 3);

    let removed = remove(pid, "/dev/modbus0").unwrap();
    assert!(removed.starts_with("Removed"), "{removed}");
    assert!(fs::symlink_metadata(&node).is_err(), "still there");
    assert!(
        remove(pid, "/dev/modbus0").is_ok(),
        "nothing there is success"
    );
}

#[test]
fn what_is_not_a_device_node_or_not_the_runtimes_is_refused() {
    if skipped() {
        return;
    }
    let rt = Runtime::start();
    let pid = rt.pid();
    fs::write(rt.inside("/dev/config"), "keep me").unwrap();
    fs::create_dir(rt.inside("/dev/serial")).unwrap();

    let e = provision(pid, "/dev/config", 4, 64).unwrap_err();
    assert!(e.contains("is not a character device; refusing"), "{e}");
    let e = remove(pid, "/dev/config").unwrap_err();
    assert!(e.contains("is not a character device; refusing"), "{e}");
    assert_eq!(
        fs::read_to_string(rt.inside("/dev/config")).unwrap(),
        "keep me"
    );
    let e = provision(pid, "/dev/serial", 4, 64).unwrap_err();
    assert!(e.contains("is not a character device"), "{e}");
    assert!(rt.inside("/dev/serial").is_dir());
    // A parent directory is never created.
    let e = provision(pid, "/dev/nodir/modbus0", 4, 64).unwrap_err();
    assert!(e.contains("parent directory /dev/nodir"), "{e}");
    // A subdirectory that exists is fine.
    provision(pid, "/dev/serial/modbus1", 166, 0).unwrap();
    assert_node(&rt.inside("/dev/serial/modbus1"), 166, 0);

    // Refused before any work: the path, the major.
    for (path, major) in [
        ("/dev/../modbus0", 4),
        ("/tmp/modbus0", 4),
        ("/dev/m0", 204),
    ] {
        let e = provision(pid, path, major, 64).unwrap_err();
        assert!(e.starts_with("Invalid"), "{path}: {e}");
    }
    assert!(!rt.inside("/modbus0").exists());
    assert!(!rt.inside("/dev/m0").exists());

    // netmon's own mount namespace (its /dev is the host's on a host install), and no process.
    let e = provision(std::process::id(), "/dev/modbus0", 4, 64).unwrap_err();
    assert!(e.contains("netmon's own mount namespace"), "{e}");
    let e = provision(u32::MAX - 1, "/dev/modbus0", 4, 64).unwrap_err();
    assert!(e.contains("cannot open /proc/"), "{e}");
}
