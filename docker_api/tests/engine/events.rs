//! The event stream: filtered subscription, typed events, start and die of a container.

use std::time::Duration;

use docker_api::{EventType, Filters};
use futures_util::StreamExt;

use crate::common::{ContainerGuard, PATIENCE, engine, sleeper, unique};

#[tokio::test]
async fn event_stream_sees_a_container_start_and_die() {
    let docker = engine().await;
    let name = unique("events");
    let _g = ContainerGuard(name.clone());
    let mut spec = sleeper();
    spec.labels.insert("events-test".into(), name.clone());
    spec.cmd = Some(vec!["/bin/sleep".into(), "1".into()]);

    // Another container's events must not leak through the label filter.
    let other = unique("events-other");
    let _g2 = ContainerGuard(other.clone());

    let filters = Filters::new()
        .kind("container")
        .label(format!("events-test={name}"));
    let mut events = docker.events(&filters).await.unwrap();

    docker.create_container(&other, &sleeper()).await.unwrap();
    docker.start_container(&other).await.unwrap();
    let created = docker.create_container(&name, &spec).await.unwrap();
    docker.start_container(&name).await.unwrap();

    let mut actions = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !actions.iter().any(|a| a == "die") {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("start and die events within the deadline")
            .expect("the stream stays open")
            .unwrap();
        assert_eq!(next.kind, EventType::Container);
        assert_eq!(next.actor.id, created.id, "only the filtered container");
        assert_eq!(next.actor.attributes["name"], name);
        assert!(next.time > 0 && next.time_nano > 0);
        actions.push(next.action);
    }
    let start = actions
        .iter()
        .position(|a| a == "start")
        .expect("a start event");
    let die = actions.iter().position(|a| a == "die").unwrap();
    assert!(start < die, "{actions:?}");
    assert_eq!(
        actions.first().map(String::as_str),
        Some("create"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn event_stream_filtered_by_container_ignores_other_containers() {
    let docker = engine().await;
    let (watched, other) = (unique("watched"), unique("unwatched"));
    let _g1 = ContainerGuard(watched.clone());
    let _g2 = ContainerGuard(other.clone());
    docker.create_container(&watched, &sleeper()).await.unwrap();
    docker.create_container(&other, &sleeper()).await.unwrap();
    let mut events = docker
        .events(&Filters::new().container(&watched).event("start"))
        .await
        .unwrap();
    docker.start_container(&other).await.unwrap();
    docker.start_container(&watched).await.unwrap();
    let e = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event")
        .expect("stream open")
        .unwrap();
    assert_eq!(e.action, "start");
    assert_eq!(e.actor.attributes["name"], watched);
    // Nothing else matches.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err()
    );
}
