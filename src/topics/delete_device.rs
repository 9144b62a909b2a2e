//! `delete_device` (upstream §2.2): refused unless the device is a runtime of ours; answered
//! `{status: "deleting", device_id, message}` once the runtime service accepted it, the removal
//! going on in the background.

use serde_json::{Map, Value, json};

use super::contract::{self, BaseMessage, ContractError, Field, Kind, opt, req, single_object};
use super::{Services, Topic, answer};

/// `delete_device` (upstream §2.2).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("device_id", Kind::Str),
];

/// A validated `delete_device`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteDevice {
    pub base: BaseMessage,
    /// Non-blank.
    pub device_id: String,
}

impl DeleteDevice {
    /// Parses the message object (contract, then upstream's post-check with its text).
    pub fn parse_object(map: &Map<String, Value>) -> Result<Self, ContractError> {
        contract::check(CONTRACT, map)?;
        let device_id = contract::string(map, "device_id");
        if device_id.trim().is_empty() {
            return Err(ContractError::Semantic(
                "Device ID must be a non-empty string",
            ));
        }
        Ok(Self {
            base: BaseMessage::from_checked(map),
            device_id,
        })
    }
}

impl Topic for DeleteDevice {
    const NAME: &'static str = "delete_device";

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        Self::parse_object(single_object(args)?)
    }

    fn device(&self) -> Option<&str> {
        Some(&self.device_id)
    }

    async fn apply(self, services: &Services) -> Value {
        tracing::info!("delete requested");
        let name = self.device_id;
        let result = services.runtime.delete(&name).await.map(|()| {
            let mut body = Map::new();
            body.insert("status".into(), json!("deleting"));
            body.insert("device_id".into(), json!(name));
            body.insert(
                "message".into(),
                json!(format!("Container deletion started for {name}")),
            );
            body
        });
        answer(Self::NAME, &self.base.correlation_id, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<DeleteDevice, String> {
        DeleteDevice::parse(&[v]).map_err(|e| e.to_string())
    }

    #[test]
    fn delete_device_checks_and_keeps_upstream_text() {
        let ok = parse(json!({"correlation_id": 3, "device_id": "plc1"})).unwrap();
        assert_eq!(ok.device_id, "plc1");
        assert_eq!(
            parse(json!({"correlation_id": 3})).unwrap_err(),
            "Missing required field: 'Missing key: device_id'"
        );
        assert_eq!(
            parse(json!({"correlation_id": 3, "device_id": 4})).unwrap_err(),
            "Invalid field type: Value must be a string. (field: device_id)"
        );
        assert_eq!(
            parse(json!({"correlation_id": 3, "device_id": " "})).unwrap_err(),
            "Device ID must be a non-empty string"
        );
    }
}
