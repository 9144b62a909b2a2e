//! The networks a runtime joins: MACVLAN networks (shared by the runtimes on one parent + subnet) and
//! the runtime's own internal bridge `<name>_internal`.
//!
//! Get-or-create rules (fixing upstream §11 items 8–9): a network found under the expected name is
//! reused only when its driver, parent and subnet match; when the engine says the pool overlaps, the
//! existing MACVLAN network with the same parent and subnet (compared after normalising) is reused;
//! anything else is an error naming the conflict. Only networks carrying this agent's labels are
//! ever removed. Callers hold [`Runtimes::network_lock`] around create/attach and clean-up.

use std::net::Ipv4Addr;

use docker_api::{Filters, Ipam, IpamPool, NetworkCreate, NetworkInspect};
use tracing::{debug, info, warn};

use super::net::Ipv4Net;
use super::{Error, Runtimes, SelfContainer, naming};

/// A MACVLAN network a runtime can join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanNet {
    /// Its name.
    pub name: String,
    /// Whether this call created it (so a failed create may remove it again).
    pub created: bool,
}

/// Whether `n` is a MACVLAN network on `parent` with `subnet` (normalised comparison).
pub fn matches(n: &NetworkInspect, parent: &str, subnet: Ipv4Net) -> bool {
    n.driver == "macvlan"
        && n.options.get("parent").is_some_and(|p| p == parent)
        && n.ipam.config.iter().any(|c| {
            c.subnet
                .as_deref()
                .and_then(|s| s.parse::<Ipv4Net>().ok())
                .is_some_and(|s| s.network() == subnet.network())
        })
}

/// Gets or creates the MACVLAN network for `parent` + `subnet` (gateway used only when creating).
pub async fn ensure(
    rt: &Runtimes,
    parent: &str,
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
) -> Result<MacvlanNet, Error> {
    let docker = rt.docker();
    let name = naming::macvlan_network_name(parent, subnet);
    let mismatch = |n: &NetworkInspect| {
        Error::Failed(format!(
            "network {name} exists but is not a MACVLAN network on {parent} with subnet {} \
             (driver {}, parent {}, subnets {:?})",
            subnet.network(),
            n.driver,
            n.options.get("parent").map(String::as_str).unwrap_or("-"),
            n.ipam
                .config
                .iter()
                .filter_map(|c| c.subnet.clone())
                .collect::<Vec<_>>()
        ))
    };
    match docker.inspect_network(&name).await {
        Ok(n) if matches(&n, parent, subnet) => {
            debug!(network = %name, "reusing MACVLAN network");
            return Ok(MacvlanNet {
                name: n.name,
                created: false,
            });
        }
        Ok(n) => return Err(mismatch(&n)),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Error::docker(format!("inspecting network {name}"))(e)),
    }
    let spec = NetworkCreate {
        name: name.clone(),
        driver: "macvlan".to_owned(),
        ipam: Some(Ipam {
            driver: "default".to_owned(),
            config: vec![IpamPool {
                subnet: Some(subnet.network().to_string()),
                gateway: gateway.map(|g| g.to_string()),
                ip_range: placeholder_range(subnet).map(|r| r.to_string()),
            }],
            ..Default::default()
        }),
        options: [("parent".to_owned(), parent.to_owned())].into(),
        labels: naming::macvlan_labels(rt.instance()),
        ..Default::default()
    };
    match docker.create_network(&spec).await {
        Ok(_) => {
            info!(network = %name, parent, subnet = %subnet.network(), "created MACVLAN network");
            Ok(MacvlanNet {
                name,
                created: true,
            })
        }
        Err(e) if e.is_conflict() => {
            // Created meanwhile by someone else: take it if it is the right one.
            let n = docker
                .inspect_network(&name)
                .await
                .map_err(Error::docker(format!("inspecting network {name}")))?;
            if matches(&n, parent, subnet) {
                Ok(MacvlanNet {
                    name,
                    created: false,
                })
            } else {
                Err(mismatch(&n))
            }
        }
        Err(e) if e.is_pool_overlap() => {
            let all = docker
                .list_networks(&Filters::new().driver("macvlan"))
                .await
                .map_err(Error::docker("listing MACVLAN networks"))?;
            match all.into_iter().find(|n| matches(n, parent, subnet)) {
                Some(n) => {
                    info!(network = %n.name, "subnet already served by this MACVLAN network; reusing it");
                    Ok(MacvlanNet {
                        name: n.name,
                        created: false,
                    })
                }
                None => Err(Error::Failed(format!(
                    "cannot create MACVLAN network {name}: subnet {} overlaps another network on \
                     this host that is not a MACVLAN network on {parent}: {e}",
                    subnet.network()
                ))),
            }
        }
        Err(e) => Err(Error::docker(format!("creating MACVLAN network {name}"))(e)),
    }
}

