//! System endpoints: `/version` (engine and API versions). `/_ping` lives with negotiation in
//! [`crate::Docker::ping`].

use http::Method;
use serde::Deserialize;

use crate::client::Docker;
use crate::error::Result;

/// `GET /version`, the fields the agent reports or checks.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct SystemVersion {
    /// Engine release, e.g. `20.10.24`.
    #[serde(default)]
    pub version: String,
    /// The engine's maximum API version, e.g. `1.41`.
    #[serde(default)]
    pub api_version: String,
    /// The engine's minimum API version (`MinAPIVersion`).
    #[serde(default, rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// Operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// Architecture, e.g. `amd64`, `arm`.
    #[serde(default)]
    pub arch: String,
    /// Kernel version.
    #[serde(default)]
    pub kernel_version: String,
}

impl Docker {
    /// `GET /version`.
    pub async fn version(&self) -> Result<SystemVersion> {
        self.call_json(Method::GET, "/version", None).await
    }
}
