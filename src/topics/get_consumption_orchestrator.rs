//! `get_consumption_orchestrator` (upstream §2.4): the host's static info, its addresses (from
//! netmon's cache) and its CPU and memory history over the two requested windows.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::contract::{
    self, BaseMessage, ContractError, Field, Kind, opt, req, single_object, string,
};
use super::{Services, Topic, wrap};
use crate::timefmt;
use crate::usage::{Field as Series, MAX_POINTS, Period, UsageHistory, downsample};

/// How long a consumption query waits for a fresh disk figure.
const DISK_WAIT: Duration = Duration::from_secs(2);

/// `get_consumption_orchestrator` (upstream §2.4).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("cpuPeriod", Kind::Period),
    req("memoryPeriod", Kind::Period),
];

/// A validated `get_consumption_orchestrator`. The periods are kept as text: they are windows
/// back from the moment of the answer, and the contract has checked that they parse
/// ([`contract::is_period`]; upstream answered a bad one with the last hour, we refuse it).
#[derive(Debug, Clone, PartialEq)]
pub struct GetConsumptionOrchestrator {
    pub base: BaseMessage,
    pub cpu_period: String,
    pub memory_period: String,
}

impl Topic for GetConsumptionOrchestrator {
    const NAME: &'static str = "get_consumption_orchestrator";

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        let map = single_object(args)?;
        contract::check(CONTRACT, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            cpu_period: string(map, "cpuPeriod"),
            memory_period: string(map, "memoryPeriod"),
        })
    }

    async fn apply(self, services: &Services) -> Value {
        let host = &services.host;
        tracing::debug!(cpu_period = %self.cpu_period, memory_period = %self.memory_period, "consumption requested");
        let now = timefmt::now_unix();
        let cpu_period = Period::parse_or_last_hour(&self.cpu_period, now);
        let memory_period = Period::parse_or_last_hour(&self.memory_period, now);
        let info = host.static_info().await;
        let disk = host.disk(DISK_WAIT).await.unwrap_or_default();
        let (cpu_usage, memory_usage) = usage_series(&host.usage(), cpu_period, memory_period, now);
        let mut body = Map::new();
        body.insert(
            "ip_addresses".to_owned(),
            json!(services.interfaces.host_ipv4_addresses()),
        );
        body.insert("memory".to_owned(), json!(info.memory_mib));
        body.insert("cpu".to_owned(), json!(info.cpu));
        body.insert("os".to_owned(), json!(info.os));
        body.insert("kernel".to_owned(), json!(info.kernel));
        body.insert("disk".to_owned(), json!(disk.total / (1 << 30)));
        body.insert("cpu_usage".to_owned(), Value::Array(cpu_usage));
        body.insert("memory_usage".to_owned(), Value::Array(memory_usage));
        wrap(Self::NAME, &self.base.correlation_id, body)
    }
}

/// The `cpu_usage` and `memory_usage` series of the answer: the points of each window (raw
/// samples and minute means, see [`UsageHistory`]), averaged into at most [`MAX_POINTS`] points so
/// a 48 h answer stays under the cloud's message limit. Values stay integers like the samples
/// (averages rounded to the nearest integer).
pub(super) fn usage_series(
    usage: &UsageHistory,
    cpu_period: Period,
    memory_period: Period,
    now: i64,
) -> (Vec<Value>, Vec<Value>) {
    let series = |period: Period, key: &str, field: Series| -> Vec<Value> {
        downsample(&usage.series(field, period, now), MAX_POINTS)
            .into_iter()
            .map(|(ts, v)| json!({"timestamp": ts, key: round_to_int(v)}))
            .collect()
    };
    (
        series(cpu_period, "cpu", Series::Cpu),
        series(memory_period, "memory", Series::Memory),
    )
}

