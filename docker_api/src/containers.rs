//! Container endpoints (`/containers/*`): create, start, stop, restart, kill, remove, inspect, list,
//! update (restart policy) and one-shot stats, with the request shapes the agent needs and no more. Version-dependent
//! shapes (MAC addresses) are checked against the negotiated API before anything is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Docker, seg, to_json};
use crate::encode;
use crate::error::{Error, Result};
use crate::filters::Filters;
use crate::networks::{EndpointConfig, EndpointSettings};
use crate::serde_util::nullable;

/// `POST /containers/create` body (the name goes in the query).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreate {
    /// Image reference (`repo:tag`) or id.
    pub image: String,
    /// Command; `None` keeps the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Labels (ownership marks).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Host name inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Container-wide MAC for the `HostConfig.network_mode` network: the only way to set a MAC at
    /// create before API 1.44; refused ([`Error::Unsupported`]) from 1.52, where it was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Host-side settings.
    pub host_config: HostConfig,
    /// Endpoints to attach at create, by network name. Before API 1.44 at most one (the
    /// `network_mode` one) and without `mac_address`; both are refused rather than ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networking_config: Option<NetworkingConfig>,
}

/// `HostConfig` fields the agent sets.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// Restart policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// The network the container starts on (`bridge`, `none`, a network name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Added capabilities (`NET_ADMIN`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Resource limits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Device cgroup rules (`c 188:* rmw`): devices the container may create and use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// Logging driver and its options (e.g. `max-size`, `max-file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfig>,
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// Policy.
    pub name: RestartPolicyName,
    /// Retries for `on-failure` (0 = unlimited).
    pub maximum_retry_count: u32,
}

/// Restart policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RestartPolicyName {
    /// Never restart.
    #[serde(rename = "no")]
    No,
    /// Always restart, also after the daemon restarts.
    #[serde(rename = "always")]
    Always,
    /// Restart unless explicitly stopped (survives reboots, respects `stop`).
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
    /// Restart on non-zero exit.
    #[serde(rename = "on-failure")]
    OnFailure,
}

/// One `HostConfig.Ulimits` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    /// Name (`nofile`, `rtprio`, `memlock`, …).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// `HostConfig.LogConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    /// Driver (`json-file`, `local`, …).
    #[serde(rename = "Type")]
    pub kind: String,
    /// Driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// `NetworkingConfig` of a create request.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkingConfig {
    /// Endpoints by network name.
    pub endpoints_config: BTreeMap<String, EndpointConfig>,
}

/// `POST /containers/create` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerCreated {
    /// The new container's id.
    pub id: String,
    /// Engine warnings.
    #[serde(default, deserialize_with = "nullable")]
    pub warnings: Vec<String>,
}

/// `POST /containers/{id}/update` body: the settings the agent changes on an existing container.
/// Fields left `None` are not sent, so the engine keeps their current values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerUpdate {
    /// New restart policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
}

/// `POST /containers/{id}/update` answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerUpdated {
    /// Engine warnings.
    #[serde(default, deserialize_with = "nullable")]
    pub warnings: Vec<String>,
}

/// Options of `DELETE /containers/{id}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveContainerOptions {
    /// Kill a running container first.
    pub force: bool,
    /// Remove its anonymous volumes too.
    pub volumes: bool,
}

/// `GET /containers/{id}/json`, the fields the agent uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerInspect {
    /// Id.
    pub id: String,
    /// Name with the engine's leading `/`.
    #[serde(default)]
    pub name: String,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// Image id.
    #[serde(default)]
    pub image: String,
    /// Run state.
    pub state: ContainerState,
    /// Restarts done by the restart policy.
    #[serde(default)]
    pub restart_count: u64,
    /// Configuration.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Host configuration.
    #[serde(default)]
    pub host_config: HostConfigInspect,
    /// Network attachment.
    #[serde(default)]
    pub network_settings: NetworkSettings,
}

impl ContainerInspect {
    /// The name without the engine's leading `/`.
    pub fn short_name(&self) -> &str {
        self.name.strip_prefix('/').unwrap_or(&self.name)
    }
}

