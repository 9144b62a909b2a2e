//! The Unix socket side: binding (directory, stale file, mode 0660), who may connect
//! ([`TrustedClients`], by `SO_PEERCRED`), one task per client that writes its events and
//! answers its commands (whole lines only, responses in request order), and removal of the
//! socket file at shutdown. Knows nothing of netlink; commands go to the daemon as [`Job`]s.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use netmon_proto::{Command, Response, decode_request, response_line};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

/// Lines a client may have queued before it counts as stuck and is dropped.
const CLIENT_QUEUE: usize = 32;
/// How long one line may take to write before the client counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest command line (bytes); a longer one drops the client (no command is near this).
const MAX_REQUEST_LINE: usize = netmon_proto::MAX_LINE;
/// Command lines a client may have waiting for their turn before it counts as misbehaving.
const MAX_QUEUED_REQUESTS: usize = 64;
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
    jobs: mpsc::Sender<Job>,
}

/// A command a client sent, for the daemon to run; the answer goes back through `reply`.
#[derive(Debug)]
pub struct Job {
    pub command: Command,
    pub reply: oneshot::Sender<Response>,
}

impl Clients {
    /// `jobs` receives every well-formed command of every client.
    pub fn new(jobs: mpsc::Sender<Job>) -> Self {
        Clients {
            senders: HashMap::new(),
            tasks: JoinSet::new(),
            next_id: 0,
            jobs,
        }
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Adds a client; `first` (the greeting: the discovery lines) is the first thing it receives.
    pub fn add(&mut self, stream: UnixStream, first: Arc<str>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        // Cannot fail: the channel is new, open and empty.
        let _ = tx.try_send(first);
        let abort = self
            .tasks
            .spawn(serve_client(id, stream, rx, self.jobs.clone()));
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

/// Splits what a client writes into lines (without `\n`; a trailing `\r` is kept, JSON ignores
/// it), skipping blank ones. Pure.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

/// A line longer than [`MAX_REQUEST_LINE`].
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl LineSplitter {
    /// Feeds `bytes`; returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(chunk);
            if self.partial.last() == Some(&b'\n') {
                let mut line = std::mem::take(&mut self.partial);
                line.pop();
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line);
                }
            }
            if self.partial.len() > MAX_REQUEST_LINE {
                return Err(LineTooLong);
            }
        }
        Ok(lines)
    }
}

/// Writes one whole line; false when the client is gone or stuck.
async fn write_line(id: u64, write: &mut OwnedWriteHalf, line: &str) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes())).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(client = id, "write failed: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(client = id, "write timed out; dropping client");
            false
        }
    }
}

/// The command being run for a client: its `id` to echo and where its answer arrives.
type InFlight = Option<(Option<u64>, oneshot::Receiver<Response>)>;

/// The answer of the command in flight; pending forever when there is none.
async fn answer(in_flight: &mut InFlight) -> Response {
    match in_flight {
        Some((id, rx)) => {
            let mut response = rx
                .await
                .unwrap_or_else(|_| Response::error("netmon stopped before answering"));
            response.id = *id;
            response
        }
        None => std::future::pending().await,
    }
}

