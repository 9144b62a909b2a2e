//! `delete_orchestrator` (upstream §2.3, upstream-head §9.7): the agent removes every runtime,
//! the network monitor and itself. Acked at once with today's `{status: "accepted", message,
//! poll_device_id}`; the same object with `status: "command_received"` (the literal the older
//! cloud reads) is also emitted as `delete_orchestrator_response`, refusals as they are. The
//! runtime service waits a moment before it starts, so the answer leaves first. Progress is the
//! status of device `__orchestrator__`.

use serde_json::{Map, Value, json};

use super::contract::{BaseMessage, ContractError, single_object};
use super::{Services, Topic, answer};
use crate::runtime::naming::ORCHESTRATOR_DEVICE_ID;

/// A validated `delete_orchestrator` (BASE_MESSAGE).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOrchestrator {
    pub base: BaseMessage,
}

impl Topic for DeleteOrchestrator {
    const NAME: &'static str = "delete_orchestrator";
    const EMITS: Option<&'static str> = Some("delete_orchestrator_response");

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        Ok(Self {
            base: BaseMessage::parse(single_object(args)?)?,
        })
    }

    /// The older cloud waits for `command_received` in the event; today's reads `accepted` in
    /// the ack.
    fn emitted(ack: &Value) -> Value {
        let mut event = ack.clone();
        if event["status"] == ACCEPTED {
            event["status"] = json!("command_received");
        }
        event
    }

    async fn apply(self, services: &Services) -> Value {
        tracing::warn!("deleting the orchestrator was requested");
        let result = services.runtime.self_destruct().await.map(|()| accepted());
        answer(Self::NAME, &self.base.correlation_id, result)
    }
}

const ACCEPTED: &str = "accepted";

/// The answer body once the self-destruct is accepted (HEAD's texts, upstream-head §9.7).
fn accepted() -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("status".into(), json!(ACCEPTED));
    body.insert(
        "message".into(),
        json!(format!(
            "Self-destruct initiated. Poll get_device_status with device_id='{ORCHESTRATOR_DEVICE_ID}' for progress."
        )),
    );
    body.insert("poll_device_id".into(), json!(ORCHESTRATOR_DEVICE_ID));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_where_to_poll() {
        let ack = answer::<String>("delete_orchestrator", &json!(10), Ok(accepted()));
        let keys: Vec<&str> = ack
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "action",
                "correlation_id",
                "status",
                "message",
                "poll_device_id"
            ]
        );
        assert_eq!(ack["status"], "accepted");
        assert_eq!(
            ack["message"],
            "Self-destruct initiated. Poll get_device_status with device_id='__orchestrator__' for progress."
        );
        assert_eq!(ack["poll_device_id"], "__orchestrator__");
        let event = DeleteOrchestrator::emitted(&ack);
        assert_eq!(event["status"], "command_received");
        assert_eq!(event["poll_device_id"], "__orchestrator__");
        let refused = super::super::error_ack("delete_orchestrator", &json!(1), "busy");
        assert_eq!(DeleteOrchestrator::emitted(&refused), refused);
    }
}
