//! The container-create request of a runtime and the network attachments that follow it, for both
//! Engine API paths (spec §2 "MAC addresses"). Pure: decides shapes, sends nothing.
//!
//! - API ≥ 1.44: every network is an entry of `NetworkingConfig.EndpointsConfig` at create, each with
//!   its own `IPAMConfig` and `MacAddress`; `HostConfig.NetworkMode` names the internal bridge.
//! - API < 1.44: only one network can be given at create, and only that one honours a MAC (the
//!   container-wide `Config.MacAddress`). The first vNIC with a MAC is that network (`NetworkMode` =
//!   its MACVLAN network + its `IPAMConfig`); without any MAC it is the internal bridge. The other
//!   networks are connected before start, where a MAC cannot be honoured (connect ignores it before
//!   API 1.54): those vNICs are listed in [`CreatePlan::unhonoured_macs`] so the caller says so in the
//!   device status.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use docker_api::{
    ApiVersion, ContainerCreate, EndpointConfig, EndpointIpamConfig, HostConfig, LogConfig,
    NetworkingConfig, RestartPolicy, RestartPolicyName, Ulimit,
};

use super::naming;
use super::net::MacAddr;

/// Container log rotation: PLC runtimes run for months on SD cards.
pub const LOG_MAX_SIZE: &str = "10m";
/// Number of rotated log files kept.
pub const LOG_MAX_FILE: &str = "3";

/// Capabilities of every runtime (upstream §12 item 7): `SYS_NICE` for the real-time scheduling of
/// the PLC scan cycle, `MKNOD` for the device nodes of serial adapters.
pub const CAP_ADD: [&str; 2] = ["SYS_NICE", "MKNOD"];
/// Added with a dedicated NIC (upstream-head §9.1.7): raw frames (EtherCAT, PROFINET) and
/// configuring the port inside the runtime.
pub const DEDICATED_NIC_CAPS: [&str; 2] = ["NET_RAW", "NET_ADMIN"];

/// Device cgroup rules (upstream §12 item 7): USB serial (188), USB ACM modems (166) and TTYs (4),
/// so serial adapters given to a runtime can be opened.
pub const DEVICE_CGROUP_RULES: [&str; 3] = ["c 188:* rmw", "c 166:* rmw", "c 4:* rmw"];

/// The real-time ulimits of the original: `rtprio` 99 and unlimited `memlock` (a PLC runtime locks
/// its memory and runs its scan cycle at real-time priority). Applied at container start, where an
/// engine running with lower limits (rootless, nested) refuses them: see [`is_ulimit_refusal`].
pub fn realtime_ulimits() -> Vec<Ulimit> {
    vec![
        Ulimit {
            name: "rtprio".to_owned(),
            soft: 99,
            hard: 99,
        },
        Ulimit {
            name: "memlock".to_owned(),
            soft: -1,
            hard: -1,
        },
    ]
}

/// Which of [`realtime_ulimits`] a failed container start refused (runc: `error setting rlimit
/// type 14: operation not permitted`; 14 is `RLIMIT_RTPRIO`, 8 `RLIMIT_MEMLOCK` on every Linux
/// architecture the agent ships for): `Some(names)`, every one when the message does not say
/// which; `None` when the failure is not about ulimits.
pub fn refused_ulimits(error: &str) -> Option<Vec<&'static str>> {
    let e = error.to_ascii_lowercase();
    if !(e.contains("rlimit") || e.contains("ulimit")) {
        return None;
    }
    Some(if e.contains("rlimit type 14") {
        vec!["rtprio"]
    } else if e.contains("rlimit type 8") {
        vec!["memlock"]
    } else {
        vec!["rtprio", "memlock"]
    })
}

/// One MACVLAN attachment of the runtime (one per vNIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The vNIC's index in the request.
    pub vnic: usize,
    /// The MACVLAN network's name.
    pub network: String,
    /// Static address (static vNICs).
    pub ip: Option<Ipv4Addr>,
    /// Requested MAC.
    pub mac: Option<MacAddr>,
}