/// Serves one client: writes its queued events, reads its command lines and answers each with
/// exactly one response line, in order, one command at a time (the next starts when the last
/// is answered), while events keep flowing. This task is the only writer of the connection, so
/// events and responses only ever meet at line boundaries. Ends when the client hangs up (after
/// answering what it sent), a write fails or blocks, or the client misbehaves (a line over
/// 64 KiB, more than 64 commands waiting).
async fn serve_client(
    id: u64,
    stream: UnixStream,
    mut rx: mpsc::Receiver<Arc<str>>,
    jobs: mpsc::Sender<Job>,
) -> u64 {
    let (mut read, mut write) = stream.into_split();
    let mut scratch = [0u8; 4096];
    let mut splitter = LineSplitter::default();
    let mut queued: VecDeque<Vec<u8>> = VecDeque::new();
    let mut in_flight: InFlight = None;
    let mut hung_up = false;
    loop {
        // Start the next command; lines that are not commands are answered at once (in order:
        // nothing is in flight).
        while in_flight.is_none() {
            let Some(line) = queued.pop_front() else {
                break;
            };
            match decode_request(&line) {
                Ok(request) => {
                    let (reply, answer) = oneshot::channel();
                    let job = Job {
                        command: request.command,
                        reply,
                    };
                    if jobs.send(job).await.is_err() {
                        return id;
                    }
                    in_flight = Some((request.id, answer));
                }
                Err(e) => {
                    tracing::debug!(client = id, "refused a command line: {e}");
                    if !write_line(id, &mut write, &response_line(&e.response())).await {
                        return id;
                    }
                }
            }
        }
        if hung_up && in_flight.is_none() {
            return id;
        }
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { return id };
                if !write_line(id, &mut write, &line).await {
                    return id;
                }
            }
            response = answer(&mut in_flight) => {
                in_flight = None;
                if !write_line(id, &mut write, &response_line(&response)).await {
                    return id;
                }
            }
            // EOF is how a hang-up is noticed while nothing is being sent (health checks).
            r = read.read(&mut scratch), if !hung_up => match r {
                Ok(0) | Err(_) => hung_up = true,
                Ok(n) => match splitter.push(&scratch[..n]) {
                    Ok(lines) if queued.len() + lines.len() <= MAX_QUEUED_REQUESTS => {
                        queued.extend(lines);
                    }
                    Ok(_) => {
                        tracing::warn!(client = id, "client sent more than {MAX_QUEUED_REQUESTS} commands without waiting; dropping it");
                        return id;
                    }
                    Err(LineTooLong) => {
                        tracing::warn!(client = id, "client sent a line over {MAX_REQUEST_LINE} bytes; dropping it");
                        return id;
                    }
                },
            },
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

    #[test]
    fn lines_are_split_at_newlines_whatever_the_chunks_and_blank_ones_skipped() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"{\"a\":").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(
            s.push(b"1}\n\n  \n{\"b\":2}\n{\"c\"").unwrap(),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(s.push(b":3}\n").unwrap(), vec![b"{\"c\":3}".to_vec()]);
        let mut s = LineSplitter::default();
        assert_eq!(s.push(&vec![b'x'; MAX_REQUEST_LINE + 1]), Err(LineTooLong));
    }

    /// A stand-in daemon: answers every command after `delay`, with its name as the message.
    fn fake_daemon(delay: Duration) -> mpsc::Sender<Job> {
        let (tx, mut rx) = mpsc::channel::<Job>(8);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                tokio::time::sleep(delay).await;
                let name = serde_json::to_value(&job.command).unwrap()["command"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let _ = job.reply.send(Response {
                    message: Some(name),
                    ..Response::ok()
                });
            }
        });
        tx
    }

    #[tokio::test]
    async fn commands_are_answered_in_order_while_events_keep_flowing_whole_lines_only() {
        let mut clients = Clients::new(fake_daemon(Duration::from_millis(20)));
        let (ours, theirs) = UnixStream::pair().expect("pair");
        clients.add(
            ours,
            Arc::from("{\"type\":\"network_discovery\",\"data\":{}}\n"),
        );
        let (read, mut write) = theirs.into_split();
        // Requests sent in one write, one of them broken, ids on some.
        write
            .write_all(
                b"{\"command\":\"get_status\",\"id\":1}\nnot json\n\n{\"command\":\"brew\"}\n\
                  {\"command\":\"check_nic_in_container\",\"host_interface\":\"eth1\",\"container_pid\":7,\"id\":2}\n\
                  {\"command\":\"get_dhcp_status\"}\n",
            )
            .await
            .unwrap();
        // Events, each a long line, broadcast while the commands run.
        let event: Arc<str> = Arc::from(format!(
            "{{\"type\":\"network_change\",\"data\":{{\"pad\":\"{}\"}}}}\n",
            "x".repeat(20_000)
        ));
        let mut lines = BufReader::new(read).lines();
        let mut responses = Vec::new();
        let mut events = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while responses.len() < 5 {
            clients.broadcast(&event);
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .expect("all answers in time")
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {line:.80}"));
            if v.get("type").is_some() {
                events += 1;
            } else {
                responses.push(v);
            }
        }
        assert!(events > 1, "events flowed while commands ran: {events}");
        let summary: Vec<(Option<u64>, String)> = responses
            .iter()
            .map(|r| {
                (
                    r["id"].as_u64(),
                    r["message"]
                        .as_str()
                        .or(r["error"].as_str())
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some(1), "get_status".to_owned()),
                (None, "Invalid JSON".to_owned()),
                (None, "Unknown command: brew".to_owned()),
                (Some(2), "check_nic_in_container".to_owned()),
                (None, "get_dhcp_status".to_owned()),
            ]
        );
        assert_eq!(responses[1]["success"], false);
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_after_a_command_still_gets_it_run_then_is_forgotten() {
        let mut clients = Clients::new(fake_daemon(Duration::from_millis(50)));
        let (ours, theirs) = UnixStream::pair().expect("pair");
        clients.add(
            ours,
            Arc::from("{\"type\":\"network_discovery\",\"data\":{}}\n"),
        );
        let (read, mut write) = theirs.into_split();
        write
            .write_all(b"{\"command\":\"get_netlink_status\"}\n")
            .await
            .unwrap();
        write.shutdown().await.unwrap();
        let mut lines = BufReader::new(read).lines();
        assert!(
            lines
                .next_line()
                .await
                .unwrap()
                .unwrap()
                .contains("network_discovery")
        );
        let answer = lines.next_line().await.unwrap().unwrap();
        assert!(answer.contains("get_netlink_status"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), clients.reap())
            .await
            .expect("the client is forgotten");
        assert_eq!(clients.len(), 0);
    }

    #[tokio::test]
    async fn a_stuck_client_is_dropped_while_a_reading_client_gets_every_line() {
        const LINES: usize = 1000;
        let (jobs, _jobs_rx) = mpsc::channel(1);
        let mut clients = Clients::new(jobs);
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
