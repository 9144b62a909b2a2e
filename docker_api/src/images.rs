//! Image endpoints: inspect and pull. A pull always names a tag (never "all tags"), treats an
//! `errorDetail` inside the HTTP 200 progress stream as failure, and is aborted when the engine
//! reports no progress for the stall time (a slow pull that progresses is never cut off).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use http::Method;
use serde::Deserialize;

use crate::client::{Docker, JsonLines, LineEvent};
use crate::encode;
use crate::error::{Error, Result};
use crate::serde_util::nullable;

/// Default stall limit of a pull: how long the engine may stay silent.
pub const DEFAULT_PULL_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /images/{name}/json`, the fields the agent uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct ImageInspect {
    /// Image id (`sha256:…`).
    pub id: String,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub repo_tags: Vec<String>,
    /// Digests.
    #[serde(default, deserialize_with = "nullable")]
    pub repo_digests: Vec<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
}

/// Options of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Abort when the engine sends nothing (no headers, no progress message) for this long.
    pub stall_timeout: Duration,
    /// Platform (`linux/arm/v7`); `None` = the engine's own.
    pub platform: Option<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            stall_timeout: DEFAULT_PULL_STALL_TIMEOUT,
            platform: None,
        }
    }
}

/// One progress message of a pull (camelCase on the wire, unlike most of the API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PullProgress {
    /// `Pulling fs layer`, `Downloading`, `Status: Downloaded newer image for …`.
    #[serde(default)]
    pub status: Option<String>,
    /// Layer id.
    #[serde(default)]
    pub id: Option<String>,
    /// Byte counts.
    #[serde(default)]
    pub progress_detail: Option<ProgressDetail>,
    /// Set when the pull failed (the HTTP status is still 200).
    #[serde(default)]
    pub error_detail: Option<ErrorDetail>,
    /// Legacy error string (deprecated in API 1.48).
    #[serde(default)]
    pub error: Option<String>,
}

/// `progressDetail`.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(default)]
    pub current: Option<u64>,
    /// Bytes total.
    #[serde(default)]
    pub total: Option<u64>,
}

/// `errorDetail`.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct ErrorDetail {
    /// Code, if any.
    #[serde(default)]
    pub code: Option<i64>,
    /// Message.
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
}

/// Splits a reference into `fromImage` and `tag`: `repo:tag` → (`repo`, `tag`); a reference
/// without a tag gets `latest` (never an empty tag, which would pull every tag); a digest
/// reference (`repo@sha256:…`) is kept whole with no tag. A `:` before the last `/` is a registry
/// port, not a tag.
pub fn split_reference(reference: &str) -> Result<(String, String)> {
    let r = reference.trim();
    if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "image reference {reference:?} is empty or contains whitespace"
        )));
    }
    if r.contains('@') {
        return Ok((r.to_owned(), String::new()));
    }
    let last = r.rfind('/').map_or(0, |i| i + 1);
    match r[last..].rfind(':') {
        Some(i) if last + i + 1 < r.len() => {
            Ok((r[..last + i].to_owned(), r[last + i + 1..].to_owned()))
        }
        Some(_) => Err(Error::InvalidArgument(format!(
            "image reference {reference:?} has an empty tag"
        ))),
        None => Ok((r.to_owned(), "latest".to_owned())),
    }
}

impl Docker {
    /// `GET /images/{name}/json` (name, `repo:tag` or id). A missing image is
    /// [`Error::is_not_found`].
    pub async fn inspect_image(&self, reference: &str) -> Result<ImageInspect> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument("empty image reference".into()));
        }
        // The engine routes `/images/{name:.*}/json`: `/`, `:` and `@` may stay literal.
        let name = encode::percent_encode(reference)
            .replace("%2F", "/")
            .replace("%3A", ":")
            .replace("%40", "@");
        self.call_json(Method::GET, &format!("/images/{name}/json"), None)
            .await
    }

    /// Pulls `reference` (see [`split_reference`]) to completion. Fails with
    /// [`Error::PullFailed`] on an error in the stream, [`Error::PullStalled`] when the engine is
    /// silent for `opts.stall_timeout`, or an [`Error::Api`] when it refuses up front.
    pub async fn pull_image(&self, reference: &str, opts: &PullOptions) -> Result<()> {
        let mut progress = self.pull_image_stream(reference, opts).await?;
        while let Some(msg) = progress.next().await {
            let msg = msg?;
            tracing::debug!(
                image = reference,
                status = msg.status.as_deref().unwrap_or(""),
                layer = msg.id.as_deref().unwrap_or(""),
                "pull progress"
            );
        }
        Ok(())
    }

    /// Starts a pull (`POST /images/create?fromImage=…&tag=…`) and returns its progress messages
    /// once the engine has accepted it. The stream ends after the last message; an `errorDetail`
    /// yields [`Error::PullFailed`] and a silence of `opts.stall_timeout` yields
    /// [`Error::PullStalled`], each as the last item. Dropping the stream aborts the pull.
    pub async fn pull_image_stream(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<BoxStream<'static, Result<PullProgress>>> {
        let (from_image, tag) = split_reference(reference)?;
        let image = if tag.is_empty() {
            from_image.clone()
        } else {
            format!("{from_image}:{tag}")
        };
        let mut pairs = vec![("fromImage", from_image)];
        if !tag.is_empty() {
            pairs.push(("tag", tag));
        }
        if let Some(p) = &opts.platform {
            pairs.push(("platform", p.clone()));
        }
        let path = format!("/images/create{}", encode::query(pairs));
        let stall = opts.stall_timeout;
        // Negotiate first, so only the pull itself (not the ping) runs under the stall limit.
        self.api_version().await?;
        // Waiting for the headers is waiting for progress too: the engine answers only once the
        // registry did, so the stall limit (not the generic response timeout) applies.
        let resp = match self.send(Method::POST, &path, None, stall).await {
            Err(Error::Timeout { .. }) => {
                return Err(Error::PullStalled {
                    image,
                    after: stall,
                });
            }
            r => r?,
        };
        let lines = JsonLines::new(resp, "POST /images/create".into(), Some(stall));
        let state = Some((lines, image));
        Ok(stream::unfold(state, move |state| async move {
            let (mut lines, image) = state?;
            let item = match lines.next_line().await {
                Ok(LineEvent::End) => return None,
                Ok(LineEvent::Idle) => Err(Error::PullStalled {
                    image: image.clone(),
                    after: stall,
                }),
                Err(e) => Err(e),
                Ok(LineEvent::Line(line)) => decode_progress(&line, &image, &lines.what),
            };
            let next = item.is_ok().then_some((lines, image));
            Some((item, next))
        })
        .boxed())
    }
}

pub(crate) fn decode_progress(line: &[u8], image: &str, what: &str) -> Result<PullProgress> {
    let msg: PullProgress = serde_json::from_slice(line).map_err(|e| Error::Decode {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let failure = msg
        .error_detail
        .as_ref()
        .map(|d| d.message.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| msg.error.clone());
    match failure {
        Some(message) => Err(Error::PullFailed {
            image: image.to_owned(),
            message,
        }),
        None => Ok(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(r: &str) -> (String, String) {
        split_reference(r).unwrap()
    }

    #[test]
    fn references_always_carry_a_tag_or_digest() {
        assert_eq!(split("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split("ghcr.io/autonomy-logic/openplc-runtime:latest"),
            (
                "ghcr.io/autonomy-logic/openplc-runtime".into(),
                "latest".into()
            )
        );
        assert_eq!(
            split("127.0.0.1:9/orchestrator-test/nothing:v1"),
            ("127.0.0.1:9/orchestrator-test/nothing".into(), "v1".into())
        );
        assert_eq!(
            split("localhost:5000/x"),
            ("localhost:5000/x".into(), "latest".into())
        );
        assert_eq!(split("r@sha256:ab"), ("r@sha256:ab".into(), String::new()));
        for bad in ["", "a b", "repo:"] {
            assert!(split_reference(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_detail_in_a_200_stream_is_a_failure() {
        let e = decode_progress(
            br#"{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}"#,
            "x:1",
            "POST /images/create",
        )
        .unwrap_err();
        assert!(e.is_pull_failure());
        assert!(e.to_string().contains("manifest unknown"));
        let ok = decode_progress(
            br#"{"status":"Downloading","id":"abc","progressDetail":{"current":1,"total":2}}"#,
            "x:1",
            "POST /images/create",
        )
        .unwrap();
        assert_eq!(ok.progress_detail.unwrap().total, Some(2));
    }
}
