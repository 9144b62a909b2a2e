//! Network calls against the engine: a MACVLAN network on a veth parent and an internal bridge,
//! a container on both with manual addresses, list/inspect/connect/disconnect/remove, and the
//! error predicates (duplicate name, pool overlap, invalid IPAM, missing objects).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use docker_api::{
    ContainerStatus, EndpointConfig, EndpointIpamConfig, Filters, Ipam, IpamPool, NetworkCreate,
    NetworkingConfig, RemoveContainerOptions,
};

use crate::common::{
    ContainerGuard, NetworkGuard, Veth, engine, labels, sleeper, subnet_octet, unique,
};

fn macvlan(name: &str, parent: &str, octet: u8) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        driver: "macvlan".into(),
        ipam: Some(Ipam {
            config: vec![IpamPool {
                subnet: Some(format!("10.201.{octet}.0/24")),
                gateway: Some(format!("10.201.{octet}.1")),
                ip_range: Some(format!("10.201.{octet}.128/25")),
            }],
            ..Default::default()
        }),
        options: BTreeMap::from([
            ("parent".to_string(), parent.to_string()),
            ("macvlan_mode".to_string(), "bridge".to_string()),
        ]),
        labels: labels(),
        ..Default::default()
    }
}

fn internal_bridge(name: &str, octet: u8) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        driver: "bridge".into(),
        internal: true,
        attachable: true,
        ipam: Some(Ipam {
            config: vec![IpamPool {
                subnet: Some(format!("10.201.{octet}.0/24")),
                ..Default::default()
            }],
            ..Default::default()
        }),
        labels: labels(),
        ..Default::default()
    }
}

