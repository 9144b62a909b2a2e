//! Ownership holes closed (spec §2 "The agent touches only what it owns", "Every input is
//! validated before Docker sees it"): a re-home never touches a container that merely carries a
//! runtime's name, a create never reuses someone else's `<name>_internal`, and device ids that are
//! not Docker names never reach the engine.

mod support;

use orchestrator_agent::contract::{DeleteDeviceRequest, DeviceRequest, RunCommandRequest};
use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::{RuntimeConfig, Runtimes};
use orchestrator_agent::topics::RuntimeOps;
use serde_json::json;

/// A service whose engine socket does not exist: any engine call fails with a transport error,
/// so "not found" proves the id was refused before Docker saw it.
async fn service_without_engine() -> (Runtimes, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp state dir");
    let docker = docker_api::Docker::new(docker_api::DockerConfig::unix(
        dir.path().join("no-engine.sock"),
    ));
    let rt = Runtimes::open(
        docker,
        InterfaceCache::new(),
        RuntimeConfig::new(dir.path()),
    )
    .await
    .expect("state dir opens");
    (rt, dir)
}

#[tokio::test]
async fn device_ids_that_are_not_docker_names_are_not_found_without_asking_the_engine() {
    let (rt, _dir) = service_without_engine().await;
    for id in ["..", "a/b", "../../v1.41/containers/x", "-x", "plc1?all=1"] {
        let dev = || {
            let m = json!({"correlation_id": 1, "device_id": id});
            DeviceRequest::parse(m.as_object().expect("object")).expect("valid")
        };
        let del = json!({"correlation_id": 1, "device_id": id});
        let del = DeleteDeviceRequest::parse(del.as_object().expect("object")).expect("valid");
        let e = rt.delete(del).await.expect_err("delete refused");
        assert!(e.0.contains("not found"), "delete {id}: {}", e.0);
        for (what, r) in [
            ("stop", rt.stop(dev()).await),
            ("start", rt.start(dev()).await),
            ("restart", rt.restart(dev()).await),
        ] {
            let e = r.expect_err("refused");
            assert!(e.0.contains("not found"), "{what} {id}: {}", e.0);
        }
        let status = rt.device_status(dev()).await.expect("a not-found status");
        assert_eq!(status["status"], "not_found", "status {id}: {status:?}");
        let cmd = RunCommandRequest::parse(&[json!({
            "correlation_id": 1, "device_id": id, "method": "GET", "api": "/x"
        })])
        .expect("valid");
        let e = rt.run_command(cmd).await.expect_err("refused");
        assert!(
            e.0.contains(&format!("Device not found: {id}")),
            "run_command {id}: {}",
            e.0
        );
    }
}