/// The addresses the engine may pick itself on a MACVLAN network (its `IPRange`): the top /27 of
/// the subnet (a quarter of a /25–/28; none for smaller ones). Static vNICs ask for their address
/// anywhere in the subnet; what the engine picks is only a `dhcp` vNIC's placeholder until netmon
/// leases the real address and removes it. Confined to the top of the subnet, away from where
/// routers and DHCP servers usually hand out addresses (the low and middle ranges), because the
/// engine cannot know the LAN's pool (a `null` IPAM driver is refused for MACVLAN on 20.10).
pub fn placeholder_range(subnet: Ipv4Net) -> Option<Ipv4Net> {
    let prefix = match subnet.prefix() {
        0..=24 => 27,
        p @ 25..=28 => p + 2,
        _ => return None,
    };
    let size = 1u64 << (32 - u32::from(prefix));
    let top = u64::from(u32::from(subnet.network().addr()))
        + (1u64 << (32 - u32::from(subnet.prefix())));
    let start = u32::try_from(top - size).ok()?;
    Ipv4Net::new(Ipv4Addr::from(start), prefix)
}

/// Whether an existing `<runtime>_internal` network may be used for the runtime: the rule of
/// [`naming::ownership`], as for the runtime's container (`adopted`: the runtime is named in the
/// state files, so the Python agent's unlabelled network counts).
pub fn internal_usable(n: &NetworkInspect, instance: &str, adopted: bool) -> bool {
    naming::ownership(&n.labels, instance, adopted).is_some()
}

/// A runtime's internal bridge as [`ensure_internal`] found or made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalNet {
    /// The network's id.
    pub id: String,
    /// Whether this call created it (so a failed create may remove it again).
    pub created: bool,
}

/// Gets or creates `<runtime>_internal` (bridge, `Internal: true`, labelled). An existing network is reused only when [`internal_usable`] (adopted =
/// the runtime is known from the state files); otherwise the create fails, so neither the runtime
/// nor the agent's own container is attached to a network the agent does not own.
pub async fn ensure_internal(rt: &Runtimes, runtime: &str) -> Result<InternalNet, Error> {
    let docker = rt.docker();
    let name = naming::internal_network_name(runtime);
    let adopted = rt.state().is_known(runtime).await;
    let check = |n: &NetworkInspect| {
        if !internal_usable(n, rt.instance(), adopted) {
            Err(Error::Failed(format!(
                "network {name} exists and is not managed by this agent"
            )))
        } else if n.driver == "bridge" && n.internal {
            Ok(InternalNet {
                id: n.id.clone(),
                created: false,
            })
        } else {
            Err(Error::Failed(format!(
                "network {name} exists but is not an internal bridge (driver {}, internal {})",
                n.driver, n.internal
            )))
        }
    };
    match inspect_internal(rt, runtime).await {
        Ok(n) => return check(&n),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Error::docker(format!("inspecting network {name}"))(e)),
    }
    let spec = NetworkCreate {
        name: name.clone(),
        driver: "bridge".to_owned(),
        internal: true,
        labels: naming::internal_network_labels(runtime, rt.instance()),
        ..Default::default()
    };
    match docker.create_network(&spec).await {
        Ok(created) => {
            // The engine's duplicate-name check is not atomic: a create of the same name still in
            // flight from a killed agent may have succeeded too. Keep ours, drop the twin.
            dedupe_internal(rt, runtime, Some(&created.id)).await?;
            Ok(InternalNet {
                id: created.id,
                created: true,
            })
        }
        Err(e) if e.is_conflict() => {
            let n = inspect_internal(rt, runtime)
                .await
                .map_err(Error::docker(format!("inspecting network {name}")))?;
            check(&n)
        }
        Err(e) => Err(Error::docker(format!("creating network {name}"))(e)),
    }
}

/// Inspects `<runtime>_internal`; when the name is ambiguous (duplicates, see [`dedupe_internal`])
/// the duplicates of ours are removed first.
pub async fn inspect_internal(
    rt: &Runtimes,
    runtime: &str,
) -> Result<NetworkInspect, docker_api::Error> {
    let name = naming::internal_network_name(runtime);
    match rt.docker().inspect_network(&name).await {
        Err(e) if e.is_ambiguous() => {
            if let Err(d) = dedupe_internal(rt, runtime, None).await {
                warn!(network = %name, error = %d, "cannot remove duplicate networks");
            }
            rt.docker().inspect_network(&name).await
        }
        other => other,
    }
}

