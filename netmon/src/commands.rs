//! What each command of the command channel (upstream-head §4.3) does here: answered at once from
//! the daemon's state, or a link job (dedicated NICs, a vNIC's MAC) the daemon runs on a blocking
//! thread. The one place that maps commands to work: status answers, link jobs, DHCP jobs (netmon's
//! DHCP client, `crate::dhcp`), proxy-ARP bridge jobs (`crate::proxy_arp`), serial jobs
//! (`crate::serial`: enumeration, device nodes in containers); Wi-Fi DHCP is answered "not
//! supported". Pure: no I/O.

use netmon_proto::{Command, Response};
use serde_json::{Value, json};

use crate::nic::Nics;

/// What the daemon knows that status commands report.
#[derive(Debug, Default)]
pub struct View {
    pub clients: usize,
    /// Names of interfaces with a change waiting for its debounce.
    pub pending_changes: Vec<String>,
    /// The serial ports' status object (`crate::serial::Devices::status`).
    pub devices: Value,
}

/// The work a command calls for.
#[derive(Debug)]
pub enum Work {
    /// The answer, known now.
    Answer(Response),
    /// A link job in a container's namespace (blocking netlink calls, setns).
    Nic(NicJob),
    /// A job for the DHCP clients' task.
    Dhcp(DhcpJob),
    /// A proxy-ARP bridge job for Wi-Fi vNICs (blocking netlink calls, setns).
    ProxyArp(crate::proxy_arp::Job),
    /// A serial job (blocking: sysfs reads, a thread in a container's mount namespace).
    Serial(crate::serial::Job),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpJob {
    Start {
        container_name: String,
        vnic_name: String,
        mac_address: String,
        pid: u32,
    },
    Stop {
        container_name: String,
        vnic_name: String,
    },
    /// `get_dhcp_status`.
    Status,
    /// `get_status`: this object with the DHCP clients' status as `dhcp`.
    FullStatus(Value),
}

impl DhcpJob {
    /// Runs the job on the DHCP clients and says what to answer (the original's texts).
    pub async fn run(self, dhcp: &crate::dhcp::DhcpHandle) -> Response {
        let answer = |r: Result<String, String>| match r {
            Ok(message) => Response::ok().with("message", Value::String(message)),
            Err(error) => Response::error(error),
        };
        match self {
            DhcpJob::Start {
                container_name,
                vnic_name,
                mac_address,
                pid,
            } => answer(
                dhcp.start(&container_name, &vnic_name, &mac_address, pid)
                    .await,
            ),
            DhcpJob::Stop {
                container_name,
                vnic_name,
            } => answer(dhcp.stop(&container_name, &vnic_name).await),
            DhcpJob::Status => Response::ok().with("status", dhcp.status().await),
            DhcpJob::FullStatus(mut status) => {
                status["dhcp"] = dhcp.status().await;
                Response::ok().with("status", status)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicJob {
    Move {
        name: String,
        pid: u32,
    },
    Return {
        name: String,
        pid: u32,
    },
    Check {
        name: String,
        pid: u32,
    },
    /// `set_vnic_mac`, its MACs checked.
    SetMac {
        pid: u32,
        current: [u8; 6],
        wanted: [u8; 6],
    },
}

impl NicJob {
    /// Runs the job (blocking) and says what to answer, in the original's words.
    pub fn run(self, nics: &mut Nics) -> Response {
        match self {
            NicJob::Move { name, pid } => match nics.move_to_container(&name, pid) {
                Ok(()) => {
                    tracing::info!(interface = %name, pid, "moved a dedicated NIC into a container");
                    Response::ok()
                }
                Err(e) => {
                    tracing::warn!(interface = %name, pid, "cannot move a dedicated NIC: {e}");
                    Response::error(format!("Failed to move NIC: {e}"))
                }
            },
            NicJob::Return { name, pid } => match nics.return_to_host(&name, pid) {
                Ok(()) => {
                    tracing::info!(interface = %name, pid, "returned a dedicated NIC to the host");
                    Response::ok()
                }
                Err(e) => {
                    tracing::warn!(interface = %name, pid, "cannot return a dedicated NIC: {e}");
                    Response::error(format!("Failed to return NIC: {e}"))
                }
            },
            NicJob::Check { name, pid } => {
                Response::ok().with("present", Value::Bool(nics.in_container(&name, pid)))
            }
            NicJob::SetMac {
                pid,
                current,
                wanted,
            } => match nics.set_vnic_mac(pid, current, wanted) {
                Ok(message) => {
                    tracing::info!(pid, "{message}");
                    Response::ok().with("message", Value::String(message))
                }
                Err(e) => {
                    tracing::warn!(pid, "cannot set a vNIC's MAC: {e}");
                    Response::error(format!("Failed to set vNIC MAC: {e}"))
                }
            },
        }
    }
}

/// A MAC a link can be given: six hex pairs, not all-zero, not multicast or broadcast (the
/// kernel would refuse those too, less clearly).
fn unicast_mac(key: &str, text: &str) -> Result<[u8; 6], String> {
    match crate::dhcp::parse_mac(text) {
        Some(mac) if mac != [0; 6] && mac[0] & 1 == 0 => Ok(mac),
        Some(_) => Err(format!(
            "Invalid {key}: {text} is not a unicast MAC address"
        )),
        None => Err(format!("Invalid {key}: {text}")),
    }
}

/// The answer to a command this netmon does not run yet: never silence, never a fake success.
fn not_supported(command: &str) -> Response {
    Response::error(format!("{command} is not supported by this netmon yet"))
}

/// netlink's state: the daemon answers only while its netlink reader runs (it stops on a
/// netlink failure it cannot recover from, and overruns are resynchronised at once).
fn netlink_status() -> Value {
    json!({"running": true, "degraded": false, "consecutive_errors": 0, "socket_active": true})
}

/// A validated serial job, or its refusal.
fn serial(job: Result<crate::serial::Job, String>) -> Work {
    job.map_or_else(|e| Work::Answer(Response::error(e)), Work::Serial)
}

/// Maps a command to its work.
pub fn dispatch(command: Command, view: &View) -> Work {
    match command {
        Command::MoveNicToContainer {
            host_interface,
            container_pid,
        } => Work::Nic(NicJob::Move {
            name: host_interface,
            pid: container_pid.0,
        }),
        Command::ReturnNicToHost {
            host_interface,
            container_pid,
        } => Work::Nic(NicJob::Return {
            name: host_interface,
            pid: container_pid.0,
        }),
        Command::CheckNicInContainer {
            host_interface,
            container_pid,
        } => Work::Nic(NicJob::Check {
            name: host_interface,
            pid: container_pid.0,
        }),
        Command::SetVnicMac {
            container_pid,
            current_mac,
            mac_address,
        } => match (
            unicast_mac("current_mac", &current_mac),
            unicast_mac("mac_address", &mac_address),
        ) {
            (Ok(current), Ok(wanted)) => Work::Nic(NicJob::SetMac {
                pid: container_pid.0,
                current,
                wanted,
            }),
            (Err(e), _) | (_, Err(e)) => Work::Answer(Response::error(e)),
        },
        Command::GetNetlinkStatus => Work::Answer(Response::ok().with("status", netlink_status())),
        Command::GetDeviceStatus => {
            Work::Answer(Response::ok().with("status", view.devices.clone()))
        }
        Command::GetStatus => Work::Dhcp(DhcpJob::FullStatus(json!({
            "netlink": netlink_status(),
            "dhcp": {},
            "devices": view.devices.clone(),
            "clients_connected": view.clients,
            "pending_changes": view.pending_changes,
        }))),
        // Serial ports (upstream-head §7.2, §7.5): `crate::serial`.
        Command::DiscoverDevices => Work::Serial(crate::serial::Job::Discover),
        Command::ProvisionSerialNode {
            container_pid,
            container_path,
            major,
            minor,
        } => serial(crate::serial::Job::provision(
            container_pid.0,
            container_path,
            major,
            minor,
        )),
        Command::RemoveSerialNode {
            container_pid,
            container_path,
        } => serial(crate::serial::Job::remove(container_pid.0, container_path)),
        // DHCP (upstream-head §4.5): netmon's own client in the runtime's namespace.
        Command::StartDhcp {
            container_name,
            vnic_name,
            mac_address,
            container_pid,
        } => Work::Dhcp(DhcpJob::Start {
            container_name,
            vnic_name,
            mac_address,
            pid: container_pid.0,
        }),
        Command::StopDhcp {
            container_name,
            vnic_name,
        } => Work::Dhcp(DhcpJob::Stop {
            container_name,
            vnic_name,
        }),
        Command::GetDhcpStatus => Work::Dhcp(DhcpJob::Status),
        // Wi-Fi DHCP (upstream-head §5.3) is not in this netmon.
        Command::RequestWifiDhcp { .. } => Work::Answer(not_supported("request_wifi_dhcp")),
        // Wi-Fi proxy-ARP bridges (upstream-head §5.4, §5.7): `crate::proxy_arp`.
        command @ (Command::SetupProxyArpBridge { .. }
        | Command::CleanupProxyArpBridge { .. }
        | Command::CleanupAllProxyArp) => Work::ProxyArp(crate::proxy_arp::Job(command)),
    }
}

#[cfg(test)]
mod tests {
    use netmon_proto::{Pid, decode_request};

    use super::*;

    fn answer(line: &str) -> Response {
        let request = decode_request(line.as_bytes()).unwrap();
        match dispatch(
            request.command,
            &View {
                clients: 2,
                pending_changes: vec!["eth1".into()],
                devices: json!({"running": true, "cached_devices": 1}),
            },
        ) {
            Work::Answer(r) => r,
            Work::Serial(job) => panic!("{line}: a serial job {job:?}"),
            Work::Nic(job) => panic!("{line}: a NIC job {job:?}"),
            Work::Dhcp(job) => panic!("{line}: a DHCP job {job:?}"),
            Work::ProxyArp(job) => panic!("{line}: a proxy-ARP job {job:?}"),
        }
    }

    fn dhcp_job(line: &str) -> DhcpJob {
        let request = decode_request(line.as_bytes()).unwrap();
        match dispatch(request.command, &View::default()) {
            Work::Dhcp(job) => job,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn dhcp_commands_go_to_the_dhcp_clients() {
        assert_eq!(
            dhcp_job(
                r#"{"command":"start_dhcp","container_name":"c","vnic_name":"v","mac_address":"m","container_pid":"7"}"#
            ),
            DhcpJob::Start {
                container_name: "c".into(),
                vnic_name: "v".into(),
                mac_address: "m".into(),
                pid: 7
            }
        );
        assert_eq!(
            dhcp_job(r#"{"command":"stop_dhcp","container_name":"c","vnic_name":"v"}"#),
            DhcpJob::Stop {
                container_name: "c".into(),
                vnic_name: "v".into()
            }
        );
        assert_eq!(
            dhcp_job(r#"{"command":"get_dhcp_status"}"#),
            DhcpJob::Status
        );
    }

    #[test]
    fn nic_commands_become_jobs() {
        let w = dispatch(
            Command::MoveNicToContainer {
                host_interface: "eth2".into(),
                container_pid: Pid(42),
            },
            &View::default(),
        );
        assert!(
            matches!(w, Work::Nic(NicJob::Move { ref name, pid: 42 }) if name == "eth2"),
            "{w:?}"
        );
    }

    #[test]
    fn set_vnic_mac_takes_unicast_macs_only() {
        let request = |current: &str, wanted: &str| {
            let line = serde_json::json!({"command": "set_vnic_mac", "container_pid": 9,
                "current_mac": current, "mac_address": wanted});
            let request = decode_request(line.to_string().as_bytes()).unwrap();
            dispatch(request.command, &View::default())
        };
        let w = request("02:42:0A:00:00:05", "02-00-00-00-00-07");
        assert!(
            matches!(
                w,
                Work::Nic(NicJob::SetMac {
                    pid: 9,
                    current: [2, 0x42, 10, 0, 0, 5],
                    wanted: [2, 0, 0, 0, 0, 7]
                })
            ),
            "{w:?}"
        );
        for (current, wanted, error) in [
            (
                "02:42:0a:00:00:05",
                "01:00:5e:00:00:01",
                "Invalid mac_address: 01:00:5e:00:00:01 is not a unicast MAC address",
            ),
            (
                "02:42:0a:00:00:05",
                "ff:ff:ff:ff:ff:ff",
                "Invalid mac_address: ff:ff:ff:ff:ff:ff is not a unicast MAC address",
            ),
            (
                "00:00:00:00:00:00",
                "02:00:00:00:00:07",
                "Invalid current_mac: 00:00:00:00:00:00 is not a unicast MAC address",
            ),
            ("nope", "02:00:00:00:00:07", "Invalid current_mac: nope"),
        ] {
            match request(current, wanted) {
                Work::Answer(r) => assert_eq!(r.error.as_deref(), Some(error)),
                other => panic!("{current} {wanted}: {other:?}"),
            }
        }
    }

    fn serial_job(line: &str) -> crate::serial::Job {
        let request = decode_request(line.as_bytes()).unwrap();
        match dispatch(request.command, &View::default()) {
            Work::Serial(job) => job,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn serial_commands_are_served_not_refused_as_unsupported() {
        use crate::serial::Job;
        assert_eq!(
            serial_job(r#"{"command":"discover_devices"}"#),
            Job::Discover
        );
        assert_eq!(
            serial_job(
                r#"{"command":"provision_serial_node","container_pid":42,"container_path":"/dev/modbus0","major":188,"minor":3}"#
            ),
            Job::Provision {
                pid: 42,
                path: "/dev/modbus0".into(),
                major: 188,
                minor: 3
            }
        );
        assert_eq!(
            serial_job(
                r#"{"command":"remove_serial_node","container_pid":42,"container_path":"/dev/modbus0"}"#
            ),
            Job::Remove {
                pid: 42,
                path: "/dev/modbus0".into()
            }
        );
        // Refusals say why, before any work.
        for (line, error) in [
            (
                r#"{"command":"provision_serial_node","container_pid":42,"container_path":"/etc/passwd","major":188,"minor":3}"#,
                "Invalid container_path",
            ),
            (
                r#"{"command":"provision_serial_node","container_pid":42,"container_path":"/dev/x","major":204,"minor":64}"#,
                "Invalid major 204",
            ),
            (
                r#"{"command":"remove_serial_node","container_pid":42,"container_path":"/dev/../x"}"#,
                "Invalid container_path",
            ),
        ] {
            let r = answer(line);
            assert!(!r.success, "{line}");
            assert!(r.error.as_deref().unwrap().starts_with(error), "{r:?}");
        }
        let r = answer(r#"{"command":"get_device_status"}"#);
        assert!(r.success, "{r:?}");
        assert_eq!(r.data["status"]["running"], true);
        assert_eq!(r.data["status"]["cached_devices"], 1);
    }

    #[test]
    fn wifi_dhcp_is_refused_by_name_never_silently() {
        let r = answer(
            r#"{"command":"request_wifi_dhcp","container_name":"c","vnic_name":"v","parent_interface":"wlan0","container_pid":1,"client_id":"x"}"#,
        );
        assert!(!r.success);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .ends_with("is not supported by this netmon yet"),
            "{r:?}"
        );
    }

    #[test]
    fn status_commands_answer_in_the_originals_shape() {
        let request = decode_request(br#"{"command":"get_status"}"#).unwrap();
        let view = View {
            clients: 2,
            pending_changes: vec!["eth1".into()],
            devices: json!({"running": false, "cached_devices": 0}),
        };
        let Work::Dhcp(DhcpJob::FullStatus(status)) = dispatch(request.command, &view) else {
            panic!("get_status carries the DHCP clients' status");
        };
        assert_eq!(status["clients_connected"], 2);
        assert_eq!(status["pending_changes"], json!(["eth1"]));
        assert_eq!(status["netlink"]["running"], true);
        assert_eq!(status["devices"]["cached_devices"], 0);
        let r = answer(r#"{"command":"get_netlink_status"}"#);
        assert_eq!(r.data["status"]["socket_active"], true);
    }
}
