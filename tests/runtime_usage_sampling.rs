//! Per-runtime consumption sampling against the real engine: one-shot stats of a busy container,
//! sampled like the heartbeat does, give CPU and memory points. The agent-level topic is tested in
//! `runtime_run_command.rs` (same agent fixture).

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::Duration;

use docker_api::Docker;
use orchestrator_agent::runtime::consumption::{DeviceUsage, SampleTarget};
use orchestrator_agent::usage::Period;
use support::{ContainerGuard, LOCAL_IMAGE, require_engine, unique};

#[tokio::test]
async fn sampling_a_busy_container_records_cpu_and_memory() {
    require_engine(LOCAL_IMAGE);
    let name = unique("usage-");
    let _busy = ContainerGuard::run(
        &name,
        &["--network", "none", "--memory", "64m"],
        LOCAL_IMAGE,
        &["sh", "-c", "while :; do :; done"],
    );

    let engine = Docker::from_env().expect("docker client");
    let usage = DeviceUsage::default();
    usage.learn_host_memory().await;
    let target = SampleTarget {
        name: name.clone(),
        container: name.clone(),
    };
    let start = orchestrator_agent::timefmt::now_unix();
    for i in 0..3 {
        usage
            .sample(&engine, std::slice::from_ref(&target), &[], start + i * 5)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(usage.len(&name), 2, "three samples give two CPU deltas");
    let hour = Period::last_hour(start + 10);
    let report = usage.report(&name, hour, hour, start + 10);
    assert_eq!(report.cpu.len(), 2);
    // A busy loop keeps about one CPU busy; allow for a loaded 2-CPU machine.
    let last_cpu = report.cpu[1].1;
    assert!(last_cpu > 20.0 && last_cpu < 210.0, "cpu {last_cpu}");
    let memory = report.memory[1].1;
    assert!(memory > 0.0 && memory < 64.0, "memory {memory} MiB");
    assert_eq!(report.memory_limit, Some(64 << 20));

    // A runtime that is gone is dropped at the next sample.
    usage.sample(&engine, &[], &[], start + 20).await;
    assert_eq!(usage.len(&name), 0);
}
