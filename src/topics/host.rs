//! The host topics answered by the agent itself: `get_consumption_orchestrator` (upstream §2.4,
//! with the host's addresses from netmon) and `get_host_interfaces` (upstream §12 item 3).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Services, error_ack, wrap};
use crate::contract::{ConsumptionRequest, HostInterfacesRequest};
use crate::netevents::{self, InterfaceInfo};
use crate::timefmt;
use crate::usage::{Field, MAX_POINTS, Period, UsageHistory, downsample};

/// How long a consumption query waits for a fresh disk figure.
const DISK_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn consumption_orchestrator(
    services: &Services,
    req: ConsumptionRequest,
) -> Value {
    let host = &services.host;
    tracing::debug!(cpu_period = %req.cpu_period, memory_period = %req.memory_period, "consumption requested");
    let now = timefmt::now_unix();
    let cpu_period = Period::parse_or_last_hour(&req.cpu_period, now);
    let memory_period = Period::parse_or_last_hour(&req.memory_period, now);
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
    wrap(
        "get_consumption_orchestrator",
        &req.base.correlation_id,
        body,
    )
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
    let series = |period: Period, key: &str, field: Field| -> Vec<Value> {
        downsample(&usage.series(field, period, now), MAX_POINTS)
            .into_iter()
            .map(|(ts, v)| json!({"timestamp": ts, key: round_to_int(v)}))
            .collect()
    };
    (
        series(cpu_period, "cpu", Field::Cpu),
        series(memory_period, "memory", Field::Memory),
    )
}

pub(super) fn host_interfaces(services: &Services, req: HostInterfacesRequest) -> Value {
    const ACTION: &str = "get_host_interfaces";
    let cache = &services.interfaces;
    let all = cache.list();
    if all.is_empty() {
        let why = if cache.is_connected() {
            "No host interfaces known yet (the network monitor reported none)"
        } else {
            "No host interfaces known: the network monitor is not connected"
        };
        return error_ack(ACTION, &req.base.correlation_id, why);
    }
    let interfaces: Vec<Value> = all
        .iter()
        .filter(|i| req.include_virtual || !netevents::is_virtual(&i.interface))
        .map(|i| describe(i, req.detailed))
        .collect();
    let mut body = Map::new();
    body.insert("status".to_owned(), json!("success"));
    body.insert("interfaces".to_owned(), Value::Array(interfaces));
    wrap(ACTION, &req.base.correlation_id, body)
}

/// `{name, ip_address, ipv4_addresses, mac_address, subnet?, gateway?}`; with `detailed`, also
/// `operstate`, `status` and the full address entries as netmon sent them.
fn describe(info: &InterfaceInfo, detailed: bool) -> Value {
    let mut out = Map::new();
    out.insert("name".to_owned(), json!(info.interface));
    out.insert(
        "ip_address".to_owned(),
        json!(info.ipv4_addresses.first().map(|a| &a.address)),
    );
    out.insert(
        "ipv4_addresses".to_owned(),
        json!(
            info.ipv4_addresses
                .iter()
                .map(|a| &a.address)
                .collect::<Vec<_>>()
        ),
    );
    out.insert("mac_address".to_owned(), json!(info.mac_address));
    if let Some(subnet) = info.subnet() {
        out.insert("subnet".to_owned(), json!(subnet));
    }
    if let Some(gateway) = &info.gateway {
        out.insert("gateway".to_owned(), json!(gateway));
    }
    if detailed {
        out.insert("operstate".to_owned(), json!(info.operstate));
        out.insert(
            "status".to_owned(),
            json!(info.status.as_deref().unwrap_or("up")),
        );
        out.insert("addresses".to_owned(), json!(info.ipv4_addresses));
    }
    Value::Object(out)
}

/// `v` rounded to an integer; out-of-range values saturate (what `as` does for floats).
#[allow(clippy::cast_possible_truncation)]
fn round_to_int(v: f64) -> i64 {
    v.round() as i64
}
