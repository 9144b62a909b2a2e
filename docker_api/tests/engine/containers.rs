//! Container calls against the engine: create (with every HostConfig field we send), start, stop,
//! restart, kill, remove, inspect, list, stats, and the error predicates.

use std::collections::BTreeMap;
use std::time::Duration;

use docker_api::{
    ContainerStatus, ContainerUpdate, EndpointConfig, Filters, LogConfig, NetworkingConfig,
    RemoveContainerOptions, RestartPolicy, RestartPolicyName, Ulimit,
};

use crate::common::{ContainerGuard, PATIENCE, cli_inspect, engine, sleeper, unique};

const GRACE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn create_sends_name_labels_env_cmd_and_host_config_as_given() {
    let docker = engine().await;
    let name = unique("create");
    let _g = ContainerGuard(name.clone());
    let mut spec = sleeper();
    spec.env = vec!["PLC_MODE=test".into()];
    spec.cmd = Some(vec!["/bin/sleep".into(), "600".into()]);
    spec.labels.insert("role".into(), "plc".into());
    spec.hostname = Some("plc-host".into());
    spec.host_config.restart_policy = Some(RestartPolicy {
        name: RestartPolicyName::UnlessStopped,
        maximum_retry_count: 0,
    });
    spec.host_config.dns = vec!["10.201.0.53".into()];
    spec.host_config.cap_add = vec!["NET_ADMIN".into()];
    spec.host_config.ulimits = vec![Ulimit {
        name: "rtprio".into(),
        soft: 10,
        hard: 20,
    }];
    spec.host_config.log_config = Some(LogConfig {
        kind: "json-file".into(),
        config: BTreeMap::from([
            ("max-size".into(), "1m".into()),
            ("max-file".into(), "2".into()),
        ]),
    });
    let created = docker.create_container(&name, &spec).await.unwrap();
    assert_eq!(created.id.len(), 64);

    let c = docker.inspect_container(&name).await.unwrap();
    assert_eq!(c.id, created.id);
    assert_eq!(c.short_name(), name);
    assert_eq!(c.state.status, ContainerStatus::Created);
    assert!(!c.state.running);
    assert_eq!(c.config.labels["role"], "plc");
    assert_eq!(c.config.labels["orchestrator-test"], "1");
    assert!(c.config.env.iter().any(|e| e == "PLC_MODE=test"));
    assert_eq!(c.config.cmd, ["/bin/sleep", "600"]);
    assert_eq!(c.config.hostname, "plc-host");
    assert_eq!(c.config.image, crate::common::TEST_IMAGE);
    assert_eq!(c.host_config.restart_policy.name, "unless-stopped");
    assert_eq!(c.host_config.network_mode, "none");
    assert_eq!(c.restart_count, 0);

    // The host config as the engine stored it, read through the CLI.
    let hc = &cli_inspect("container", &name).await["HostConfig"];
    assert_eq!(hc["Dns"], serde_json::json!(["10.201.0.53"]));
    assert_eq!(hc["CapAdd"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(
        hc["Ulimits"],
        serde_json::json!([{"Name": "rtprio", "Soft": 10, "Hard": 20}])
    );
    assert_eq!(hc["LogConfig"]["Type"], "json-file");
    assert_eq!(hc["LogConfig"]["Config"]["max-file"], "2");
    assert_eq!(hc["RestartPolicy"]["Name"], "unless-stopped");
}

#[tokio::test]
async fn lifecycle_start_stop_restart_kill_remove_changes_state() {
    let docker = engine().await;
    let name = unique("life");
    let _g = ContainerGuard(name.clone());
    docker.create_container(&name, &sleeper()).await.unwrap();

    docker.start_container(&name).await.unwrap();
    let c = docker.inspect_container(&name).await.unwrap();
    assert_eq!(c.state.status, ContainerStatus::Running);
    assert!(c.state.running && c.state.pid > 0);
    assert!(
        c.state.started_at.starts_with("20"),
        "{}",
        c.state.started_at
    );
    assert!(
        c.state.health.is_none(),
        "the test image has no health check"
    );

    docker.stop_container(&name, GRACE).await.unwrap();
    let c = docker.inspect_container(&name).await.unwrap();
    assert_eq!(c.state.status, ContainerStatus::Exited);
    assert!(!c.state.running);

    docker.restart_container(&name, GRACE).await.unwrap();
    let c = docker.inspect_container(&name).await.unwrap();
    assert!(c.state.running);

    docker.kill_container(&name, None).await.unwrap();
    let c = docker.inspect_container(&name).await.unwrap();
    assert!(!c.state.running);
    assert_eq!(c.state.exit_code, 137, "SIGKILL");

    // Killing a stopped container is refused by the engine (409).
    let e = docker
        .kill_container(&name, Some("SIGTERM"))
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");

    docker
        .remove_container(
            &name,
            RemoveContainerOptions {
                force: false,
                volumes: true,
            },
        )
        .await
        .unwrap();
    let e = docker.inspect_container(&name).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn kill_with_a_named_signal_reaches_the_container() {
    let docker = engine().await;
    let name = unique("sig");
    let _g = ContainerGuard(name.clone());
    let mut spec = sleeper();
    // Exit code 7 proves SIGTERM arrived (the default, SIGKILL, would give 137).
    spec.cmd = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'exit 7' TERM; while true; do sleep 1; done".into(),
    ]);
    docker.create_container(&name, &spec).await.unwrap();
    docker.start_container(&name).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let sh install the trap
    docker.kill_container(&name, Some("SIGTERM")).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let state = loop {
        let c = docker.inspect_container(&name).await.unwrap();
        if !c.state.running || tokio::time::Instant::now() > deadline {
            break c.state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!state.running);
    assert_eq!(state.exit_code, 7);
    assert!(
        !state.finished_at.starts_with("0001"),
        "{}",
        state.finished_at
    );
}

#[tokio::test]
async fn start_and_stop_of_a_container_already_in_that_state_succeed() {
    let docker = engine().await;
    let name = unique("idem");
    let _g = ContainerGuard(name.clone());
    docker.create_container(&name, &sleeper()).await.unwrap();
    docker.start_container(&name).await.unwrap();
    docker.start_container(&name).await.unwrap(); // engine: 304
    docker.stop_container(&name, GRACE).await.unwrap();
    docker.stop_container(&name, GRACE).await.unwrap(); // engine: 304
    assert!(!docker.inspect_container(&name).await.unwrap().state.running);
}

#[tokio::test]
async fn removing_a_running_container_without_force_is_a_conflict() {
    let docker = engine().await;
    let name = unique("busy");
    let _g = ContainerGuard(name.clone());
    docker.create_container(&name, &sleeper()).await.unwrap();
    docker.start_container(&name).await.unwrap();
    let e = docker
        .remove_container(&name, RemoveContainerOptions::default())
        .await
        .unwrap_err();
    assert!(e.is_conflict() && e.status() == Some(409), "{e}");
}

#[tokio::test]
async fn creating_a_container_with_a_taken_name_is_a_conflict() {
    let docker = engine().await;
    let name = unique("dup");
    let _g = ContainerGuard(name.clone());
    docker.create_container(&name, &sleeper()).await.unwrap();
    let e = docker
        .create_container(&name, &sleeper())
        .await
        .unwrap_err();
    assert!(e.is_conflict() && e.status() == Some(409), "{e}");
    assert!(e.engine_message().unwrap().contains(&name), "{e}");
}

#[tokio::test]
async fn calls_on_a_missing_container_are_not_found() {
    let docker = engine().await;
    let name = unique("ghost");
    for e in [
        docker.inspect_container(&name).await.unwrap_err(),
        docker.start_container(&name).await.unwrap_err(),
        docker.stop_container(&name, GRACE).await.unwrap_err(),
        docker.restart_container(&name, GRACE).await.unwrap_err(),
        docker.kill_container(&name, None).await.unwrap_err(),
        docker
            .remove_container(&name, RemoveContainerOptions::default())
            .await
            .unwrap_err(),
        docker.container_stats(&name).await.unwrap_err(),
    ] {
        assert!(e.is_not_found() && !e.is_conflict(), "{e}");
    }
    let mut spec = sleeper();
    spec.image = "orchestrator-test/does-not-exist:never".into();
    let e = docker.create_container(&name, &spec).await.unwrap_err();
    assert!(e.is_not_found(), "missing image: {e}");
}

#[tokio::test]
async fn list_filters_by_label_and_includes_stopped_containers_only_with_all() {
    let docker = engine().await;
    let tag = unique("list");
    let (up, down) = (format!("{tag}-up"), format!("{tag}-down"));
    let _g1 = ContainerGuard(up.clone());
    let _g2 = ContainerGuard(down.clone());
    let mut spec = sleeper();
    spec.labels.insert("list-test".into(), tag.clone());
    docker.create_container(&up, &spec).await.unwrap();
    docker.create_container(&down, &spec).await.unwrap();
    docker.start_container(&up).await.unwrap();

    let f = Filters::new().label(format!("list-test={tag}"));
    let running = docker.list_containers(false, &f).await.unwrap();
    assert_eq!(
        running.iter().filter_map(|c| c.name()).collect::<Vec<_>>(),
        [up.as_str()]
    );
    assert_eq!(running[0].state, ContainerStatus::Running);
    assert_eq!(running[0].labels["list-test"], tag);

    let mut all: Vec<_> = docker
        .list_containers(true, &f)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name().unwrap_or("").to_string(), c.state))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        all,
        [
            (down.clone(), ContainerStatus::Created),
            (up.clone(), ContainerStatus::Running)
        ]
    );

    // Filters are AND-ed across keys: a name filter narrows it further.
    let f = f.name(format!("^/{down}$"));
    assert_eq!(docker.list_containers(true, &f).await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_shot_stats_of_a_running_container_give_cpu_and_memory() {
    let docker = engine().await;
    let name = unique("stats");
    let _g = ContainerGuard(name.clone());
    let mut spec = sleeper();
    // Busy enough to use some CPU between the two samples.
    spec.cmd = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "while true; do :; done".into(),
    ]);
    docker.create_container(&name, &spec).await.unwrap();
    docker.start_container(&name).await.unwrap();

    let first = docker.container_stats(&name).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = docker.container_stats(&name).await.unwrap();
    assert!(second.cpu_stats.cpu_usage.total_usage > 0);
    assert!(second.cpu_stats.system_cpu_usage.is_some());
    assert!(second.cpu_stats.online_cpus.unwrap_or(0) >= 1);
    let cpu = second
        .cpu_percent_since(&first)
        .expect("two samples give a CPU %");
    assert!(cpu > 0.0, "a busy loop uses CPU: {cpu}");
    let used = second
        .memory_used_bytes()
        .expect("running container has memory stats");
    assert!(used > 0);
    assert!(second.memory_limit_bytes().unwrap() >= used);
    assert!(!second.read.is_empty());
}

