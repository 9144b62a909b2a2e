//! `get_serial_devices` (upstream-head §7.7): the host's serial devices as netmon last reported
//! them (the device cache), those with a `/dev/serial/by-id/` name only, as the original lists
//! them.

use serde_json::{Map, Value, json};

use super::contract::{self, BaseMessage, ContractError, Field, Kind, opt, single_object};
use super::{Services, Topic, wrap};
use crate::runtime::serial;

/// `get_serial_devices` (BASE_MESSAGE).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
];

/// A validated `get_serial_devices`.
#[derive(Debug, Clone, PartialEq)]
pub struct GetSerialDevices {
    pub base: BaseMessage,
}

impl Topic for GetSerialDevices {
    const NAME: &'static str = "get_serial_devices";

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        let map = single_object(args)?;
        contract::check(CONTRACT, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
        })
    }

    async fn apply(self, services: &Services) -> Value {
        let devices = serial::listing(&services.interfaces.serial_devices());
        let count = devices.len();
        let mut body = Map::new();
        body.insert("status".into(), json!("success"));
        body.insert("devices".into(), Value::Array(devices));
        body.insert("count".into(), json!(count));
        wrap(Self::NAME, &self.base.correlation_id, body)
    }
}
