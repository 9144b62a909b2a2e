//! A tiny registry on 127.0.0.1 serving one single-layer image over plain HTTP (the engine treats
//! 127.0.0.0/8 as an insecure registry and falls back from HTTPS to HTTP). It lets pull tests run
//! against the real engine with no traffic leaving the machine. Digests come from `sha256sum`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the registry answers blob requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    /// Serve them: the pull succeeds.
    Serve,
    /// 404: the engine has already streamed progress, so the failure arrives inside the 200.
    Missing,
    /// Accept and never answer: the pull stalls after it started streaming.
    Hang,
}

struct Image {
    manifest: Vec<u8>,
    config_digest: String,
    config: Vec<u8>,
    layer_digest: String,
    layer: Vec<u8>,
}

/// A running registry; stops when dropped.
pub struct Registry {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sha256(bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "dapi-reg-{}-{}",
        std::process::id(),
        crate::common::unique("sha")
    ));
    tokio::fs::write(&dir, bytes).await.unwrap();
    let out = tokio::process::Command::new("sha256sum")
        .arg(&dir)
        .output()
        .await
        .expect("sha256sum");
    let _ = tokio::fs::remove_file(&dir).await;
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

async fn build_image() -> Image {
    // An uncompressed tar with one file; the engine detects the (lack of) compression itself.
    let dir = std::env::temp_dir().join(crate::common::unique("layer"));
    tokio::fs::create_dir_all(&dir).await.unwrap();
    tokio::fs::write(dir.join("hello.txt"), b"hello from the loopback registry\n")
        .await
        .unwrap();
    let out = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["-cf", "-", "hello.txt"])
        .output()
        .await
        .expect("tar");
    let _ = tokio::fs::remove_dir_all(&dir).await;
    assert!(out.status.success());
    let layer = out.stdout;
    let layer_digest = sha256(&layer).await;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "docker_api tests"}]
    }))
    .unwrap();
    let config_digest = sha256(&config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.len(),
            "digest": config_digest
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": layer.len(),
            "digest": layer_digest
        }]
    }))
    .unwrap();
    Image {
        manifest,
        config_digest,
        config,
        layer_digest,
        layer,
    }
}

impl Registry {
    pub async fn start(blobs: Blobs) -> Registry {
        let image = Arc::new(build_image().await);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                let image = image.clone();
                held.push(tokio::spawn(serve(conn, image, blobs)));
            }
        });
        Registry { port, task }
    }
}

async fn serve(mut conn: TcpStream, image: Arc<Image>, blobs: Blobs) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte).await {
                // A TLS ClientHello (0x16): close at once so the engine falls back to HTTP.
                Ok(1) if head.is_empty() && byte[0] == 0x16 => return,
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
            if head.len() > 16 * 1024 {
                return;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut parts = head.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (status, content_type, body): (&str, &str, Vec<u8>) = if path == "/v2/" {
            ("200 OK", "application/json", b"{}".to_vec())
        } else if path.contains("/manifests/") {
            (
                "200 OK",
                "application/vnd.docker.distribution.manifest.v2+json",
                image.manifest.clone(),
            )
        } else if path.contains("/blobs/") {
            match blobs {
                Blobs::Hang => {
                    std::future::pending::<()>().await;
                    return;
                }
                Blobs::Missing => (
                    "404 Not Found",
                    "application/json",
                    br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
                        .to_vec(),
                ),
                Blobs::Serve if path.ends_with(&image.config_digest) => {
                    ("200 OK", "application/octet-stream", image.config.clone())
                }
                Blobs::Serve if path.ends_with(&image.layer_digest) => {
                    ("200 OK", "application/octet-stream", image.layer.clone())
                }
                Blobs::Serve => ("404 Not Found", "application/json", b"{}".to_vec()),
            }
        } else {
            ("404 Not Found", "application/json", b"{}".to_vec())
        };
        let mut resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Docker-Distribution-API-Version: registry/2.0\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            resp.extend_from_slice(&body);
        }
        if conn.write_all(&resp).await.is_err() {
            return;
        }
    }
}
