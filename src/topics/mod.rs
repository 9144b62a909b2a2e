//! The cloud topics: one small type per topic, the dispatch table, and the heartbeat.
//!
//! This is the only module that knows topic (event) names. For every inbound event it
//! validates the arguments into a typed request ([`validate`], pure), applies it with the
//! services it needs, and returns the ack; topics the original answered by emit also emit
//! (spec README §2 "Cloud link"). Runtime work goes through the [`RuntimeOps`] trait, which the
//! `runtime` module implements.
//!
//! Ack rules:
//! - success: the result object, `action` and `correlation_id` first;
//! - failure: `{"action", "correlation_id", "status": "error", "error"}` in that key order,
//!   `correlation_id` being the value received (any JSON type) or `null`;
//! - the link sends the ack only when the server asked for one, so handlers always return it.
//!
//! Never does: Docker calls, socket I/O (beyond `Link::emit`), or blocking I/O on the runtime.

mod heartbeat;
mod host;
mod runtime;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::cloud::{BoxFuture, Handler, Link};
use crate::contract::{
    self, BaseMessage, ConsumptionRequest, ContractError, CreateRuntimeRequest,
    DeleteDeviceRequest, DeviceConsumptionRequest, DeviceRequest, HostInterfacesRequest,
    RunCommandRequest,
};
use crate::netevents::InterfaceCache;

pub use heartbeat::HeartbeatPayload;

/// What a runtime operation answers: the result's fields (without `action` / `correlation_id`,
/// which the dispatcher puts first), or an error whose text goes into the error ack.
pub type OpResult = Result<Map<String, Value>, OpError>;

/// A runtime operation failed or was refused; the text is sent to the cloud as `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    /// An error with this text.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The runtime side of the topics, implemented by `runtime` (Docker). Every method receives a
/// request that already passed its contract, must not block, and should answer promptly: long
/// work (creation, deletion, self-destruct) runs in the background and is reported through
/// `device_status`. Bodies are wrapped by the dispatcher as `{action, correlation_id, ..body}`.
pub trait RuntimeOps: Send + Sync + 'static {
    /// `create_new_runtime`. Upstream answer body: `{status: "creating", container_id, message:
    /// "Container creation started for <name>"}`.
    fn create(&self, req: CreateRuntimeRequest) -> BoxFuture<OpResult>;
    /// `delete_device`. Upstream body: `{status: "deleting", device_id, message: "Container
    /// deletion started for <id>"}`.
    fn delete(&self, req: DeleteDeviceRequest) -> BoxFuture<OpResult>;
    /// `start_device`. Body `{success: true, ..}`; the dispatcher orders the answer as
    /// `{action, success, correlation_id, ..}` (upstream §2.6) and emits it as `start_device`.
    fn start(&self, req: DeviceRequest) -> BoxFuture<OpResult>;
    /// `stop_device`, like [`RuntimeOps::start`].
    fn stop(&self, req: DeviceRequest) -> BoxFuture<OpResult>;
    /// `restart_device`, like [`RuntimeOps::start`].
    fn restart(&self, req: DeviceRequest) -> BoxFuture<OpResult>;
    /// `get_device_status` (upstream §12 items 1–2); `device_id == "__orchestrator__"` is the
    /// self-destruct progress.
    fn device_status(&self, req: DeviceRequest) -> BoxFuture<OpResult>;
    /// `run_command`. For [`contract::RunCommandForm::Object`] return the body (e.g. `{status,
    /// http_response}`), wrapped like the others; for [`contract::RunCommandForm::Legacy`] the
    /// value is the whole ack, sent verbatim (upstream §6.2: the runtime's JSON answer itself).
    fn run_command(&self, req: RunCommandRequest) -> BoxFuture<Result<Value, OpError>>;
    /// `get_consumption_device` (upstream §12 item 9 body: `{device_id, memory, cpu, cpu_usage,
    /// memory_usage}`); answered by ack and also emitted as `get_consumption_device`.
    fn consumption_device(&self, req: DeviceConsumptionRequest) -> BoxFuture<OpResult>;
    /// `delete_orchestrator`: answer at once (e.g. `{status: "command_received", message,
    /// poll_device_id: "__orchestrator__"}`) and run the clean-up in the background; the answer
    /// is emitted as `delete_orchestrator_response` (and acked) right after this returns, so the
    /// clean-up should give that emit a moment before removing the agent's own container.
    fn delete_orchestrator(&self, req: BaseMessage) -> BoxFuture<OpResult>;
}

