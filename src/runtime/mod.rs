//! Runtime (vPLC) orchestration on the Docker engine, behind one service, [`Runtimes`]: its
//! operations take the runtime's own validated types ([`CreateSpec`], a runtime name, [`Power`],
//! an [`command::HttpCommand`], usage windows) and answer with its own results or [`Error`]. It
//! knows nothing of the cloud, its topics or their answer shapes: the `topics` layer adapts.
//!
//! # Map
//! - [`spec`], [`vnic`]: the validated model of a create and of one vNIC (request and persisted
//!   forms) — pure;
//! - [`naming`]: Docker names (`<name>_internal`, `macvlan_<if>_<a.b.c.d>_<prefix>`), ownership labels
//!   and the ownership rule, name rules — pure;
//! - [`net`]: IPv4 subnets, netmasks and MAC addresses — pure;
//! - [`ops`]: the operation table (one operation per runtime, progress, outcome, warnings);
//! - [`body`]: the container-create request for both Engine API paths (≥ 1.44 / < 1.44) — pure;
//! - [`macvlan`]: MACVLAN get-or-create / reuse / clean-up, the internal bridge;
//! - `create`, `delete`, `lifecycle`, `status`, `selfdestruct`, `reconcile`, `rebuild`: the
//!   workflows;
//! - [`command`], [`consumption`], [`rehome`]: sending HTTP commands to a runtime, per-runtime
//!   usage, and re-homing after a parent subnet change (built on the pieces above);
//! - [`debug`]: the debugger bridge, one debug session per runtime over its Socket.IO
//!   `/api/debug` (the debug messages are the OpenPLC editor's vocabulary, validated there; the
//!   `run_command` envelope stays the topic's).
//!
//! # Ownership (spec §2 "The agent touches only what it owns")
//! A container is a runtime of this agent when [`naming::ownership`] says so: labelled managed-by
//! `orchestrator-agent` with instance = this agent's state dir, or unlabelled while its name is in
//! the state files (`runtime_vnics.json` / `data/clients.json`, e.g. written by the Python agent);
//! never one of [`naming::RESERVED_CONTAINER_NAMES`]. [`Runtimes::owned`] is the one check every
//! operation goes through; anything else is refused with [`Error::NotOwned`].
//!
//! Background work (reconcile, re-home subscription, usage sampler) starts with
//! [`Runtimes::start_background`]; every task is owned by the service ([`Runtimes::spawn`]).
//!
//! This module must never touch a container or network it does not own, block the async runtime,
//! or call the engine without a timeout (the `docker_api` client enforces them).

pub mod command;
pub mod debug;
pub mod serial;
pub mod spec;

/// Modules public only with the `test-support` feature (integration tests, benchmark examples):
/// their items are the runtime's own business.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "test-support")]
            pub mod $name;
            #[cfg(not(feature = "test-support"))]
            pub(crate) mod $name;
        )*
    };
}

internal!(body, consumption, macvlan, naming, net, ops, rehome, vnic);

mod create;
mod dedicated;
mod delete;
mod dhcp;
mod host_side;
mod lifecycle;
mod macfix;
mod rebuild;
mod reconcile;
mod selfdestruct;
mod selfid;
mod serial_nodes;
mod status;
mod watchdog;
mod wifi;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_api::{ContainerInspect, Docker};
use tokio::task::JoinSet;

use crate::netevents::InterfaceCache;
use crate::state::{StateError, StateStore};

pub use consumption::UsageReport;
pub use lifecycle::Power;
pub use ops::{Busy, OpHandle, OpKind, OpRecord, Operations, Outcome};
pub use selfid::SelfContainer;
pub use spec::{CreateSpec, SpecError, VnicSpec};
pub use status::Census;

/// The runtime image of a standard installation (`--runtime-image` overrides it).
pub const DEFAULT_RUNTIME_IMAGE: &str = "ghcr.io/autonomy-logic/openplc-runtime:latest";

