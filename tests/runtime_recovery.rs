//! Crash and hand-over paths on the real engine: SIGKILL in the middle of a create, a corrupt state
//! file, state files written by the Python agent, and `delete_orchestrator`.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn state_json(w: &World, rel: &str) -> Value {
    w.read_state(rel)
        .map(|t| serde_json::from_str(&t).expect("state file is JSON"))
        .unwrap_or(json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_during_a_create_is_consistent_after_restart() {
    let mut w = World::start().await;
    let v = Veth::new();
    let u = Veth::new();
    let name = unique("rtkill");
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [
                static_vnic(&v, 30, Some("02:ef:00:00:00:30")), dhcp_vnic(&u, None)
            ]}),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    // Kill as soon as the create has started making Docker objects.
    loop {
        let s = w.status(&name).await;
        let step = s["step"].as_str().unwrap_or_default();
        if s["status"] != "creating" || !matches!(step, "validating_config" | "pulling_image") {
            break;
        }
    }
    w.kill_agent().await;
    w.start_agent().await;

    // Either the runtime is complete (container running, registered, persisted) or nothing of it
    // is left; never something in between.
    let label = w.instance_label();
    let deadline = Instant::now() + SLOW;
    let complete = loop {
        let c = inspect(&name);
        let registered = state_json(&w, "data/clients.json").get(&name).is_some();
        let persisted = state_json(&w, "runtime_vnics.json").get(&name).is_some();
        let internal = inspect_network(&format!("{name}_internal")).is_some();
        let running = c.as_ref().is_some_and(|c| c["State"]["Running"] == true);
        if running && registered && persisted && internal {
            break true;
        }
        if c.is_none()
            && !registered
            && !persisted
            && !internal
            && networks_with_label(&label).is_empty()
        {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "inconsistent after restart: container {c:?}, registered {registered}, persisted \
             {persisted}, internal network {internal}, networks {:?}\n{}",
            networks_with_label(&label),
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let s = w.settle(&name).await;
    if complete {
        assert_eq!(s["status"], "success", "{s}");
    } else {
        assert_eq!(s["status"], "not_found", "{s}");
        // The name is free again (once the reconcile released it).
        let deadline = Instant::now() + SLOW;
        loop {
            let ack = w
                .call(
                    "create_new_runtime",
                    json!({"container_name": name, "vnic_configs": [dhcp_vnic(&u, None)]}),
                )
                .await;
            if ack["status"] == "creating" {
                break;
            }
            let busy = ack["error"]
                .as_str()
                .unwrap_or_default()
                .contains("in progress");
            assert!(busy && Instant::now() < deadline, "{ack}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = w.settle(&name).await;
        assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_vnic_file_is_kept_aside_and_the_agent_runs() {
    let mut w = World::prepare().await;
    let garbage = b"{\"plc-001\": [{\"name\": \"eth0\", \"parent_inter";
    std::fs::write(w.state_dir.join("runtime_vnics.json"), garbage).unwrap();
    w.start_agent().await;

    let s = w.status("__orchestrator__").await;
    assert_eq!(s["status"], "idle", "{s}");
    assert!(s["state_warnings"].to_string().contains("corrupt"), "{s}");
    let aside: Vec<_> = std::fs::read_dir(&w.state_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("runtime_vnics.json.corrupt-")
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);

    let v = Veth::new();
    let name = unique("rtcor");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    assert!(state_json(&w, "runtime_vnics.json").get(&name).is_some());
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        garbage,
        "the copy is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_of_the_python_agent_are_adopted() {
    let mut w = World::prepare().await;
    let name = unique("rtpy");
    let internal = format!("{name}_internal");
    // Unlabelled objects (as the Python agent made them), removed by name: container first.
    let _network = NetworkGuard::adopt(&internal);
    let _container = ContainerGuard::adopt(&name);
    // What the Python agent leaves: an unlabelled internal bridge and container (restart "always"),
    // here never started, as if its start failed at boot.
    docker(&["network", "create", "--internal", &internal]);
    docker(&[
        "create",
        "--name",
        &name,
        "--network",
        &internal,
        "--restart",
        "always",
        LOCAL_IMAGE,
    ]);
    std::fs::create_dir_all(w.state_dir.join("data")).unwrap();
    let clients = format!(
        "{{\n    \"{name}\": {{\n        \"ip\": \"172.31.254.2\",\n        \"name\": \"{name}\"\n    }}\n}}"
    );
    std::fs::write(w.state_dir.join("data/clients.json"), &clients).unwrap();
    let vnics = format!(
        "{{\n  \"{name}\": [\n    {{\n      \"name\": \"eth0\",\n      \"parent_interface\": \
         \"ens37\",\n      \"network_mode\": \"dhcp\",\n      \"dns\": [\n        \"8.8.8.8\"\n      \
         ]\n    }}\n  ]\n}}"
    );
    std::fs::write(w.state_dir.join("runtime_vnics.json"), &vnics).unwrap();
    w.start_agent().await;

    // The reconcile starts it and refreshes the registry in the same format.
    let s = w.wait_status(&name, |s| s["is_running"] == true).await;
    assert_eq!(s["status"], "success", "{s}");
    let ip = inspect(&name).unwrap()["NetworkSettings"]["Networks"][&internal]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + SLOW;
    let want = format!(
        "{{\n    \"{name}\": {{\n        \"ip\": \"{ip}\",\n        \"name\": \"{name}\"\n    }}\n}}"
    );
    while w.read_state("data/clients.json").as_deref() != Some(want.as_str()) {
        assert!(
            Instant::now() < deadline,
            "registry not refreshed: {:?}",
            w.read_state("data/clients.json")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        w.read_state("runtime_vnics.json").unwrap(),
        vnics,
        "untouched"
    );

    // Adopted runtimes are owned: power and delete act on them.
    let ack = w.call("stop_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(inspect(&name).unwrap()["State"]["Running"], false);
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    assert_eq!(w.settle(&name).await["status"], "not_found");
    assert!(inspect(&name).is_none());
    assert!(inspect_network(&internal).is_none());
    assert_eq!(w.read_state("data/clients.json").unwrap(), "{}");
    assert_eq!(w.read_state("runtime_vnics.json").unwrap(), "{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_orchestrator_removes_every_runtime_network_and_finally_its_own_container() {
    let mut w = World::prepare().await;
    // Stands in for the agent's own container (found through HOST_NAME, spec §3).
    let me = ContainerGuard::busybox(&unique("rtself"));
    w.agent_env.push(("HOST_NAME".to_owned(), me.name.clone()));
    w.start_agent().await;
    let v = Veth::new();
    let u = Veth::new();
    let a = unique("rtsd");
    let b = unique("rtsd");
    for (name, vnic) in [
        (&a, static_vnic(&v, 40, Some("02:aa:00:00:00:40"))),
        (&b, dhcp_vnic(&u, None)),
    ] {
        w.create_runtime(name, json!([vnic])).await;
    }
    // The agent's container joined both internal networks.
    let joined = inspect(&me.name).unwrap()["NetworkSettings"]["Networks"].clone();
    assert!(joined.get(format!("{a}_internal")).is_some(), "{joined}");
    assert!(joined.get(format!("{b}_internal")).is_some(), "{joined}");

    let mut events = w.events();
    let ack = w
        .call("delete_orchestrator", json!({"correlation_id": 4242}))
        .await;
    assert_eq!(ack["status"], "accepted", "{ack}");
    assert_eq!(ack["poll_device_id"], "__orchestrator__");
    assert_eq!(ack["correlation_id"], 4242);
    let ev = next_event(&mut events, "delete_orchestrator_response").await;
    assert_eq!(ev[0]["correlation_id"], 4242, "{ev:?}");
    assert_eq!(ev[0]["status"], "command_received", "{ev:?}");
    let again = w.call("delete_orchestrator", json!({})).await;
    assert_eq!(again["status"], "error", "{again}");
    assert_eq!(
        again["error"],
        "Self-destruct operation already in progress"
    );

    let s = w
        .wait_status("__orchestrator__", |s| s["status"] != "deleting")
        .await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert!(
        inspect(&me.name).is_none(),
        "its own container is removed last"
    );
    for name in [&a, &b] {
        assert!(inspect(name).is_none());
        assert!(inspect_network(&format!("{name}_internal")).is_none());
    }
    assert!(inspect_network(&v.macvlan()).is_none());
    assert!(inspect_network(&u.macvlan()).is_none());
    assert!(containers_with_label(&w.instance_label()).is_empty());
    assert!(networks_with_label(&w.instance_label()).is_empty());
    assert_eq!(w.read_state("runtime_vnics.json").unwrap(), "{}");
}