/// What [`App`] needs from the rest of the agent.
pub struct Services {
    /// When the process started (take `Instant::now()` first thing in `main`): heartbeat `uptime`.
    pub started: Instant,
    /// The host interface cache fed by `netevents::spawn_listener`.
    pub interfaces: InterfaceCache,
    /// The host sampler (its task is started by `main`, apart from the link): the heartbeat's
    /// readings and the history of `get_consumption_orchestrator`.
    pub host: crate::host::HostMonitor,
    /// The runtime side (`runtime::Runtimes`).
    pub runtime: Arc<dyn RuntimeOps>,
}

/// The topics' [`Handler`]: build one with [`App::new`] and give it to the cloud link.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    services: Services,
}

impl App {
    /// Builds the handler. Cheap and synchronous: nothing is read until the first event or
    /// connection.
    pub fn new(services: Services) -> Self {
        Self {
            inner: Arc::new(AppInner { services }),
        }
    }

    /// The host sampler (and its 48 h usage history).
    pub fn host(&self) -> &crate::host::HostMonitor {
        &self.inner.services.host
    }

    /// Handles one event and returns the ack arguments (what [`Handler::on_event`] does).
    pub async fn dispatch(&self, name: &str, args: &[Value], link: &Link) -> Vec<Value> {
        let correlation_id = contract::correlation_id_of(args);
        let span = tracing::info_span!(
            "command",
            topic = %name,
            correlation_id = %correlation_id,
            device = tracing::field::Empty,
        );
        let answer = async {
            match validate(name, args) {
                Ok(request) => {
                    if let Some(device) = request.device_id() {
                        tracing::Span::current().record("device", device);
                    }
                    self.apply(request, link).await
                }
                Err(rejection) => {
                    tracing::warn!(error = %rejection.error, "request refused");
                    let error = rejection.error.to_string();
                    let ack = if Power::from_topic(name).is_some() {
                        runtime::power_error(name, rejection.correlation_id, error)
                    } else {
                        error_ack(name, &rejection.correlation_id, &error)
                    };
                    if let Some(event) = emit_event_of(name) {
                        emit(link, event, ack.clone()).await;
                    }
                    ack
                }
            }
        }
        .instrument(span)
        .await;
        vec![answer]
    }

    async fn apply(&self, request: Request, link: &Link) -> Value {
        let services = &self.inner.services;
        match request {
            Request::Create(r) => runtime::create(services, r).await,
            Request::Delete(r) => runtime::delete(services, r).await,
            Request::Start(r) => runtime::power(services, link, Power::Start, r).await,
            Request::Stop(r) => runtime::power(services, link, Power::Stop, r).await,
            Request::Restart(r) => runtime::power(services, link, Power::Restart, r).await,
            Request::DeviceStatus(r) => runtime::device_status(services, r).await,
            Request::RunCommand(r) => runtime::run_command(services, r).await,
            Request::ConsumptionDevice(r) => runtime::consumption_device(services, link, r).await,
            Request::DeleteOrchestrator(r) => runtime::delete_orchestrator(services, link, r).await,
            Request::ConsumptionOrchestrator(r) => {
                host::consumption_orchestrator(services, r).await
            }
            Request::HostInterfaces(r) => host::host_interfaces(services, r),
        }
    }
}

impl Handler for App {
    fn on_event(&self, name: String, args: Vec<Value>, link: Link) -> BoxFuture<Vec<Value>> {
        let app = self.clone();
        Box::pin(async move { app.dispatch(&name, &args, &link).await })
    }

    fn on_connect(&self, link: Link) -> BoxFuture<()> {
        let app = self.clone();
        Box::pin(async move { heartbeat::run(&app.inner.services, link).await })
    }
}

/// The three device power topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Power {
    Start,
    Stop,
    Restart,
}

impl Power {
    fn from_topic(topic: &str) -> Option<Self> {
        [Power::Start, Power::Stop, Power::Restart]
            .into_iter()
            .find(|p| p.topic() == topic)
    }

    fn topic(self) -> &'static str {
        match self {
            Power::Start => "start_device",
            Power::Stop => "stop_device",
            Power::Restart => "restart_device",
        }
    }
}

/// A validated request of some topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Create(CreateRuntimeRequest),
    Delete(DeleteDeviceRequest),
    Start(DeviceRequest),
    Stop(DeviceRequest),
    Restart(DeviceRequest),
    DeviceStatus(DeviceRequest),
    RunCommand(RunCommandRequest),
    ConsumptionDevice(DeviceConsumptionRequest),
    ConsumptionOrchestrator(ConsumptionRequest),
    DeleteOrchestrator(BaseMessage),
    HostInterfaces(HostInterfacesRequest),
}

impl Request {
    /// The device the request is about, for the log span.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Request::Create(r) => Some(&r.container_name),
            Request::Delete(r) => Some(&r.device_id),
            Request::Start(r)
            | Request::Stop(r)
            | Request::Restart(r)
            | Request::DeviceStatus(r) => Some(&r.device_id),
            Request::RunCommand(r) => Some(&r.device_id),
            Request::ConsumptionDevice(r) => Some(&r.device_id),
            _ => None,
        }
    }
}