/// What the service needs to know about its environment.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `--state-dir` (default `/var/orchestrator`): state files, and the instance label value.
    pub state_dir: PathBuf,
    /// `--runtime-image`: image reference; `runtime_version` replaces its tag.
    pub runtime_image: String,
    /// A pull is aborted when the engine reports no progress for this long.
    pub pull_stall_timeout: Duration,
    /// How long a create waits for netmon to know a parent interface's subnet.
    pub subnet_wait: Duration,
    /// Grace period of a stop before SIGKILL.
    pub stop_grace: Duration,
    /// Pause between accepting `delete_orchestrator` and starting the clean-up, so the response emit
    /// leaves before anything is removed.
    pub self_destruct_delay: Duration,
    /// At most one re-home per parent interface within this window (`--rehome-window`).
    pub rehome_window: Duration,
    /// `--netmon-container`: the sidecar's container, removed by `delete_orchestrator`.
    pub netmon_container: String,
    /// `--debug-idle`: a debug session without a command for this long is closed.
    pub debug_idle: Duration,
}

impl RuntimeConfig {
    /// Defaults for `state_dir`: the standard image, 60 s pull stall, 3 s subnet wait, 10 s grace,
    /// 3 s re-home window.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            state_dir: state_dir.into(),
            runtime_image: DEFAULT_RUNTIME_IMAGE.to_owned(),
            pull_stall_timeout: docker_api::DEFAULT_PULL_STALL_TIMEOUT,
            subnet_wait: Duration::from_secs(3),
            stop_grace: Duration::from_secs(10),
            self_destruct_delay: Duration::from_secs(1),
            rehome_window: rehome::DEFAULT_WINDOW,
            netmon_container: naming::NETMON_CONTAINER.to_owned(),
            debug_idle: debug::DEFAULT_IDLE,
        }
    }
}

/// Why a runtime operation failed or was refused. The `Display` text goes to the cloud.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; names the field.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Another operation holds the runtime.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// No such runtime (no container, no state).
    #[error("Device {0} not found")]
    NotFound(String),
    /// The container exists but is not this agent's.
    #[error("Container {name} is not a runtime managed by this agent; refusing to {action} it")]
    NotOwned {
        /// The container name.
        name: String,
        /// What was asked (`delete`, `stop`, …).
        action: &'static str,
    },
    /// The engine refused or failed a call.
    #[error("{context}: {source}")]
    Docker {
        /// What we were doing.
        context: String,
        /// The engine's error.
        #[source]
        source: docker_api::Error,
    },
    /// A state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Anything else, described.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Wraps an engine error with what we were doing.
    pub fn docker(context: impl Into<String>) -> impl FnOnce(docker_api::Error) -> Error {
        let context = context.into();
        move |source| Error::Docker { context, source }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// Whether this is [`Error::NotOwned`].
    pub fn is_not_owned(&self) -> bool {
        matches!(self, Error::NotOwned { .. })
    }

    /// Whether this is [`Error::Busy`].
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy(_))
    }
}

/// An owned runtime as [`Runtimes::owned`] found it.
#[derive(Debug, Clone)]
pub struct Owned {
    /// The runtime name.
    pub name: String,
    /// The container, when it exists.
    pub container: Option<ContainerInspect>,
    /// Owned through the state files only (no labels: adopted from the Python agent).
    pub adopted: bool,
}

/// The runtime service. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Runtimes {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    state: Arc<StateStore>,
    ops: Operations,
    interfaces: InterfaceCache,
    config: RuntimeConfig,
    instance: String,
    self_container: tokio::sync::Mutex<Option<SelfContainer>>,
    net_lock: tokio::sync::Mutex<()>,
    usage: Arc<consumption::DeviceUsage>,
    tasks: Mutex<JoinSet<()>>,
    debug: debug::DebugSessions,
    /// The real-time ulimits the engine refused (`body::refused_ulimits`): later creates leave
    /// them out instead of failing a first start each time.
    refused_ulimits: Mutex<Vec<&'static str>>,
    watchdog: watchdog::Watchdog,
    /// The runtimes by state at the usage sampler's last tick; `None` when the engine could not
    /// say.
    census: Mutex<Option<Census>>,
    /// Failed DHCP starts waiting for their retry.
    dhcp_retries: dhcp::Retries,
    /// The vNIC MACs netmon set because the engine could not (`macfix`).
    fixed_macs: macfix::Fixed,
    /// One serial sync at a time, so an unplug cannot interleave with a provisioning.
    serial_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtimes")
            .field("state_dir", &self.inner.config.state_dir)
            .field("image", &self.inner.config.runtime_image)
            .finish_non_exhaustive()
    }
}

