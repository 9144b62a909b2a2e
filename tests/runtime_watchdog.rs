//! The lifecycle watchdog, the original's hardening and MACs that stay, on the real engine (run on
//! each engine of the matrix by the test command): a runtime killed from the host runs again, one
//! that crashes in a loop ends stopped and reported, `stop_device` is never undone, the hardening is
//! in `docker inspect`, a vNIC without a MAC keeps the one it was given, a runtime down at boot starts
//! once netmon discovered the network.

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

use serde_json::{Value, json};
use support::*;

/// The host PID of the runtime's main process (0 when it does not run).
fn pid_of(name: &str) -> i64 {
    inspect(name).expect("container exists")["State"]["Pid"]
        .as_i64()
        .unwrap_or(0)
}

/// `kill -9` of the runtime's main process from the host: a crash as the engine sees it.
fn kill_from_host(name: &str) -> i64 {
    let pid = pid_of(name);
    assert!(pid > 0, "{name} does not run");
    let ok = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -9 {pid}");
    pid
}

/// Waits until the runtime runs with another process than `old_pid`.
async fn runs_again(name: &str, old_pid: i64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let pid = pid_of(name);
        if pid > 0 && pid != old_pid {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The MAC of the runtime's endpoint on `network`.
fn endpoint_mac(name: &str, network: &str) -> String {
    inspect(name).expect("container exists")["NetworkSettings"]["Networks"][network]["MacAddress"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_killed_from_the_host_runs_again() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtwdkill");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;

    let old = kill_from_host(&name);
    assert!(
        runs_again(&name, old, Duration::from_secs(30)).await,
        "{name} did not run again after kill -9\n{}",
        w.logs()
    );
    let s = w.wait_status(&name, |s| s["recent_crashes"] == 1).await;
    assert_eq!(s["is_running"], true, "{s}");
    assert_eq!(s["crash_loop"], false, "{s}");
    assert_eq!(s["last_exit_code"], 137, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_stopped_behind_the_agents_back_is_started_again() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtwdstop");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    let old = pid_of(&name);
    // A manual stop on the host: the engine's restart policy leaves it stopped; the agent was not
    // asked to stop it, so the watchdog's sweep starts it again.
    docker(&["stop", "-t", "1", &name]);
    assert!(
        runs_again(&name, old, Duration::from_secs(40)).await,
        "{name} stayed stopped\n{}",
        w.logs()
    );
    let s = w
        .wait_status(&name, |s| s["watchdog_starts"].as_u64() >= Some(1))
        .await;
    assert_eq!(s["is_running"], true, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_ends_stopped_and_reported_until_start_device() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtwdloop");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;

    // Five crashes within the window (the original's limit): each time the engine restarts it.
    for i in 0..5 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while pid_of(&name) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not running before crash {i}\n{}",
                w.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill_from_host(&name);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = w.wait_status(&name, |s| s["crash_loop"] == true).await;
    assert_eq!(s["status"], "success", "{s}");
    assert_eq!(s["last_exit_code"], 137, "{s}");
    assert!(
        s["crash_loop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("crash loop"),
        "{s}"
    );
    assert!(s.get("log_tail").is_some(), "{s}");
    // It stays stopped: past the engine's backoff and the watchdog's sweep.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let s = w.status(&name).await;
    assert_eq!(s["is_running"], false, "{s}\n{}", w.logs());
    assert_eq!(inspect(&name).unwrap()["State"]["Running"], false);
    let stopped: Value =
        serde_json::from_str(&w.read_state("stopped_runtimes.json").unwrap()).unwrap();
    assert!(
        stopped.as_array().unwrap().contains(&json!(name)),
        "{stopped}"
    );

    // start_device: a person tries again, the count starts over.
    let ack = w.call("start_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    let s = w.status(&name).await;
    assert_eq!(s["is_running"], true, "{s}");
    assert_eq!(s["crash_loop"], false, "{s}");
    assert_eq!(s["recent_crashes"], 0, "{s}");
}

/// After an agent restart (a reboot, as far as the agent sees it), a runtime that should run and does
/// not is started once the network is ready (netmon's discovery), not before: the watchdog's starts
/// are held until then too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_down_at_boot_starts_once_netmon_discovered_the_network() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtwdboot");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    w.kill_agent().await;
    // Down without a request while the agent is away (as a start that failed at engine boot).
    docker(&["stop", "-t", "1", &name]);
    w.stop_netmon();
    w.start_agent().await;
    eventually(SLOW, "the held start", || {
        w.logs().contains("once the network is ready").then_some(())
    })
    .await;
    // Longer than the watchdog's first retry; no discovery yet, so nothing starts it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        inspect(&name).unwrap()["State"]["Running"],
        false,
        "started before the network was ready:\n{}",
        w.logs()
    );
    w.start_netmon().await;
    eventually(
        SLOW,
        "the runtime to be started after the discovery",
        || (inspect(&name).unwrap()["State"]["Running"] == true).then_some(()),
    )
    .await;
    w.wait_boot_reconcile().await;
    let s = w.status(&name).await;
    assert_eq!(s["is_running"], true, "{s}");
    assert_eq!(s["crash_loop"], false, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_device_is_never_undone() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtwdkeep");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    let ack = w.call("stop_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    // Longer than the watchdog's sweep period.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(inspect(&name).unwrap()["State"]["Running"], false);
    let s = w.status(&name).await;
    assert_eq!(s["is_running"], false, "{s}");
    assert_eq!(s["recent_crashes"], 0, "{s}");
    assert!(s.get("watchdog_starts").is_none(), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_get_the_originals_hardening() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rthard");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    let c = inspect(&name).unwrap();
    let hc = &c["HostConfig"];
    assert_eq!(hc["CapAdd"], json!(["SYS_NICE", "MKNOD"]), "{hc}");
    let ulimits: Vec<(String, i64, i64)> = hc["Ulimits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| {
            (
                u["Name"].as_str().unwrap().to_owned(),
                u["Soft"].as_i64().unwrap(),
                u["Hard"].as_i64().unwrap(),
            )
        })
        .collect();
    // What this engine accepts (an engine without CAP_SYS_RESOURCE refuses rtprio 99 at start):
    // the agent applies exactly those and reports the others.
    let accepts = |ulimit: &str| {
        docker_try(&[
            "run",
            "--rm",
            "--label",
            "orchestrator-test=1",
            "--network",
            "none",
            "--ulimit",
            ulimit,
            LOCAL_IMAGE,
            "true",
        ])
        .is_some()
    };
    let mut want = Vec::new();
    if accepts("rtprio=99:99") {
        want.push(("rtprio".to_owned(), 99, 99));
    }
    if accepts("memlock=-1:-1") {
        want.push(("memlock".to_owned(), -1, -1));
    }
    assert_eq!(ulimits, want, "{hc}");
    let s = w.status(&name).await;
    let warnings = s["warnings"].to_string();
    for name in ["rtprio", "memlock"] {
        let applied = want.iter().any(|(n, _, _)| n == name);
        assert_eq!(
            !applied,
            warnings.contains(&format!("ulimit {name}"))
                || warnings.contains(&format!("and {name}")),
            "{name}: a limit not applied is reported, an applied one is not: {s}"
        );
    }
    // The limits are in force inside the runtime (busybox sh reports them).
    for (limit, flag, value) in [("rtprio", "-r", "99"), ("memlock", "-l", "unlimited")] {
        if want.iter().any(|(n, _, _)| n == limit) {
            let got = docker(&["exec", &name, "sh", "-c", &format!("ulimit {flag}")]);
            assert_eq!(got.trim(), value, "{limit}");
        }
    }
    assert_eq!(
        hc["DeviceCgroupRules"],
        json!(["c 188:* rmw", "c 166:* rmw", "c 4:* rmw"]),
        "{hc}"
    );
    assert_eq!(hc["Privileged"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vnic_without_a_mac_keeps_the_one_it_was_given() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtmac");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;

    let vnics: Value = serde_json::from_str(&w.read_state("runtime_vnics.json").unwrap()).unwrap();
    // The request's key style: this vNIC is of the 3d2c700 form (`mac_address`).
    let mac = vnics[&name][0]["mac_address"]
        .as_str()
        .expect("a MAC persisted for the vNIC")
        .to_owned();
    let first: u8 = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 0b11, 0b10, "locally administered unicast: {mac}");
    assert_eq!(endpoint_mac(&name, &v.macvlan()), mac);

    // restart_device, a crash, and the agent restarting keep it.
    let ack = w.call("restart_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(endpoint_mac(&name, &v.macvlan()), mac);
    let old = kill_from_host(&name);
    assert!(runs_again(&name, old, Duration::from_secs(30)).await);
    assert_eq!(endpoint_mac(&name, &v.macvlan()), mac);
    w.kill_agent().await;
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    let vnics: Value = serde_json::from_str(&w.read_state("runtime_vnics.json").unwrap()).unwrap();
    assert_eq!(vnics[&name][0]["mac_address"], mac.as_str());
    assert_eq!(endpoint_mac(&name, &v.macvlan()), mac);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_mac_already_used_on_the_parent_is_refused() {
    let mut w = World::start().await;
    let v = Veth::new();
    let first = unique("rtmaca");
    let second = unique("rtmacb");
    let mac = "02:ab:cd:00:00:42";
    w.create_runtime(&first, json!([dhcp_vnic(&v, Some(mac))]))
        .await;
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": second, "vnic_configs": [dhcp_vnic(&v, Some(mac))]}),
        )
        .await;
    assert_eq!(ack["status"], "error", "{ack}");
    let error = ack["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("vnic_configs[0].mac_address")
            && error.contains(mac)
            && error.contains(&first),
        "{ack}"
    );
    assert!(inspect(&second).is_none(), "nothing was created");
}