/// `State` of a container.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerState {
    /// Coarse status.
    pub status: ContainerStatus,
    /// Running (also true while paused).
    #[serde(default)]
    pub running: bool,
    /// Paused.
    #[serde(default)]
    pub paused: bool,
    /// Being restarted by its policy.
    #[serde(default)]
    pub restarting: bool,
    /// Killed for lack of memory.
    #[serde(default, rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Main process id (0 when not running).
    #[serde(default)]
    pub pid: i64,
    /// Last exit code.
    #[serde(default)]
    pub exit_code: i64,
    /// Last start error.
    #[serde(default)]
    pub error: String,
    /// Last start (RFC 3339; `0001-01-01T00:00:00Z` if never).
    #[serde(default)]
    pub started_at: String,
    /// Last stop (RFC 3339; `0001-01-01T00:00:00Z` if never).
    #[serde(default)]
    pub finished_at: String,
    /// Health check state, when the image defines one.
    #[serde(default)]
    pub health: Option<Health>,
}

/// `State.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Dead (removal failed).
    Dead,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

/// `State.Health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Health {
    /// `starting`, `healthy`, `unhealthy`, `none`.
    #[serde(default)]
    pub status: String,
    /// Consecutive failed checks.
    #[serde(default)]
    pub failing_streak: u32,
}

/// `Config` of an inspected container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerConfig {
    /// Image reference as given at create.
    #[serde(default)]
    pub image: String,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Environment.
    #[serde(default, deserialize_with = "nullable")]
    pub env: Vec<String>,
    /// Command.
    #[serde(default, deserialize_with = "nullable")]
    pub cmd: Vec<String>,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
}

/// `HostConfig` of an inspected container (the fields reconciliation looks at).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct HostConfigInspect {
    /// Network mode.
    #[serde(default)]
    pub network_mode: String,
    /// Restart policy name (`""`, `no`, `always`, `unless-stopped`, `on-failure`).
    #[serde(default)]
    pub restart_policy: RestartPolicyInspect,
    /// DNS servers given at create (`null` when none).
    #[serde(default, deserialize_with = "nullable")]
    pub dns: Vec<String>,
    /// Resource limits given at create (`null` when none).
    #[serde(default, deserialize_with = "nullable")]
    pub ulimits: Vec<UlimitInspect>,
}

/// One ulimit as inspect reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct UlimitInspect {
    /// Name (`rtprio`, `memlock`, …).
    #[serde(default)]
    pub name: String,
}

/// Restart policy as inspect reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct RestartPolicyInspect {
    /// Name (may be empty = `no`).
    #[serde(default)]
    pub name: String,
    /// Retry count.
    #[serde(default)]
    pub maximum_retry_count: u32,
}

/// `NetworkSettings` of an inspected container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct NetworkSettings {
    /// Endpoints by network name.
    #[serde(default, deserialize_with = "nullable")]
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ContainerSummary {
    /// Id.
    pub id: String,
    /// Names, each with a leading `/`.
    #[serde(default, deserialize_with = "nullable")]
    pub names: Vec<String>,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Creation time (Unix seconds).
    #[serde(default)]
    pub created: i64,
    /// Coarse state.
    pub state: ContainerStatus,
    /// Human status (`Up 2 minutes`).
    #[serde(default)]
    pub status: String,
    /// Labels.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Network attachment.
    #[serde(default)]
    pub network_settings: NetworkSettings,
}

impl ContainerSummary {
    /// The first name without its leading `/`.
    pub fn name(&self) -> Option<&str> {
        self.names.first().map(|n| n.strip_prefix('/').unwrap_or(n))
    }
}

/// `GET /containers/{id}/stats?stream=false&one-shot=true`: the parts needed for CPU % and memory.
/// A one-shot sample has an empty `precpu_stats`; compare two samples with
/// [`ContainerStats::cpu_percent_since`].
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct ContainerStats {
    /// Sample time (RFC 3339).
    #[serde(default)]
    pub read: String,
    /// CPU counters now.
    #[serde(default)]
    pub cpu_stats: CpuStats,
    /// CPU counters of the previous cycle (zero in a one-shot sample).
    #[serde(default)]
    pub precpu_stats: CpuStats,
    /// Memory.
    #[serde(default)]
    pub memory_stats: MemoryStats,
}

/// CPU counters (nanoseconds).
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CpuStats {
    /// The container's usage.
    #[serde(default)]
    pub cpu_usage: CpuUsage,
    /// The host's total CPU time (absent when the container is stopped).
    #[serde(default)]
    pub system_cpu_usage: Option<u64>,
    /// CPUs online.
    #[serde(default)]
    pub online_cpus: Option<u32>,
}

