//! Serde helpers for the engine's JSON quirks (fields that are `null` instead of empty).

use serde::{Deserialize, Deserializer};

/// Deserializes `null` (and a missing field, with `#[serde(default)]`) as `T::default()`.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Deserializes an optional IPv4 address the engine may send as `""`, `null` or absent.
pub(crate) fn opt_ipv4<'de, D>(d: D) -> Result<Option<std::net::Ipv4Addr>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}