/// A refused request: the error and the correlation id to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub correlation_id: Value,
    pub error: ContractError,
}

type Parser = fn(&[Value]) -> Result<Request, ContractError>;

/// The dispatch table: event name → parser into a typed request.
const TOPICS: &[(&str, Parser)] = &[
    ("create_new_runtime", |a| {
        contract::single_object(a)
            .and_then(CreateRuntimeRequest::parse)
            .map(Request::Create)
    }),
    ("delete_device", |a| {
        contract::single_object(a)
            .and_then(DeleteDeviceRequest::parse)
            .map(Request::Delete)
    }),
    ("start_device", |a| {
        contract::single_object(a)
            .and_then(DeviceRequest::parse)
            .map(Request::Start)
    }),
    ("stop_device", |a| {
        contract::single_object(a)
            .and_then(DeviceRequest::parse)
            .map(Request::Stop)
    }),
    ("restart_device", |a| {
        contract::single_object(a)
            .and_then(DeviceRequest::parse)
            .map(Request::Restart)
    }),
    ("get_device_status", |a| {
        contract::single_object(a)
            .and_then(DeviceRequest::parse)
            .map(Request::DeviceStatus)
    }),
    ("run_command", |a| {
        RunCommandRequest::parse(a).map(Request::RunCommand)
    }),
    ("get_consumption_device", |a| {
        contract::single_object(a)
            .and_then(DeviceConsumptionRequest::parse)
            .map(Request::ConsumptionDevice)
    }),
    ("get_consumption_orchestrator", |a| {
        contract::single_object(a)
            .and_then(ConsumptionRequest::parse)
            .map(Request::ConsumptionOrchestrator)
    }),
    ("delete_orchestrator", |a| {
        contract::single_object(a)
            .and_then(BaseMessage::parse)
            .map(Request::DeleteOrchestrator)
    }),
    ("get_host_interfaces", |a| {
        contract::single_object(a)
            .and_then(HostInterfacesRequest::parse)
            .map(Request::HostInterfaces)
    }),
];

/// The topic names this agent answers.
pub fn topic_names() -> impl Iterator<Item = &'static str> {
    TOPICS.iter().map(|(name, _)| *name)
}

/// Validates an event into a typed request (pure: the fuzzable core of the dispatcher).
pub fn validate(topic: &str, args: &[Value]) -> Result<Request, Rejection> {
    let correlation_id = contract::correlation_id_of(args);
    let parser = TOPICS
        .iter()
        .find(|(name, _)| *name == topic)
        .map(|(_, p)| p);
    let result = match parser {
        Some(parse) => parse(args),
        None => Err(ContractError::UnknownTopic {
            topic: topic.to_owned(),
        }),
    };
    result.map_err(|error| Rejection {
        correlation_id,
        error,
    })
}

/// The event a topic's answer is also emitted as, for the topics the original answered by emit.
fn emit_event_of(topic: &str) -> Option<&'static str> {
    match topic {
        "start_device" => Some("start_device"),
        "stop_device" => Some("stop_device"),
        "restart_device" => Some("restart_device"),
        "get_consumption_device" => Some("get_consumption_device"),
        "delete_orchestrator" => Some("delete_orchestrator_response"),
        _ => None,
    }
}

/// `{"action", "correlation_id", "status": "error", "error"}`.
pub fn error_ack(action: &str, correlation_id: &Value, error: &str) -> Value {
    json!({
        "action": action,
        "correlation_id": correlation_id,
        "status": "error",
        "error": error,
    })
}

/// `{action, correlation_id, ..body}` (body keys named `action`/`correlation_id` are replaced
/// by the dispatcher's, so the echo is always exact).
pub fn wrap(action: &str, correlation_id: &Value, body: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("action".to_owned(), Value::from(action));
    out.insert("correlation_id".to_owned(), correlation_id.clone());
    for (k, v) in body {
        if k != "action" && k != "correlation_id" {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// The answer to an [`OpResult`]: wrapped body or error ack.
pub fn answer(action: &str, correlation_id: &Value, result: OpResult) -> Value {
    match result {
        Ok(body) => wrap(action, correlation_id, body),
        Err(e) => error_ack(action, correlation_id, &e.0),
    }
}

/// Emits, logging (not failing) when the connection is gone: the ack path still answers.
async fn emit(link: &Link, event: &str, payload: Value) {
    if let Err(e) = link.emit(event, payload).await {
        tracing::warn!(event, error = %e, "emit failed");
    }
}

#[cfg(test)]
mod tests;
