//! `get_device_status` (upstream §12 items 1–2): the runtime service's status document of the
//! device, wrapped; `device_id == "__orchestrator__"` is the self-destruct's progress, plus the
//! client certificate in use (`certificate`: CN, validity, `state` ok/expiring/expired, and a
//! refused replacement), so the cloud sees an expiry coming.

use serde_json::Value;

use super::contract::{ContractError, DeviceRequest, single_object};
use super::{Services, Topic, answer};
use crate::telemetry::Outcome;

/// A validated `get_device_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct GetDeviceStatus(pub DeviceRequest);

impl Topic for GetDeviceStatus {
    const NAME: &'static str = "get_device_status";

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        DeviceRequest::parse(single_object(args)?).map(Self)
    }

    fn device(&self) -> Option<&str> {
        Some(&self.0.device_id)
    }

    async fn apply(self, services: &Services) -> Value {
        tracing::debug!("status requested");
        let mut result = services.runtime.device_status(&self.0.device_id).await;
        if self.0.device_id == crate::runtime::naming::ORCHESTRATOR_DEVICE_ID
            && let Ok(body) = &mut result
        {
            body.insert(
                "certificate".into(),
                services.certificate.to_json(crate::timefmt::now_unix()),
            );
        }
        answer(Self::NAME, &self.0.base.correlation_id, result)
    }

    /// A status document always names its device, and may report a failed operation with
    /// `"status": "error"`: the query itself failed only when the ack is the error ack.
    fn outcome(ack: &Value) -> Outcome {
        if ack.get("device_id").is_none() && ack.get("status") == Some(&Value::from("error")) {
            Outcome::Error
        } else {
            Outcome::Ok
        }
    }
}
