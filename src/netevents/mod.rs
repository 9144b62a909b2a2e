//! Client of the `autonomy-netmon` socket: connecting to `<state-dir>/netmon.sock`, reading its
//! JSON lines (the protocol is `netmon_proto`'s), feeding the [`InterfaceCache`], and carrying
//! commands to netmon on the same connection ([`InterfaceCache::command`]).
//!
//! Submodules: `cache` (the interface cache and the change broadcast), `commands` (requests and
//! the matching of responses) and `trust` (whose socket is read, [`TrustedPeers`]).
//!
//! Never does: act on a change (re-homing is the runtime's job), talk to netlink itself, or read a
//! line from (or send a command to) a socket served by a process it does not trust. Bad JSON and
//! lines over [`MAX_LINE`] are logged and skipped.

mod cache;
mod commands;
mod trust;

use std::path::{Path, PathBuf};
use std::time::Duration;

use netmon_proto::{DecodeError, Message, decode_message};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

pub use cache::{
    DeviceEvent, EventCounts, HostAddress, InterfaceCache, MissingParent, NetworkChange,
    VIRTUAL_PREFIXES, is_virtual, missing_parent,
};
pub use commands::COMMAND_TIMEOUT;
pub use netmon_proto::{
    Command as NetmonCommand, DeviceAction, DhcpUpdate, InterfaceInfo, Ipv4Entry, MAX_LINE, Pid,
    SerialDevice,
};
pub use trust::TrustedPeers;

/// First and last delay between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Spawns the listener task trusting root and the agent's own uid (see
/// [`spawn_listener_trusting`]).
pub fn spawn_listener(socket: PathBuf, cache: InterfaceCache) -> tokio::task::JoinHandle<()> {
    spawn_listener_trusting(socket, cache, TrustedPeers::default())
}

/// Spawns the listener task: connects to `socket`, reads it only when `trusted` allows the uid
/// serving it, feeds `cache`, reconnects forever with a 1 s → 5 s backoff. Abort the handle to
/// stop it.
pub fn spawn_listener_trusting(
    socket: PathBuf,
    cache: InterfaceCache,
    trusted: TrustedPeers,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run_listener(&socket, &cache, trusted).await })
}

