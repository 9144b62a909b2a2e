//! Minimal async client of the Docker Engine REST API over its Unix socket (hyper 1, hyperlocal,
//! pooled hyper-util legacy client). It owns the wire: socket selection (`DOCKER_HOST`), API
//! version negotiation, typed requests/answers for the endpoints the agent uses, streaming
//! (pull progress, events) and one error type with predicates. It knows nothing of runtimes,
//! ownership labels or the cloud, and never blocks the async runtime or waits without a timeout.
//!
//! ```no_run
//! # async fn demo() -> docker_api::Result<()> {
//! let docker = docker_api::Docker::from_env()?; // no I/O yet: works while the engine is down
//! let api = docker.api_version().await?;         // pings and negotiates
//! if api.supports_endpoint_mac_at_create() { /* one EndpointsConfig entry per network */ }
//! let running = docker.list_containers(false, &docker_api::Filters::new().label("owner=me")).await?;
//! # let _ = running; Ok(()) }
//! ```

mod client;
mod containers;
mod encode;
mod error;
mod events;
mod exec;
mod filters;
#[doc(hidden)]
pub mod fuzzing;
mod images;
mod lines;
mod networks;
mod serde_util;
mod system;
mod version;

pub use client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SOCKET, Docker, DockerConfig,
    EngineStats,
};
pub use containers::{
    ContainerConfig, ContainerCreate, ContainerCreated, ContainerInspect, ContainerState,
    ContainerStats, ContainerStatus, ContainerSummary, ContainerUpdate, ContainerUpdated, CpuStats,
    CpuUsage, Health, HostConfig, HostConfigInspect, LogConfig, MemoryStats, NetworkSettings,
    NetworkingConfig, RemoveContainerOptions, RestartPolicy, RestartPolicyInspect,
    RestartPolicyName, Ulimit,
};
pub use error::{BoxError, Error, Result};
pub use events::{Event, EventActor, EventStream, EventType};
pub use filters::Filters;
pub use images::{
    DEFAULT_PULL_STALL_TIMEOUT, ErrorDetail, ImageInspect, ProgressDetail, PullOptions,
    PullProgress, split_reference,
};
pub use networks::{
    EndpointConfig, EndpointIpamConfig, EndpointSettings, Ipam, IpamPool, NetworkContainer,
    NetworkCreate, NetworkCreated, NetworkInspect,
};
pub use system::SystemVersion;
pub use version::{ApiVersion, ParseApiVersionError};

#[cfg(test)]
mod tests {
    /// The agent shares one client between tasks and moves streams into tasks.
    #[test]
    fn client_and_streams_are_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<crate::Docker>();
        send_sync::<crate::Error>();
        send::<crate::EventStream>();
    }
}
