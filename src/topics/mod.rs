//! The cloud topics: one small type per topic, the dispatch table, and the heartbeat.
//!
//! This is the only module that knows topic (event) names and answer shapes. A topic is one file
//! (mini-redis' `cmd/*.rs`): its contract, the typed request `Topic::parse` validates the event
//! into (pure: what the fuzzers call), and `Topic::apply`, which calls the agent's services with
//! their own types (`runtime::Runtimes`, the host sampler, the interface cache) and shapes their
//! results into the ack. Adding a topic is one file and one line in the dispatch table, `TOPICS`.
//!
//! Ack rules:
//! - success: the result object, `action` and `correlation_id` first;
//! - failure: `{"action", "correlation_id", "status": "error", "error"}` in that key order,
//!   `correlation_id` being the value received (any JSON type) or `null`;
//! - topics the original answered by emit (`Topic::EMITS`) also emit the ack, refusals
//!   included (spec README §2 "Cloud link");
//! - the link sends the ack only when the server asked for one, so handlers always return it.
//!
//! Never does: Docker calls, socket I/O (beyond `Link::emit`), or blocking I/O on the runtime.

pub mod contract;

mod create_new_runtime;
mod delete_device;
mod delete_orchestrator;
mod get_consumption_device;
mod get_consumption_orchestrator;
mod get_device_status;
mod get_host_interfaces;
mod get_serial_devices;
mod heartbeat;
mod power;
mod run_command;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::cloud::{BoxFuture, Handler, Link};
use crate::netevents::InterfaceCache;
use crate::runtime::Runtimes;
use crate::telemetry::{Commands, Outcome};
use contract::ContractError;

pub use create_new_runtime::CreateNewRuntime;
pub use heartbeat::HeartbeatPayload;
pub use run_command::RunCommand;

/// One cloud topic: its typed, validated request and how it is answered.
pub(crate) trait Topic: Sized + fmt::Debug + Send + 'static {
    /// The event name.
    const NAME: &'static str;
    /// The event the ack is also emitted as (the topics the original answered by emit).
    const EMITS: Option<&'static str> = None;

    /// Validates the event's arguments into the request. Pure and deterministic.
    fn parse(args: &[Value]) -> Result<Self, ContractError>;

    /// The device the request is about, for the log span.
    fn device(&self) -> Option<&str> {
        None
    }

    /// Does what the request asks and returns the ack. Must not block; long work runs in the
    /// background and is reported through `get_device_status`.
    fn apply(self, services: &Services) -> impl Future<Output = Value> + Send;

    /// The payload of the [`Topic::EMITS`] event for `ack` (by default the ack itself).
    fn emitted(ack: &Value) -> Value {
        ack.clone()
    }

    /// The ack of a request that did not validate.
    fn refusal(correlation_id: &Value, error: &str) -> Value {
        error_ack(Self::NAME, correlation_id, error)
    }

    /// How the command went, judged from its ack (for the metrics): an error when it says
    /// `"status": "error"` (the failure shape of every topic, see the ack rules above).
    fn outcome(ack: &Value) -> Outcome {
        if ack.get("status").and_then(Value::as_str) == Some("error") {
            Outcome::Error
        } else {
            Outcome::Ok
        }
    }
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
    /// The runtime service.
    pub runtime: Runtimes,
    /// The client certificate the link uses: the `certificate` field of the `__orchestrator__`
    /// status.
    pub certificate: crate::certs::InUse,
    /// Where every command's topic, outcome and latency are counted (the local metrics).
    pub commands: Commands,
}

/// A request some topic validated, type-erased (the fuzz facade looks into it).
pub(crate) trait Request: Any + fmt::Debug + Send {}

impl<T: Topic> Request for T {}

type Handling<'a> = Pin<Box<dyn Future<Output = (Value, Outcome)> + Send + 'a>>;
type Parsed = Result<Box<dyn Request>, ContractError>;

/// One line of the dispatch table.
struct Entry {
    name: &'static str,
    parse: fn(&[Value]) -> Parsed,
    handle: for<'a> fn(&'a Services, &'a Link, &'a [Value]) -> Handling<'a>,
}

const fn entry<T: Topic>() -> Entry {
    Entry {
        name: T::NAME,
        parse: parse_erased::<T>,
        handle: handle::<T>,
    }
}

/// The dispatch table: every topic this agent answers.
const TOPICS: &[Entry] = &[
    entry::<create_new_runtime::CreateNewRuntime>(),
    entry::<delete_device::DeleteDevice>(),
    entry::<power::StartDevice>(),
    entry::<power::StopDevice>(),
    entry::<power::RestartDevice>(),
    entry::<get_device_status::GetDeviceStatus>(),
    entry::<run_command::RunCommand>(),
    entry::<get_consumption_device::GetConsumptionDevice>(),
    entry::<get_consumption_orchestrator::GetConsumptionOrchestrator>(),
    entry::<delete_orchestrator::DeleteOrchestrator>(),
    entry::<get_host_interfaces::GetHostInterfaces>(),
    entry::<get_serial_devices::GetSerialDevices>(),
];