#[tokio::test]
async fn create_refuses_mac_shapes_the_negotiated_api_would_ignore() {
    let docker = engine().await;
    let api = docker.api_version().await.unwrap();
    let name = unique("macshape");
    let _g = ContainerGuard(name.clone());

    let mut per_endpoint = sleeper();
    per_endpoint.host_config.network_mode = Some("bridge".into());
    per_endpoint.networking_config = Some(NetworkingConfig {
        endpoints_config: BTreeMap::from([(
            "bridge".to_string(),
            EndpointConfig {
                mac_address: Some("02:42:0a:c9:00:05".into()),
                ..Default::default()
            },
        )]),
    });
    let r = docker.create_container(&name, &per_endpoint).await;
    if api.supports_endpoint_mac_at_create() {
        r.unwrap();
        docker
            .remove_container(&name, RemoveContainerOptions::default())
            .await
            .unwrap();
    } else {
        let e = r.unwrap_err();
        assert!(e.is_unsupported(), "{e}");
        assert!(
            docker
                .inspect_container(&name)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    let mut container_wide = sleeper();
    container_wide.host_config.network_mode = Some("bridge".into());
    container_wide.mac_address = Some("02:42:0a:c9:00:06".into());
    let r = docker.create_container(&name, &container_wide).await;
    if api.supports_container_mac_address() {
        r.unwrap();
        docker.start_container(&name).await.unwrap();
        let c = docker.inspect_container(&name).await.unwrap();
        assert_eq!(
            c.network_settings.networks["bridge"].mac_address,
            "02:42:0a:c9:00:06"
        );
    } else {
        assert!(r.unwrap_err().is_unsupported());
    }
}

#[tokio::test]
async fn stop_kills_a_container_that_ignores_sigterm_after_the_grace_period() {
    let docker = engine().await;
    let name = unique("grace");
    let _g = ContainerGuard(name.clone());
    // `sleep` as PID 1 has no SIGTERM handler, so only the SIGKILL after the grace period stops
    // it. The engine's default grace is 10 s: finishing well before proves `t` was sent.
    docker.create_container(&name, &sleeper()).await.unwrap();
    docker.start_container(&name).await.unwrap();
    let started = std::time::Instant::now();
    docker.stop_container(&name, GRACE).await.unwrap();
    let took = started.elapsed();
    assert!(took >= GRACE && took < Duration::from_secs(8), "{took:?}");
    let c = docker.inspect_container(&name).await.unwrap();
    assert_eq!(c.state.exit_code, 137);
}

#[tokio::test]
async fn update_changes_the_restart_policy_of_an_existing_container_and_missing_is_not_found() {
    let docker = engine().await;
    let name = unique("update");
    let _g = ContainerGuard(name.clone());
    let mut spec = sleeper();
    spec.host_config.restart_policy = Some(RestartPolicy {
        name: RestartPolicyName::Always,
        maximum_retry_count: 0,
    });
    docker.create_container(&name, &spec).await.unwrap();
    let c = docker.inspect_container(&name).await.unwrap();
    assert_eq!(c.host_config.restart_policy.name, "always");

    let update = ContainerUpdate {
        restart_policy: Some(RestartPolicy {
            name: RestartPolicyName::UnlessStopped,
            maximum_retry_count: 0,
        }),
    };
    let answer = docker.update_container(&name, &update).await.unwrap();
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    let c = docker.inspect_container(&name).await.unwrap();
    assert_eq!(c.host_config.restart_policy.name, "unless-stopped");
    assert_eq!(
        c.state.status,
        ContainerStatus::Created,
        "update starts nothing"
    );
    let hc = &cli_inspect("container", &name).await["HostConfig"];
    assert_eq!(hc["RestartPolicy"]["Name"], "unless-stopped");

    let e = docker
        .update_container(&unique("missing"), &update)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn exec_runs_a_command_in_a_running_container_and_returns_its_exit_code() {
    let docker = engine().await;
    let name = unique("exec");
    let _g = ContainerGuard(name.clone());
    docker.create_container(&name, &sleeper()).await.unwrap();
    let limit = Duration::from_secs(20);
    // Not running: the engine refuses (409).
    let e = docker
        .exec(&name, &["/bin/busybox", "true"], "root", limit)
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");
    docker.start_container(&name).await.unwrap();

    let code = |argv: &'static [&'static str]| {
        let docker = docker.clone();
        let name = name.clone();
        async move { docker.exec(&name, argv, "root", limit).await.unwrap() }
    };
    assert_eq!(code(&["/bin/busybox", "true"]).await, 0);
    assert_eq!(code(&["/bin/sh", "-c", "exit 3"]).await, 3);
    // What it did is there afterwards (it ran to its end before the answer).
    assert_eq!(
        code(&["/bin/busybox", "mknod", "/tmp/node", "c", "4", "64"]).await,
        0
    );
    assert_eq!(code(&["/bin/busybox", "test", "-c", "/tmp/node"]).await, 0);
    // No shell: a program that is not there is an error, not a pretended success.
    let e = docker
        .exec(&name, &["/no/such/program"], "root", limit)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/no/such/program"), "{e}");
    let e = docker
        .exec(&unique("gone"), &["true"], "root", limit)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}
