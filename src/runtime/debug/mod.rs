//! The debugger bridge (upstream-head §2.9, §3): `run_command` with `api: "debug"` drives a debug
//! session with the runtime the device id names, one per device ([`DebugSessions`]).
//!
//! Owns: the session table, `debug_start` (closes the device's previous session, logs in, opens
//! the socket), the commands, `debug_stop`, the idle close (a session without an accepted command
//! for [`DEFAULT_IDLE`], `--debug-idle`, is closed silently, each by its own timer) and closing a
//! runtime's session before it is stopped, restarted or deleted. The wire half is `protocol`
//! (pure) and `session` (login, Socket.IO).
//!
//! Must never: reach a runtime the agent does not own (the device is resolved like `run_command`),
//! send the cloud's bytes as raw commands, log credentials or tokens, or hold the table's lock
//! across I/O.

mod protocol;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{info, warn};

pub use protocol::{Request, from_hex, to_hex};
use session::Session;

use super::command::CommandError;
use super::{Busy, OpKind, Runtimes};

/// A session without an accepted command for this long is closed (the original's 300 s).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
/// How long a command waits for the one before it on the same session.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// The open debug sessions, by device id.
#[derive(Debug, Clone)]
pub struct DebugSessions {
    inner: Arc<Table>,
}

#[derive(Debug)]
struct Table {
    idle: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    generation: AtomicU64,
}

/// A session, shared by its commands, its idle timer and the table.
type Shared = Arc<tokio::sync::Mutex<Session>>;
/// When a session was last used.
type Clock = Arc<Mutex<Instant>>;

#[derive(Debug)]
struct Entry {
    generation: u64,
    session: Shared,
    last: Clock,
    timer: tokio::task::AbortHandle,
}

impl DebugSessions {
    /// An empty table whose sessions close after `idle` without an accepted command.
    pub fn new(idle: Duration) -> Self {
        Self {
            inner: Arc::new(Table {
                idle,
                entries: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Whether `device` has an open session.
    pub fn is_open(&self, device: &str) -> bool {
        self.lock().contains_key(device)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding it cannot leave the map half-changed (single inserts/removes).
        self.inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes `device`'s session, if any, with the Socket.IO goodbye; `true` when there was one.
    pub async fn close(&self, device: &str) -> bool {
        let entry = self.lock().remove(device);
        match entry {
            Some(entry) => {
                close_entry(entry).await;
                true
            }
            None => false,
        }
    }

    fn insert(&self, device: &str, session: Session) -> Option<Entry> {
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let last = Arc::new(Mutex::new(Instant::now()));
        let timer = tokio::spawn(idle_timer(
            Arc::downgrade(&self.inner),
            device.to_owned(),
            generation,
            last.clone(),
        ))
        .abort_handle();
        let entry = Entry {
            generation,
            session: Arc::new(tokio::sync::Mutex::new(session)),
            last,
            timer,
        };
        self.lock().insert(device.to_owned(), entry)
    }

    /// The session of `device` and its activity clock, marked active now.
    fn touch(&self, device: &str) -> Option<(Shared, Clock)> {
        let entries = self.lock();
        let entry = entries.get(device)?;
        set_now(&entry.last);
        Some((entry.session.clone(), entry.last.clone()))
    }
}

fn set_now(last: &Mutex<Instant>) {
    *last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
}

async fn close_entry(entry: Entry) {
    entry.timer.abort();
    // Waits for a command in flight (bounded by its own timeouts).
    entry.session.lock().await.close().await;
}

/// Closes the session `generation` of `device` once it has been idle for the table's limit.
async fn idle_timer(
    table: Weak<Table>,
    device: String,
    generation: u64,
    last: Arc<Mutex<Instant>>,
) {
    loop {
        let Some(idle) = table.upgrade().map(|t| t.idle) else {
            return;
        };
        let due = *last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            + idle;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            continue;
        }
        let Some(table) = table.upgrade() else {
            return;
        };
        let entry = {
            let mut entries = table
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match entries.get(&device) {
                Some(e) if e.generation == generation => entries.remove(&device),
                _ => None,
            }
        };
        if let Some(entry) = entry {
            info!(device = %device, idle_s = idle.as_secs_f64(), "debug: closing an idle session");
            // Not `close_entry`: it would abort this very task.
            entry.session.lock().await.close().await;
        }
        return;
    }
}

impl Runtimes {
    /// The debug sessions.
    pub fn debug_sessions(&self) -> &DebugSessions {
        &self.inner.debug
    }

    /// Handles a `run_command` with `api: "debug"` for `device_id`; `data` is its `data` field
    /// (`None` when absent). Returns `(status, debug_response)`: `status` is `"success"` whenever
    /// the message was an object (errors are `debug_response.type == "debug_error"`, as the
    /// original answers), `"error"` for a `data` that is not an object.
    pub async fn debug(&self, device_id: &str, data: Option<&Value>) -> (&'static str, Value) {
        let empty = serde_json::Map::new();
        let data = match data {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return (
                    "error",
                    protocol::error("Invalid field type: Value must be an object. (field: data)"),
                );
            }
        };
        let request = match Request::parse(data) {
            Ok(r) => r,
            Err(e) => return ("success", protocol::error(e)),
        };
        let answer = match request {
            Request::Start {
                username,
                password,
                port,
            } => self.debug_start(device_id, username, password, port).await,
            Request::Stop => {
                if self.inner.debug.close(device_id).await {
                    info!(device = %device_id, "debug: session stopped");
                }
                json!({"type": "debug_disconnected"})
            }
            request => self.debug_command(device_id, &request).await,
        };
        ("success", answer)
    }

    async fn debug_start(
        &self,
        device_id: &str,
        username: String,
        password: String,
        port: u16,
    ) -> Value {
        let sessions = &self.inner.debug;
        sessions.close(device_id).await;
        let ip = match super::command::resolve(self, device_id.to_owned()).await {
            Ok(ip) => ip,
            Err(CommandError::DeviceNotFound(_)) => {
                return protocol::error(format!("Device {device_id} not found"));
            }
            Err(e) => return protocol::error(e.to_string()),
        };
        match Session::start(ip, port, username, password).await {
            Ok(mut session) => {
                // A delete, stop or restart that began meanwhile has already closed the
                // device's session (or will close the one inserted below: no await in between).
                if let Some(kind @ (OpKind::Delete | OpKind::Stop | OpKind::Restart)) =
                    self.ops().running(device_id)
                {
                    session.close().await;
                    return protocol::error(
                        Busy {
                            name: device_id.to_owned(),
                            kind,
                        }
                        .to_string(),
                    );
                }
                if let Some(old) = sessions.insert(device_id, session) {
                    // A concurrent start of the same device won the race before this one.
                    close_entry(old).await;
                }
                info!(device = %device_id, port, "debug: session started");
                json!({"type": "debug_connected"})
            }
            Err(e) => {
                warn!(device = %device_id, port, error = %e, "debug: start failed");
                protocol::error(e)
            }
        }
    }

    async fn debug_command(&self, device_id: &str, request: &Request) -> Value {
        let Some((session, last)) = self.inner.debug.touch(device_id) else {
            return protocol::error("No active debug session. Send debug_start first.");
        };
        let Ok(mut session) = tokio::time::timeout(BUSY_WAIT, session.lock()).await else {
            return protocol::error(format!(
                "The debug session is busy: the previous command did not finish within {} s",
                BUSY_WAIT.as_secs()
            ));
        };
        let answer = session.run(request).await;
        // A long command does not count as idle time.
        set_now(&last);
        answer
    }
}