fn parse_erased<T: Topic>(args: &[Value]) -> Parsed {
    T::parse(args).map(|r| Box::new(r) as Box<dyn Request>)
}

fn handle<'a, T: Topic>(services: &'a Services, link: &'a Link, args: &'a [Value]) -> Handling<'a> {
    Box::pin(async move {
        let (ack, outcome) = match T::parse(args) {
            Ok(request) => {
                if let Some(device) = request.device() {
                    tracing::Span::current().record("device", device);
                }
                let ack = request.apply(services).await;
                let outcome = T::outcome(&ack);
                (ack, outcome)
            }
            Err(error) => {
                tracing::warn!(error = %error, "request refused");
                let ack = T::refusal(&contract::correlation_id_of(args), &error.to_string());
                (ack, Outcome::Refused)
            }
        };
        if let Some(event) = T::EMITS {
            emit(link, event, T::emitted(&ack)).await;
        }
        (ack, outcome)
    })
}

/// The topics' [`Handler`]: build one with [`App::new`] and give it to the cloud link.
#[derive(Clone)]
pub struct App {
    services: std::sync::Arc<Services>,
}

impl App {
    /// Builds the handler. Cheap and synchronous: nothing is read until the first event or
    /// connection.
    pub fn new(services: Services) -> Self {
        Self {
            services: std::sync::Arc::new(services),
        }
    }

    /// Handles one event and returns the ack arguments (what [`Handler::on_event`] does), and
    /// counts it in [`Services::commands`]: under its topic (`unknown` for names outside the
    /// table, so the cloud cannot grow the metrics), outcome and time to the ack.
    pub async fn dispatch(&self, name: &str, args: &[Value], link: &Link) -> Vec<Value> {
        let started = Instant::now();
        let correlation_id = contract::correlation_id_of(args);
        let span = tracing::info_span!(
            "command",
            topic = %name,
            correlation_id = %correlation_id,
            device = tracing::field::Empty,
        );
        let (topic, (answer, outcome)) = async {
            match TOPICS.iter().find(|t| t.name == name) {
                Some(topic) => (topic.name, (topic.handle)(&self.services, link, args).await),
                None => {
                    let error = ContractError::UnknownTopic {
                        topic: name.to_owned(),
                    };
                    tracing::warn!(error = %error, "request refused");
                    let ack = error_ack(name, &correlation_id, &error.to_string());
                    (UNKNOWN_TOPIC, (ack, Outcome::Refused))
                }
            }
        }
        .instrument(span)
        .await;
        self.services
            .commands
            .record(topic, outcome, started.elapsed());
        vec![answer]
    }

    #[cfg(test)]
    fn services(&self) -> &Services {
        &self.services
    }
}

impl Handler for App {
    fn on_event(&self, name: String, args: Vec<Value>, link: Link) -> BoxFuture<Vec<Value>> {
        let app = self.clone();
        Box::pin(async move { app.dispatch(&name, &args, &link).await })
    }

    fn on_connect(&self, link: Link) -> BoxFuture<()> {
        let app = self.clone();
        Box::pin(async move { heartbeat::run(&app.services, link).await })
    }

    /// Uploads (`run_command` with `files`) may be large; every other topic keeps the link's limit.
    fn inbound_limit(&self, name: &str) -> usize {
        if name == <run_command::RunCommand as Topic>::NAME {
            run_command::INBOUND_LIMIT
        } else {
            crate::cloud::MAX_INBOUND_MESSAGE
        }
    }

    /// A `run_command` the link refused still carries the synthetic `http_response` the cloud's UI
    /// reads, as every other refusal of that topic does.
    fn complete_refusal(&self, mut answer: Value) -> Value {
        if answer["action"] == <run_command::RunCommand as Topic>::NAME
            && let Some(error) = answer["error"].as_str()
        {
            answer["http_response"] = run_command::refusal_response(error);
        }
        answer
    }
}

/// A refused request: the error and the correlation id to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub correlation_id: Value,
    pub error: ContractError,
}

/// The `topic` the metrics count an event under when its name is not in the table.
pub const UNKNOWN_TOPIC: &str = "unknown";

/// The topic names this agent answers.
pub fn topic_names() -> impl Iterator<Item = &'static str> {
    TOPICS.iter().map(|t| t.name)
}

/// Validates an event into its topic's typed request, as dispatch does (pure: the fuzzable core
/// of the dispatcher).
pub(crate) fn validate(topic: &str, args: &[Value]) -> Result<Box<dyn Request>, Rejection> {
    let result = match TOPICS.iter().find(|t| t.name == topic) {
        Some(t) => (t.parse)(args),
        None => Err(ContractError::UnknownTopic {
            topic: topic.to_owned(),
        }),
    };
    result.map_err(|error| Rejection {
        correlation_id: contract::correlation_id_of(args),
        error,
    })
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

/// The ack of an outcome: the wrapped body, or the error ack with the error's text.
pub fn answer<E: fmt::Display>(
    action: &str,
    correlation_id: &Value,
    result: Result<Map<String, Value>, E>,
) -> Value {
    match result {
        Ok(body) => wrap(action, correlation_id, body),
        Err(e) => error_ack(action, correlation_id, &e.to_string()),
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
