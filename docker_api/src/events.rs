//! The engine's event stream (`GET /events`), filtered by type, label, container, … and decoded
//! into typed [`Event`]s. It never reconnects by itself: when the engine goes away the stream ends
//! (or yields a transport error) and the caller decides when to subscribe again.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use http::Method;
use serde::Deserialize;

use crate::client::{Docker, JsonLines, LineEvent};
use crate::encode;
use crate::error::{Error, Result};
use crate::filters::Filters;
use crate::serde_util::nullable;

/// A stream of engine events; see [`Docker::events`].
pub type EventStream = BoxStream<'static, Result<Event>>;

/// One engine event.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Object type.
    #[serde(rename = "Type")]
    pub kind: EventType,
    /// What happened (`create`, `start`, `die`, `connect`, `health_status: healthy`, …).
    #[serde(rename = "Action", default)]
    pub action: String,
    /// The object.
    #[serde(rename = "Actor", default)]
    pub actor: EventActor,
    /// `local` or `swarm`.
    #[serde(default)]
    pub scope: String,
    /// Unix seconds.
    #[serde(default)]
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano", default)]
    pub time_nano: i64,
}

/// The object an event is about.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct EventActor {
    /// Id (container id, network id, image name, …).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Attributes (`name`, labels, `exitCode`, `container` for network events, …).
    #[serde(rename = "Attributes", default, deserialize_with = "nullable")]
    pub attributes: BTreeMap<String, String>,
}

/// Event object types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// Container.
    Container,
    /// Image.
    Image,
    /// Network.
    Network,
    /// Volume.
    Volume,
    /// Daemon.
    Daemon,
    /// Plugin.
    Plugin,
    /// Anything else (swarm objects, builder, …).
    #[serde(other)]
    Other,
}

impl Docker {
    /// Subscribes to `GET /events?filters=…`. Returns once the engine accepted the subscription, so
    /// every matching event after that is delivered. The stream has no idle limit (events may be
    /// rare); it ends when the engine closes it.
    pub async fn events(&self, filters: &Filters) -> Result<EventStream> {
        let q = if filters.is_empty() {
            String::new()
        } else {
            encode::query([("filters", filters.to_json())])
        };
        let path = format!("/events{q}");
        let resp = self
            .send(Method::GET, &path, None, self.response_timeout())
            .await?;
        let lines = JsonLines::new(resp, "GET /events".into(), None);
        Ok(stream::unfold(Some(lines), |state| async move {
            let mut lines = state?;
            let item = match lines.next_line().await {
                Ok(LineEvent::End | LineEvent::Idle) => return None,
                Err(e) => Err(e),
                Ok(LineEvent::Line(line)) => {
                    serde_json::from_slice::<Event>(&line).map_err(|e| Error::Decode {
                        what: lines.what.clone(),
                        reason: e.to_string(),
                    })
                }
            };
            // A transport error ends the stream; an undecodable event does not.
            let next = match &item {
                Err(e) if e.is_transport() => None,
                _ => Some(lines),
            };
            Some((item, next))
        })
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_engine_event_json() {
        let e: Event = serde_json::from_str(
            r#"{"status":"start","id":"abc","from":"img","Type":"container","Action":"start",
                "Actor":{"ID":"abc","Attributes":{"name":"plc","orchestrator-test":"1"}},
                "scope":"local","time":1700000000,"timeNano":1700000000123456789}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventType::Container);
        assert_eq!(e.action, "start");
        assert_eq!(e.actor.attributes["name"], "plc");
        let e: Event = serde_json::from_str(
            r#"{"Type":"builder","Action":"x","Actor":{"ID":"y","Attributes":null}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventType::Other);
    }
}
