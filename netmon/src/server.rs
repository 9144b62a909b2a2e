//! The Unix socket side: binding (directory, stale file, mode 0660), who may connect
//! ([`TrustedClients`], by `SO_PEERCRED`), per-client writer tasks with bounded queues, and
//! removal of the socket file at shutdown. Knows nothing of netlink.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

/// Lines a client may have queued before it counts as stuck and is dropped.
const CLIENT_QUEUE: usize = 32;
/// How long one line may take to write before the client counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long probing an existing socket file may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound listening socket that knows which file it created.
pub struct Socket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl Socket {
    /// Creates the parent directory, replaces a stale socket file (one nobody accepts on),
    /// refuses to steal a live one or to delete a non-socket file, binds, sets mode 0660.
    pub async fn bind(path: &Path) -> anyhow::Result<Socket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        match tokio::fs::symlink_metadata(path).await {
            Ok(meta) if meta.file_type().is_socket() => {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await
                {
                    bail!("{} is served by another running process", path.display());
                }
                tokio::fs::remove_file(path)
                    .await
                    .with_context(|| format!("removing stale socket {}", path.display()))?;
                tracing::info!("replaced stale socket file {}", path.display());
            }
            Ok(_) => bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .await
            .with_context(|| format!("chmod 0660 {}", path.display()))?;
        let meta = tokio::fs::symlink_metadata(path).await?;
        Ok(Socket {
            listener,
            path: path.to_owned(),
            inode: (meta.dev(), meta.ino()),
        })
    }

