//! Names and labels of the Docker objects the agent makes, and the rules for names it accepts.
//!
//! These strings are part of the compatibility contract (spec §1 "Docker names"): containers are named
//! by the cloud, the internal bridge is `<name>_internal`, MACVLAN networks are
//! `macvlan_<parent>_<a.b.c.d>_<prefix>`. Ownership is carried by labels ([`LABEL_MANAGED_BY`] …), so
//! the agent can tell its objects from anything else on the host. Pure: no I/O.

use std::collections::BTreeMap;

use super::net::Ipv4Net;

/// Label on every container and network the agent creates; value [`MANAGED_BY_VALUE`].
pub const LABEL_MANAGED_BY: &str = "edge.autonomy.managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "orchestrator-agent";
/// Label naming the agent instance that owns an object: its state directory. Runtimes live with their
/// state files (registry, vNICs), so an object made by an agent with another state dir (a test, a
/// second install) is not this agent's to stop, delete or clean up.
pub const LABEL_INSTANCE: &str = "edge.autonomy.instance";
/// Label naming the runtime a container or internal network belongs to.
pub const LABEL_RUNTIME: &str = "edge.autonomy.runtime";
/// Label saying what an object is: [`ROLE_RUNTIME`], [`ROLE_INTERNAL`] or [`ROLE_MACVLAN`].
pub const LABEL_ROLE: &str = "edge.autonomy.role";
/// [`LABEL_ROLE`] of a runtime container.
pub const ROLE_RUNTIME: &str = "runtime";
/// [`LABEL_ROLE`] of a runtime's internal bridge.
pub const ROLE_INTERNAL: &str = "internal-network";
/// [`LABEL_ROLE`] of a MACVLAN network.
pub const ROLE_MACVLAN: &str = "macvlan-network";

/// Label on a runtime container and its internal network: the random id of the create that made
/// them, so the boot reconcile can tell a create that was undone (its id is remembered) from a
/// runtime to keep.
pub const LABEL_CREATE_ID: &str = "edge.autonomy.create-id";
/// Label on a runtime container: its vNIC configuration as received (compact JSON array), from
/// which the agent rebuilds a lost `runtime_vnics.json` entry.
pub const LABEL_VNICS: &str = "edge.autonomy.vnics";

/// Suffix of a runtime's internal bridge network.
pub const INTERNAL_SUFFIX: &str = "_internal";
/// Longest container name accepted: `<name>_internal` must stay within Docker's 63-character
/// practical limit for object names (it also becomes a bridge's DNS alias).
pub const MAX_CONTAINER_NAME: usize = 63 - INTERNAL_SUFFIX.len();
/// Longest Linux interface name (IFNAMSIZ − 1).
pub const MAX_IFACE_NAME: usize = 15;

/// Device id that `get_device_status` uses for the agent's own self-destruct progress.
pub const ORCHESTRATOR_DEVICE_ID: &str = "__orchestrator__";
/// The names of the agent's and netmon's containers in a standard installation; never runtimes.
pub const RESERVED_CONTAINER_NAMES: [&str; 2] = ["orchestrator_agent", "autonomy_netmon"];
/// The netmon sidecar's container, removed by `delete_orchestrator`.
pub const NETMON_CONTAINER: &str = "autonomy_netmon";

/// `<name>_internal`.
pub fn internal_network_name(runtime: &str) -> String {
    format!("{runtime}{INTERNAL_SUFFIX}")
}

/// `macvlan_<parent>_<a.b.c.d>_<prefix>` with the subnet's host bits cleared, the upstream naming
/// (its `/` replaced by `_`).
pub fn macvlan_network_name(parent: &str, subnet: Ipv4Net) -> String {
    let n = subnet.network();
    format!("macvlan_{parent}_{}_{}", n.addr(), n.prefix())
}

/// Labels of a runtime container.
pub fn runtime_labels(runtime: &str, instance: &str) -> BTreeMap<String, String> {
    labels(ROLE_RUNTIME, Some(runtime), instance)
}

