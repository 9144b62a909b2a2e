//! Serial port passthrough end to end (issue 15): the real agent, the real netmon (uevents from
//! the kernel, no udevd) and the engine, with the machine's `ttyS0` (4:64). Synthetic uevents
//! (`echo remove|add > /sys/class/tty/ttyS0/uevent`) stand for unplugging and plugging it.
//!
//! Shown: a runtime created with a port for `ttyS0` gets the character device 4:64 at its
//! `container_path` and the port says `connected` (status and `data/serial_configs.json`); an
//! unplug removes the node and says `disconnected` (Defect S1); a plug puts it back; a restart
//! (fresh `/dev`) gets it again (Defect S2); `get_serial_devices` answers in shape; a delete
//! removes the runtime's serial entry.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use serde_json::{Value, json};
use support::*;

const UEVENT: &str = "/sys/class/tty/ttyS0/uevent";

/// Plugs `ttyS0` back (an `add` uevent) however the test ends, so the host and netmon's view of
/// it are as before.
struct Replug;

impl Drop for Replug {
    fn drop(&mut self) {
        let _ = std::fs::write(UEVENT, "add");
    }
}

fn uevent(action: &str) {
    std::fs::write(UEVENT, action).expect("write the uevent file (root needed)");
}

/// The PID of the container's init.
fn pid_of(name: &str) -> u32 {
    docker(&["inspect", "-f", "{{.State.Pid}}", name])
        .trim()
        .parse()
        .unwrap()
}

/// `(major, minor)` of the character device at `path` inside the container, `None` when there is
/// none (read from the host through the container's root).
fn char_device(name: &str, path: &str) -> Option<(u64, u64)> {
    let on_host = PathBuf::from(format!("/proc/{}/root{path}", pid_of(name)));
    let m = std::fs::symlink_metadata(on_host).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    let dev = m.rdev();
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Some((major, minor))
}