/// Removes extra networks of ours named `<runtime>_internal`, keeping `keep` (an id) or else the one
/// a container is attached to, else the oldest. Duplicates arise when a create of the previous
/// process was still in flight in the engine when it died and a new create of the same name
/// overlapped it: the engine's duplicate-name check is not atomic (seen on Docker 20.10), and a
/// duplicated name makes every later call by name fail as "ambiguous".
pub async fn dedupe_internal(
    rt: &Runtimes,
    runtime: &str,
    keep: Option<&str>,
) -> Result<(), Error> {
    let docker = rt.docker();
    let name = naming::internal_network_name(runtime);
    let same: Vec<NetworkInspect> = docker
        .list_networks(&Filters::new().name(name.clone()))
        .await
        .map_err(Error::docker(format!("listing networks named {name}")))?
        .into_iter()
        .filter(|n| n.name == name)
        .collect();
    if same.len() < 2 {
        return Ok(());
    }
    let mut used = Vec::new();
    for n in &same {
        let by_id = Filters::new().add("network", n.id.clone());
        let users = docker
            .list_containers(true, &by_id)
            .await
            .map_err(Error::docker(format!("listing the containers on {name}")))?;
        if !users.is_empty() {
            used.push(n.id.clone());
        }
    }
    let keep_id = keep
        .filter(|k| same.iter().any(|n| n.id == *k))
        .map(str::to_owned)
        .or_else(|| used.first().cloned())
        .or_else(|| {
            same.iter()
                .min_by(|a, b| a.created.cmp(&b.created))
                .map(|n| n.id.clone())
        })
        .unwrap_or_default();
    for n in same {
        if n.id == keep_id || used.contains(&n.id) || !naming::is_ours(&n.labels, rt.instance()) {
            continue;
        }
        match docker.remove_network(&n.id).await {
            Ok(()) => info!(network = %name, id = %n.id, "removed a duplicate network"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::docker(format!("removing a duplicate of {name}"))(e)),
        }
    }
    Ok(())
}

/// Removes `<runtime>_internal` after detaching the agent's own container from it. The network is
/// removed when it carries our labels, or when `adopted` (the Python agent made it unlabelled).
/// Missing is success. Fails when other containers are still attached.
pub async fn remove_internal(rt: &Runtimes, runtime: &str, adopted: bool) -> Result<(), Error> {
    let docker = rt.docker();
    let name = naming::internal_network_name(runtime);
    let n = match inspect_internal(rt, runtime).await {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(Error::docker(format!("inspecting network {name}"))(e)),
    };
    let ours = naming::is_ours(&n.labels, rt.instance());
    if !(ours || (adopted && n.labels.is_empty())) {
        warn!(network = %name, "not removing a network this agent did not create");
        return Ok(());
    }
    if let SelfContainer::Container { id, .. } = rt.self_container().await
        && n.containers.contains_key(&id)
        && let Err(e) = docker.disconnect_network(&name, &id, true).await
        && !e.is_not_found()
    {
        warn!(network = %name, error = %e, "cannot detach the agent from the network");
    }
    match docker.remove_network(&n.id).await {
        Ok(()) => {
            info!(network = %name, "removed internal network");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Error::docker(format!("removing network {name}"))(e)),
    }
}

/// Removes the MACVLAN network `name` if it is ours and no container uses it. Returns whether it
/// was removed. Callers hold [`Runtimes::network_lock`].
pub async fn remove_if_unused(rt: &Runtimes, name: &str) -> Result<bool, Error> {
    let docker = rt.docker();
    let n = match docker.inspect_network(name).await {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(Error::docker(format!("inspecting network {name}"))(e)),
    };
    if n.driver != "macvlan"
        || !naming::is_ours(&n.labels, rt.instance())
        || !n.containers.is_empty()
    {
        return Ok(false);
    }
    if has_configured_containers(rt, &n).await? {
        return Ok(false);
    }
    match docker.remove_network(&n.id).await {
        Ok(()) => {
            info!(network = %name, "removed unused MACVLAN network");
            Ok(true)
        }
        // Someone attached meanwhile (outside our lock) or it vanished: leave it.
        Err(e) if e.is_not_found() || e.is_conflict() || e.status() == Some(403) => Ok(false),
        Err(e) => Err(Error::docker(format!("removing network {name}"))(e)),
    }
}

