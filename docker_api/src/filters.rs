//! [`Filters`]: the engine's `filters` query parameter (a JSON map of key → values), built by the
//! caller and percent-encoded by the client. Pure; no I/O.

use std::collections::BTreeMap;

/// Filters for list and event calls, e.g. `Filters::new().label("owner=agent").kind("container")`.
/// Several values under one key match any of them; different keys must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// No filters.
    pub fn new() -> Self {
        Filters::default()
    }

    /// Adds `value` under `key` (any filter the endpoint understands).
    pub fn add(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.entry(key.into()).or_default().push(value.into());
        self
    }

    /// `label=<key>` or `label=<key>=<value>`.
    pub fn label(self, label: impl Into<String>) -> Self {
        self.add("label", label)
    }

    /// `name=<name>` (containers and networks match substrings; anchor with `^…$`).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.add("name", name)
    }

    /// `id=<id>`.
    pub fn id(self, id: impl Into<String>) -> Self {
        self.add("id", id)
    }

    /// Events only: `type=<container|network|image|…>`.
    pub fn kind(self, kind: impl Into<String>) -> Self {
        self.add("type", kind)
    }

    /// Events only: `container=<id or name>`.
    pub fn container(self, container: impl Into<String>) -> Self {
        self.add("container", container)
    }

    /// Events only: `event=<action>` (e.g. `start`, `die`).
    pub fn event(self, action: impl Into<String>) -> Self {
        self.add("event", action)
    }

    /// Networks only: `driver=<driver>`.
    pub fn driver(self, driver: impl Into<String>) -> Self {
        self.add("driver", driver)
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON document the engine expects (`{"label":["a=b"]}`), not yet URL-encoded.
    pub fn to_json(&self) -> String {
        // A map of strings to string lists always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_serialize_as_the_engine_expects() {
        let f = Filters::new()
            .label("a=b")
            .label("c")
            .kind("container")
            .name("^x$");
        assert_eq!(
            f.to_json(),
            r#"{"label":["a=b","c"],"name":["^x$"],"type":["container"]}"#
        );
        assert!(Filters::new().is_empty());
    }
}
