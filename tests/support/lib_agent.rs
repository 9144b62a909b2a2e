//! The agent's library stack in-process on a fresh state dir: the real engine, a real netmon feeding
//! the interface cache, and the runtime service (`Runtimes`) — everything the cloud topics call,
//! without the cloud link. Dropping it shuts the service down and removes what it made.

use std::time::Duration;

use orchestrator_agent::netevents::{self, InterfaceCache};
use orchestrator_agent::runtime::{Outcome, RuntimeConfig, Runtimes, spec};
use serde_json::Value;

use super::engine::{InstanceCleanup, SERVER_IMAGE_LOOPBACK, require_engine};
use super::netmon::Netmon;
use super::wait::{SLOW, eventually};

pub struct LibAgent {
    pub rt: Runtimes,
    _cleanup: InstanceCleanup,
    _netmon: Netmon,
    /// The state dir (dropped last).
    pub dir: tempfile::TempDir,
}

impl LibAgent {
    /// Runtimes run the test server image (under its loopback-registry name).
    pub async fn start() -> Self {
        require_engine(SERVER_IMAGE_LOOPBACK);
        let dir = tempfile::tempdir().expect("temp state dir");
        let cleanup = InstanceCleanup {
            instance: dir.path().to_string_lossy().into_owned(),
        };
        let socket = dir.path().join("netmon.sock");
        let netmon = Netmon::start(&socket).await;
        let cache = InterfaceCache::new();
        netevents::spawn_listener(socket, cache.clone());
        let docker = docker_api::Docker::from_env().expect("docker client");
        let mut config = RuntimeConfig::new(dir.path());
        config.runtime_image = SERVER_IMAGE_LOOPBACK.to_string();
        let rt = Runtimes::open(docker, cache.clone(), config)
            .await
            .expect("state dir opens");
        eventually(Duration::from_secs(20), "netmon's discovery", || {
            cache.is_discovered().then_some(())
        })
        .await;
        Self {
            rt,
            _cleanup: cleanup,
            _netmon: netmon,
            dir,
        }
    }

    /// Creates a runtime through the real create workflow and waits for its outcome.
    pub async fn create(&self, name: &str, vnics: Value) {
        self.rt
            .create(create_spec(name, vnics))
            .await
            .expect("create accepted");
        let ops = self.rt.ops().clone();
        let record = eventually(SLOW, "create", || {
            ops.get(name).filter(|r| r.outcome != Outcome::Running)
        })
        .await;
        assert_eq!(
            record.outcome,
            Outcome::Succeeded,
            "create failed: {record:?}"
        );
    }

    /// The persisted vNIC objects of `name`.
    pub async fn vnics(&self, name: &str) -> Vec<Value> {
        self.rt.state().vnics_of(name).await.unwrap_or_default()
    }
}

impl Drop for LibAgent {
    fn drop(&mut self) {
        self.rt.shutdown();
    }
}

/// The validated create of runtime `name` with the vNIC objects `vnics` (a JSON array), as the
/// create topic builds it.
pub fn create_spec(name: &str, vnics: Value) -> spec::CreateSpec {
    let vnics: Vec<serde_json::Map<String, Value>> = vnics
        .as_array()
        .expect("a vNIC array")
        .iter()
        .map(|v| v.as_object().expect("a vNIC object").clone())
        .collect();
    spec::parse_create(name, &vnics, None).expect("valid create request")
}
