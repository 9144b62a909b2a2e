//! Network endpoints (`/networks/*`) and the endpoint shapes shared with container create:
//! create (bridge, internal, MACVLAN with a parent), inspect, list, connect, disconnect, remove.
//! It knows the Docker API's shapes only; which networks the agent owns is the caller's business.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Docker, seg, to_json};
use crate::encode;
use crate::error::{Error, Result};
use crate::filters::Filters;
use crate::serde_util::{nullable, opt_ipv4};

/// `POST /networks/create` body.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreate {
    /// Network name (unique; a duplicate is refused, see [`Error::is_conflict`]).
    pub name: String,
    /// `bridge`, `macvlan`, … (empty = engine default, `bridge`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// No route to the outside (isolated bridge).
    pub internal: bool,
    /// Containers may be attached manually (swarm-scoped networks only; harmless otherwise).
    pub attachable: bool,
    /// Address management; `None` lets the engine pick a subnet.
    #[serde(rename = "IPAM", skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// Driver options, e.g. `parent` = `eth0`, `macvlan_mode` = `bridge` for MACVLAN.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Labels (ownership marks).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A network's IPAM (request and inspect answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// IPAM driver (`default` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Address pools.
    #[serde(default, deserialize_with = "nullable")]
    pub config: Vec<IpamPool>,
    /// IPAM driver options.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

/// One IPAM pool: CIDRs as the engine writes them (`10.201.3.0/24`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamPool {
    /// Subnet CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Sub-range containers get dynamic addresses from (CIDR).
    #[serde(default, rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

/// `POST /networks/create` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct NetworkCreated {
    /// The new network's id.
    pub id: String,
    /// Engine warning, if any.
    #[serde(default, deserialize_with = "nullable")]
    pub warning: String,
}

/// `GET /networks/{id}` (and each entry of the list; the list leaves `containers` empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct NetworkInspect {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// `local`, `swarm`, `global`.
    #[serde(default)]
    pub scope: String,
    /// Driver (`bridge`, `macvlan`, …).
    #[serde(default)]
    pub driver: String,
    /// Isolated from the outside.
    #[serde(default)]
    pub internal: bool,
    /// Manually attachable.
    #[serde(default)]
    pub attachable: bool,
    /// Address management.
    #[serde(default, rename = "IPAM")]
    pub ipam: Ipam,
    /// Attached containers by container id.
    #[serde(default, deserialize_with = "nullable")]
    pub containers: BTreeMap<String, NetworkContainer>,
    /// Driver options (`parent`, …).
    #[serde(default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

/// One container attached to a network (from network inspect).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct NetworkContainer {
    /// Container name.
    #[serde(default)]
    pub name: String,
    /// Endpoint id.
    #[serde(default, rename = "EndpointID")]
    pub endpoint_id: String,
    /// MAC address of the endpoint.
    #[serde(default)]
    pub mac_address: String,
    /// IPv4 address with prefix (`10.201.3.5/24`).
    #[serde(default, rename = "IPv4Address")]
    pub ipv4_address: String,
    /// IPv6 address with prefix.
    #[serde(default, rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// An endpoint's requested configuration: in `NetworkingConfig.EndpointsConfig` at container
/// create and in `POST /networks/{id}/connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointConfig {
    /// Static addresses.
    #[serde(rename = "IPAMConfig", skip_serializing_if = "Option::is_none")]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Endpoint MAC. Honoured at create from API 1.44 and on connect from 1.54; the client refuses
    /// it ([`Error::Unsupported`]) where the engine would silently ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// DNS aliases on this network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// Static addresses of an endpoint (request and inspect answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointIpamConfig {
    /// The fixed IPv4 address.
    #[serde(
        default,
        rename = "IPv4Address",
        deserialize_with = "opt_ipv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<Ipv4Addr>,
}

/// An endpoint as inspect reports it (`NetworkSettings.Networks[name]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct EndpointSettings {
    /// Static addresses as requested.
    #[serde(default, rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Aliases.
    #[serde(default, deserialize_with = "nullable")]
    pub aliases: Vec<String>,
    /// Network id.
    #[serde(default, rename = "NetworkID")]
    pub network_id: String,
    /// Endpoint id (empty while the container is not running).
    #[serde(default, rename = "EndpointID")]
    pub endpoint_id: String,
    /// Gateway (empty on internal networks or while stopped).
    #[serde(default)]
    pub gateway: String,
    /// IPv4 address (empty while stopped).
    #[serde(default, rename = "IPAddress")]
    pub ip_address: String,
    /// Prefix length of `ip_address`.
    #[serde(default, rename = "IPPrefixLen")]
    pub ip_prefix_len: u32,
    /// MAC address (empty while stopped on old engines).
    #[serde(default)]
    pub mac_address: String,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    #[serde(flatten)]
    spec: &'a NetworkCreate,
    /// Before API 1.44 a duplicate name is only refused when asked to.
    #[serde(rename = "CheckDuplicate", skip_serializing_if = "Option::is_none")]
    check_duplicate: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectBody<'a> {
    container: &'a str,
    endpoint_config: &'a EndpointConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DisconnectBody<'a> {
    container: &'a str,
    force: bool,
}