/// What to send: the create body, then the connects (before start), plus the MACs the engine will
/// not honour.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    /// `POST /containers/create` body.
    pub create: ContainerCreate,
    /// `(network, endpoint)` to connect after create and before start, in order.
    pub connect: Vec<(String, EndpointConfig)>,
    /// Attachments whose MAC cannot be set on this API version.
    pub unhonoured_macs: Vec<Attachment>,
}

/// Everything the runtime container is made of.
#[derive(Debug, Clone)]
pub struct ContainerParams<'a> {
    /// Runtime name.
    pub name: &'a str,
    /// Image reference `repo:tag`.
    pub image: &'a str,
    /// The agent instance (label value).
    pub instance: &'a str,
    /// Container DNS servers.
    pub dns: &'a [IpAddr],
    /// MACVLAN attachments in vNIC order.
    pub attachments: &'a [Attachment],
    /// The create attempt's id ([`naming::LABEL_CREATE_ID`]).
    pub create_id: &'a str,
    /// The vNIC objects as received ([`naming::LABEL_VNICS`]).
    pub raw_vnics: &'a [serde_json::Value],
    /// The [`realtime_ulimits`] to leave out: those the engine refused.
    pub without_ulimits: &'a [&'static str],
    /// A dedicated NIC will be moved in: the runtime also gets [`DEDICATED_NIC_CAPS`].
    pub dedicated_nic: bool,
}

fn endpoint(ip: Option<Ipv4Addr>, mac: Option<MacAddr>) -> EndpointConfig {
    EndpointConfig {
        ipam_config: ip.map(|a| EndpointIpamConfig {
            ipv4_address: Some(a),
        }),
        mac_address: mac.map(|m| m.to_string()),
        ..Default::default()
    }
}

fn host_config(p: &ContainerParams<'_>, network_mode: String) -> HostConfig {
    HostConfig {
        restart_policy: Some(RestartPolicy {
            name: RestartPolicyName::UnlessStopped,
            maximum_retry_count: 0,
        }),
        network_mode: Some(network_mode),
        dns: p.dns.iter().map(ToString::to_string).collect(),
        cap_add: CAP_ADD
            .iter()
            .chain(if p.dedicated_nic {
                &DEDICATED_NIC_CAPS[..]
            } else {
                &[]
            })
            .map(|c| (*c).to_owned())
            .collect(),
        ulimits: realtime_ulimits()
            .into_iter()
            .filter(|u| !p.without_ulimits.contains(&u.name.as_str()))
            .collect(),
        device_cgroup_rules: DEVICE_CGROUP_RULES.iter().map(|r| (*r).to_owned()).collect(),
        log_config: Some(LogConfig {
            kind: "json-file".to_owned(),
            config: BTreeMap::from([
                ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
            ]),
        }),
    }
}