/// The container's CPU time.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CpuUsage {
    /// Total CPU time consumed (ns).
    #[serde(default)]
    pub total_usage: u64,
    /// Per-CPU time (cgroup v1 only).
    #[serde(default, deserialize_with = "nullable")]
    pub percpu_usage: Vec<u64>,
}

/// Memory figures (bytes).
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Usage including page cache.
    #[serde(default)]
    pub usage: Option<u64>,
    /// Limit (host memory when unlimited).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Raw cgroup counters (`inactive_file` on cgroup v2, `total_inactive_file`/`cache` on v1).
    #[serde(default, deserialize_with = "nullable")]
    pub stats: BTreeMap<String, u64>,
}

impl ContainerStats {
    /// CPU % between `precpu_stats` and `cpu_stats` as `docker stats` computes it (100 % = one CPU
    /// fully busy). `None` when there is no previous sample (one-shot) or no host delta.
    pub fn cpu_percent(&self) -> Option<f64> {
        cpu_percent(&self.precpu_stats, &self.cpu_stats)
    }

    /// CPU % between an `earlier` sample and this one (for one-shot samples taken periodically).
    pub fn cpu_percent_since(&self, earlier: &ContainerStats) -> Option<f64> {
        cpu_percent(&earlier.cpu_stats, &self.cpu_stats)
    }

    /// Memory in use without inactive page cache, as `docker stats` shows it. `None` when the
    /// container is not running.
    pub fn memory_used_bytes(&self) -> Option<u64> {
        let usage = self.memory_stats.usage?;
        let s = &self.memory_stats.stats;
        let cache = s
            .get("inactive_file")
            .or_else(|| s.get("total_inactive_file"))
            .copied()
            .unwrap_or(0);
        Some(usage.saturating_sub(cache))
    }

    /// The memory limit in bytes (host memory when unlimited).
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        self.memory_stats.limit
    }
}

fn cpu_percent(before: &CpuStats, after: &CpuStats) -> Option<f64> {
    let sys_before = before.system_cpu_usage?;
    let sys_after = after.system_cpu_usage?;
    let sys_delta = sys_after.checked_sub(sys_before).filter(|d| *d > 0)?;
    let cpu_delta = after
        .cpu_usage
        .total_usage
        .saturating_sub(before.cpu_usage.total_usage);
    let cpus = after.online_cpus.filter(|n| *n > 0).unwrap_or_else(|| {
        u32::try_from(after.cpu_usage.percpu_usage.len().max(1)).unwrap_or(u32::MAX)
    });
    Some(cpu_delta as f64 / sys_delta as f64 * f64::from(cpus) * 100.0)
}

impl Docker {
    /// `POST /containers/create?name=…`. Shapes the negotiated API cannot honour are refused with
    /// [`Error::Unsupported`] before anything is sent: a per-endpoint `mac_address` or several
    /// endpoints below 1.44, a container-wide `mac_address` from 1.52. A taken name is
    /// [`Error::is_conflict`]; a missing image [`Error::is_not_found`].
    pub async fn create_container(
        &self,
        name: &str,
        spec: &ContainerCreate,
    ) -> Result<ContainerCreated> {
        let v = self.api_version().await?;
        let unsupported = |what: &str| Error::Unsupported {
            what: what.to_owned(),
            negotiated: v,
        };
        if spec.mac_address.is_some() && !v.supports_container_mac_address() {
            return Err(unsupported(
                "the container-wide MacAddress was removed in API 1.52; set it per endpoint",
            ));
        }
        if let Some(nc) = &spec.networking_config {
            if nc.endpoints_config.len() > 1 && !v.supports_multiple_networks_at_create() {
                return Err(unsupported(
                    "several networks at container create need API 1.44; connect the others later",
                ));
            }
            if nc
                .endpoints_config
                .values()
                .any(|e| e.mac_address.is_some())
                && !v.supports_endpoint_mac_at_create()
            {
                return Err(unsupported(
                    "a per-endpoint MacAddress at create needs API 1.44; use the container-wide one",
                ));
            }
        }
        seg(name)?;
        let body = to_json("container create", spec)?;
        let path = format!(
            "/containers/create{}",
            encode::query([("name", name.to_owned())])
        );
        self.call_json(Method::POST, &path, Some(body)).await
    }

