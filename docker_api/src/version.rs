//! Docker Engine API versions: a comparable `(major, minor)` pair and the predicates that say which
//! request shapes a version accepts. Pure; no I/O.

use std::fmt;
use std::str::FromStr;

/// A Docker Engine API version such as `1.41`. Ordered numerically (`1.9 < 1.41`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major part (always 1 so far).
    pub major: u16,
    /// Minor part.
    pub minor: u16,
}

impl ApiVersion {
    /// The oldest engine API we talk to (Docker 19.03). Below it we refuse to connect.
    pub const MIN_SUPPORTED: ApiVersion = ApiVersion::new(1, 40);
    /// The newest API we know the shapes of; newer engines are spoken to at this version.
    pub const MAX_SUPPORTED: ApiVersion = ApiVersion::new(1, 54);

    /// Builds a version.
    pub const fn new(major: u16, minor: u16) -> Self {
        ApiVersion { major, minor }
    }

    /// API ≥ 1.44: every `NetworkingConfig.EndpointsConfig` entry may carry its own `MacAddress` at
    /// container create, and several endpoints may be given at create.
    pub fn supports_endpoint_mac_at_create(self) -> bool {
        self >= ApiVersion::new(1, 44)
    }

    /// API ≥ 1.44: `NetworkingConfig.EndpointsConfig` may hold more than one network at create.
    pub fn supports_multiple_networks_at_create(self) -> bool {
        self >= ApiVersion::new(1, 44)
    }

    /// API < 1.52: the container-wide `Config.MacAddress` (deprecated in 1.44, removed in 1.52) is
    /// accepted at create and applies to the `HostConfig.NetworkMode` network.
    pub fn supports_container_mac_address(self) -> bool {
        self < ApiVersion::new(1, 52)
    }

    /// API ≥ 1.54: `MacAddress` in `POST /networks/{id}/connect` is honoured (ignored before).
    pub fn honours_mac_on_connect(self) -> bool {
        self >= ApiVersion::new(1, 54)
    }

    /// API < 1.44: network create needs `CheckDuplicate: true` for a duplicate name to be refused
    /// (later engines refuse duplicates always and ignore the field).
    pub(crate) fn needs_check_duplicate(self) -> bool {
        self < ApiVersion::new(1, 44)
    }

    /// The version both sides speak: the lower of the server's maximum and ours.
    pub fn negotiate(server_max: ApiVersion) -> ApiVersion {
        server_max.min(ApiVersion::MAX_SUPPORTED)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The text is not `<major>.<minor>` with decimal parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Docker API version: {0:?}")]
pub struct ParseApiVersionError(pub String);

impl FromStr for ApiVersion {
    type Err = ParseApiVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseApiVersionError(s.to_owned());
        let (major, minor) = s.trim().split_once('.').ok_or_else(err)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(err());
        }
        Ok(ApiVersion::new(
            major.parse().map_err(|_| err())?,
            minor.parse().map_err(|_| err())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_numerically() {
        let v: ApiVersion = "1.41".parse().unwrap();
        assert_eq!(v, ApiVersion::new(1, 41));
        assert!("1.9".parse::<ApiVersion>().unwrap() < v);
        assert_eq!(v.to_string(), "1.41");
        for bad in ["", "1", "1.", ".4", "1.4.1", "a.b", "1.-4", "+1.4"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn negotiation_takes_the_lower_version() {
        assert_eq!(
            ApiVersion::negotiate(ApiVersion::new(1, 41)),
            ApiVersion::new(1, 41)
        );
        assert_eq!(
            ApiVersion::negotiate(ApiVersion::new(1, 99)),
            ApiVersion::MAX_SUPPORTED
        );
    }

    #[test]
    fn feature_predicates_follow_the_changelog() {
        let v141 = ApiVersion::new(1, 41);
        let v144 = ApiVersion::new(1, 44);
        let v152 = ApiVersion::new(1, 52);
        let v154 = ApiVersion::new(1, 54);
        assert!(!v141.supports_endpoint_mac_at_create() && v144.supports_endpoint_mac_at_create());
        assert!(v141.supports_container_mac_address() && !v152.supports_container_mac_address());
        assert!(!v152.honours_mac_on_connect() && v154.honours_mac_on_connect());
        assert!(v141.needs_check_duplicate() && !v144.needs_check_duplicate());
    }
}
