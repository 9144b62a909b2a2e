//! A stand-in for the cloud's provisioning API, as `install/install.sh` talks to it
//! (upstream-head §11.1): `GET /orchestrators/id` hands out an id, `POST /orchestrators/enroll`
//! takes a multipart part `csr` and answers `{statusCode, data: {certificate, message, id}}`. It
//! serves HTTPS with devcloud's server certificate and signs with devcloud's CA, so the identity it
//! issues is one devcloud accepts. [`Mode`] makes it fail the ways the installer must survive.
//!
//! It checks what a real CA would: the CSR's signature (proof of possession) and that its CN is an
//! id it handed out. It listens on loopback only and owns nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use devcloud::pki::{PkiPaths, load_certs, load_private_key};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like the real API.
    Normal,
    /// The id answer is an HTML page (a captive portal, a proxy error).
    IdNotJson,
    /// The enrollment answer is not JSON.
    EnrollNotJson,
    /// The enrollment is refused (HTTP 403).
    EnrollRefused,
    /// The enrollment succeeds with a certificate for another CN.
    OtherCn,
}

struct Shared {
    mode: Mutex<Mode>,
    prefix: String,
    next_id: AtomicU32,
    id_requests: AtomicU32,
    enrollments: AtomicU32,
    issued: Mutex<Vec<String>>,
    ca_cert_pem: String,
    ca_key_pem: String,
}

/// The running server; stopped on drop.
pub struct Provisioning {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Provisioning {
    /// Serves on 127.0.0.1 (an ephemeral port) with `pki`'s server certificate and CA; ids are
    /// `<prefix><n>`.
    pub async fn start(pki: &PkiPaths, prefix: &str) -> Self {
        let certs = load_certs(&pki.server_cert).expect("server cert");
        let key = load_private_key(&pki.server_key).expect("server key");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Normal),
            prefix: prefix.to_owned(),
            next_id: AtomicU32::new(1),
            id_requests: AtomicU32::new(0),
            enrollments: AtomicU32::new(0),
            issued: Mutex::new(Vec::new()),
            ca_cert_pem: std::fs::read_to_string(&pki.ca_cert).expect("CA cert"),
            ca_key_pem: std::fs::read_to_string(&pki.ca_key).expect("CA key"),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Provisioning { addr, shared, task }
    }

    /// `https://127.0.0.1:<port>` (the installer's `--api-base`).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("lock") = mode;
    }

    /// `GET /orchestrators/id` requests so far.
    pub fn id_requests(&self) -> u32 {
        self.shared.id_requests.load(Ordering::SeqCst)
    }

    /// Enrollment requests so far (answered or not).
    pub fn enrollments(&self) -> u32 {
        self.shared.enrollments.load(Ordering::SeqCst)
    }
}

impl Drop for Provisioning {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("response")
}

async fn handle(state: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mode = *state.mode.lock().expect("lock");
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/orchestrators/id") => {
            state.id_requests.fetch_add(1, Ordering::SeqCst);
            if mode == Mode::IdNotJson {
                return reply(
                    StatusCode::OK,
                    "<html><body>Sign in to the Wi-Fi</body></html>",
                );
            }
            let id = format!(
                "{}{:03}",
                state.prefix,
                state.next_id.fetch_add(1, Ordering::SeqCst)
            );
            state.issued.lock().expect("lock").push(id.clone());
            let body =
                json!({"data": {"id": id, "expiresAt": "2026-12-31T23:59:59Z", "expiresIn": 600}});
            reply(StatusCode::OK, body.to_string())
        }
        (&Method::POST, "/orchestrators/enroll") => {
            state.enrollments.fetch_add(1, Ordering::SeqCst);
            match mode {
                Mode::EnrollNotJson => {
                    return reply(StatusCode::OK, "Internal error: <stack trace>");
                }
                Mode::EnrollRefused => {
                    let body =
                        json!({"statusCode": 403, "message": "enrollment is closed for this id"});
                    return reply(StatusCode::FORBIDDEN, body.to_string());
                }
                _ => {}
            }
            match enroll(state, req, mode == Mode::OtherCn).await {
                Ok((cn, pem)) => {
                    let body = json!({"statusCode": 200, "data": {
                        "certificate": pem, "message": "Certificate issued", "id": cn}});
                    reply(StatusCode::OK, body.to_string())
                }
                Err(e) => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"statusCode": 400, "message": e}).to_string(),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, r#"{"statusCode":404}"#),
    }
}

/// Signs the request's CSR; returns the id it was requested for and the PEM certificate (whose CN
/// is another one in [`Mode::OtherCn`]: the answer still names the requested id).
async fn enroll(
    state: &Shared,
    req: Request<Incoming>,
    other_cn: bool,
) -> Result<(String, String), String> {
    let boundary = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_owned())
        .ok_or("not multipart/form-data")?;
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let csr_pem = multipart_part(&body, &boundary, "csr").ok_or("no csr part")?;
    let mut csr =
        CertificateSigningRequestParams::from_pem(&csr_pem).map_err(|e| format!("bad CSR: {e}"))?;
    let cn = match csr.params.distinguished_name.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_owned(),
        _ => return Err("the CSR has no text CN".into()),
    };
    if !state.issued.lock().expect("lock").contains(&cn) {
        return Err(format!("{cn} is not an id this server handed out"));
    }
    // The CA decides the extensions, as the real one does (the CSR's are not trusted).
    let p = &mut csr.params;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    p.serial_number = Some(SerialNumber::from(
        state
            .enrollments
            .load(Ordering::SeqCst)
            .to_be_bytes()
            .to_vec(),
    ));
    p.use_authority_key_identifier_extension = true;
    let issued_cn = if other_cn {
        "someone-else-001".to_owned()
    } else {
        cn.clone()
    };
    p.distinguished_name.push(DnType::CommonName, issued_cn);
    let key = KeyPair::from_pem(&state.ca_key_pem).map_err(|e| e.to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&state.ca_cert_pem, key).map_err(|e| e.to_string())?;
    let cert = csr.signed_by(&issuer).map_err(|e| e.to_string())?;
    Ok((cn, cert.pem()))
}

/// The content of the form-data part `name` (curl's `-F name=@file`).
fn multipart_part(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let delimiter = format!("--{boundary}");
    for part in text.split(&delimiter) {
        let Some((headers, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        if headers.contains(&format!("name=\"{name}\"")) {
            return Some(content.trim_end_matches("\r\n").to_owned());
        }
    }
    None
}
