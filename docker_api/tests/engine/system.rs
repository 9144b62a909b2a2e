//! Version negotiation, ping, /version, and transport failures.

use std::time::{Duration, Instant};

use docker_api::{ApiVersion, Docker, DockerConfig};

use crate::common::{engine, run};

#[tokio::test]
async fn negotiated_version_is_the_lower_of_engine_max_and_ours() {
    let _ = engine().await; // fails clearly when the engine is down
    let docker = Docker::from_env().unwrap();
    assert_eq!(
        docker.negotiated_version(),
        None,
        "construction does no I/O"
    );

    // The engine's maximum, read independently of the client under test.
    let server: ApiVersion = run(
        "docker",
        &["version", "--format", "{{.Server.APIVersion}}"],
        false,
    )
    .parse()
    .expect("docker version prints an API version");
    let negotiated = docker.api_version().await.unwrap();
    assert_eq!(negotiated, server.min(ApiVersion::MAX_SUPPORTED));
    assert_eq!(docker.negotiated_version(), Some(negotiated));
    assert!(negotiated >= ApiVersion::MIN_SUPPORTED);
    assert_eq!(docker.ping().await.unwrap(), server);
    assert_eq!(docker.negotiate().await.unwrap(), negotiated);
}

#[tokio::test]
async fn version_reports_engine_release_and_api_range() {
    let docker = engine().await;
    let v = docker.version().await.unwrap();
    assert!(!v.version.is_empty());
    assert_eq!(v.os, "linux");
    let max: ApiVersion = v.api_version.parse().unwrap();
    let min: ApiVersion = v.min_api_version.parse().unwrap();
    assert!(min <= max);
    assert_eq!(max, docker.ping().await.unwrap());
}

#[tokio::test]
async fn client_built_while_engine_is_unreachable_reports_a_transport_error_and_retries() {
    let dir = std::env::temp_dir().join(format!("dapi-nosock-{}", std::process::id()));
    let docker = Docker::new(DockerConfig::unix(dir.join("docker.sock")));
    for _ in 0..2 {
        let e = docker.api_version().await.unwrap_err();
        assert!(e.is_unreachable() && e.is_transport(), "{e}");
        assert!(!e.is_not_found() && e.status().is_none());
        assert!(e.to_string().contains("docker.sock"), "{e}");
    }
    assert_eq!(docker.negotiated_version(), None);
    let e = docker
        .list_containers(true, &Default::default())
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
}

#[tokio::test]
async fn response_timeout_expires_when_the_engine_never_answers() {
    // A socket that accepts and never answers stands in for a hung engine.
    let path = std::env::temp_dir().join(format!("dapi-hung-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut config = DockerConfig::unix(&path);
    config.response_timeout = Duration::from_millis(300);
    let docker = Docker::new(config);
    let started = Instant::now();
    let e = docker.ping().await.unwrap_err();
    assert!(e.is_timeout() && !e.is_transport(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
    hold.abort();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn docker_host_other_than_unix_is_a_clear_error() {
    let e = DockerConfig::from_host("tcp://127.0.0.1:2375").unwrap_err();
    assert!(e.to_string().contains("unix://"), "{e}");
}