/// Plans the create for the negotiated `api` version.
pub fn plan(p: &ContainerParams<'_>, api: ApiVersion) -> CreatePlan {
    let internal = naming::internal_network_name(p.name);
    let mut labels = naming::runtime_labels(p.name, p.instance);
    labels.insert(naming::LABEL_CREATE_ID.to_owned(), p.create_id.to_owned());
    labels.insert(
        naming::LABEL_VNICS.to_owned(),
        serde_json::Value::Array(p.raw_vnics.to_vec()).to_string(),
    );
    let base = |host_config: HostConfig| ContainerCreate {
        image: p.image.to_owned(),
        labels: labels.clone(),
        host_config,
        ..Default::default()
    };

    if api.supports_endpoint_mac_at_create() {
        let mut endpoints = BTreeMap::new();
        endpoints.insert(internal.clone(), EndpointConfig::default());
        for a in p.attachments {
            endpoints.insert(a.network.clone(), endpoint(a.ip, a.mac));
        }
        let mut create = base(host_config(p, internal));
        create.networking_config = Some(NetworkingConfig {
            endpoints_config: endpoints,
        });
        return CreatePlan {
            create,
            connect: Vec::new(),
            unhonoured_macs: Vec::new(),
        };
    }

    // Below 1.44: one network at create, the only one whose MAC the engine honours.
    let primary = p.attachments.iter().position(|a| a.mac.is_some());
    let mut connect = Vec::new();
    let mut unhonoured = Vec::new();
    let create = match primary {
        Some(i) => {
            let a = &p.attachments[i];
            let mut c = base(host_config(p, a.network.clone()));
            if api.supports_container_mac_address() {
                c.mac_address = a.mac.map(|m| m.to_string());
            }
            c.networking_config = Some(NetworkingConfig {
                endpoints_config: BTreeMap::from([(a.network.clone(), endpoint(a.ip, None))]),
            });
            connect.push((internal, EndpointConfig::default()));
            c
        }
        None => {
            let mut c = base(host_config(p, internal.clone()));
            c.networking_config = Some(NetworkingConfig {
                endpoints_config: BTreeMap::from([(internal, EndpointConfig::default())]),
            });
            c
        }
    };
    for (i, a) in p.attachments.iter().enumerate() {
        if Some(i) == primary {
            continue;
        }
        let honours = api.honours_mac_on_connect();
        if a.mac.is_some() && !honours {
            unhonoured.push(a.clone());
        }
        connect.push((
            a.network.clone(),
            endpoint(a.ip, if honours { a.mac } else { None }),
        ));
    }
    CreatePlan {
        create,
        connect,
        unhonoured_macs: unhonoured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn atts() -> Vec<Attachment> {
        vec![
            Attachment {
                vnic: 0,
                network: "macvlan_eth0_10.0.0.0_24".into(),
                ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
                mac: Some("02:00:00:00:00:05".parse().unwrap()),
            },
            Attachment {
                vnic: 1,
                network: "macvlan_eth1_10.0.1.0_24".into(),
                ip: None,
                mac: Some("02:00:00:00:01:05".parse().unwrap()),
            },
        ]
    }

    fn params<'a>(atts: &'a [Attachment], dns: &'a [IpAddr]) -> ContainerParams<'a> {
        ContainerParams {
            name: "plc",
            image: "img:latest",
            instance: "/var/orchestrator",
            dns,
            attachments: atts,
            create_id: "c0ffee",
            raw_vnics: &[],
            without_ulimits: &[],
            dedicated_nic: false,
        }
    }

    #[test]
    fn a_dedicated_nic_adds_net_raw_and_net_admin() {
        let atts = atts();
        let mut p = params(&atts, &[]);
        p.dedicated_nic = true;
        let body = serde_json::to_value(&plan(&p, ApiVersion::new(1, 44)).create).unwrap();
        assert_eq!(
            body["HostConfig"]["CapAdd"],
            json!(["SYS_NICE", "MKNOD", "NET_RAW", "NET_ADMIN"])
        );
    }

    #[test]
    fn api_1_44_puts_every_endpoint_with_its_mac_in_the_create_body() {
        let atts = atts();
        let dns = ["1.1.1.1".parse().unwrap()];
        let plan = plan(&params(&atts, &dns), ApiVersion::new(1, 44));
        assert!(plan.connect.is_empty() && plan.unhonoured_macs.is_empty());
        let body = serde_json::to_value(&plan.create).unwrap();
        assert_eq!(body["HostConfig"]["NetworkMode"], "plc_internal");
        assert_eq!(
            body["NetworkingConfig"],
            json!({"EndpointsConfig": {
                "plc_internal": {},
                "macvlan_eth0_10.0.0.0_24": {"IPAMConfig": {"IPv4Address": "10.0.0.5"},
                                             "MacAddress": "02:00:00:00:00:05"},
                "macvlan_eth1_10.0.1.0_24": {"MacAddress": "02:00:00:00:01:05"}
            }})
        );
        assert!(body.get("MacAddress").is_none());
        assert_eq!(
            body["HostConfig"]["RestartPolicy"]["Name"],
            "unless-stopped"
        );
        assert_eq!(body["HostConfig"]["Dns"], json!(["1.1.1.1"]));
        assert_eq!(body["HostConfig"]["CapAdd"], json!(["SYS_NICE", "MKNOD"]));
        assert_eq!(
            body["HostConfig"]["Ulimits"],
            json!([{"Name": "rtprio", "Soft": 99, "Hard": 99},
                   {"Name": "memlock", "Soft": -1, "Hard": -1}])
        );
        assert_eq!(
            body["HostConfig"]["DeviceCgroupRules"],
            json!(["c 188:* rmw", "c 166:* rmw", "c 4:* rmw"])
        );
        assert_eq!(
            body["HostConfig"]["LogConfig"],
            json!({"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}})
        );
        assert_eq!(
            body["Labels"][naming::LABEL_MANAGED_BY],
            naming::MANAGED_BY_VALUE
        );
        assert_eq!(body["Labels"][naming::LABEL_RUNTIME], "plc");
        assert_eq!(body["Labels"][naming::LABEL_CREATE_ID], "c0ffee");
        assert_eq!(body["Labels"][naming::LABEL_VNICS], "[]");
    }

    #[test]
    fn without_ulimits_when_the_engine_refused_them() {
        let atts = atts();
        let mut p = params(&atts, &[]);
        p.without_ulimits = &["rtprio"];
        let body = serde_json::to_value(&plan(&p, ApiVersion::new(1, 44)).create).unwrap();
        assert_eq!(
            body["HostConfig"]["Ulimits"],
            json!([{"Name": "memlock", "Soft": -1, "Hard": -1}])
        );
        p.without_ulimits = &["rtprio", "memlock"];
        let body = serde_json::to_value(&plan(&p, ApiVersion::new(1, 44)).create).unwrap();
        assert!(body["HostConfig"].get("Ulimits").is_none());
        assert_eq!(body["HostConfig"]["CapAdd"], json!(["SYS_NICE", "MKNOD"]));
    }

    #[test]
    fn recognises_the_engine_refusing_ulimits() {
        // As Docker 20.10 on this project's machines words it.
        assert_eq!(
            refused_ulimits(
                "failed to create shim task: OCI runtime create failed: runc create failed: \
                 unable to start container process: error during container init: error setting \
                 rlimits for ready process: error setting rlimit type 14: operation not permitted"
            ),
            Some(vec!["rtprio"])
        );
        assert_eq!(
            refused_ulimits("error setting rlimit type 8: operation not permitted"),
            Some(vec!["memlock"])
        );
        assert_eq!(
            refused_ulimits("ulimit not allowed"),
            Some(vec!["rtprio", "memlock"])
        );
        assert_eq!(refused_ulimits("no such image"), None);
    }

    #[test]
    fn api_1_41_creates_on_the_first_mac_network_and_connects_the_rest() {
        let atts = atts();
        let plan = plan(&params(&atts, &[]), ApiVersion::new(1, 41));
        let body = serde_json::to_value(&plan.create).unwrap();
        assert_eq!(
            body["HostConfig"]["NetworkMode"],
            "macvlan_eth0_10.0.0.0_24"
        );
        assert_eq!(body["MacAddress"], "02:00:00:00:00:05");
        assert_eq!(
            body["NetworkingConfig"],
            json!({"EndpointsConfig": {
                "macvlan_eth0_10.0.0.0_24": {"IPAMConfig": {"IPv4Address": "10.0.0.5"}}
            }})
        );
        assert!(body["HostConfig"].get("Dns").is_none());
        let connects: Vec<(String, serde_json::Value)> = plan
            .connect
            .iter()
            .map(|(n, e)| (n.clone(), serde_json::to_value(e).unwrap()))
            .collect();
        assert_eq!(
            connects,
            [
                ("plc_internal".to_owned(), json!({})),
                ("macvlan_eth1_10.0.1.0_24".to_owned(), json!({})),
            ]
        );
        assert_eq!(plan.unhonoured_macs.len(), 1);
        assert_eq!(plan.unhonoured_macs[0].vnic, 1);
    }

    #[test]
    fn api_1_41_without_macs_creates_on_the_internal_bridge() {
        let atts: Vec<Attachment> = atts()
            .into_iter()
            .map(|mut a| {
                a.mac = None;
                a
            })
            .collect();
        let plan = plan(&params(&atts, &[]), ApiVersion::new(1, 41));
        let body = serde_json::to_value(&plan.create).unwrap();
        assert_eq!(body["HostConfig"]["NetworkMode"], "plc_internal");
        assert!(body.get("MacAddress").is_none());
        assert_eq!(plan.connect.len(), 2);
        assert_eq!(
            serde_json::to_value(&plan.connect[0].1).unwrap(),
            json!({"IPAMConfig": {"IPv4Address": "10.0.0.5"}})
        );
        assert!(plan.unhonoured_macs.is_empty());
    }
}
