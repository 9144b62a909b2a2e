//! `get_consumption_device` (upstream §2.5, §12 item 9): an owned runtime's CPU and memory history
//! over the two requested windows, answered by ack and also emitted. Devices that are not ours
//! are `Device <id> not found`, like unknown ones.

use serde_json::{Map, Value, json};

use super::contract::{
    self, BaseMessage, ContractError, Field, Kind, opt, req, single_object, string,
};
use super::{Services, Topic, answer};
use crate::runtime::UsageReport;
use crate::timefmt;
use crate::usage::Period;

/// `get_consumption_device` (upstream §2.5).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("device_id", Kind::NonEmptyStr),
    req("cpuPeriod", Kind::Period),
    req("memoryPeriod", Kind::Period),
];

/// A validated `get_consumption_device` (periods as text: windows back from the answer's moment).
#[derive(Debug, Clone, PartialEq)]
pub struct GetConsumptionDevice {
    pub base: BaseMessage,
    pub device_id: String,
    pub cpu_period: String,
    pub memory_period: String,
}

impl Topic for GetConsumptionDevice {
    const NAME: &'static str = "get_consumption_device";
    const EMITS: Option<&'static str> = Some("get_consumption_device");

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        let map = single_object(args)?;
        contract::check(CONTRACT, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            device_id: string(map, "device_id"),
            cpu_period: string(map, "cpuPeriod"),
            memory_period: string(map, "memoryPeriod"),
        })
    }

    fn device(&self) -> Option<&str> {
        Some(&self.device_id)
    }

    async fn apply(self, services: &Services) -> Value {
        tracing::debug!("device consumption requested");
        let now = timefmt::now_unix();
        let cpu = Period::parse_or_last_hour(&self.cpu_period, now);
        let memory = Period::parse_or_last_hour(&self.memory_period, now);
        let result = match services
            .runtime
            .usage_report(&self.device_id, cpu, memory, now)
            .await
        {
            Ok(report) => Ok(body(&self.device_id, &report)),
            Err(e) if e.is_not_found() || e.is_not_owned() => {
                Err(format!("Device {} not found", self.device_id))
            }
            Err(e) => Err(e.to_string()),
        };
        answer(Self::NAME, &self.base.correlation_id, result)
    }
}

/// `{device_id, memory: "<N> MB"|"unlimited", cpu: "unlimited", cpu_usage: [{timestamp, cpu}],
/// memory_usage: [{timestamp, memory}]}` (upstream §12 item 9), values to two decimals. Runtimes
/// are created without a CPU quota, so `cpu` is `"unlimited"`.
fn body(device_id: &str, report: &UsageReport) -> Map<String, Value> {
    let points = |series: &[(i64, f64)], key: &str| -> Value {
        series
            .iter()
            .map(|(t, v)| json!({"timestamp": t, key: round2(*v)}))
            .collect()
    };
    let memory = match report.memory_limit {
        Some(limit) => format!("{} MB", limit / (1024 * 1024)),
        None => "unlimited".to_string(),
    };
    let mut body = Map::new();
    body.insert("device_id".into(), Value::from(device_id));
    body.insert("memory".into(), Value::from(memory));
    body.insert("cpu".into(), Value::from("unlimited"));
    body.insert("cpu_usage".into(), points(&report.cpu, "cpu"));
    body.insert("memory_usage".into(), points(&report.memory, "memory"));
    body
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_upstream_keys_and_two_decimals() {
        let report = UsageReport {
            memory_limit: Some(256 << 20),
            cpu: vec![(105, 100.0), (110, 12.3456)],
            memory: vec![(105, 80.004)],
        };
        let b = Value::Object(body("plc", &report));
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["device_id", "memory", "cpu", "cpu_usage", "memory_usage"]
        );
        assert_eq!(b["memory"], "256 MB");
        assert_eq!(b["cpu"], "unlimited");
        assert_eq!(
            b["cpu_usage"],
            json!([{"timestamp": 105, "cpu": 100.0}, {"timestamp": 110, "cpu": 12.35}])
        );
        assert_eq!(
            b["memory_usage"],
            json!([{"timestamp": 105, "memory": 80.0}])
        );
        let unlimited = body(
            "plc",
            &UsageReport {
                memory_limit: None,
                cpu: vec![],
                memory: vec![],
            },
        );
        assert_eq!(unlimited["memory"], "unlimited");
        assert_eq!(unlimited["cpu_usage"], json!([]));
    }

    #[test]
    fn the_device_is_required() {
        let e = GetConsumptionDevice::parse(&[json!({"correlation_id": 1, "cpuPeriod": "1h",
            "memoryPeriod": "1h"})])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Missing required field: 'Missing key: device_id'"
        );
        let ok = GetConsumptionDevice::parse(&[json!({"correlation_id": 1, "device_id": "plc",
            "cpuPeriod": "1h", "memoryPeriod": "1h"})])
        .unwrap();
        assert_eq!(ok.device_id, "plc");
    }
}