/// Labels of a runtime's internal bridge.
pub fn internal_network_labels(runtime: &str, instance: &str) -> BTreeMap<String, String> {
    labels(ROLE_INTERNAL, Some(runtime), instance)
}

/// Labels of a MACVLAN network (shared by runtimes, so no runtime label).
pub fn macvlan_labels(instance: &str) -> BTreeMap<String, String> {
    labels(ROLE_MACVLAN, None, instance)
}

fn labels(role: &str, runtime: Option<&str>, instance: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ]);
    if let Some(r) = runtime {
        l.insert(LABEL_RUNTIME.to_owned(), r.to_owned());
    }
    l
}

/// Whether a label map says this agent instance made the object.
pub fn is_ours(labels: &BTreeMap<String, String>, instance: &str) -> bool {
    labels
        .get(LABEL_MANAGED_BY)
        .is_some_and(|v| v == MANAGED_BY_VALUE)
        && labels.get(LABEL_INSTANCE).is_some_and(|v| v == instance)
}

/// How an object is this agent's: made by it, or adopted from the Python agent it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Labelled managed-by `orchestrator-agent` with this agent's instance ([`is_ours`]).
    Labelled,
    /// Without a managed-by label, and named in the state files: made by the Python agent, which
    /// labelled nothing.
    Adopted,
}

/// The one rule for "is this runtime (or its internal network) ours": labelled by this instance,
/// or unlabelled while the runtime is named in the state files (`in_state_files`). Never an
/// object labelled for another manager or agent instance; never an unlabelled one for a runtime
/// the state files do not name.
pub fn ownership(
    labels: &BTreeMap<String, String>,
    instance: &str,
    in_state_files: bool,
) -> Option<Ownership> {
    if is_ours(labels, instance) {
        Some(Ownership::Labelled)
    } else if in_state_files && !labels.contains_key(LABEL_MANAGED_BY) {
        Some(Ownership::Adopted)
    } else {
        None
    }
}

/// The `label=` filter values that select this instance's objects (optionally of one role).
pub fn owner_filters(instance: &str, role: Option<&str>) -> Vec<String> {
    let mut f = vec![
        format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"),
        format!("{LABEL_INSTANCE}={instance}"),
    ];
    if let Some(r) = role {
        f.push(format!("{LABEL_ROLE}={r}"));
    }
    f
}

/// Checks a runtime container name: Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// [`MAX_CONTAINER_NAME`] characters, and not one of the reserved names. Returns why not.
pub fn check_container_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("Container name must be a non-empty string".into());
    }
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(format!(
            "invalid container name {name:?}: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        ));
    }
    if name.len() > MAX_CONTAINER_NAME {
        return Err(format!(
            "invalid container name {name:?}: at most {MAX_CONTAINER_NAME} characters (so that \
             {name}{INTERNAL_SUFFIX} stays a valid network name)"
        ));
    }
    if RESERVED_CONTAINER_NAMES.contains(&name) {
        return Err(format!(
            "invalid container name {name:?}: reserved for the agent's own containers"
        ));
    }
    Ok(())
}

/// Checks a host interface name: 1..=15 characters of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn check_iface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFACE_NAME {
        return Err(format!(
            "interface name {name:?} must have 1 to {MAX_IFACE_NAME} characters"
        ));
    }
    if name == "."
        || name == ".."
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "interface name {name:?} may only contain letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// Checks a `runtime_version` (an image tag): Docker's tag rule `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut b = tag.bytes();
    let first_ok = b
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
    if !first_ok
        || tag.len() > 128
        || !b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "invalid runtime_version {tag:?}: an image tag is 1 to 128 characters of \
             [A-Za-z0-9_.-] not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// Splits an image reference into `(repository, tag)`; the tag defaults to `latest`. A digest
/// reference (`repo@sha256:…`) keeps its digest as the "tag" part (`@…` included) so callers can
/// tell; a `:` before the last `/` is a registry port, not a tag.
pub fn split_image(reference: &str) -> (String, String) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo.to_owned(), format!("@{digest}"));
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (reference[..at].to_owned(), reference[at + 1..].to_owned())
        }
        None => (reference.to_owned(), "latest".to_owned()),
    }
}

