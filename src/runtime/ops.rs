//! The operation table: one operation per runtime at a time, and the progress and outcome of each, as
//! `get_device_status` reports them (upstream §12 items 1–2).
//!
//! [`Operations::try_begin`] is the per-runtime lock: it hands out an [`OpHandle`] or refuses with
//! [`Busy`] (`Container <n> already has a <create|delete> operation in progress`). The handle records
//! steps, warnings (e.g. a MAC the engine could not honour) and the final outcome; dropping it without
//! an outcome (a panic, a cancelled task) records an error, so a runtime never stays "in progress"
//! forever. The self-destruct uses the same table under [`naming::ORCHESTRATOR_DEVICE_ID`].
//!
//! The table lives in memory only (a restarted agent has no operation in progress). It never calls
//! Docker; the lock is a plain mutex held for map updates only, never across an await.
//!
//! [`naming::ORCHESTRATOR_DEVICE_ID`]: super::naming::ORCHESTRATOR_DEVICE_ID

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tracing::{error, info, warn};

use crate::timefmt::format_utc_micros;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `create_new_runtime`.
    Create,
    /// `delete_device`.
    Delete,
    /// `start_device`.
    Start,
    /// `stop_device`.
    Stop,
    /// `restart_device`.
    Restart,
    /// Re-attaching a runtime after its parent subnet changed.
    Rehome,
    /// Boot reconcile of one runtime.
    Reconcile,
    /// Removing what an interrupted create left (or a leftover of one undone earlier).
    Cleanup,
    /// `delete_orchestrator`.
    SelfDestruct,
    /// The watchdog starting a runtime that should run and did not.
    Watchdog,
}

impl OpKind {
    /// The `operation` value reported (`create`, `delete`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Delete => "delete",
            OpKind::Start => "start",
            OpKind::Stop => "stop",
            OpKind::Restart => "restart",
            OpKind::Rehome => "rehome",
            OpKind::Reconcile => "reconcile",
            OpKind::Cleanup => "cleanup",
            OpKind::SelfDestruct => "delete_orchestrator",
            OpKind::Watchdog => "watchdog_start",
        }
    }

    /// The `status` reported while it runs (`creating`, `deleting`, …).
    pub fn progress_status(self) -> &'static str {
        match self {
            OpKind::Create => "creating",
            OpKind::Delete | OpKind::SelfDestruct => "deleting",
            OpKind::Start | OpKind::Watchdog => "starting",
            OpKind::Stop => "stopping",
            OpKind::Restart => "restarting",
            OpKind::Rehome => "reconnecting",
            OpKind::Reconcile => "reconciling",
            OpKind::Cleanup => "cleaning_up",
        }
    }
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Finished successfully (possibly with warnings).
    Succeeded,
    /// Finished with an error.
    Failed,
}

/// One operation's record.
#[derive(Debug, Clone, PartialEq)]
pub struct OpRecord {
    /// What it does.
    pub kind: OpKind,
    /// Running, succeeded or failed.
    pub outcome: Outcome,
    /// The current (or last) step, e.g. `pulling_image`.
    pub step: Option<String>,
    /// The error, when failed.
    pub error: Option<String>,
    /// Things that did not go as asked but did not fail the operation.
    pub warnings: Vec<String>,
    /// A human sentence about the state.
    pub message: String,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

impl OpRecord {
    /// The upstream §12 item 1 shape for a tracked operation: `{status, device_id, operation,
    /// started_at, updated_at, step?, error?, message}` plus `warnings` when there are any.
    pub fn to_status(&self, device_id: &str) -> Map<String, Value> {
        let status = match self.outcome {
            Outcome::Running => self.kind.progress_status(),
            Outcome::Failed => "error",
            Outcome::Succeeded => "success",
        };
        let mut m = Map::new();
        m.insert("status".into(), json!(status));
        m.insert("device_id".into(), json!(device_id));
        m.insert("operation".into(), json!(self.kind.as_str()));
        m.insert(
            "started_at".into(),
            json!(format_utc_micros(self.started_at)),
        );
        m.insert(
            "updated_at".into(),
            json!(format_utc_micros(self.updated_at)),
        );
        if let Some(s) = &self.step {
            m.insert("step".into(), json!(s));
        }
        if let Some(e) = &self.error {
            m.insert("error".into(), json!(e));
        }
        if !self.warnings.is_empty() {
            m.insert("warnings".into(), json!(self.warnings));
        }
        m.insert("message".into(), json!(self.message));
        m
    }
}

/// Another operation holds the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Container {name} already has a {} operation in progress", kind.as_str())]
pub struct Busy {
    /// The runtime.
    pub name: String,
    /// The operation that holds it.
    pub kind: OpKind,
}

/// The table. Clone it freely (shared state).
#[derive(Debug, Clone, Default)]
pub struct Operations {
    inner: Arc<Mutex<HashMap<String, OpRecord>>>,
}

impl Operations {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the runtime's lock for `kind`, replacing any finished record. Refused while another
    /// operation on the same name runs.
    pub fn try_begin(&self, name: &str, kind: OpKind) -> Result<OpHandle, Busy> {
        let now = OffsetDateTime::now_utc();
        let mut t = self.lock();
        if let Some(r) = t.get(name)
            && r.outcome == Outcome::Running
        {
            return Err(Busy {
                name: name.to_owned(),
                kind: r.kind,
            });
        }
        t.insert(
            name.to_owned(),
            OpRecord {
                kind,
                outcome: Outcome::Running,
                step: None,
                error: None,
                warnings: Vec::new(),
                message: format!("{} of {name} started", kind.as_str()),
                started_at: now,
                updated_at: now,
            },
        );
        Ok(OpHandle {
            ops: self.clone(),
            name: name.to_owned(),
            kind,
            done: false,
        })
    }