    /// `POST /containers/{id}/start`. Starting a running container is success (the engine's 304
    /// "not modified" is mapped to `Ok`).
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let path = format!("/containers/{}/start", seg(id)?);
        not_modified_is_ok(
            self.call_empty(Method::POST, &path, None, Duration::ZERO)
                .await,
        )
    }

    /// `POST /containers/{id}/stop?t=<grace>`: SIGTERM, then SIGKILL after `grace` (whole seconds,
    /// rounded up). Stopping a stopped container is success (304 is mapped to `Ok`). The response
    /// timeout is extended by `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let path = format!(
            "/containers/{}/stop{}",
            seg(id)?,
            encode::query([("t", grace_secs(grace).to_string())])
        );
        not_modified_is_ok(self.call_empty(Method::POST, &path, None, grace).await)
    }

    /// `POST /containers/{id}/restart?t=<grace>` (stops with `grace`, then starts).
    pub async fn restart_container(&self, id: &str, grace: Duration) -> Result<()> {
        let path = format!(
            "/containers/{}/restart{}",
            seg(id)?,
            encode::query([("t", grace_secs(grace).to_string())])
        );
        self.call_empty(Method::POST, &path, None, grace).await
    }

    /// `POST /containers/{id}/kill?signal=…` (`None` = SIGKILL). A stopped container is a 409.
    pub async fn kill_container(&self, id: &str, signal: Option<&str>) -> Result<()> {
        let q = match signal {
            Some(s) => encode::query([("signal", s.to_owned())]),
            None => String::new(),
        };
        let path = format!("/containers/{}/kill{q}", seg(id)?);
        self.call_empty(Method::POST, &path, None, Duration::ZERO)
            .await
    }

    /// `DELETE /containers/{id}?force=…&v=…`.
    pub async fn remove_container(&self, id: &str, opts: RemoveContainerOptions) -> Result<()> {
        let path = format!(
            "/containers/{}{}",
            seg(id)?,
            encode::query([
                ("force", opts.force.to_string()),
                ("v", opts.volumes.to_string())
            ])
        );
        self.call_empty(Method::DELETE, &path, None, Duration::ZERO)
            .await
    }

    /// `POST /containers/{id}/update`: changes settings of an existing container (running or not)
    /// without re-creating it. A missing container is [`Error::is_not_found`]; a change the engine
    /// refuses (e.g. a restart policy on an `--rm` container) is a 400.
    pub async fn update_container(
        &self,
        id: &str,
        update: &ContainerUpdate,
    ) -> Result<ContainerUpdated> {
        let path = format!("/containers/{}/update", seg(id)?);
        let body = to_json("container update", update)?;
        self.call_json(Method::POST, &path, Some(body)).await
    }

    /// `GET /containers/{id or name}/json`.
    pub async fn inspect_container(&self, id: &str) -> Result<ContainerInspect> {
        let path = format!("/containers/{}/json", seg(id)?);
        self.call_json(Method::GET, &path, None).await
    }

    /// `GET /containers/{id or name}/json` as the engine wrote it, every field (diagnostics).
    pub async fn inspect_container_raw(&self, id: &str) -> Result<serde_json::Value> {
        let path = format!("/containers/{}/json", seg(id)?);
        self.call_json(Method::GET, &path, None).await
    }

    /// `GET /containers/json?all=…&filters=…`.
    pub async fn list_containers(
        &self,
        all: bool,
        filters: &Filters,
    ) -> Result<Vec<ContainerSummary>> {
        let mut pairs = vec![("all", all.to_string())];
        if !filters.is_empty() {
            pairs.push(("filters", filters.to_json()));
        }
        let path = format!("/containers/json{}", encode::query(pairs));
        self.call_json(Method::GET, &path, None).await
    }

    /// The last `lines` lines of the container's output, stdout and stderr interleaved as written
    /// (`GET /containers/{id}/logs?tail=…`), decoded lossily. At most 64 KiB are read.
    pub async fn container_logs_tail(&self, id: &str, lines: u32) -> Result<String> {
        let path = format!(
            "/containers/{}/logs?stdout=1&stderr=1&tail={lines}",
            seg(id)?
        );
        let bytes = self.call_bytes(Method::GET, &path, 64 << 10).await?;
        Ok(demux_logs(&bytes))
    }

    /// One stats sample without waiting for a second cycle
    /// (`GET /containers/{id}/stats?stream=false&one-shot=true`).
    pub async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let path = format!("/containers/{}/stats?stream=false&one-shot=true", seg(id)?);
        self.call_json(Method::GET, &path, None).await
    }
}

