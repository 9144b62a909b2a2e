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
    NetworkingConfig, RestartPolicy, RestartPolicyName,
};

use super::naming;
use super::net::MacAddr;

/// Container log rotation: PLC runtimes run for months on SD cards.
pub const LOG_MAX_SIZE: &str = "10m";
/// Number of rotated log files kept.
pub const LOG_MAX_FILE: &str = "3";

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
        // Real-time scheduling for the PLC scan cycle (upstream §12 item 7), nothing broader.
        cap_add: vec!["SYS_NICE".to_owned()],
        // No rtprio/memlock ulimits: raising them fails container start where the engine itself
        // runs with lower limits (rootless, nested, some distributions); SYS_NICE suffices for
        // sched_setscheduler within the default limits.
        ulimits: Vec::new(),
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
        }
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
        assert_eq!(body["HostConfig"]["CapAdd"], json!(["SYS_NICE"]));
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
