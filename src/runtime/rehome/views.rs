//! The plan's inputs, read from the state files and the engine: the runtimes with their persisted
//! vNICs ([`persisted_views`]) and current endpoints ([`with_endpoints`], only containers that are
//! the runtime by [`naming::ownership`]), and the MACVLAN networks on a parent ([`macvlans_on`]).
//! Reads only.

use std::collections::BTreeMap;

use docker_api::{Filters, NetworkInspect};
use tracing::warn;

use super::execute::bounded;
use super::plan::{EndpointView, MacvlanView, RuntimeView};
use crate::runtime::net::Ipv4Net;
use crate::runtime::vnic::PersistedVnic;
use crate::runtime::{Error, Runtimes, naming};

/// An unlabelled MACVLAN network named `macvlan_<parent>_<subnet>` after its own parent and
/// subnet: made by the Python agent this one replaced.
pub(super) fn is_adoptable(n: &NetworkInspect) -> bool {
    n.driver == "macvlan"
        && !n.labels.contains_key(naming::LABEL_MANAGED_BY)
        && n.options.get("parent").is_some_and(|parent| {
            subnets(n)
                .iter()
                .any(|s| naming::macvlan_network_name(parent, *s) == n.name)
        })
}

fn subnets(n: &NetworkInspect) -> Vec<Ipv4Net> {
    n.ipam
        .config
        .iter()
        .filter_map(|c| c.subnet.as_deref()?.parse::<Ipv4Net>().ok())
        .map(|s| s.network())
        .collect()
}

/// Every runtime in `runtime_vnics.json` with its vNICs (no endpoints yet).
pub(super) async fn persisted_views(rt: &Runtimes) -> Vec<RuntimeView> {
    rt.state()
        .vnics()
        .await
        .into_iter()
        .filter(|(name, _)| !naming::RESERVED_CONTAINER_NAMES.contains(&name.as_str()))
        .map(|(name, vnics)| {
            let vnics = vnics
                .as_array()
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .filter_map(|(i, v)| PersistedVnic::read(i, v.as_object()?))
                        .collect()
                })
                .unwrap_or_default();
            RuntimeView {
                name,
                vnics,
                endpoints: Vec::new(),
            }
        })
        .collect()
}

/// Whether the inspected container `c` is the runtime `name` of `runtime_vnics.json`: exactly
/// that name (Docker also resolves ids and id prefixes), and ours by [`naming::ownership`] (the
/// name is in the state files) — never another agent instance's.
fn is_runtime_container(c: &docker_api::ContainerInspect, name: &str, instance: &str) -> bool {
    c.short_name() == name && naming::ownership(&c.config.labels, instance, true).is_some()
}

/// Fills in each runtime's current endpoints (container inspect, concurrently), with the name →
/// container id map every later engine call uses. Runtimes whose container does not exist are
/// dropped (there is nothing to attach), and so are names whose container is not the runtime
/// ([`is_runtime_container`]): the state may outlive a runtime removed outside the agent.
pub(super) async fn with_endpoints(
    rt: &Runtimes,
    runtimes: Vec<RuntimeView>,
) -> (Vec<RuntimeView>, BTreeMap<String, String>) {
    let names: Vec<(usize, String)> = runtimes
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r.name.clone()))
        .collect();
    let inspected = bounded(names, |(i, name)| async move {
        (i, rt.docker().inspect_container(&name).await)
    })
    .await;
    let mut found: BTreeMap<usize, Vec<EndpointView>> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (i, result) in inspected {
        match result {
            Ok(c) if !is_runtime_container(&c, &runtimes[i].name, rt.instance()) => {
                warn!(
                    runtime = %runtimes[i].name, container = %c.id,
                    "re-home: the container of that name is not this agent's runtime; not touching it"
                );
            }
            Ok(c) => {
                ids.insert(runtimes[i].name.clone(), c.id.clone());
                let endpoints = c
                    .network_settings
                    .networks
                    .iter()
                    .map(|(net, e)| EndpointView {
                        network: net.clone(),
                        ip: e.ip_address.parse().ok(),
                        mac: e.mac_address.parse().ok(),
                    })
                    .collect();
                found.insert(i, endpoints);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(runtime = %runtimes[i].name, error = %e, "re-home: cannot inspect"),
        }
    }
    let runtimes = runtimes
        .into_iter()
        .enumerate()
        .filter_map(|(i, mut r)| {
            r.endpoints = found.remove(&i)?;
            Some(r)
        })
        .collect();
    (runtimes, ids)
}

/// The MACVLAN networks on `interface`, with their containers (the list call leaves them out).
pub(super) async fn macvlans_on(rt: &Runtimes, interface: &str) -> Result<Vec<MacvlanView>, Error> {
    let list = rt
        .docker()
        .list_networks(&Filters::new().driver("macvlan"))
        .await
        .map_err(Error::docker("listing MACVLAN networks"))?;
    let mut out = Vec::new();
    for n in list
        .into_iter()
        .filter(|n| n.options.get("parent").is_some_and(|p| p == interface))
    {
        let n = match rt.docker().inspect_network(&n.id).await {
            Ok(n) => n,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(Error::docker(format!("inspecting network {}", n.name))(e)),
        };
        out.push(MacvlanView {
            subnets: subnets(&n),
            containers: n.containers.values().map(|c| c.name.clone()).collect(),
            removable: naming::is_ours(&n.labels, rt.instance()) || is_adoptable(&n),
            parent: interface.to_string(),
            name: n.name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, labels: serde_json::Value) -> docker_api::ContainerInspect {
        serde_json::from_value(serde_json::json!({
            "Id": "0123456789abcdef",
            "Name": format!("/{name}"),
            "State": {"Status": "running", "Running": true},
            "Config": {"Labels": labels},
        }))
        .expect("test inspect parses")
    }

    #[test]
    fn only_the_runtimes_own_container_is_rehomed() {
        let ours = serde_json::json!({
            naming::LABEL_MANAGED_BY: naming::MANAGED_BY_VALUE,
            naming::LABEL_INSTANCE: "/me",
        });
        let other = serde_json::json!({
            naming::LABEL_MANAGED_BY: naming::MANAGED_BY_VALUE,
            naming::LABEL_INSTANCE: "/other",
        });
        assert!(is_runtime_container(
            &container("plc1", ours.clone()),
            "plc1",
            "/me"
        ));
        // Adopted from the Python agent: unlabelled (or other labels, no managed-by).
        assert!(is_runtime_container(
            &container("plc1", serde_json::json!({})),
            "plc1",
            "/me"
        ));
        assert!(is_runtime_container(
            &container("plc1", serde_json::json!({"x": "y"})),
            "plc1",
            "/me"
        ));
        // Another agent instance's container of that name.
        assert!(!is_runtime_container(
            &container("plc1", other),
            "plc1",
            "/me"
        ));
        // Docker resolved the name as an id prefix of another container.
        assert!(!is_runtime_container(
            &container("web", ours),
            "0123",
            "/me"
        ));
    }
}