/// The image to run: the configured reference with its tag replaced by `version` when given.
pub fn runtime_image(configured: &str, version: Option<&str>) -> (String, String) {
    let (repo, tag) = split_image(configured);
    match version {
        Some(v) => (repo, v.to_owned()),
        None => (repo, tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        assert_eq!(internal_network_name("plc-001"), "plc-001_internal");
        let s: Ipv4Net = "192.168.1.77/24".parse().unwrap();
        assert_eq!(
            macvlan_network_name("eth0", s),
            "macvlan_eth0_192.168.1.0_24"
        );
    }

    #[test]
    fn container_names_follow_dockers_rule_and_length() {
        for ok in [
            "plc-001",
            "a",
            "A.b_c-d",
            "9x",
            &"p".repeat(MAX_CONTAINER_NAME),
        ] {
            assert!(check_container_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "  ",
            "-plc",
            "_plc",
            ".plc",
            "plc 1",
            "plc/1",
            "plc:1",
            "plé",
            &"p".repeat(MAX_CONTAINER_NAME + 1),
            "orchestrator_agent",
            "autonomy_netmon",
        ] {
            assert!(check_container_name(bad).is_err(), "{bad}");
        }
        assert!(internal_network_name(&"p".repeat(MAX_CONTAINER_NAME)).len() <= 63);
    }

    #[test]
    fn interface_names_are_short_and_plain() {
        for ok in [
            "eth0",
            "enp0s31f6",
            "eth0.50",
            "wlan_0-a",
            "abcdefghijklmno",
        ] {
            assert!(check_iface_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "eth 0",
            "eth0/1",
            "..",
            ".",
            "eth0;rm",
        ] {
            assert!(check_iface_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_tags_are_replaced_not_appended() {
        assert_eq!(
            split_image("ghcr.io/autonomy-logic/openplc-runtime:latest"),
            (
                "ghcr.io/autonomy-logic/openplc-runtime".into(),
                "latest".into()
            )
        );
        assert_eq!(
            split_image("127.0.0.1:9/orchestrator-test/busybox"),
            (
                "127.0.0.1:9/orchestrator-test/busybox".into(),
                "latest".into()
            )
        );
        assert_eq!(
            runtime_image("127.0.0.1:9/orchestrator-test/busybox:latest", Some("v2")),
            ("127.0.0.1:9/orchestrator-test/busybox".into(), "v2".into())
        );
        assert_eq!(split_image("r@sha256:ab").1, "@sha256:ab");
        assert!(check_tag("v4.1_rc-1").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ownership_is_read_from_labels() {
        assert!(is_ours(
            &runtime_labels("x", "/var/orchestrator"),
            "/var/orchestrator"
        ));
        assert!(!is_ours(
            &runtime_labels("x", "/tmp/other"),
            "/var/orchestrator"
        ));
        assert!(!is_ours(&BTreeMap::new(), "/var/orchestrator"));
        assert!(!is_ours(
            &BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), "someone-else".to_owned())]),
            "/var/orchestrator"
        ));
    }

    #[test]
    fn unlabelled_objects_are_ours_only_when_the_state_files_name_the_runtime() {
        let me = "/var/orchestrator";
        let labelled = runtime_labels("x", me);
        let other_instance = runtime_labels("x", "/tmp/other");
        let other_manager =
            BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), "someone-else".to_owned())]);
        let unlabelled = BTreeMap::from([("com.example".to_owned(), "x".to_owned())]);
        for in_state in [false, true] {
            assert_eq!(
                ownership(&labelled, me, in_state),
                Some(Ownership::Labelled)
            );
            assert_eq!(ownership(&other_instance, me, in_state), None);
            assert_eq!(ownership(&other_manager, me, in_state), None);
        }
        assert_eq!(ownership(&unlabelled, me, false), None);
        assert_eq!(ownership(&unlabelled, me, true), Some(Ownership::Adopted));
    }
}