    /// Removes the socket file, unless someone else has replaced it meanwhile.
    pub async fn remove(self) {
        drop(self.listener);
        match tokio::fs::symlink_metadata(&self.path).await {
            Ok(meta) if (meta.dev(), meta.ino()) == self.inode => {
                if let Err(e) = tokio::fs::remove_file(&self.path).await {
                    tracing::warn!("cannot remove {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// How often the same refused uid is logged at WARN (DEBUG in between).
const REFUSAL_REMINDER: Duration = Duration::from_secs(600);
/// Refused uids remembered for log de-duplication; more are forgotten (a reminder comes early).
const REFUSALS_KEPT: usize = 64;

/// Who may connect: root, netmon's own uid, and one configured uid (`--client-uid`). The events
/// are the host's network layout, and the socket will soon take commands that act on the host:
/// file permissions are the first fence, this is the second (a container of another uid that
/// shares the volume and a group still gets nothing).
#[derive(Debug, Clone)]
pub struct TrustedClients {
    own: u32,
    extra: Option<u32>,
    /// Last WARN per refused uid.
    warned: HashMap<u32, std::time::Instant>,
}

impl TrustedClients {
    pub fn new(extra: Option<u32>) -> Self {
        Self::with_own(nix::unistd::geteuid().as_raw(), extra)
    }

    fn with_own(own: u32, extra: Option<u32>) -> Self {
        TrustedClients {
            own,
            extra,
            warned: HashMap::new(),
        }
    }

    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own || Some(uid) == self.extra
    }

    /// Whether a refusal of `uid` at `now` is worth a WARN: the first one, and one every
    /// [`REFUSAL_REMINDER`] after (a client retrying every second must not fill the log).
    pub fn warn_refusal(&mut self, uid: u32, now: std::time::Instant) -> bool {
        if let Some(at) = self.warned.get(&uid)
            && now.saturating_duration_since(*at) < REFUSAL_REMINDER
        {
            return false;
        }
        if self.warned.len() >= REFUSALS_KEPT {
            self.warned.clear();
        }
        self.warned.insert(uid, now);
        true
    }

    /// Admits `stream` (`Ok`) or says why not. Logs the refusal, de-duplicated.
    pub fn admit(&mut self, stream: &UnixStream) -> Result<(), ()> {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("refusing a client: cannot read its credentials ({e})");
                return Err(());
            }
        };
        if self.allows(cred.uid()) {
            return Ok(());
        }
        let pid = cred
            .pid()
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        if self.warn_refusal(cred.uid(), std::time::Instant::now()) {
            tracing::warn!(
                uid = cred.uid(),
                "refusing a client of uid {}{pid}: only root, uid {} (netmon's own) and --client-uid \
                 may connect; further refusals of this uid are logged at debug for 10 minutes",
                cred.uid(),
                self.own
            );
        } else {
            tracing::debug!(
                uid = cred.uid(),
                "refusing a client of uid {}{pid}",
                cred.uid()
            );
        }
        Err(())
    }
}

/// Connected clients, each with a writer task fed through a bounded queue, so a slow or stuck
/// client never delays the others: when its queue is full it is dropped.
pub struct Clients {
    senders: HashMap<u64, (mpsc::Sender<Arc<str>>, AbortHandle)>,
    tasks: JoinSet<u64>,
    next_id: u64,
}

impl Clients {
    pub fn new() -> Self {
        Clients {
            senders: HashMap::new(),
            tasks: JoinSet::new(),
            next_id: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Adds a client; `first` (the discovery line) is the first thing it receives.
    pub fn add(&mut self, stream: UnixStream, first: Arc<str>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        // Cannot fail: the channel is new, open and empty.
        let _ = tx.try_send(first);
        let abort = self.tasks.spawn(serve_client(id, stream, rx));
        self.senders.insert(id, (tx, abort));
        id
    }

    /// Queues `line` for every client; drops those whose queue is full or whose task ended.
    pub fn broadcast(&mut self, line: &Arc<str>) {
        self.senders
            .retain(|id, (tx, abort)| match tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(client = id, "client does not keep up; dropping it");
                    abort.abort();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    /// Waits until some client's task ends (it disconnected or failed) and forgets it. Pending
    /// forever while there are no clients, so it is safe in a `select!` loop.
    pub async fn reap(&mut self) {
        match self.tasks.join_next().await {
            Some(Ok(id)) => {
                self.senders.remove(&id);
                tracing::debug!(client = id, clients = self.senders.len(), "client gone");
            }
            // An aborted task: it was already removed from `senders`.
            Some(Err(_)) => {}
            None => std::future::pending().await,
        }
    }

    pub async fn shutdown(mut self) {
        self.senders.clear();
        self.tasks.shutdown().await;
    }
}

/// Writes queued lines to one client until its queue closes or a write fails; also notices a
/// client that hung up while nothing was being sent (health checks do that every few seconds).
async fn serve_client(id: u64, stream: UnixStream, mut rx: mpsc::Receiver<Arc<str>>) -> u64 {
    let (mut read, mut write) = stream.into_split();
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { return id };
                match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(client = id, "write failed: {e}");
                        return id;
                    }
                    Err(_) => {
                        tracing::warn!(client = id, "write timed out; dropping client");
                        return id;
                    }
                }
            }
            // What a client writes is ignored (the protocol is one-way); EOF or an error ends it.
            r = tokio::io::AsyncReadExt::read(&mut read, &mut scratch) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return id;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    #[test]
    fn root_own_and_configured_uids_are_trusted_and_refusals_warn_once_per_reminder() {
        let mut t = TrustedClients::with_own(998, Some(1000));
        assert!(t.allows(0) && t.allows(998) && t.allows(1000));
        assert!(!t.allows(65534) && !t.allows(1001));
        assert!(TrustedClients::with_own(0, None).allows(0));
        assert!(!TrustedClients::with_own(0, None).allows(998));

        let t0 = std::time::Instant::now();
        assert!(t.warn_refusal(65534, t0));
        for s in 1..600 {
            assert!(!t.warn_refusal(65534, t0 + Duration::from_secs(s)));
        }
        assert!(t.warn_refusal(1001, t0), "another uid is new");
        assert!(t.warn_refusal(65534, t0 + REFUSAL_REMINDER));
        // Many uids: the memory stays bounded.
        for uid in 2000..2200 {
            t.warn_refusal(uid, t0);
        }
        assert!(t.warned.len() <= REFUSALS_KEPT);
    }

    #[tokio::test]
    async fn a_stuck_client_is_dropped_while_a_reading_client_gets_every_line() {
        const LINES: usize = 1000;
        let mut clients = Clients::new();
        let (stuck, _stuck_peer) = UnixStream::pair().expect("pair");
        let (good, good_peer) = UnixStream::pair().expect("pair");
        clients.add(stuck, Arc::from("discovery\n"));
        clients.add(good, Arc::from("discovery\n"));
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(good_peer).lines();
            let mut n = 0;
            while n < LINES + 1 {
                match lines.next_line().await {
                    Ok(Some(_)) => n += 1,
                    _ => break,
                }
            }
            n
        });
        // 8 MB in total: far more than the stuck client's socket buffer plus queue.
        let line: Arc<str> = Arc::from(format!("{}\n", "x".repeat(8192)));
        for _ in 0..LINES {
            clients.broadcast(&line);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            clients.len(),
            1,
            "the stuck client should have been dropped"
        );
        let n = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("reader finished")
            .expect("reader task");
        assert_eq!(n, LINES + 1);
    }
}