/// `v` rounded to an integer; out-of-range values saturate (what `as` does for floats).
#[allow(clippy::cast_possible_truncation)]
fn round_to_int(v: f64) -> i64 {
    v.round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    fn parse(v: Value) -> Result<GetConsumptionOrchestrator, String> {
        GetConsumptionOrchestrator::parse(&[v]).map_err(|e| e.to_string())
    }

    const PERIOD_MESSAGE: &str = "Value must be a period string: N (seconds), Nm, Nh or Nd back from now (N >= 0), or \"<start>,<end>\" in unix seconds (start <= end).";

    #[test]
    fn consumption_requests_need_both_periods_as_strings() {
        let r =
            parse(json!({"correlation_id": 1, "cpuPeriod": "1h", "memoryPeriod": "2h"})).unwrap();
        assert_eq!(
            (r.cpu_period.as_str(), r.memory_period.as_str()),
            ("1h", "2h")
        );
        assert_eq!(
            parse(json!({"correlation_id": 1, "cpuPeriod": "1h"})).unwrap_err(),
            "Missing required field: 'Missing key: memoryPeriod'"
        );
        assert_eq!(
            parse(json!({"correlation_id": 1, "cpuPeriod": 3600, "memoryPeriod": "2h"}))
                .unwrap_err(),
            format!("Invalid field type: {PERIOD_MESSAGE} (field: cpuPeriod)")
        );
    }

    #[test]
    fn periods_that_do_not_parse_are_refused_naming_the_field() {
        for good in [
            "1h",
            "30m",
            "2d",
            "90",
            " 2h",
            "+5m",
            "0h",
            "1_000",
            "1700000000,1700003600",
            "5,5",
            "1,2,3",
        ] {
            assert!(contract::is_period(good), "{good:?} is a period");
        }
        for bad in [
            "banana",
            "-5x",
            "",
            " ",
            "1.5h",
            "h",
            "5H",
            "-5h",
            "-1",
            "5,3",
            "5,",
            ",5",
            "99999999999999999999h",
            "106751991167301d",
        ] {
            assert!(!contract::is_period(bad), "{bad:?} is not a period");
        }
        for (field, bad) in [("cpuPeriod", "banana"), ("memoryPeriod", "-5x")] {
            let mut m = json!({"correlation_id": 7, "cpuPeriod": "1h", "memoryPeriod": "1h"});
            m[field] = json!(bad);
            assert_eq!(
                parse(m).unwrap_err(),
                format!("Invalid field type: {PERIOD_MESSAGE} (field: {field})")
            );
        }
    }

    #[test]
    #[allow(clippy::cast_precision_loss)] // small test values
    fn host_usage_series_are_downsampled_to_at_most_1440_integer_points() {
        let now = 1_732_130_000;
        // 48 h at 5 s, oldest first, the newest 1 s before `now`.
        let samples = 48 * 720;
        let mut usage = UsageHistory::new();
        for i in 0..samples {
            let age = 5 * (samples - 1 - i) + 1;
            usage.push(
                now - age,
                Usage {
                    cpu: (i % 3) as f32,
                    memory: (1000 + i) as f32,
                },
            );
        }
        let two_days = Period::parse("48h", now).unwrap();
        let (cpu, memory) = usage_series(&usage, two_days, two_days, now);
        for (series, key) in [(&cpu, "cpu"), (&memory, "memory")] {
            assert!(
                series.len() <= MAX_POINTS && series.len() > MAX_POINTS - 10,
                "{key}: {}",
                series.len()
            );
            assert!(
                series
                    .iter()
                    .all(|p| p["timestamp"].is_i64() && p[key].is_i64()),
                "{key}"
            );
            assert_eq!(series.last().unwrap()["timestamp"], now - 1);
        }
        // Two-minute buckets of a value rising by 1 per sample: the first averages about 1012.
        let first = memory[0]["memory"].as_i64().unwrap();
        assert!((1000..=1030).contains(&first), "{first}");
        assert_eq!(cpu[0]["cpu"], 1, "values of 0, 1, 2 average to 1");

        // The last hour is 720 raw samples: returned as is.
        let hour = Period::last_hour(now);
        let (cpu, memory) = usage_series(&usage, hour, hour, now);
        let expected = |key: &str| -> Vec<Value> {
            (0..720)
                .rev()
                .map(|back: i64| {
                    let i = samples - 1 - back;
                    let v = if key == "cpu" { i % 3 } else { 1000 + i };
                    json!({"timestamp": now - 1 - 5 * back, key: v})
                })
                .collect()
        };
        assert_eq!(cpu.len(), 720);
        assert_eq!(cpu, expected("cpu"));
        assert_eq!(memory, expected("memory"));
    }
}
