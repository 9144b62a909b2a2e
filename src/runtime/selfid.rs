//! Finding the agent's own container (spec §3): the container named by `HOST_NAME` when set,
//! otherwise the one whose id appears in `/proc/self/cgroup` or `/proc/self/mountinfo`, or named by
//! `HOSTNAME` when the process is visibly inside a container; none when the agent runs on the host.
//!
//! Never guesses by a hard-coded name: removing the wrong container on `delete_orchestrator` would be
//! far worse than removing none.

use docker_api::Docker;

/// Where the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfContainer {
    /// On the host (or in a container the engine does not know): nothing to join or remove.
    Host,
    /// In this container.
    Container {
        /// Full container id.
        id: String,
        /// Container name (without the leading `/`).
        name: String,
    },
}

/// Detects the agent's container. `Err` only when the engine could not be asked.
pub(super) async fn detect(docker: &Docker) -> Result<SelfContainer, docker_api::Error> {
    let host_name = std::env::var("HOST_NAME").ok().filter(|s| !s.is_empty());
    let hostname = std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty());
    let (cgroup, mountinfo, dockerenv) = tokio::task::spawn_blocking(|| {
        (
            std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            std::path::Path::new("/.dockerenv").exists(),
        )
    })
    .await
    .unwrap_or_default();

    let mut candidates: Vec<String> = Vec::new();
    candidates.extend(host_name);
    candidates.extend(ids_in(&cgroup));
    candidates.extend(ids_in(&mountinfo));
    // HOSTNAME is Docker's short id inside a container, and the machine's name on a host: only
    // trust it when the process is visibly in a container.
    if dockerenv || !ids_in(&cgroup).is_empty() || !ids_in(&mountinfo).is_empty() {
        candidates.extend(hostname);
    }
    for c in candidates {
        match docker.inspect_container(&c).await {
            Ok(info) => {
                return Ok(SelfContainer::Container {
                    name: info.short_name().to_owned(),
                    id: info.id,
                });
            }
            Err(e) if e.is_not_found() || e.is_bad_request() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(SelfContainer::Host)
}

/// 64-hex container ids found in cgroup paths (`/docker/<id>`, `docker-<id>.scope`) or mount
/// sources (`/containers/<id>/`), in order, without duplicates.
fn ids_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 64 <= bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            .count();
        if run == 64 {
            let before = if i == 0 { b'/' } else { bytes[i - 1] };
            let marker_ok = matches!(before, b'/' | b'-');
            // Bytes, not `str`: 20 bytes back may fall inside a multi-byte character of a mount
            // path, and slicing a `str` there would panic on kernel data.
            let window = &bytes[i.saturating_sub(20)..i];
            let has = |needle: &[u8]| window.windows(needle.len()).any(|w| w == needle);
            if marker_ok
                && (has(b"docker") || has(b"containers/"))
                && !out.iter().any(|o| o == &text[i..i + 64])
            {
                out.push(text[i..i + 64].to_owned());
            }
        }
        i += run.max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2b9e8d7a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c";

    #[test]
    fn multi_byte_characters_before_an_id_do_not_panic() {
        // A mount path with non-ASCII characters just before the id: a `str` slice 20 bytes back
        // would cut a character in half.
        for pad in 0..4 {
            let line = format!(
                "1 2 0:3 /{}été/containers/{ID}/hostname /h rw\n",
                "x".repeat(pad)
            );
            assert_eq!(ids_in(&line), [ID], "{line}");
            let line = format!("1 2 0:3 /ééééééééééé/{ID} /h rw\n");
            assert!(ids_in(&line).is_empty(), "{line}");
        }
    }

    #[test]
    fn container_ids_are_found_in_cgroup_and_mountinfo() {
        assert_eq!(ids_in(&format!("12:cpu:/docker/{ID}\n")), [ID]);
        assert_eq!(
            ids_in(&format!("0::/system.slice/docker-{ID}.scope\n")),
            [ID]
        );
        let mi = format!(
            "612 590 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw\n\
             613 590 254:1 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw\n"
        );
        assert_eq!(ids_in(&mi), [ID]);
        assert!(ids_in("0::/\n").is_empty());
        assert!(ids_in(&format!("0::/user.slice/{ID}\n")).is_empty());
    }
}
