//! The runtime topics: hand the typed request to [`RuntimeOps`] and shape the answer (and the
//! emit, for the topics the original answered by emit).

use serde_json::{Map, Value};

use super::{Power, Services, answer, emit, error_ack, wrap};
use crate::contract::{
    BaseMessage, CreateRuntimeRequest, DeleteDeviceRequest, DeviceConsumptionRequest,
    DeviceRequest, RunCommandForm, RunCommandRequest,
};

pub(super) async fn create(services: &Services, req: CreateRuntimeRequest) -> Value {
    tracing::info!(vnics = req.vnic_configs.len(), version = ?req.runtime_version, "create requested");
    let cid = req.base.correlation_id.clone();
    answer(
        "create_new_runtime",
        &cid,
        services.runtime.create(req).await,
    )
}

pub(super) async fn delete(services: &Services, req: DeleteDeviceRequest) -> Value {
    tracing::info!("delete requested");
    let cid = req.base.correlation_id.clone();
    answer("delete_device", &cid, services.runtime.delete(req).await)
}

pub(super) async fn device_status(services: &Services, req: DeviceRequest) -> Value {
    tracing::debug!("status requested");
    let cid = req.base.correlation_id.clone();
    answer(
        "get_device_status",
        &cid,
        services.runtime.device_status(req).await,
    )
}

/// `start_device` / `stop_device` / `restart_device`: `{action, success, correlation_id, ..}`
/// (upstream §2.6 key order), `success: false` plus `status`/`error` on failure; emitted as the
/// request's event name and returned as the ack.
pub(super) async fn power(
    services: &Services,
    link: &crate::cloud::Link,
    power: Power,
    req: DeviceRequest,
) -> Value {
    tracing::info!("{} requested", power.topic());
    let cid = req.base.correlation_id.clone();
    let result = match power {
        Power::Start => services.runtime.start(req).await,
        Power::Stop => services.runtime.stop(req).await,
        Power::Restart => services.runtime.restart(req).await,
    };
    let action = power.topic();
    let mut out = Map::new();
    out.insert("action".to_owned(), Value::from(action));
    match result {
        Ok(body) => {
            let success = body.get("success").cloned().unwrap_or(Value::Bool(true));
            out.insert("success".to_owned(), success);
            out.insert("correlation_id".to_owned(), cid);
            for (k, v) in body {
                if !matches!(k.as_str(), "action" | "success" | "correlation_id") {
                    out.insert(k, v);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "{action} failed");
            out = power_map(action, cid, e.0);
        }
    }
    let out = Value::Object(out);
    emit(link, action, out.clone()).await;
    out
}

/// `{action, success: false, correlation_id, status: "error", error}`: a failed power topic.
pub(super) fn power_error(action: &str, correlation_id: Value, error: String) -> Value {
    Value::Object(power_map(action, correlation_id, error))
}

fn power_map(action: &str, correlation_id: Value, error: String) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("action".to_owned(), Value::from(action));
    out.insert("success".to_owned(), Value::Bool(false));
    out.insert("correlation_id".to_owned(), correlation_id);
    out.insert("status".to_owned(), Value::from("error"));
    out.insert("error".to_owned(), Value::from(error));
    out
}

pub(super) async fn run_command(services: &Services, req: RunCommandRequest) -> Value {
    // The query string may carry tokens: INFO names the path only, DEBUG has the rest (headers
    // and bodies are never logged).
    let path = req.api.split('?').next().unwrap_or_default();
    tracing::info!(method = %req.method, api = %path, port = ?req.port, "run_command requested");
    tracing::debug!(api = %req.api, "run_command api with its query");
    let cid = req.correlation_id.clone();
    let form = req.form;
    match (form, services.runtime.run_command(req).await) {
        (RunCommandForm::Legacy, Ok(value)) => value,
        (RunCommandForm::Object, Ok(Value::Object(body))) => wrap("run_command", &cid, body),
        (RunCommandForm::Object, Ok(other)) => {
            let mut body = Map::new();
            body.insert("result".to_owned(), other);
            wrap("run_command", &cid, body)
        }
        (_, Err(e)) => {
            tracing::warn!(error = %e, "run_command failed");
            error_ack("run_command", &cid, &e.0)
        }
    }
}

pub(super) async fn consumption_device(
    services: &Services,
    link: &crate::cloud::Link,
    req: DeviceConsumptionRequest,
) -> Value {
    tracing::debug!("device consumption requested");
    let cid = req.base.correlation_id.clone();
    let out = answer(
        "get_consumption_device",
        &cid,
        services.runtime.consumption_device(req).await,
    );
    emit(link, "get_consumption_device", out.clone()).await;
    out
}

pub(super) async fn delete_orchestrator(
    services: &Services,
    link: &crate::cloud::Link,
    req: BaseMessage,
) -> Value {
    tracing::warn!("deleting the orchestrator was requested");
    let cid = req.correlation_id.clone();
    let out = answer(
        "delete_orchestrator",
        &cid,
        services.runtime.delete_orchestrator(req).await,
    );
    emit(link, "delete_orchestrator_response", out.clone()).await;
    out
}
