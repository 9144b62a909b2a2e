//! [`RuntimeOps`] for [`Runtimes`]: the seam between the topics and the runtime workflows. Each method
//! turns the typed request into a workflow call and the workflow's [`Error`] into the text the cloud
//! sees. `run_command` and `get_consumption_device` belong to `command` / `consumption`.

use serde_json::Value;

use super::lifecycle::Power;
use super::{Error, Runtimes, create, delete, lifecycle, selfdestruct, status};
use crate::cloud::BoxFuture;
use crate::contract::{
    BaseMessage, CreateRuntimeRequest, DeleteDeviceRequest, DeviceConsumptionRequest,
    DeviceRequest, RunCommandRequest,
};
use crate::topics::{OpError, OpResult, RuntimeOps};

fn op_err(e: Error) -> OpError {
    OpError::new(e.to_string())
}

impl RuntimeOps for Runtimes {
    fn create(&self, req: CreateRuntimeRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move { create::accept(&rt, req).await.map_err(op_err) })
    }

    fn delete(&self, req: DeleteDeviceRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move { delete::accept(&rt, req).await.map_err(op_err) })
    }

    fn start(&self, req: DeviceRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move {
            lifecycle::apply(&rt, &req.device_id, Power::Start)
                .await
                .map_err(op_err)
        })
    }

    fn stop(&self, req: DeviceRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move {
            lifecycle::apply(&rt, &req.device_id, Power::Stop)
                .await
                .map_err(op_err)
        })
    }

    fn restart(&self, req: DeviceRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move {
            lifecycle::apply(&rt, &req.device_id, Power::Restart)
                .await
                .map_err(op_err)
        })
    }

    fn device_status(&self, req: DeviceRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move {
            status::device_status(&rt, &req.device_id)
                .await
                .map_err(op_err)
        })
    }

    fn run_command(&self, req: RunCommandRequest) -> BoxFuture<Result<Value, OpError>> {
        let rt = self.clone();
        Box::pin(async move { super::command::handle(&rt, req).await })
    }

    fn consumption_device(&self, req: DeviceConsumptionRequest) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move { super::consumption::handle(&rt, req).await })
    }

    fn delete_orchestrator(&self, _req: BaseMessage) -> BoxFuture<OpResult> {
        let rt = self.clone();
        Box::pin(async move { selfdestruct::accept(&rt).await.map_err(op_err) })
    }
}