fn port(status: &Value) -> &Value {
    &status["serial_ports"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_port_follows_plug_unplug_and_restarts_and_leaves_with_the_runtime() {
    assert!(
        std::fs::metadata(UEVENT).is_ok(),
        "this test needs the machine's ttyS0"
    );
    let _replug = Replug;
    let mut w = World::start().await;
    let name = unique("rtser");
    let ack = w
        .call(
            "create_new_runtime",
            json!({
                "container_name": name,
                "vnic_configs": [],
                "serial_configs": [{"name": "modbus", "device_id": "ttyS0",
                                    "container_path": "/dev/modbus0", "baud_rate": 9600}],
            }),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    assert_eq!(ack["serial_configs_count"], 1, "{ack}");

    let s = w
        .wait_status(&name, |s| {
            s["status"] == "error" || (s["is_running"] == true && port(s)["status"] == "connected")
        })
        .await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert_eq!(
        port(&s),
        &json!({"name": "modbus", "device_id": "ttyS0", "container_path": "/dev/modbus0",
                "status": "connected", "current_host_path": "/dev/ttyS0"})
    );
    assert_eq!(char_device(&name, "/dev/modbus0"), Some((4, 64)));
    // The runtime can open it: its device-cgroup rules allow the serial majors.
    let opened = std::process::Command::new("docker")
        .args(["exec", &name, "/bin/busybox", "stty", "-F", "/dev/modbus0"])
        .output()
        .unwrap();
    assert!(
        opened.status.success(),
        "opening /dev/modbus0 in the runtime: {}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let persisted: Value =
        serde_json::from_str(&w.read_state("data/serial_configs.json").unwrap()).unwrap();
    assert_eq!(
        persisted[&name],
        json!({"serial_ports": [{"name": "modbus", "device_id": "ttyS0",
            "container_path": "/dev/modbus0", "status": "connected",
            "current_host_path": "/dev/ttyS0", "major": 4, "minor": 64}]})
    );

    // Unplugged: the node goes and the port says so (Defect S1).
    uevent("remove");
    let s = w
        .wait_status(&name, |s| port(s)["status"] == "disconnected")
        .await;
    assert!(port(&s).get("current_host_path").is_none(), "{s}");
    eventually(SLOW, "the node is removed", || {
        char_device(&name, "/dev/modbus0").is_none().then_some(())
    })
    .await;
    let persisted: Value =
        serde_json::from_str(&w.read_state("data/serial_configs.json").unwrap()).unwrap();
    assert_eq!(persisted[&name]["serial_ports"][0]["major"], Value::Null);

    // Plugged in again.
    uevent("add");
    w.wait_status(&name, |s| port(s)["status"] == "connected")
        .await;
    assert_eq!(char_device(&name, "/dev/modbus0"), Some((4, 64)));

    // A restart gives the container a fresh /dev: the node is made again (Defect S2).
    let old_pid = pid_of(&name);
    let ack = w.call("restart_device", json!({"device_id": name})).await;
    assert_ne!(ack["status"], "error", "{ack}");
    eventually(SLOW, "the runtime runs again with its node", || {
        let pid = pid_of(&name);
        (pid != 0 && pid != old_pid && char_device(&name, "/dev/modbus0") == Some((4, 64)))
            .then_some(())
    })
    .await;
    // The same from outside the agent (the engine's restart; the watchdog sees the start).
    let old_pid = pid_of(&name);
    docker(&["restart", "-t", "1", &name]);
    eventually(SLOW, "the node is back after an engine restart", || {
        let pid = pid_of(&name);
        (pid != 0 && pid != old_pid && char_device(&name, "/dev/modbus0") == Some((4, 64)))
            .then_some(())
    })
    .await;

    // The listing: this machine's ttyS0 has no /dev/serial/by-id name, so (as the original) it is
    // not listed; the shape with a by-id device is a unit test (topics::tests).
    let list = w.call("get_serial_devices", json!({})).await;
    assert_eq!(list["status"], "success", "{list}");
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(list["count"], devices.len());
    assert!(devices.iter().all(|d| d["path"] != "/dev/ttyS0"), "{list}");
    for d in devices {
        for key in [
            "path",
            "device_id",
            "vendor_id",
            "product_id",
            "serial",
            "manufacturer",
            "product",
        ] {
            assert!(d.get(key).is_some(), "{key} in {d}");
        }
    }

    // delete_device takes the runtime's serial entry with it.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    w.wait_status(&name, |s| s["status"] == "not_found").await;
    let persisted: Value =
        serde_json::from_str(&w.read_state("data/serial_configs.json").unwrap()).unwrap();
    assert!(persisted.get(&name).is_none(), "{persisted}");
}

/// The Python netmon as far as serial goes: it greets with a discovery of no interfaces and of
/// `ttyS0`, sends what the test pushes, and answers every command with its `Unknown command`
/// (it has none of netmon's node commands).
async fn old_netmon(
    socket: std::path::PathBuf,
    mut push: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the netmon socket");
    let (stream, _) = listener.accept().await.expect("the agent connects");
    let (read, mut write) = stream.into_split();
    let tty = json!({"path": "/dev/ttyS0", "by_id": null, "major": 4, "minor": 64,
        "vendor_id": null, "product_id": null, "serial": null, "subsystem": "tty",
        "manufacturer": null, "product": null});
    let greeting = format!(
        "{}\n{}\n",
        json!({"type": "network_discovery", "data": {"interfaces": [], "timestamp": "t"}}),
        json!({"type": "device_discovery", "data": {"devices": [tty], "timestamp": "t"}})
    );
    write.write_all(greeting.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(read).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return };
                let command: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let answer = json!({"success": false, "error":
                    format!("Unknown command: {}", command["command"].as_str().unwrap_or("None"))});
                if write.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
            pushed = push.recv() => {
                let Some(pushed) = pushed else { return };
                write.write_all(format!("{pushed}\n").as_bytes()).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_older_netmon_the_node_is_made_and_removed_by_docker_exec() {
    let mut w = World::start().await;
    let name = unique("rtsero");
    w.stop_netmon();
    let (push, pushed) = tokio::sync::mpsc::unbounded_channel();
    let fake = tokio::spawn(old_netmon(w.state_dir.join("netmon.sock"), pushed));
    let ack = w
        .call(
            "create_new_runtime",
            json!({
                "container_name": name,
                "vnic_configs": [],
                "serial_configs": [{"name": "modbus", "device_id": "/dev/ttyS0",
                                    "container_path": "/dev/modbus0"}],
            }),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w
        .wait_status(&name, |s| {
            s["status"] == "error" || (s["is_running"] == true && port(s)["status"] == "connected")
        })
        .await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    // Made the original's way, in the runtime (its image has rm, mknod and chmod).
    assert_eq!(char_device(&name, "/dev/modbus0"), Some((4, 64)));
    let on_host = format!("/proc/{}/root/dev/modbus0", pid_of(&name));
    let mode = std::fs::metadata(&on_host).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o666, "{mode:o}");

    // Unplugged: removed the same way.
    push.send(
        json!({"type": "device_change", "data": {"action": "remove", "device":
            {"path": "/dev/ttyS0", "by_id": null, "major": null, "minor": null,
             "subsystem": "tty"}}})
        .to_string(),
    )
    .unwrap();
    w.wait_status(&name, |s| port(s)["status"] == "disconnected")
        .await;
    eventually(SLOW, "the node is removed", || {
        char_device(&name, "/dev/modbus0").is_none().then_some(())
    })
    .await;
    fake.abort();
}
