//! Image inspect and pull: errors are clear and quick, a stalled registry is cut off.

use std::time::{Duration, Instant};

use docker_api::{Error, PullOptions};
use futures_util::StreamExt;

use crate::common::{TEST_IMAGE, engine, unique};
use crate::registry::{Blobs, Registry};

#[tokio::test]
async fn inspect_image_finds_the_local_test_image() {
    let docker = engine().await;
    let img = docker.inspect_image(TEST_IMAGE).await.unwrap();
    assert!(img.id.starts_with("sha256:"), "{}", img.id);
    assert!(
        img.repo_tags.iter().any(|t| t == TEST_IMAGE),
        "{:?}",
        img.repo_tags
    );
    // By id too.
    assert_eq!(docker.inspect_image(&img.id).await.unwrap().id, img.id);
}

#[tokio::test]
async fn inspect_of_a_missing_image_is_not_found() {
    let docker = engine().await;
    let e = docker
        .inspect_image("orchestrator-test/does-not-exist:never")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn pull_from_an_unreachable_registry_fails_quickly_and_clearly() {
    let docker = engine().await;
    let opts = PullOptions {
        stall_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let started = Instant::now();
    // Loopback port 9 (discard) has no listener: nothing leaves the machine, not even DNS.
    let e = docker
        .pull_image("127.0.0.1:9/orchestrator-test/nothing:latest", &opts)
        .await
        .unwrap_err();
    assert!(!e.is_timeout() && !e.is_transport(), "{e}");
    assert!(
        matches!(e, Error::Api { .. } | Error::PullFailed { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn pull_is_aborted_when_the_registry_makes_no_progress() {
    let docker = engine().await;
    // A "registry" that accepts connections and never answers. The engine itself would give up
    // only after ~25 s (its TLS handshake and header timeouts); the stall limit must cut in first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let stall = Duration::from_secs(2);
    let opts = PullOptions {
        stall_timeout: stall,
        ..Default::default()
    };
    let started = Instant::now();
    let e = docker
        .pull_image(
            &format!("127.0.0.1:{port}/orchestrator-test/stall:latest"),
            &opts,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, Error::PullStalled { after, .. } if after == stall),
        "{e:?}"
    );
    assert!(e.is_timeout() && e.is_pull_failure());
    assert!(took >= stall && took < Duration::from_secs(20), "{took:?}");
    hold.abort();
}

#[tokio::test]
async fn pull_refuses_an_empty_reference_without_calling_the_engine() {
    let docker = engine().await;
    let e = docker
        .pull_image(" ", &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
}

/// Removes the image (and its tag) on drop.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        crate::common::run("docker", &["rmi", "-f", &self.0], true);
    }
}

#[tokio::test]
async fn pull_from_a_loopback_registry_streams_progress_and_stores_the_tagged_image() {
    let docker = engine().await;
    let registry = Registry::start(Blobs::Serve).await;
    let reference = format!(
        "127.0.0.1:{}/orchestrator-test/{}:v1",
        registry.port,
        unique("pull")
    );
    let _g = ImageGuard(reference.clone());
    let opts = PullOptions {
        stall_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let mut stream = docker.pull_image_stream(&reference, &opts).await.unwrap();
    let mut statuses = Vec::new();
    while let Some(msg) = stream.next().await {
        statuses.push(msg.unwrap().status.unwrap_or_default());
    }
    assert!(
        statuses.iter().any(|s| s.contains("Pulling from")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.contains("Downloaded newer image")),
        "{statuses:?}"
    );
    let img = docker.inspect_image(&reference).await.unwrap();
    assert_eq!(img.repo_tags, [reference.as_str()], "only the named tag");

    // Pulling again is a no-op success through the draining helper.
    docker.pull_image(&reference, &opts).await.unwrap();
}

#[tokio::test]
async fn pull_error_inside_the_200_progress_stream_is_a_failure() {
    let docker = engine().await;
    let registry = Registry::start(Blobs::Missing).await;
    let reference = format!(
        "127.0.0.1:{}/orchestrator-test/{}:v1",
        registry.port,
        unique("broken")
    );
    let _g = ImageGuard(reference.clone());
    let e = docker
        .pull_image(&reference, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PullFailed { .. }), "{e:?}");
    assert!(e.is_pull_failure() && !e.is_timeout());
    assert!(
        docker
            .inspect_image(&reference)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn pull_that_stalls_after_it_started_streaming_is_aborted() {
    let docker = engine().await;
    let registry = Registry::start(Blobs::Hang).await;
    let reference = format!(
        "127.0.0.1:{}/orchestrator-test/{}:v1",
        registry.port,
        unique("slow")
    );
    let _g = ImageGuard(reference.clone());
    let stall = Duration::from_secs(2);
    let opts = PullOptions {
        stall_timeout: stall,
        ..Default::default()
    };
    let mut stream = docker.pull_image_stream(&reference, &opts).await.unwrap();
    let mut progressed = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(_)) => progressed += 1,
            Some(Err(e)) => break e,
            None => panic!("a stalled pull must not end successfully"),
        }
    };
    assert!(
        progressed > 0,
        "the engine streamed progress before the stall"
    );
    assert!(
        matches!(err, Error::PullStalled { after, .. } if after == stall),
        "{err:?}"
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the stall error"
    );
}
