//! Runtimes adopted from the Python agent get the restart policy `unless-stopped`, against the real
//! engine. The Python agent (upstream §5.3) created runtimes with `always`, which the engine restarts
//! at every daemon start whatever the agent recorded, so a `stop_device` would not survive a reboot.
//! The boot reconcile switches every owned runtime to `unless-stopped`, and a `stop_device` does so
//! first when the reconcile has not (yet); containers that are not ours keep their policy.
//!
//! Each test makes its containers the way the Python agent did (no agent labels, `--restart
//! always`) plus a `runtime_vnics.json` in a temp state dir in the upstream format. The vNIC names a
//! parent interface that does not exist, so the reconcile's network work only logs. Containers use
//! `--network none`: no traffic leaves them. Guards remove them even when a test fails.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::Duration;

use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::{Power, RuntimeConfig, Runtimes};
use support::{ContainerGuard, IMAGE, docker_try, inspect, poll, require_engine, unique};

/// How long the background reconcile may take to reach a runtime.
const PATIENCE: Duration = Duration::from_secs(20);

/// `docker run -d` (or `create`) with `--restart always` and no agent labels, as the Python agent
/// made runtimes; removed on drop.
fn python_style_container(name: &str, start: bool) -> ContainerGuard {
    let options = ["--restart", "always", "--network", "none"];
    let guard = if start {
        ContainerGuard::run(name, &options, IMAGE, &[])
    } else {
        ContainerGuard::create(name, &options, IMAGE, &[])
    };
    assert_eq!(restart_policy(name).as_deref(), Some("always"));
    guard
}

fn restart_policy(name: &str) -> Option<String> {
    docker_try(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}}",
        name,
    ])
}

/// A state dir holding `runtime_vnics.json` as the Python agent wrote it (`json.dump(indent=2)`).
fn python_state_dir(runtime: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = format!("nopar{}", std::process::id() % 1_000_000);
    let vnics = serde_json::json!({
        runtime: [{"name": "eth0", "parent_interface": parent, "network_mode": "dhcp"}]
    });
    let text = serde_json::to_string_pretty(&vnics).expect("json");
    std::fs::write(dir.path().join("runtime_vnics.json"), text).expect("write runtime_vnics.json");
    dir
}

async fn open(state: &tempfile::TempDir) -> Runtimes {
    let docker = docker_api::Docker::from_env().expect("DOCKER_HOST");
    Runtimes::open(
        docker,
        InterfaceCache::new(),
        RuntimeConfig::new(state.path()),
    )
    .await
    .expect("open the runtime service")
}

#[tokio::test]
async fn boot_reconcile_switches_an_adopted_runtime_to_unless_stopped_and_leaves_foreign_ones() {
    require_engine(IMAGE);
    let adopted = unique("adopt-py");
    let foreign = unique("adopt-foreign");
    let _adopted = python_style_container(&adopted, false);
    let _foreign = python_style_container(&foreign, false);
    let state = python_state_dir(&adopted);

    let rt = open(&state).await;
    rt.start_background();
    let policy = poll(PATIENCE, || {
        restart_policy(&adopted).filter(|p| p == "unless-stopped")
    })
    .await;
    rt.shutdown();
    assert_eq!(
        policy.as_deref(),
        Some("unless-stopped"),
        "the reconcile did not switch the adopted runtime {adopted} within {PATIENCE:?}"
    );
    assert_eq!(
        restart_policy(&foreign).as_deref(),
        Some("always"),
        "a container that is not ours had its restart policy changed"
    );
}

#[tokio::test]
async fn stop_device_of_an_adopted_runtime_switches_it_to_unless_stopped_first() {
    require_engine(IMAGE);
    let adopted = unique("adopt-pystop");
    let _adopted = python_style_container(&adopted, true);
    let state = python_state_dir(&adopted);

    // No start_background: the stop alone must fix the policy (an agent that has not reconciled).
    let rt = open(&state).await;
    rt.power(&adopted, Power::Stop)
        .await
        .expect("stop_device succeeds");

    let state_of = inspect(&adopted).map(|c| c["State"]["Running"].clone());
    assert_eq!(state_of, Some(serde_json::json!(false)));
    assert_eq!(
        restart_policy(&adopted).as_deref(),
        Some("unless-stopped"),
        "a stopped adopted runtime keeps `always` and would be restarted at the next boot"
    );
    let stopped = std::fs::read_to_string(state.path().join("stopped_runtimes.json"))
        .expect("the stop is recorded");
    assert!(stopped.contains(&adopted), "{stopped}");
}

/// Issue 12 item 4, as issue 14 changed it: a runtime the original agent (HEAD) attached to a
/// Wi-Fi parent through its proxy-ARP bridge is adopted and its Wi-Fi vNIC managed like this
/// agent's own (bridge rebuilt through netmon; `tests/runtime_wifi.rs`): the status shows the
/// original's pseudo-network from the bridge the original recorded, and no warning that it is
/// not managed.
#[tokio::test]
async fn an_adopted_proxy_arp_vnic_is_shown_as_the_originals_wifi_pseudo_network() {
    require_engine(IMAGE);
    let adopted = unique("adopt-pywifi");
    let _adopted = python_style_container(&adopted, true);
    let state = tempfile::tempdir().expect("tempdir");
    let vnics = serde_json::json!({
        &adopted: [{"name": "wifi0", "parent_interface": "wlan0", "network_mode": "dhcp",
            "_interface_type": "wifi", "_is_wifi": true, "_network_method": "proxy_arp",
            "dhcp_ip": "192.168.77.40", "dhcp_gateway": "192.168.77.1",
            "_proxy_arp_config": {"veth_host": "veth-adopt-py", "veth_container": "eth1",
                "ip_address": "192.168.77.40", "gateway": "192.168.77.1",
                "parent_interface": "wlan0"}}]
    });
    std::fs::write(
        state.path().join("runtime_vnics.json"),
        serde_json::to_string_pretty(&vnics).expect("json"),
    )
    .expect("write runtime_vnics.json");

    let rt = open(&state).await;
    let status = rt.device_status(&adopted).await.expect("status");
    assert_eq!(status["status"], "success", "{status:?}");
    assert_eq!(
        status["networks"]["wifi_wlan0_wifi0"],
        serde_json::json!({"ip_address": "192.168.77.40", "mac_address": null,
            "gateway": "192.168.77.1"}),
        "{status:?}"
    );
}