/// The listener loop (never returns; cancel it by dropping/aborting the task).
///
/// A netmon that stays away (a stale socket file after a crash, or one that accepts and closes),
/// or a socket served by an untrusted process, must not write a WARN line every few seconds to an
/// SD card: a failure is logged at WARN when it is new and again every 10 minutes, at DEBUG in
/// between; the backoff restarts at 1 s only after a connection that lasted 5 s.
pub async fn run_listener(socket: &Path, cache: &InterfaceCache, trusted: TrustedPeers) {
    let mut delay = BACKOFF_MIN;
    let mut repeats = Repeats::default();
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => match trust::untrusted_peer(&stream, &trusted) {
                // Dropped unread: nothing it sent reaches the cache.
                Some(text) => repeats.log(socket, &text),
                None => {
                    if repeats.is_quiet() {
                        tracing::info!(socket = %socket.display(), "connected to the network monitor");
                    } else {
                        tracing::debug!(socket = %socket.display(), "connected to the network monitor");
                    }
                    cache.set_connected(true);
                    let since = tokio::time::Instant::now();
                    let outcome = read_stream(stream, cache).await;
                    cache.set_connected(false);
                    let text = match outcome {
                        Ok(()) => "network monitor connection closed".to_owned(),
                        Err(e) => format!("network monitor connection failed: {e}"),
                    };
                    if since.elapsed() >= HEALTHY_AFTER {
                        repeats = Repeats::default();
                        delay = BACKOFF_MIN;
                    }
                    repeats.log(socket, &text);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(socket = %socket.display(), "network monitor socket not there yet");
            }
            Err(e) => repeats.log(
                socket,
                &format!("cannot connect to the network monitor: {e}"),
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// A connection to netmon that lasted this long was a real one: backoff and log suppression
/// start over.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// A failure that keeps repeating is logged at WARN again after this long.
const REMIND_AFTER: Duration = Duration::from_secs(600);

/// Tells a new failure (log at WARN) from a repeat of the last one (log at DEBUG).
#[derive(Debug, Default)]
struct Repeats {
    last: Option<(String, tokio::time::Instant)>,
}

impl Repeats {
    /// Whether `text` should be logged at WARN: it differs from the last failure, or the last
    /// WARN of it was [`REMIND_AFTER`] ago. Records it when so.
    fn is_new(&mut self, text: &str) -> bool {
        let repeat =
            matches!(&self.last, Some((t, at)) if t == text && at.elapsed() < REMIND_AFTER);
        if !repeat {
            self.last = Some((text.to_owned(), tokio::time::Instant::now()));
        }
        !repeat
    }

    /// No failure since the last healthy connection.
    fn is_quiet(&self) -> bool {
        self.last.is_none()
    }

    /// Logs `text` at WARN when [`Repeats::is_new`], else at DEBUG.
    fn log(&mut self, socket: &Path, text: &str) {
        if self.is_new(text) {
            tracing::warn!(socket = %socket.display(), "{text}");
        } else {
            tracing::debug!(socket = %socket.display(), "{text}");
        }
    }
}

/// Reads lines until EOF (Ok) or an I/O error, while a task writes the commands queued meanwhile
/// on the same connection; responses go to the commands waiting for them.
async fn read_stream(stream: UnixStream, cache: &InterfaceCache) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let outstanding = commands::Outstanding::default();
    let pump = {
        let commands = cache.commands().clone();
        let outstanding = outstanding.clone();
        tokio::spawn(async move { commands.pump(write, outstanding).await })
    };
    // Stopped however this ends; the commands still waiting get "closed" answers.
    let _pump = AbortOnDrop(pump);
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        match read_bounded_line(&mut reader, &mut line).await? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                cache.count_invalid_line();
                tracing::warn!("netmon line longer than {MAX_LINE} bytes skipped");
            }
            LineRead::Line => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match decode_message(&line) {
                    Ok(Message::Event(event)) => {
                        let changes = cache.apply(event);
                        for c in changes {
                            tracing::info!(
                                interface = %c.interface,
                                subnet = ?c.current.as_ref().and_then(|i| i.subnet().map(str::to_owned)),
                                gateway = ?c.current.as_ref().and_then(|i| i.gateway.clone()),
                                "host interface changed"
                            );
                        }
                    }
                    Ok(Message::Response(r)) => commands::deliver(&outstanding, r),
                    Err(e) => {
                        cache.count_invalid_line();
                        skip(&e);
                    }
                }
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn skip(e: &DecodeError) {
    tracing::warn!(error = %e, "skipping netmon line");
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line into `line` without ever buffering more than [`MAX_LINE`]
/// bytes: the rest of an over-long line is read and dropped.
async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            // EOF: a final unterminated line is still a line.
            return Ok(if too_long {
                LineRead::TooLong
            } else if line.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(buf.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// The lines of netmon's protocol the tests of this module feed.
#[cfg(test)]
mod test_lines {
    use serde_json::{Value, json};

    pub fn info(name: &str, addr: Option<(&str, &str)>, gateway: Option<&str>) -> Value {
        let addrs: Vec<Value> = addr
            .into_iter()
            .map(|(a, subnet)| json!({"address": a, "prefixlen": 24, "subnet": subnet, "network_address": subnet.split('/').next()}))
            .collect();
        json!({"interface": name, "index": 2, "operstate": "UP", "ipv4_addresses": addrs, "gateway": gateway,
               "timestamp": "2025-11-20T20:30:45.123456"})
    }
    pub fn discovery(list: Vec<Value>) -> String {
        json!({"type": "network_discovery", "data": {"interfaces": list, "timestamp": "t"}})
            .to_string()
    }

    pub fn change(data: Value) -> String {
        json!({"type": "network_change", "data": data}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    use super::test_lines::{change, discovery, info};
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_repeating_failure_warns_once_then_again_only_after_the_reminder_period() {
        let mut r = Repeats::default();
        assert!(r.is_quiet());
        assert!(r.is_new("refused"));
        assert!(!r.is_quiet());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(5)).await;
            if r.is_new("refused") {
                panic!("a repeat within the reminder period warned again");
            }
        }
        assert!(r.is_new("closed"), "a different failure is new");
        assert!(!r.is_new("closed"));
        tokio::time::advance(REMIND_AFTER).await;
        assert!(r.is_new("closed"), "the reminder is due");
    }
    #[tokio::test]
    async fn bounded_reader_skips_overlong_lines() {
        let mut data = Vec::new();
        data.extend_from_slice(b"short\n");
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        data.extend_from_slice(b"\nafter\nlast-unterminated");
        let mut reader = BufReader::with_capacity(1024, &data[..]);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            match read_bounded_line(&mut reader, &mut line).await.unwrap() {
                LineRead::Eof => break,
                LineRead::TooLong => seen.push("<too long>".to_owned()),
                LineRead::Line => seen.push(String::from_utf8(line.clone()).unwrap()),
            }
        }
        assert_eq!(
            seen,
            vec!["short", "<too long>", "after", "last-unterminated"]
        );
    }

    /// Waits until `cond` holds (polling), failing after a generous timeout.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn commands_go_out_on_the_listeners_connection_and_their_answers_come_back_amid_events() {
        use netmon_proto::{Command, decode_request};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netmon.sock");
        let cache = InterfaceCache::new();
        let listener = UnixListener::bind(&path).unwrap();
        let task = spawn_listener(path.clone(), cache.clone());
        let (conn, _) = listener.accept().await.unwrap();
        eventually("the connection", || cache.is_connected()).await;
        let (read, mut write) = conn.into_split();
        // A netmon that answers in order without echoing ids (the original's), an event first.
        let server = tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            let mut seen = Vec::new();
            for n in 0..2 {
                let line = lines.next_line().await.unwrap().unwrap();
                let request = decode_request(line.as_bytes()).unwrap();
                assert!(request.id.is_some(), "{line}");
                seen.push(request.command);
                let event = discovery(vec![info("eth9", None, None)]) + "\n";
                let answer = format!("{{\"success\": true, \"present\": {}}}\n", n == 1);
                write.write_all((event + &answer).as_bytes()).await.unwrap();
            }
            seen
        });
        let check = || Command::CheckNicInContainer {
            host_interface: "eth1".into(),
            container_pid: netmon_proto::Pid(42),
        };
        let first = cache.command(Command::GetStatus).await;
        assert!(first.success && first.data.get("present") == Some(&serde_json::json!(false)));
        let second = cache.command(check()).await;
        assert_eq!(second.data.get("present"), Some(&serde_json::json!(true)));
        assert_eq!(server.await.unwrap(), vec![Command::GetStatus, check()]);
        assert!(cache.get("eth9").is_some(), "events were applied meanwhile");
        // netmon goes away: the original's answer, at once.
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        eventually("the disconnect", || !cache.is_connected()).await;
        assert_eq!(
            cache.command(Command::GetStatus).await.error.as_deref(),
            Some("Not connected to network monitor")
        );
        task.abort();
    }

    #[tokio::test]
    async fn listener_follows_a_real_socket_skips_bad_lines_and_reconnects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netmon.sock");
        let cache = InterfaceCache::new();
        // Start before the socket exists: the client must keep retrying.
        let task = spawn_listener(path.clone(), cache.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listener = UnixListener::bind(&path).unwrap();

        let (mut conn, _) = listener.accept().await.unwrap();
        let mut script = String::new();
        script.push_str(&discovery(vec![
            info(
                "eth0",
                Some(("10.204.1.5", "10.204.1.0/24")),
                Some("10.204.1.1"),
            ),
            info("eth1", Some(("10.204.2.5", "10.204.2.0/24")), None),
        ]));
        script.push('\n');
        script.push_str("this is not json\n");
        script.push_str(&"y".repeat(MAX_LINE + 1));
        script.push('\n');
        script.push_str(&change(info(
            "eth1",
            Some(("10.204.3.5", "10.204.3.0/24")),
            None,
        )));
        script.push('\n');
        conn.write_all(script.as_bytes()).await.unwrap();
        eventually("the change after the bad lines", || {
            cache
                .get("eth1")
                .and_then(|i| i.subnet().map(str::to_owned))
                .as_deref()
                == Some("10.204.3.0/24")
        })
        .await;
        assert!(cache.is_connected());
        assert_eq!(
            cache.event_counts(),
            EventCounts {
                discovery: 1,
                change: 1,
                other: 0,
                invalid: 2,
            },
            "the bad JSON and the over-long line are counted, not applied"
        );
        let addresses: Vec<String> = cache
            .host_ipv4_addresses()
            .into_iter()
            .map(|a| a.ip_address)
            .collect();
        assert_eq!(addresses, vec!["10.204.1.5", "10.204.3.5"]);

        // netmon restarts: the client reconnects and the new discovery drops eth1.
        drop(conn);
        eventually("the client to notice the disconnect", || {
            !cache.is_connected()
        })
        .await;
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
            .await
            .unwrap()
            .unwrap();
        let line = discovery(vec![info(
            "eth0",
            Some(("10.204.1.5", "10.204.1.0/24")),
            Some("10.204.1.1"),
        )]) + "\n";
        conn.write_all(line.as_bytes()).await.unwrap();
        eventually("the second discovery", || cache.get("eth1").is_none()).await;
        assert_eq!(cache.list().len(), 1);
        task.abort();
    }
}