    /// The runtime's current or last operation.
    pub fn get(&self, name: &str) -> Option<OpRecord> {
        self.lock().get(name).cloned()
    }

    /// The operation running on `name`, if any.
    pub fn running(&self, name: &str) -> Option<OpKind> {
        self.lock()
            .get(name)
            .filter(|r| r.outcome == Outcome::Running)
            .map(|r| r.kind)
    }

    /// The names with a `kind` operation running, sorted.
    pub fn running_of(&self, kind: OpKind) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::Running && r.kind == kind)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Drops a finished record (e.g. after a successful delete, so the name reads as not found).
    pub fn clear_finished(&self, name: &str) {
        let mut t = self.lock();
        if t.get(name).is_some_and(|r| r.outcome != Outcome::Running) {
            t.remove(name);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpRecord>> {
        // A panic while holding this lock only interrupted a map update; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut OpRecord)) {
        if let Some(r) = self.lock().get_mut(name) {
            f(r);
            r.updated_at = OffsetDateTime::now_utc();
        }
    }
}

/// The holder of one runtime's lock; records progress and the outcome.
#[derive(Debug)]
pub struct OpHandle {
    ops: Operations,
    name: String,
    kind: OpKind,
    done: bool,
}

impl OpHandle {
    /// The runtime name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operation kind.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// Records the current step (e.g. `creating_networks`) and its message.
    pub fn step(&self, step: &str, message: impl Into<String>) {
        let message = message.into();
        info!(runtime = %self.name, operation = self.kind.as_str(), step, "{message}");
        self.ops.update(&self.name, |r| {
            r.step = Some(step.to_owned());
            r.message = message;
        });
    }

    /// Records something that did not go as asked without failing the operation.
    pub fn warn(&self, warning: impl Into<String>) {
        let w = warning.into();
        warn!(runtime = %self.name, operation = self.kind.as_str(), "{w}");
        self.ops.update(&self.name, |r| r.warnings.push(w));
    }

    /// Warnings recorded so far.
    pub fn warnings(&self) -> Vec<String> {
        self.ops
            .get(&self.name)
            .map(|r| r.warnings)
            .unwrap_or_default()
    }

    /// Finishes successfully and releases the lock.
    pub fn succeed(mut self, message: impl Into<String>) {
        let message = message.into();
        info!(runtime = %self.name, operation = self.kind.as_str(), "{message}");
        self.finish(Outcome::Succeeded, None, message);
    }

    /// Finishes with an error and releases the lock. The last step is kept (it says where it failed).
    pub fn fail(mut self, error: impl Into<String>) {
        let error = error.into();
        error!(runtime = %self.name, operation = self.kind.as_str(), "{error}");
        let message = format!("{} of {} failed", self.kind.as_str(), self.name);
        self.finish(Outcome::Failed, Some(error), message);
    }

    fn finish(&mut self, outcome: Outcome, error: Option<String>, message: String) {
        self.done = true;
        self.ops.update(&self.name, |r| {
            r.outcome = outcome;
            r.error = error;
            r.message = message;
        });
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        if !self.done {
            let message = format!("{} of {} was interrupted", self.kind.as_str(), self.name);
            error!(runtime = %self.name, "{message}");
            self.finish(
                Outcome::Failed,
                Some("operation interrupted".into()),
                message,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_of_lists_only_running_operations_of_that_kind() {
        let ops = Operations::new();
        let b = ops.try_begin("b", OpKind::Create).unwrap();
        let _a = ops.try_begin("a", OpKind::Create).unwrap();
        let _d = ops.try_begin("d", OpKind::Delete).unwrap();
        ops.try_begin("done", OpKind::Create)
            .unwrap()
            .succeed("made");
        assert_eq!(ops.running_of(OpKind::Create), ["a", "b"]);
        b.fail("no");
        assert_eq!(ops.running_of(OpKind::Create), ["a"]);
        assert_eq!(ops.running_of(OpKind::Delete), ["d"]);
    }

    #[test]
    fn one_operation_per_runtime() {
        let ops = Operations::new();
        let h = ops.try_begin("plc", OpKind::Create).unwrap();
        let e = ops.try_begin("plc", OpKind::Delete).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Container plc already has a create operation in progress"
        );
        assert!(ops.try_begin("other", OpKind::Delete).is_ok());
        h.step("pulling_image", "pulling");
        assert_eq!(
            ops.get("plc").unwrap().step.as_deref(),
            Some("pulling_image")
        );
        h.succeed("done");
        let h = ops.try_begin("plc", OpKind::Delete).unwrap();
        assert_eq!(ops.running("plc"), Some(OpKind::Delete));
        h.fail("boom");
        let r = ops.get("plc").unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        let s = r.to_status("plc");
        assert_eq!(s["status"], "error");
        assert_eq!(s["operation"], "delete");
        assert_eq!(s["error"], "boom");
    }

    #[test]
    fn a_dropped_handle_records_an_interruption() {
        let ops = Operations::new();
        let h = ops.try_begin("plc", OpKind::Create).unwrap();
        h.warn("MAC not honoured");
        drop(h);
        let r = ops.get("plc").unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.warnings, ["MAC not honoured"]);
        assert!(ops.try_begin("plc", OpKind::Create).is_ok());
    }

    #[test]
    fn progress_status_follows_upstream() {
        let ops = Operations::new();
        let _h = ops.try_begin("plc", OpKind::Create).unwrap();
        let s = ops.get("plc").unwrap().to_status("plc");
        let keys: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "status",
                "device_id",
                "operation",
                "started_at",
                "updated_at",
                "message"
            ]
        );
        assert_eq!(s["status"], "creating");
    }
}
