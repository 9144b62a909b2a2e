//! Running a command in a running container (`POST /containers/{id}/exec`, then
//! `POST /exec/{id}/start` detached, then `GET /exec/{id}/json` until it ended): for the rare
//! host-side chore an older sidecar cannot do (serial device nodes with the Python netmon). No
//! shell: `argv` runs as given. Output is not collected; the exit code says how it went.

use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Docker, seg, to_json};
use crate::error::{Error, Result};

/// How often an exec is looked at while it runs.
const POLL: Duration = Duration::from_millis(50);

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecCreate<'a> {
    cmd: &'a [&'a str],
    user: &'a str,
    attach_stdout: bool,
    attach_stderr: bool,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecStart {
    detach: bool,
    tty: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExecState {
    running: bool,
    #[serde(default)]
    exit_code: Option<i64>,
}

impl Docker {
    /// Runs `argv` in the running container `id` as `user` (`root`, `1000:1000`…) and returns its
    /// exit code once it ended, waiting at most `limit`. A missing container is
    /// [`Error::is_not_found`]; one that does not run is a 409; a program that cannot be started
    /// is the engine's error (a 400 naming it).
    pub async fn exec(&self, id: &str, argv: &[&str], user: &str, limit: Duration) -> Result<i64> {
        if argv.is_empty() {
            return Err(Error::InvalidArgument("exec: an empty command".into()));
        }
        let path = format!("/containers/{}/exec", seg(id)?);
        let body = to_json(
            "exec",
            &ExecCreate {
                cmd: argv,
                user,
                attach_stdout: false,
                attach_stderr: false,
            },
        )?;
        let created: Created = self.call_json(Method::POST, &path, Some(body)).await?;
        let exec = seg(&created.id)?;
        let start = to_json(
            "exec start",
            &ExecStart {
                detach: true,
                tty: false,
            },
        )?;
        self.call_empty(
            Method::POST,
            &format!("/exec/{exec}/start"),
            Some(start),
            Duration::ZERO,
        )
        .await?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let state: ExecState = self
                .call_json(Method::GET, &format!("/exec/{exec}/json"), None)
                .await?;
            if !state.running
                && let Some(code) = state.exit_code
            {
                return Ok(code);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("exec {argv:?} in {id}"),
                    after: limit,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