/// The payload of a log stream: without a TTY the engine frames each chunk with an 8-byte header
/// (stream, 0, 0, 0, big-endian length); with one it sends the bytes as they are.
fn demux_logs(bytes: &[u8]) -> String {
    let framed = bytes.len() >= 8 && matches!(bytes[0], 0..=2) && bytes[1..4] == [0, 0, 0];
    if !framed {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len = usize::try_from(u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]))
            .unwrap_or(usize::MAX);
        let end = len.saturating_add(8).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn grace_secs(grace: Duration) -> u64 {
    grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
}

fn not_modified_is_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_not_modified() => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_uses_engine_field_names() {
        let spec = ContainerCreate {
            image: "img:1".into(),
            host_config: HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: RestartPolicyName::UnlessStopped,
                    maximum_retry_count: 0,
                }),
                log_config: Some(LogConfig {
                    kind: "json-file".into(),
                    config: [("max-size".to_string(), "10m".to_string())].into(),
                }),
                ulimits: vec![Ulimit {
                    name: "rtprio".into(),
                    soft: 99,
                    hard: 99,
                }],
                device_cgroup_rules: vec!["c 188:* rmw".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"Image": "img:1", "HostConfig": {
                "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
                "Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}],
                "DeviceCgroupRules": ["c 188:* rmw"],
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}}})
        );
    }

    #[test]
    fn log_frames_are_joined_and_raw_output_kept() {
        let mut framed = vec![1, 0, 0, 0, 0, 0, 0, 4];
        framed.extend_from_slice(b"out\n");
        framed.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        framed.extend_from_slice(b"err\n");
        assert_eq!(demux_logs(&framed), "out\nerr\n");
        assert_eq!(demux_logs(b"plain tty output\n"), "plain tty output\n");
        // A truncated last frame keeps what arrived; a header alone adds nothing.
        assert_eq!(demux_logs(&[1, 0, 0, 0, 0, 0, 0, 9, b'a']), "a");
        assert_eq!(demux_logs(&[]), "");
    }

    #[test]
    fn update_body_sends_only_what_changes() {
        let update = ContainerUpdate {
            restart_policy: Some(RestartPolicy {
                name: RestartPolicyName::UnlessStopped,
                maximum_retry_count: 0,
            }),
        };
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            serde_json::json!({"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}})
        );
        assert_eq!(
            serde_json::to_value(ContainerUpdate::default()).unwrap(),
            serde_json::json!({})
        );
        let answer: ContainerUpdated = serde_json::from_str(r#"{"Warnings":null}"#).unwrap();
        assert!(answer.warnings.is_empty());
    }

    #[test]
    fn cpu_percent_matches_docker_stats_formula() {
        let sample = |total, system| CpuStats {
            cpu_usage: CpuUsage {
                total_usage: total,
                percpu_usage: vec![],
            },
            system_cpu_usage: Some(system),
            online_cpus: Some(2),
        };
        let a = ContainerStats {
            cpu_stats: sample(1_000, 10_000),
            ..Default::default()
        };
        let b = ContainerStats {
            cpu_stats: sample(2_000, 20_000),
            ..Default::default()
        };
        assert_eq!(b.cpu_percent_since(&a), Some(20.0));
        assert_eq!(a.cpu_percent(), None, "one-shot sample has no precpu");
        assert_eq!(grace_secs(Duration::from_millis(1500)), 2);
        assert_eq!(grace_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn memory_excludes_inactive_file_cache() {
        let s: ContainerStats = serde_json::from_str(
            r#"{"memory_stats":{"usage":1000,"limit":4000,"stats":{"inactive_file":300}}}"#,
        )
        .unwrap();
        assert_eq!(s.memory_used_bytes(), Some(700));
        assert_eq!(s.memory_limit_bytes(), Some(4000));
        let stopped: ContainerStats = serde_json::from_str(r#"{"memory_stats":{}}"#).unwrap();
        assert_eq!(stopped.memory_used_bytes(), None);
    }
}