impl Runtimes {
    /// Opens the state store under `config.state_dir` (adopting existing files; corrupt ones are kept
    /// aside and reported) and builds the service. Does not touch the engine: call
    /// [`Runtimes::start_background`] once at start-up.
    pub async fn open(
        docker: Docker,
        interfaces: InterfaceCache,
        config: RuntimeConfig,
    ) -> Result<Self, StateError> {
        let state = Arc::new(StateStore::open(&config.state_dir).await?);
        Ok(Self::new(docker, state, interfaces, config))
    }

    /// Builds the service on an open store.
    pub fn new(
        docker: Docker,
        state: Arc<StateStore>,
        interfaces: InterfaceCache,
        config: RuntimeConfig,
    ) -> Self {
        // The instance label is the state dir made absolute (no symlink resolution, no I/O), without
        // trailing slashes, so `/var/orchestrator/` and `/var/orchestrator` are the same agent.
        let dir =
            std::path::absolute(&config.state_dir).unwrap_or_else(|_| config.state_dir.clone());
        let mut instance = dir.to_string_lossy().into_owned();
        while instance.len() > 1 && instance.ends_with('/') {
            instance.pop();
        }
        let debug = debug::DebugSessions::new(config.debug_idle);
        Runtimes {
            inner: Arc::new(Inner {
                docker,
                state,
                ops: Operations::new(),
                interfaces,
                config,
                instance,
                self_container: tokio::sync::Mutex::new(None),
                net_lock: tokio::sync::Mutex::new(()),
                usage: Arc::new(consumption::DeviceUsage::default()),
                tasks: Mutex::new(JoinSet::new()),
                debug,
                refused_ulimits: Mutex::new(Vec::new()),
                watchdog: watchdog::Watchdog::default(),
                census: Mutex::new(None),
                dhcp_retries: dhcp::Retries::default(),
                fixed_macs: macfix::Fixed::default(),
                serial_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// How many runtimes were in each state at the usage sampler's last tick (every 5 s); `None`
    /// before the first tick or when the engine could not say.
    pub fn census(&self) -> Option<Census> {
        *self.inner.census.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_census(&self, census: Option<Census>) {
        *self.inner.census.lock().unwrap_or_else(|p| p.into_inner()) = census;
    }

    /// The vNIC MACs netmon set in the runtimes' current runs.
    pub(crate) fn fixed_macs(&self) -> &macfix::Fixed {
        &self.inner.fixed_macs
    }

    /// The lifecycle watchdog's records.
    pub(crate) fn watchdog(&self) -> &watchdog::Watchdog {
        &self.inner.watchdog
    }

    /// The real-time ulimits the engine refused before.
    pub(crate) fn refused_ulimits(&self) -> Vec<&'static str> {
        self.inner
            .refused_ulimits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records real-time ulimits the engine refused.
    pub(crate) fn add_refused_ulimits(&self, names: &[&'static str]) {
        let mut r = self
            .inner
            .refused_ulimits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for n in names {
            if !r.contains(n) {
                r.push(n);
            }
        }
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The per-runtime CPU and memory history behind `get_consumption_device`.
    pub fn device_usage(&self) -> &Arc<consumption::DeviceUsage> {
        &self.inner.usage
    }

    /// The state files' owner.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.inner.state
    }

    /// The operation table.
    pub fn ops(&self) -> &Operations {
        &self.inner.ops
    }

    /// netmon's view of the host interfaces.
    pub fn interfaces(&self) -> &InterfaceCache {
        &self.inner.interfaces
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The value of this agent's [`naming::LABEL_INSTANCE`] label.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Serializes MACVLAN network creation, attachment and removal of unused networks, so a
    /// clean-up never removes a network another operation is about to attach to.
    pub async fn network_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.net_lock.lock().await
    }

    /// The agent's own container (spec §3), detected once and cached; [`SelfContainer::Host`] when
    /// the agent runs on the host. Detection errors (engine down) are not cached.
    pub async fn self_container(&self) -> SelfContainer {
        let mut cached = self.inner.self_container.lock().await;
        if let Some(s) = cached.as_ref() {
            return s.clone();
        }
        match selfid::detect(&self.inner.docker).await {
            Ok(s) => {
                tracing::info!(self_container = ?s, "own container detected");
                *cached = Some(s.clone());
                s
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot detect the agent's own container yet");
                SelfContainer::Host
            }
        }
    }

    /// Whether `name` is a runtime of this agent. `Ok` with the container (if any) when it is;
    /// [`Error::NotOwned`] when a container of that name exists but is not ours (or is reserved);
    /// [`Error::NotFound`] when there is neither a container nor state for it. `action` words the
    /// refusal (`"delete"`, `"stop"`, `"query"`, …).
    pub async fn owned(&self, name: &str, action: &'static str) -> Result<Owned, Error> {
        let not_owned = || Error::NotOwned {
            name: name.to_owned(),
            action,
        };
        // Device ids come from the cloud: only a valid Docker name may reach the engine (`..`
        // would become `/containers/../json`). No such runtime can exist, so "not found".
        if !is_docker_name(name) {
            return Err(Error::NotFound(name.to_owned()));
        }
        if naming::RESERVED_CONTAINER_NAMES.contains(&name) {
            return Err(not_owned());
        }
        let known = self.inner.state.is_known(name).await;
        match self.inner.docker.inspect_container(name).await {
            Ok(c) => {
                // Docker resolves ids and id prefixes too: only a name match counts.
                if c.short_name() != name {
                    return Err(not_owned());
                }
                match naming::ownership(&c.config.labels, self.instance(), known) {
                    Some(how) => Ok(Owned {
                        name: name.to_owned(),
                        container: Some(c),
                        adopted: how == naming::Ownership::Adopted,
                    }),
                    None => Err(not_owned()),
                }
            }
            Err(e) if e.is_not_found() => {
                if known || self.has_internal_network(name).await {
                    Ok(Owned {
                        name: name.to_owned(),
                        container: None,
                        adopted: known,
                    })
                } else {
                    Err(Error::NotFound(name.to_owned()))
                }
            }
            Err(e) => Err(Error::docker(format!("inspecting container {name}"))(e)),
        }
    }

    async fn has_internal_network(&self, name: &str) -> bool {
        match macvlan::inspect_internal(self, name).await {
            Ok(n) => naming::is_ours(&n.labels, self.instance()),
            Err(_) => false,
        }
    }

    /// Every runtime this agent owns: containers with its labels, then names from the state files
    /// (reserved names excluded).
    pub async fn owned_runtime_names(&self) -> Result<Vec<String>, Error> {
        let mut f = docker_api::Filters::new();
        for l in naming::owner_filters(self.instance(), Some(naming::ROLE_RUNTIME)) {
            f = f.label(l);
        }
        let list = self
            .inner
            .docker
            .list_containers(true, &f)
            .await
            .map_err(Error::docker("listing the agent's containers"))?;
        let mut names: Vec<String> = Vec::new();
        for c in &list {
            if let Some(n) = c.name()
                && !names.iter().any(|x| x == n)
            {
                names.push(n.to_owned());
            }
        }
        let pending = self.inner.state.intents().await.into_iter().map(|(n, _)| n);
        for n in self
            .inner
            .state
            .known_runtimes()
            .await
            .into_iter()
            .chain(pending)
        {
            if !names.contains(&n)
                && !naming::RESERVED_CONTAINER_NAMES.contains(&n.as_str())
                && n != naming::ORCHESTRATOR_DEVICE_ID
            {
                names.push(n);
            }
        }
        Ok(names)
    }

    /// Whether `c` is a container of ours made by a create that was undone (its create id is
    /// remembered as aborted): never a runtime, whatever the state files say.
    pub async fn is_aborted_leftover(&self, c: &ContainerInspect) -> bool {
        if !naming::is_ours(&c.config.labels, self.instance()) {
            return false;
        }
        match c.config.labels.get(naming::LABEL_CREATE_ID) {
            Some(id) => self.inner.state.is_aborted_create(id).await,
            None => false,
        }
    }

    /// The registry (internal) IP of an owned runtime: `data/clients.json`, else a fresh inspect.
    pub async fn internal_ip(&self, name: &str) -> Result<Ipv4Addr, Error> {
        let owned = self.owned(name, "reach").await?;
        let Some(c) = owned.container.as_ref() else {
            return Err(Error::NotFound(name.to_owned()));
        };
        let registry = self.inner.state.client(name).await.map(|c| c.ip);
        reachable_ip(c, name, registry.as_deref()).ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Runs `fut` in the background, owned by the service (aborted by [`Runtimes::shutdown`]).
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished tasks so the set does not grow with every operation.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Aborts the background operations (process shutdown). Their operation handles record
    /// "interrupted".
    pub fn shutdown(&self) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.abort_all();
    }

    /// Starts the service's background work, once at start-up: the boot reconcile (adopt state,
    /// clean up what an interrupted create left, start runtimes that should run, re-join internal
    /// networks, refresh the registry, then `rehome`'s catch-up with subnets that changed while the
    /// agent was down), the subscription to network changes (`rehome`) and the per-runtime usage
    /// sampler (`consumption`). None of it waits for the cloud.
    pub fn start_background(&self) {
        let rt = self.clone();
        self.spawn(async move { reconcile::run(&rt).await });
        rehome::spawn(self);
        consumption::spawn(self);
        let rt = self.clone();
        self.spawn(watchdog::run(rt));
        self.spawn(dedicated::follow_netmon(self.clone()));
        self.spawn(dhcp::follow_netmon(self.clone()));
        self.spawn(wifi::follow_parents(self.clone()));
        self.spawn(serial_nodes::follow_netmon(self.clone()));
    }

    /// Serializes the serial syncs (`serial_nodes`).
    pub(crate) async fn serial_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.serial_lock.lock().await
    }

    /// The pending retries of failed DHCP starts.
    pub(crate) fn dhcp_retries(&self) -> &dhcp::Retries {
        &self.inner.dhcp_retries
    }

    /// Connects the agent's own container to `<name>_internal` (nothing to do on the host). An
    /// existing attachment is success. Refused unless the network is one the runtime may use
    /// ([`macvlan::internal_usable`]): the agent never joins someone else's network.
    pub async fn join_internal(&self, name: &str) -> Result<(), Error> {
        let SelfContainer::Container { id, .. } = self.self_container().await else {
            return Ok(());
        };
        let net = naming::internal_network_name(name);
        let n = macvlan::inspect_internal(self, name)
            .await
            .map_err(Error::docker(format!("inspecting network {net}")))?;
        let adopted = self.inner.state.is_known(name).await;
        if !macvlan::internal_usable(&n, self.instance(), adopted) {
            return Err(Error::Failed(format!(
                "network {net} exists and is not managed by this agent"
            )));
        }
        match self
            .inner
            .docker
            .connect_network(&n.id, &id, &Default::default())
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if e.is_conflict()
                    || e.engine_message()
                        .is_some_and(|m| m.contains("already attached")) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::docker(format!("attaching the agent to {net}"))(e)),
        }
    }

    /// Re-reads the runtime's internal IP from the engine and records it in the registry.
    pub async fn refresh_registry(&self, name: &str) -> Result<Option<Ipv4Addr>, Error> {
        let c = self
            .inner
            .docker
            .inspect_container(name)
            .await
            .map_err(Error::docker(format!("inspecting container {name}")))?;
        let ip = internal_ip_of(&c, name);
        if let Some(ip) = ip {
            self.inner.state.set_client(name, &ip.to_string()).await?;
        }
        Ok(ip)
    }
}

/// Removes a container at once (SIGKILL, no grace period) with its anonymous volumes; missing is
/// success. For what never ran as a committed runtime.
pub async fn kill_and_remove(rt: &Runtimes, id: &str) -> Result<(), docker_api::Error> {
    let opts = docker_api::RemoveContainerOptions {
        force: true,
        volumes: true,
    };
    match rt.docker().remove_container(id, opts).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// The address to reach runtime `name` at: its `<name>_internal` endpoint, else the registry's
/// (`data/clients.json`) address, but only while the container really has that address on one of
/// its networks — a stale registry entry may name another container's address now.
pub fn reachable_ip(c: &ContainerInspect, name: &str, registry: Option<&str>) -> Option<Ipv4Addr> {
    if let Some(ip) = internal_ip_of(c, name) {
        return Some(ip);
    }
    let ip: Ipv4Addr = registry?.parse().ok()?;
    c.network_settings
        .networks
        .values()
        .any(|e| e.ip_address.parse() == Ok(ip))
        .then_some(ip)
}

/// Docker's container-name rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (no length cap: names the agent did
/// not create, e.g. adopted ones, may be longer than [`naming::MAX_CONTAINER_NAME`]).
fn is_docker_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The PID of a running container's init, `None` when it does not run: what netmon enters the
/// runtime's namespaces by.
pub(crate) fn running_pid(c: &ContainerInspect) -> Option<u32> {
    if !c.state.running {
        return None;
    }
    u32::try_from(c.state.pid).ok().filter(|p| *p > 0)
}

/// The runtime's address on `<name>_internal`, from an inspect.
pub fn internal_ip_of(c: &ContainerInspect, name: &str) -> Option<Ipv4Addr> {
    c.network_settings
        .networks
        .get(&naming::internal_network_name(name))
        .and_then(|e| e.ip_address.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(networks: serde_json::Value) -> ContainerInspect {
        serde_json::from_value(serde_json::json!({
            "Id": "0123456789ab",
            "Name": "/plc1",
            "State": {"Status": "running", "Running": true},
            "NetworkSettings": {"Networks": networks},
        }))
        .expect("test inspect parses")
    }

    #[test]
    fn internal_endpoint_wins_over_the_registry() {
        let c = inspect(serde_json::json!({"plc1_internal": {"IPAddress": "172.30.0.2"}}));
        assert_eq!(
            reachable_ip(&c, "plc1", Some("10.203.9.9")),
            Some(Ipv4Addr::new(172, 30, 0, 2))
        );
    }

    #[test]
    fn registry_ip_is_used_only_while_the_container_has_it() {
        let c = inspect(serde_json::json!({"bridge": {"IPAddress": "172.17.0.5"}}));
        assert_eq!(
            reachable_ip(&c, "plc1", Some("172.17.0.5")),
            Some(Ipv4Addr::new(172, 17, 0, 5))
        );
        // Stale: the address may belong to another container now.
        assert_eq!(reachable_ip(&c, "plc1", Some("172.17.0.6")), None);
        assert_eq!(reachable_ip(&c, "plc1", Some("not an ip")), None);
        assert_eq!(reachable_ip(&c, "plc1", None), None);
        // A stopped container has no addresses: an empty endpoint address never matches.
        let stopped = inspect(serde_json::json!({"bridge": {"IPAddress": ""}}));
        assert_eq!(reachable_ip(&stopped, "plc1", Some("172.17.0.5")), None);
    }

    #[test]
    fn device_ids_must_be_docker_names() {
        for ok in ["plc1", "a", "PLC_1.x-y", &"p".repeat(200)] {
            assert!(is_docker_name(ok), "{ok}");
        }
        for bad in [
            "", "..", ".", "a/b", "/plc1", "-x", "_x", "plc 1", "plc1?x", "a\\b", "ü",
        ] {
            assert!(!is_docker_name(bad), "{bad}");
        }
    }
}
