//! The engine is the truth at start-up: a runtime survives an agent restart whatever happened to the
//! state files (missing, `{}`, zero bytes, corrupt), with the same container, not restarted, its
//! entries rebuilt from the engine and reported; and the boot reconcile removes exactly what a
//! recorded-but-uncommitted create made (at once, without a graceful stop), never a runtime.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use serde_json::{Value, json};
use support::*;

fn state_json(w: &World, rel: &str) -> Value {
    w.read_state(rel)
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_survives_every_kind_of_state_file_loss() {
    let mut w = World::start().await;
    let a = Veth::new();
    let b = Veth::new();
    let name = unique("rtloss");
    w.create_runtime(
        &name,
        json!([
            static_vnic(&a, 21, Some("02:ab:00:00:00:21")),
            dhcp_vnic(&b, None)
        ]),
    )
    .await;
    let before = inspect(&name).expect("the runtime exists");
    let id = before["Id"].clone();
    let started = before["State"]["StartedAt"].clone();
    let vnics = state_json(&w, "runtime_vnics.json")[&name].clone();
    let registry = state_json(&w, "data/clients.json")[&name].clone();
    assert!(
        vnics.is_array() && registry.is_object(),
        "{vnics} {registry}"
    );

    let damages: [(&str, Option<&[u8]>); 4] = [
        ("missing", None),
        ("empty object", Some(b"{}")),
        ("zero bytes", Some(b"")),
        (
            "corrupt",
            Some(b"{\"plc\": [{\"name\": \"eth0\", \"parent_inter"),
        ),
    ];
    for (what, content) in damages {
        w.kill_agent().await;
        let path = w.state_dir.join("runtime_vnics.json");
        match content {
            None => std::fs::remove_file(&path).expect("remove the vNIC file"),
            Some(bytes) => std::fs::write(&path, bytes).expect("damage the vNIC file"),
        }
        // The registry goes too: it is rebuilt from the engine as well.
        let _ = std::fs::remove_file(w.state_dir.join("data/clients.json"));
        w.start_agent().await;
        w.wait_boot_reconcile().await;

        let now = inspect(&name)
            .unwrap_or_else(|| panic!("{what}: the runtime was removed\n{}", w.logs()));
        assert_eq!(now["Id"], id, "{what}: same container");
        assert_eq!(now["State"]["Running"], true, "{what}: still running");
        assert_eq!(now["State"]["StartedAt"], started, "{what}: not restarted");
        assert_eq!(
            state_json(&w, "runtime_vnics.json")[&name],
            vnics,
            "{what}: the vNIC entry is rebuilt as it was\n{}",
            w.logs()
        );
        assert_eq!(
            state_json(&w, "data/clients.json")[&name],
            registry,
            "{what}: the registry entry is rebuilt"
        );
        let s = w.settle(&name).await;
        assert_eq!(s["status"], "success", "{what}: {s}");
        assert_eq!(s["is_running"], true, "{what}: {s}");
        let o = w.status("__orchestrator__").await;
        let warnings = o["state_warnings"].to_string();
        assert!(
            warnings.contains(&name) && warnings.contains("rebuilt"),
            "{what}: the state warning says what was rebuilt: {o}"
        );
    }

    // Still fully operable afterwards: the rebuilt entry is what a delete works from.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    assert_eq!(w.settle(&name).await["status"], "not_found");
    assert!(inspect(&name).is_none());
}

/// Labels of this world's objects, as the agent writes them.
fn labels(w: &World, role: &str, runtime: Option<&str>, create_id: Option<&str>) -> Vec<String> {
    let mut l = vec![
        "edge.autonomy.managed-by=orchestrator-agent".to_owned(),
        format!("edge.autonomy.instance={}", w.instance()),
        format!("edge.autonomy.role={role}"),
    ];
    if let Some(r) = runtime {
        l.push(format!("edge.autonomy.runtime={r}"));
    }
    if let Some(c) = create_id {
        l.push(format!("edge.autonomy.create-id={c}"));
    }
    l.into_iter()
        .flat_map(|l| ["--label".to_owned(), l])
        .collect()
}

fn run_docker(mut args: Vec<String>, tail: &[&str]) {
    args.extend(tail.iter().map(|s| (*s).to_owned()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boot_reconcile_undoes_recorded_creates_and_keeps_unrecorded_runtimes() {
    let mut w = World::prepare().await;
    let v = Veth::new();
    let interrupted = unique("rtintr");
    let late = unique("rtlate");
    let kept = unique("rtkept");
    let lonely = unique("rtlone");

    // An interrupted create, recorded in the journal: its internal network and its container
    // (running, and ignoring SIGTERM as PID 1 does) carry its create id.
    let internal = format!("{interrupted}_internal");
    let mut a = vec!["network".into(), "create".into(), "--internal".into()];
    a.extend(labels(&w, "internal-network", Some(&interrupted), None));
    run_docker(a, &[&internal]);
    let mut a = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        interrupted.clone(),
    ];
    a.extend(["--network".into(), internal.clone()]);
    a.extend(labels(&w, "runtime", Some(&interrupted), Some("c0ffee01")));
    run_docker(a, &[LOCAL_IMAGE]);
    // A container of a create that was undone earlier, which the engine made late.
    let mut a = vec!["create".into(), "--name".into(), late.clone()];
    a.extend(labels(&w, "runtime", Some(&late), Some("deadbeef")));
    run_docker(a, &[LOCAL_IMAGE]);
    // A runtime of ours the state files do not list (lost files): kept, never removed. Its parent
    // does not exist here, so no re-home attaches it to the MACVLAN network below.
    let kept_vnics =
        json!([{"name": "eth0", "parent_interface": "nolink0", "network_mode": "dhcp"}]);
    let mut a = vec!["run".into(), "-d".into(), "--name".into(), kept.clone()];
    a.extend(labels(&w, "runtime", Some(&kept), Some("00000001")));
    a.extend([
        "--label".into(),
        format!("edge.autonomy.vnics={kept_vnics}"),
    ]);
    run_docker(a, &[LOCAL_IMAGE]);
    // An internal network whose container was never made, and a MACVLAN network nobody uses.
    let mut a = vec!["network".into(), "create".into(), "--internal".into()];
    a.extend(labels(&w, "internal-network", Some(&lonely), None));
    run_docker(a, &[&format!("{lonely}_internal")]);
    let mut a = vec![
        "network".into(),
        "create".into(),
        "-d".into(),
        "macvlan".into(),
        "--subnet".into(),
        v.subnet(),
        "-o".into(),
        format!("parent={}", v.name),
    ];
    a.extend(labels(&w, "macvlan-network", None, None));
    run_docker(a, &[&v.macvlan()]);
    // Someone else's unlabelled network on the same pattern is left alone.
    let foreign_net = NetworkGuard::internal(&format!("{}_internal", unique("rtother")), &[]);

    let journal = json!({
        "operations": {&interrupted: {"operation": "create", "create_id": "c0ffee01",
                                      "started_at": "2026-12-01T10:00:00.000000+00:00"}},
        "aborted_creates": [{"runtime": &late, "create_id": "deadbeef",
                             "at": "2026-12-01T09:00:00.000000+00:00"}]
    });
    std::fs::write(
        w.state_dir.join("pending_operations.json"),
        journal.to_string(),
    )
    .expect("write the journal");
    let interrupted_id = inspect(&interrupted).expect("made")["Id"]
        .as_str()
        .expect("id")
        .to_owned();

    w.start_agent().await;
    w.wait_boot_reconcile().await;
    for gone in [&interrupted, &late] {
        assert!(inspect(gone).is_none(), "{gone} is left\n{}", w.logs());
    }
    assert!(inspect_network(&internal).is_none());
    assert!(inspect_network(&format!("{lonely}_internal")).is_none());
    assert!(inspect_network(&v.macvlan()).is_none());
    assert!(inspect_network(&foreign_net.name).is_some());
    // Nothing that committed ran in it: killed at once, no graceful stop.
    let logs = w.logs();
    assert!(
        !logs.contains(&format!("/containers/{interrupted_id}/stop")),
        "the interrupted create was stopped gracefully\n{logs}"
    );
    let journal = state_json(&w, "pending_operations.json");
    assert_eq!(journal["operations"], json!({}), "{journal}");
    assert!(
        journal["aborted_creates"].to_string().contains("c0ffee01"),
        "the undone create is remembered: {journal}"
    );
    assert_eq!(w.settle(&interrupted).await["status"], "not_found");

    // The unrecorded runtime is kept, running, with its entry rebuilt.
    let k = inspect(&kept).expect("kept");
    assert_eq!(k["State"]["Running"], true);
    assert_eq!(state_json(&w, "runtime_vnics.json")[&kept], kept_vnics);
    assert_eq!(w.settle(&kept).await["status"], "success");
}