fn static_ip(ip: Ipv4Addr, alias: &str) -> EndpointConfig {
    EndpointConfig {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip),
        }),
        aliases: vec![alias.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn container_on_macvlan_and_internal_networks_gets_its_manual_addresses_and_mac() {
    let docker = engine().await;
    let api = docker.api_version().await.unwrap();
    let veth = Veth::new().await;
    let (mo, io) = (subnet_octet(&docker).await, subnet_octet(&docker).await);
    let tag = unique("net");
    let (mv_name, int_name, ctr) = (
        format!("{tag}-mv"),
        format!("{tag}-int"),
        format!("{tag}-c"),
    );
    let _mv_guard = NetworkGuard(mv_name.clone());
    let _int_guard = NetworkGuard(int_name.clone());
    let _ctr_guard = ContainerGuard(ctr.clone());

    let mut mv_spec = macvlan(&mv_name, &veth.a, mo);
    mv_spec.labels.insert("net-test".into(), tag.clone());
    let mv = docker.create_network(&mv_spec).await.unwrap();
    let mut int_spec = internal_bridge(&int_name, io);
    int_spec.labels.insert("net-test".into(), tag.clone());
    let int = docker.create_network(&int_spec).await.unwrap();

    // Inspect returns what was asked for.
    let n = docker.inspect_network(&mv_name).await.unwrap();
    assert_eq!(n.id, mv.id);
    assert_eq!(n.name, mv_name);
    assert_eq!(n.driver, "macvlan");
    assert!(!n.internal);
    assert_eq!(n.options["parent"], veth.a);
    assert_eq!(n.labels["orchestrator-test"], "1");
    assert_eq!(
        n.ipam.config,
        [IpamPool {
            subnet: Some(format!("10.201.{mo}.0/24")),
            gateway: Some(format!("10.201.{mo}.1")),
            ip_range: Some(format!("10.201.{mo}.128/25")),
        }]
    );
    let n = docker.inspect_network(&int.id).await.unwrap();
    assert!(n.internal && n.attachable);
    assert_eq!(n.driver, "bridge");
    assert_eq!(
        n.ipam.config[0].subnet.as_deref(),
        Some(&*format!("10.201.{io}.0/24"))
    );

    // List by label finds exactly these two; a driver filter narrows to one.
    let f = Filters::new().label(format!("net-test={tag}"));
    let mut names: Vec<_> = docker
        .list_networks(&f)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    assert_eq!(names, [int_name.clone(), mv_name.clone()]);
    let only_mv = docker
        .list_networks(&f.clone().driver("macvlan"))
        .await
        .unwrap();
    assert_eq!(only_mv.len(), 1);
    assert_eq!(only_mv[0].id, mv.id);

    // The container starts on the MACVLAN network with a manual IP and MAC, by the shape the
    // negotiated API honours, and is then connected to the internal network with a manual IP.
    let mac = "02:42:0a:c9:00:0a";
    let mv_ip = Ipv4Addr::new(10, 201, mo, 10);
    let int_ip = Ipv4Addr::new(10, 201, io, 20);
    let mut spec = sleeper();
    spec.host_config.network_mode = Some(mv_name.clone());
    let mut endpoint = static_ip(mv_ip, "plc-mv");
    if api.supports_endpoint_mac_at_create() {
        endpoint.mac_address = Some(mac.into());
    } else {
        spec.mac_address = Some(mac.into());
    }
    spec.networking_config = Some(NetworkingConfig {
        endpoints_config: BTreeMap::from([(mv_name.clone(), endpoint)]),
    });
    let created = docker.create_container(&ctr, &spec).await.unwrap();
    docker.start_container(&ctr).await.unwrap();
    docker
        .connect_network(&int_name, &ctr, &static_ip(int_ip, "plc-int"))
        .await
        .unwrap();

    let c = docker.inspect_container(&ctr).await.unwrap();
    assert_eq!(c.state.status, ContainerStatus::Running);
    let e = &c.network_settings.networks[&mv_name];
    assert_eq!(e.network_id, mv.id);
    assert_eq!(e.ip_address, mv_ip.to_string());
    assert_eq!(e.ip_prefix_len, 24);
    assert_eq!(e.gateway, format!("10.201.{mo}.1"));
    assert_eq!(e.mac_address, mac);
    assert_eq!(e.ipam_config.as_ref().unwrap().ipv4_address, Some(mv_ip));
    assert!(e.aliases.iter().any(|a| a == "plc-mv"), "{:?}", e.aliases);
    assert!(!e.endpoint_id.is_empty());
    let e = &c.network_settings.networks[&int_name];
    assert_eq!(e.network_id, int.id);
    assert_eq!(e.ip_address, int_ip.to_string());
    assert_eq!(e.ip_prefix_len, 24);
    assert!(e.aliases.iter().any(|a| a == "plc-int"), "{:?}", e.aliases);

    // Network inspect lists the container with its address.
    let n = docker.inspect_network(&mv.id).await.unwrap();
    let member = &n.containers[&created.id];
    assert_eq!(member.name, ctr);
    assert_eq!(member.ipv4_address, format!("{mv_ip}/24"));
    assert_eq!(member.mac_address, mac);

    // Disconnect while running, then force-disconnect the stopped container.
    docker
        .disconnect_network(&int_name, &ctr, false)
        .await
        .unwrap();
    let c = docker.inspect_container(&ctr).await.unwrap();
    assert!(!c.network_settings.networks.contains_key(&int_name));
    assert!(
        docker
            .inspect_network(&int.id)
            .await
            .unwrap()
            .containers
            .is_empty()
    );
    docker
        .stop_container(&ctr, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    docker
        .disconnect_network(&mv_name, &ctr, true)
        .await
        .unwrap();
    let c = docker.inspect_container(&ctr).await.unwrap();
    assert!(
        c.network_settings.networks.is_empty(),
        "{:?}",
        c.network_settings.networks.keys()
    );

    // A network with a running member cannot be removed; once unused it can, and is then gone.
    docker
        .connect_network(&int_name, &ctr, &EndpointConfig::default())
        .await
        .unwrap();
    docker.start_container(&ctr).await.unwrap();
    let e = docker.remove_network(&int_name).await.unwrap_err();
    assert!(e.status().is_some() && !e.is_not_found(), "{e}");
    docker
        .remove_container(
            &ctr,
            RemoveContainerOptions {
                force: true,
                volumes: true,
            },
        )
        .await
        .unwrap();
    docker.remove_network(&int_name).await.unwrap();
    docker.remove_network(&mv.id).await.unwrap();
    for id in [&int.id, &mv.id] {
        assert!(docker.inspect_network(id).await.unwrap_err().is_not_found());
        assert!(docker.remove_network(id).await.unwrap_err().is_not_found());
    }
}

#[tokio::test]
async fn second_macvlan_network_with_an_overlapping_subnet_is_a_pool_overlap() {
    let docker = engine().await;
    let veth = Veth::new().await;
    let octet = subnet_octet(&docker).await;
    let (first, second) = (unique("ov1"), unique("ov2"));
    let _g1 = NetworkGuard(first.clone());
    let _g2 = NetworkGuard(second.clone());
    docker
        .create_network(&macvlan(&first, &veth.a, octet))
        .await
        .unwrap();
    let e = docker
        .create_network(&macvlan(&second, &veth.b, octet))
        .await
        .unwrap_err();
    assert!(e.is_pool_overlap() && !e.is_conflict(), "{e}");
    assert!(
        docker
            .inspect_network(&second)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn duplicate_network_name_is_a_conflict() {
    let docker = engine().await;
    let name = unique("dupnet");
    let _g = NetworkGuard(name.clone());
    let (a, b) = (subnet_octet(&docker).await, subnet_octet(&docker).await);
    docker
        .create_network(&internal_bridge(&name, a))
        .await
        .unwrap();
    let e = docker
        .create_network(&internal_bridge(&name, b))
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let same: Vec<_> = docker
        .list_networks(&Filters::new().name(format!("^{name}$")))
        .await
        .unwrap();
    assert_eq!(
        same.len(),
        1,
        "the engine must not have created a second network"
    );
}

#[tokio::test]
async fn invalid_ipam_is_a_bad_request() {
    let docker = engine().await;
    let octet = subnet_octet(&docker).await;
    let name = unique("badipam");
    let _g = NetworkGuard(name.clone());
    let mut bad_cidr = internal_bridge(&name, octet);
    bad_cidr.ipam.as_mut().unwrap().config[0].subnet = Some(format!("10.201.{octet}.0/33"));
    let e = docker.create_network(&bad_cidr).await.unwrap_err();
    assert!(e.is_bad_request() && !e.is_pool_overlap(), "{e}");

    let mut gateway_outside = internal_bridge(&name, octet);
    // Octets start at 1, so 10.201.0.1 is outside 10.201.<octet>.0/24.
    assert_ne!(octet, 0);
    gateway_outside.ipam.as_mut().unwrap().config[0].gateway = Some("10.201.0.1".into());
    let e = docker.create_network(&gateway_outside).await.unwrap_err();
    assert!(e.is_bad_request(), "{e}");
    assert!(
        docker
            .inspect_network(&name)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn connect_with_a_mac_is_refused_where_the_engine_would_ignore_it() {
    let docker = engine().await;
    let api = docker.api_version().await.unwrap();
    let name = unique("macconn");
    let ctr = format!("{name}-c");
    let _n = NetworkGuard(name.clone());
    let _c = ContainerGuard(ctr.clone());
    docker
        .create_network(&internal_bridge(&name, subnet_octet(&docker).await))
        .await
        .unwrap();
    docker.create_container(&ctr, &sleeper()).await.unwrap();
    let with_mac = EndpointConfig {
        mac_address: Some("02:42:0a:c9:00:0b".into()),
        ..Default::default()
    };
    let r = docker.connect_network(&name, &ctr, &with_mac).await;
    if api.honours_mac_on_connect() {
        r.unwrap();
    } else {
        assert!(r.unwrap_err().is_unsupported());
        let c = docker.inspect_container(&ctr).await.unwrap();
        assert!(
            !c.network_settings.networks.contains_key(&name),
            "nothing was sent"
        );
    }
}

#[tokio::test]
async fn calls_on_a_missing_network_or_container_are_not_found() {
    let docker = engine().await;
    let name = unique("nonet");
    let ctr = unique("noctr");
    let net = unique("realnet");
    let _n = NetworkGuard(net.clone());
    docker
        .create_network(&internal_bridge(&net, subnet_octet(&docker).await))
        .await
        .unwrap();
    for e in [
        docker.inspect_network(&name).await.unwrap_err(),
        docker.remove_network(&name).await.unwrap_err(),
        docker
            .connect_network(&name, &ctr, &EndpointConfig::default())
            .await
            .unwrap_err(),
        docker
            .connect_network(&net, &ctr, &EndpointConfig::default())
            .await
            .unwrap_err(),
        docker
            .disconnect_network(&net, &ctr, true)
            .await
            .unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
}
