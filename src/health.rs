//! The agent's liveness probe: a Unix socket under the state dir on which the running agent answers
//! one JSON line, and the client that `orchestrator-agent health` (the image's `HEALTHCHECK`) runs.
//!
//! An answer proves the process is up and its async runtime still schedules work, which is what a
//! restart would fix. It owns that socket and nothing else: it never asks the cloud or the Docker
//! engine (a cloud outage is not cured by restarting the agent, and a fleet must not turn unhealthy
//! together when the cloud is down), and it writes no file per probe (SD cards).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tracing::{debug, info, warn};

/// The socket's file name in the state dir.
pub const SOCKET_NAME: &str = "agent-health.sock";

/// How long the client waits for the answer, and the server for a write.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `<state-dir>/agent-health.sock`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// The line the agent answers with.
pub fn answer(uptime: Duration) -> String {
    format!(
        "{{\"status\":\"ok\",\"version\":\"{}\",\"uptime_s\":{}}}\n",
        env!("CARGO_PKG_VERSION"),
        uptime.as_secs()
    )
}

/// Whether `line` is a healthy answer.
pub fn is_ok(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["status"] == "ok")
}

/// Binds the socket (replacing a stale one) and answers every connection in a background task for
/// the life of the runtime. A live socket (another agent on this state dir) is left alone and not
/// served: the probe then reports that agent, and this one says why in its log.
pub async fn spawn(path: PathBuf, started: Instant) {
    let listener = match bind(&path).await {
        Ok(l) => l,
        Err(e) => {
            warn!(socket = %path.display(), "health probe not served: {e}");
            return;
        }
    };
    info!(socket = %path.display(), "health probe listening");
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    debug!("health accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            // One at a time: an answer is a few bytes, and a client that does not read costs at
            // most TIMEOUT, so a stuck prober cannot pile up tasks.
            let line = answer(started.elapsed());
            let _ = tokio::time::timeout(TIMEOUT, conn.write_all(line.as_bytes())).await;
        }
    });
}

async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    // Only the agent's user (root in the image) probes it.
    bind_unix(path, 0o600).await
}

/// Binds a Unix socket at `path` with file mode `mode`: creates the parent dir, replaces a stale
/// socket file (one nobody answers on) and refuses a live socket or a path that is not a socket.
pub(crate) async fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process answers on it",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Refused: a socket file left by an agent that is gone.
        Err(_) => match tokio::fs::symlink_metadata(path).await {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                tokio::fs::remove_file(path).await?
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                ));
            }
            Err(_) => {}
        },
    }
    let listener = UnixListener::bind(path)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await?;
    Ok(listener)
}

/// The `health` client: prints the agent's answer and returns whether it is healthy. Blocking and
/// runtime-free, so a probe costs one short process.
pub fn probe(path: &Path) -> Result<String, String> {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("{}: {e} (is the agent running?)", path.display()))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("{}: no answer within {TIMEOUT:?}: {e}", path.display()))?;
    let line = line.trim_end().to_owned();
    if is_ok(&line) {
        Ok(line)
    } else if line.is_empty() {
        Err(format!("{}: closed without an answer", path.display()))
    } else {
        Err(format!("{}: unhealthy answer: {line}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_one_healthy_json_line() {
        let line = answer(Duration::from_secs(42));
        assert!(line.ends_with('\n'));
        assert!(is_ok(line.trim_end()));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["uptime_s"], 42);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(!is_ok(r#"{"status":"starting"}"#));
        assert!(!is_ok("ok"));
    }

    #[tokio::test]
    async fn a_running_server_answers_and_a_missing_one_is_unhealthy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path());
        let err = tokio::task::spawn_blocking({
            let path = path.clone();
            move || probe(&path)
        })
        .await
        .expect("join")
        .expect_err("no agent yet");
        assert!(err.contains("is the agent running?"), "{err}");

        spawn(path.clone(), Instant::now()).await;
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let line = tokio::task::spawn_blocking({
            let path = path.clone();
            move || probe(&path)
        })
        .await
        .expect("join")
        .expect("healthy");
        assert!(is_ok(&line), "{line}");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path());
        // Stale: bound, then the listener dropped (the file stays, nobody answers).
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let first = bind(&path).await.expect("a stale socket is replaced");
        // Live: `first` still listens.
        let err = bind(&path).await.expect_err("a live socket is refused");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(first);
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(&path, b"x").expect("file");
        let err = bind(&path).await.expect_err("a regular file is refused");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