impl Docker {
    /// `POST /networks/create`. A duplicate name is a conflict on every API version
    /// ([`Error::is_conflict`]); an overlapping subnet is [`Error::is_pool_overlap`]; a bad IPAM
    /// config is [`Error::is_bad_request`] on most engines.
    pub async fn create_network(&self, spec: &NetworkCreate) -> Result<NetworkCreated> {
        if spec.name.is_empty() {
            return Err(Error::InvalidArgument("network name is empty".into()));
        }
        let v = self.api_version().await?;
        let body = CreateBody {
            spec,
            check_duplicate: v.needs_check_duplicate().then_some(true),
        };
        let body = to_json("network create", &body)?;
        self.call_json(Method::POST, "/networks/create", Some(body))
            .await
    }

    /// `GET /networks/{id or name}`.
    pub async fn inspect_network(&self, id: &str) -> Result<NetworkInspect> {
        self.call_json(Method::GET, &format!("/networks/{}", seg(id)?), None)
            .await
    }

    /// `GET /networks/{id or name}` as the engine wrote it, every field (diagnostics).
    pub async fn inspect_network_raw(&self, id: &str) -> Result<serde_json::Value> {
        self.call_json(Method::GET, &format!("/networks/{}", seg(id)?), None)
            .await
    }

    /// `GET /networks?filters=…` (`name`, `label`, `driver`, `id`, …).
    pub async fn list_networks(&self, filters: &Filters) -> Result<Vec<NetworkInspect>> {
        let q = if filters.is_empty() {
            String::new()
        } else {
            encode::query([("filters", filters.to_json())])
        };
        self.call_json(Method::GET, &format!("/networks{q}"), None)
            .await
    }

    /// `POST /networks/{id}/connect`. A `mac_address` is refused ([`Error::Unsupported`]) below API
    /// 1.54, where the engine would silently ignore it.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        endpoint: &EndpointConfig,
    ) -> Result<()> {
        let v = self.api_version().await?;
        if endpoint.mac_address.is_some() && !v.honours_mac_on_connect() {
            return Err(Error::Unsupported {
                what: "a MAC address on network connect is honoured from API 1.54".into(),
                negotiated: v,
            });
        }
        seg(container)?;
        let body = to_json(
            "network connect",
            &ConnectBody {
                container,
                endpoint_config: endpoint,
            },
        )?;
        let path = format!("/networks/{}/connect", seg(network)?);
        self.call_empty(Method::POST, &path, Some(body), Default::default())
            .await
    }

    /// `POST /networks/{id}/disconnect`; `force` also detaches a stopped/dead container's endpoint.
    pub async fn disconnect_network(
        &self,
        network: &str,
        container: &str,
        force: bool,
    ) -> Result<()> {
        seg(container)?;
        let body = to_json("network disconnect", &DisconnectBody { container, force })?;
        let path = format!("/networks/{}/disconnect", seg(network)?);
        self.call_empty(Method::POST, &path, Some(body), Default::default())
            .await
    }

    /// `DELETE /networks/{id}` (refused while containers are attached).
    pub async fn remove_network(&self, id: &str) -> Result<()> {
        let path = format!("/networks/{}", seg(id)?);
        self.call_empty(Method::DELETE, &path, None, Default::default())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_create_serializes_pascal_case_and_omits_empty_fields() {
        let spec = NetworkCreate {
            name: "n".into(),
            driver: "macvlan".into(),
            ipam: Some(Ipam {
                config: vec![IpamPool {
                    subnet: Some("10.201.1.0/24".into()),
                    gateway: Some("10.201.1.1".into()),
                    ip_range: None,
                }],
                ..Default::default()
            }),
            options: [("parent".to_string(), "veth0".to_string())].into(),
            ..Default::default()
        };
        let json = serde_json::to_value(CreateBody {
            spec: &spec,
            check_duplicate: Some(true),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Name": "n", "Driver": "macvlan", "Internal": false, "Attachable": false,
                "IPAM": {"Config": [{"Subnet": "10.201.1.0/24", "Gateway": "10.201.1.1"}]},
                "Options": {"parent": "veth0"}, "CheckDuplicate": true
            })
        );
    }

    #[test]
    fn endpoint_settings_tolerate_nulls_and_empty_addresses() {
        let e: EndpointSettings = serde_json::from_str(
            r#"{"IPAMConfig":{"IPv4Address":""},"Links":null,"Aliases":null,"NetworkID":"n",
                "EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"MacAddress":""}"#,
        )
        .unwrap();
        assert_eq!(e.ipam_config.unwrap().ipv4_address, None);
        assert!(e.aliases.is_empty());
        let e: EndpointSettings =
            serde_json::from_str(r#"{"IPAMConfig":{"IPv4Address":"10.201.0.5"}}"#).unwrap();
        assert_eq!(
            e.ipam_config.unwrap().ipv4_address,
            Some(Ipv4Addr::new(10, 201, 0, 5))
        );
    }
}
