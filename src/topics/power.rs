//! `start_device`, `stop_device`, `restart_device` (upstream §2.6): the runtime service acts on an
//! owned runtime and waits for the engine. The ack, also emitted under the topic's name, is
//! `{action, success, correlation_id, ..}` in that key order: `success: true` (with `warnings` when
//! there were any), or `success: false` with `status: "error"` and `error`, refusals included.

use serde_json::{Map, Value, json};

use super::contract::{ContractError, DeviceRequest, single_object};
use super::{Services, Topic};
use crate::runtime::{self, Power};

/// Answers one power topic.
async fn apply(services: &Services, action: &str, power: Power, req: DeviceRequest) -> Value {
    tracing::info!("{action} requested");
    let result = services.runtime.power(&req.device_id, power).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, "{action} failed");
    }
    answer(action, req.base.correlation_id, result)
}

/// `{action, success: true, correlation_id[, warnings]}` or the failure's
/// `{action, success: false, correlation_id, status: "error", error}`.
fn answer(
    action: &str,
    correlation_id: Value,
    result: Result<Vec<String>, runtime::Error>,
) -> Value {
    match result {
        Ok(warnings) => {
            let mut out = Map::new();
            out.insert("action".to_owned(), Value::from(action));
            out.insert("success".to_owned(), Value::Bool(true));
            out.insert("correlation_id".to_owned(), correlation_id);
            if !warnings.is_empty() {
                out.insert("warnings".to_owned(), json!(warnings));
            }
            Value::Object(out)
        }
        Err(e) => failure(action, correlation_id, &e.to_string()),
    }
}

fn failure(action: &str, correlation_id: Value, error: &str) -> Value {
    let mut out = Map::new();
    out.insert("action".to_owned(), Value::from(action));
    out.insert("success".to_owned(), Value::Bool(false));
    out.insert("correlation_id".to_owned(), correlation_id);
    out.insert("status".to_owned(), Value::from("error"));
    out.insert("error".to_owned(), Value::from(error));
    Value::Object(out)
}

macro_rules! power_topic {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $power:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $ty(pub DeviceRequest);

        impl Topic for $ty {
            const NAME: &'static str = $name;
            const EMITS: Option<&'static str> = Some($name);

            fn parse(args: &[Value]) -> Result<Self, ContractError> {
                DeviceRequest::parse(single_object(args)?).map(Self)
            }

            fn device(&self) -> Option<&str> {
                Some(&self.0.device_id)
            }

            async fn apply(self, services: &Services) -> Value {
                apply(services, Self::NAME, $power, self.0).await
            }

            fn refusal(correlation_id: &Value, error: &str) -> Value {
                failure(Self::NAME, correlation_id.clone(), error)
            }
        }
    };
}

power_topic!(
    /// A validated `start_device`.
    StartDevice,
    "start_device",
    Power::Start
);
power_topic!(
    /// A validated `stop_device`.
    StopDevice,
    "stop_device",
    Power::Stop
);
power_topic!(
    /// A validated `restart_device`.
    RestartDevice,
    "restart_device",
    Power::Restart
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_upstream_key_order() {
        assert_eq!(
            answer("start_device", json!(7), Ok(Vec::new())).to_string(),
            r#"{"action":"start_device","success":true,"correlation_id":7}"#
        );
        assert_eq!(
            answer("restart_device", json!(7), Ok(vec!["w".into()])).to_string(),
            r#"{"action":"restart_device","success":true,"correlation_id":7,"warnings":["w"]}"#
        );
        assert_eq!(
            answer(
                "stop_device",
                json!(7),
                Err(runtime::Error::Failed("container is not running".into()))
            )
            .to_string(),
            r#"{"action":"stop_device","success":false,"correlation_id":7,"status":"error","error":"container is not running"}"#
        );
    }
}