/// Whether any container, in any state, is configured on `n`. Network inspect lists started
/// endpoints only, so a stopped runtime or one created but not yet started is looked up in the
/// container list, by name as well as id: before its first start a container's endpoint settings
/// have an empty `NetworkID`, and the engine's `network` filter matches ids only against that field
/// (seen on Docker 20.10; the values of one filter key are OR-ed).
pub async fn has_configured_containers(rt: &Runtimes, n: &NetworkInspect) -> Result<bool, Error> {
    let filters = Filters::new()
        .add("network", n.name.clone())
        .add("network", n.id.clone());
    let users = rt
        .docker()
        .list_containers(true, &filters)
        .await
        .map_err(Error::docker(format!(
            "listing the containers on {}",
            n.name
        )))?;
    Ok(!users.is_empty())
}

/// Names of this agent's networks with `role` (see [`naming::LABEL_ROLE`]).
pub async fn list_ours(rt: &Runtimes, role: &str) -> Result<Vec<NetworkInspect>, Error> {
    let mut f = Filters::new();
    for l in naming::owner_filters(rt.instance(), Some(role)) {
        f = f.label(l);
    }
    rt.docker()
        .list_networks(&f)
        .await
        .map_err(Error::docker("listing the agent's networks"))
}

/// Removes every MACVLAN network of ours that no container uses. Returns the names removed.
pub async fn remove_all_unused(rt: &Runtimes) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    for n in list_ours(rt, naming::ROLE_MACVLAN).await? {
        if remove_if_unused(rt, &n.name).await? {
            removed.push(n.name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(driver: &str, parent: &str, subnet: &str) -> NetworkInspect {
        serde_json::from_value(serde_json::json!({
            "Name": "n", "Id": "i", "Driver": driver,
            "Options": {"parent": parent},
            "IPAM": {"Config": [{"Subnet": subnet}]}
        }))
        .unwrap()
    }

    fn internal(labels: serde_json::Value) -> NetworkInspect {
        serde_json::from_value(serde_json::json!({
            "Name": "plc1_internal", "Id": "i", "Driver": "bridge", "Internal": true,
            "Labels": labels
        }))
        .unwrap()
    }

    #[test]
    fn an_internal_network_is_used_only_when_ours_or_the_adopted_runtimes() {
        let ours = internal(serde_json::json!({
            naming::LABEL_MANAGED_BY: naming::MANAGED_BY_VALUE,
            naming::LABEL_INSTANCE: "/me",
        }));
        let other = internal(serde_json::json!({
            naming::LABEL_MANAGED_BY: naming::MANAGED_BY_VALUE,
            naming::LABEL_INSTANCE: "/other",
        }));
        let python = internal(serde_json::json!({}));
        assert!(internal_usable(&ours, "/me", false));
        assert!(internal_usable(&ours, "/me", true));
        assert!(!internal_usable(&other, "/me", false));
        assert!(!internal_usable(&other, "/me", true));
        assert!(!internal_usable(&python, "/me", false));
        assert!(internal_usable(&python, "/me", true));
    }

    #[test]
    fn reuse_needs_driver_parent_and_subnet_to_match() {
        let s: Ipv4Net = "10.203.1.0/24".parse().unwrap();
        assert!(matches(
            &net("macvlan", "veth1", "10.203.1.0/24"),
            "veth1",
            s
        ));
        // Normalised: an engine that kept host bits still matches.
        assert!(matches(
            &net("macvlan", "veth1", "10.203.1.7/24"),
            "veth1",
            s
        ));
        assert!(!matches(
            &net("bridge", "veth1", "10.203.1.0/24"),
            "veth1",
            s
        ));
        assert!(!matches(
            &net("macvlan", "veth2", "10.203.1.0/24"),
            "veth1",
            s
        ));
        assert!(!matches(
            &net("macvlan", "veth1", "10.203.1.0/25"),
            "veth1",
            s
        ));
    }

    #[test]
    fn the_engine_picks_placeholders_only_at_the_top_of_the_subnet() {
        let range = |s: &str| placeholder_range(s.parse().unwrap()).map(|r| r.to_string());
        assert_eq!(range("192.168.1.0/24").as_deref(), Some("192.168.1.224/27"));
        assert_eq!(range("10.0.0.0/8").as_deref(), Some("10.255.255.224/27"));
        assert_eq!(range("172.16.4.0/22").as_deref(), Some("172.16.7.224/27"));
        assert_eq!(range("192.168.1.128/25").as_deref(), Some("192.168.1.224/27"));
        assert_eq!(range("192.168.1.0/28").as_deref(), Some("192.168.1.12/30"));
        assert_eq!(range("192.168.1.0/29"), None);
        assert_eq!(range("0.0.0.0/0").as_deref(), Some("255.255.255.224/27"));
    }
}
