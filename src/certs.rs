//! The client certificate's lifecycle as operators see it: what the pair in the mTLS directory is
//! (CN, issuer, validity, file modes, whether the key belongs to the certificate), the checks a
//! new pair must pass before the link uses it, how close it is to expiry, and the shared view of
//! the certificate in use ([`InUse`]) that `get_device_status` of `__orchestrator__` reports.
//!
//! It never logs, prints or serialises key material: the key is parsed only to compare its public
//! half with the certificate's, and every message about it is generic.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde_json::{Value, json};
use tracing::{error, warn};

use crate::cloud::identity::{CERT_FILE, KEY_FILE};

/// A certificate that expires within this long is reported (log WARN, status `expiring`).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the running agent looks at the certificate in use for the expiry warning.
pub const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);

const DAY: i64 = 24 * 3600;

/// What an operator needs to know about a certificate (never anything secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject CN: the agent id.
    pub cn: String,
    /// The issuer's distinguished name (RFC 4514 text).
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Validity window, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Where a certificate stands against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid, more than [`EXPIRY_WARNING`] left.
    Valid {
        days_left: i64,
    },
    /// Valid, expiring within [`EXPIRY_WARNING`].
    Expiring {
        days_left: i64,
    },
    Expired,
    NotYetValid,
}

impl Validity {
    /// `ok`, `expiring`, `expired`, `not_yet_valid`: the status field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid { .. } => "ok",
            Self::Expiring { .. } => "expiring",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
        }
    }

    /// Inside the validity window.
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Valid { .. } | Self::Expiring { .. })
    }
}

impl CertSummary {
    /// Summarises a DER certificate; the error says why it is not a usable client certificate.
    pub fn from_der(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let cn = crate::cloud::identity::common_name(der)?;
        let validity = cert.validity();
        Ok(Self {
            cn,
            issuer: name_text(cert.issuer()),
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// Where the certificate stands at `now` (Unix seconds).
    pub fn validity(&self, now: i64) -> Validity {
        if now < self.not_before {
            Validity::NotYetValid
        } else if now > self.not_after {
            Validity::Expired
        } else {
            let left = self.not_after - now;
            let days_left = left / DAY;
            if left <= i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX) {
                Validity::Expiring { days_left }
            } else {
                Validity::Valid { days_left }
            }
        }
    }

    /// One line for logs and the human output: `CN=…, issuer …, valid … to …`.
    pub fn describe(&self) -> String {
        format!(
            "CN={}, issuer {}, valid {} to {}",
            self.cn,
            self.issuer,
            rfc3339(self.not_before),
            rfc3339(self.not_after)
        )
    }

    /// The JSON object of `certs status --json` and of the device status.
    pub fn to_json(&self, now: i64) -> Value {
        let validity = self.validity(now);
        json!({
            "cn": self.cn,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "days_left": (self.not_after - now).div_euclid(DAY),
            "state": validity.as_str(),
        })
    }
}

/// Unix seconds as RFC 3339 (UTC, whole seconds); the number itself if out of range.
pub fn rfc3339(unix: i64) -> String {
    // By hand: the formatting machinery of `time` and x509-parser's name printing (its OID
    // registry) cost far more binary than these few lines.
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// A distinguished name as `CN=…, OU=…, O=…, C=…` (the attributes operators read; others left out).
fn name_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    let parts = [
        ("CN", name.iter_common_name().collect::<Vec<_>>()),
        ("OU", name.iter_organizational_unit().collect()),
        ("O", name.iter_organization().collect()),
        ("C", name.iter_country().collect()),
    ];
    let text: Vec<String> = parts
        .iter()
        .flat_map(|(label, values)| {
            values
                .iter()
                .filter_map(move |v| v.as_str().ok().map(|v| format!("{label}={v}")))
        })
        .collect();
    if text.is_empty() {
        "(no CN, OU, O or C)".to_owned()
    } else {
        text.join(", ")
    }
}

/// Whether `key` is the private half of the leaf of `chain`. A key ring cannot load, or one
/// whose public half it cannot derive, is an error too: the link could not use it either.
pub fn key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'_>,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    // The loader's error text names the key format problem only; keep it generic anyway.
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| "the key is not a usable RSA, ECDSA or Ed25519 private key".to_owned())?;
    match CertifiedKey::new(chain.to_vec(), signing).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Err("cannot tell whether the key belongs to the certificate".to_owned())
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("the key does not belong to the certificate (another key pair)".to_owned())
        }
        Err(e) => Err(format!("the certificate cannot be checked: {e}")),
    }
}

/// The checks a pair passes before the link uses it: the leaf parses and has a CN, the key
/// belongs to it, and (when `now` is given) it is inside its validity window. Returns the summary.
pub fn verify_pair(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'_>,
    now: Option<i64>,
) -> Result<CertSummary, String> {
    let leaf = chain
        .first()
        .ok_or_else(|| "no PEM CERTIFICATE block".to_owned())?;
    let summary = CertSummary::from_der(leaf)?;
    key_matches(chain, key)?;
    if let Some(now) = now {
        match summary.validity(now) {
            Validity::Expired => {
                return Err(format!("it expired on {}", rfc3339(summary.not_after)));
            }
            Validity::NotYetValid => {
                return Err(format!(
                    "it is not valid before {} (check the device clock)",
                    rfc3339(summary.not_before)
                ));
            }
            Validity::Valid { .. } | Validity::Expiring { .. } => {}
        }
    }
    Ok(summary)
}

/// Logs the expiry state of the certificate in use: WARN within [`EXPIRY_WARNING`], ERROR once
/// expired or not yet valid, nothing otherwise.
pub fn log_expiry(summary: &CertSummary, now: i64) {
    match summary.validity(now) {
        Validity::Valid { .. } => {}
        Validity::Expiring { days_left } => warn!(
            cn = %summary.cn,
            not_after = %rfc3339(summary.not_after),
            "the client certificate expires in {days_left} days: renew it (client.crt/client.key are reloaded without a restart)"
        ),
        Validity::Expired => error!(
            cn = %summary.cn,
            not_after = %rfc3339(summary.not_after),
            "the client certificate has expired: the cloud will refuse it; renew it (or fix the device clock)"
        ),
        Validity::NotYetValid => error!(
            cn = %summary.cn,
            not_before = %rfc3339(summary.not_before),
            "the client certificate is not valid yet: check the device clock"
        ),
    }
}

/// The certificate the link uses, and the last replacement it refused: shared between the link
/// (which writes it) and the status topic and expiry watch (which read it).
#[derive(Debug, Clone, Default)]
pub struct InUse(Arc<Mutex<InUseState>>);

#[derive(Debug, Default)]
struct InUseState {
    current: Option<CertSummary>,
    refused: Option<String>,
}

impl InUse {
    /// The link now uses `summary` (a refused replacement is forgotten).
    pub fn set(&self, summary: CertSummary) {
        let mut s = self.lock();
        s.current = Some(summary);
        s.refused = None;
    }

    /// A replacement was refused for `reason`; the previous certificate stays in use.
    pub fn refused(&self, reason: String) {
        self.lock().refused = Some(reason);
    }

    /// The certificate in use.
    pub fn current(&self) -> Option<CertSummary> {
        self.lock().current.clone()
    }

    /// The `certificate` field of the `__orchestrator__` status: the certificate in use (`state`
    /// `ok`, `expiring`, `expired`, `not_yet_valid`), `null` fields before one was loaded, and the
    /// reason a replacement on disk was refused.
    pub fn to_json(&self, now: i64) -> Value {
        let s = self.lock();
        let mut v = match &s.current {
            Some(c) => c.to_json(now),
            None => json!({"state": "not_loaded"}),
        };
        if let (Some(reason), Some(obj)) = (&s.refused, v.as_object_mut()) {
            obj.insert("refused_replacement".into(), Value::from(reason.as_str()));
        }
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InUseState> {
        // A panic while holding this lock cannot leave it half-written (plain assignments).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Logs the expiry state of the certificate in use every [`EXPIRY_CHECK_EVERY`], so an agent that
/// stays connected for weeks still warns before its certificate runs out. Runs for the life of
/// the async runtime.
pub fn spawn_expiry_watch(in_use: InUse) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EXPIRY_CHECK_EVERY).await;
            if let Some(c) = in_use.current() {
                log_expiry(&c, crate::timefmt::now_unix());
            }
        }
    });
}

/// A file's presence and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Missing,
    Unreadable(String),
    Present { mode: u32 },
}

/// Everything `certs status` and `doctor` know about the pair on disk.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub dir: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_file: FileState,
    pub key_file: FileState,
    /// The leaf's summary, or why it cannot be read.
    pub cert: Option<Result<CertSummary, String>>,
    /// Whether the key parses and belongs to the certificate (`None` when either is missing).
    pub key_match: Option<Result<(), String>>,
}

impl Inspection {
    /// The key's mode when group or others may read or write it.
    pub fn key_too_open(&self) -> Option<u32> {
        match self.key_file {
            FileState::Present { mode } if mode & 0o077 != 0 => Some(mode),
            _ => None,
        }
    }

    /// The JSON of `certs status --json`.
    pub fn to_json(&self, now: i64) -> Value {
        let file = |f: &FileState, p: &Path| match f {
            FileState::Missing => json!({"path": p, "present": false}),
            FileState::Unreadable(e) => json!({"path": p, "present": true, "error": e}),
            FileState::Present { mode } => {
                json!({"path": p, "present": true, "mode": format!("{mode:04o}")})
            }
        };
        let mut key = file(&self.key_file, &self.key_path);
        if let Some(obj) = key.as_object_mut() {
            if matches!(self.key_file, FileState::Present { .. }) {
                obj.insert("mode_ok".into(), Value::Bool(self.key_too_open().is_none()));
            }
            if let Some(m) = &self.key_match {
                obj.insert("matches_certificate".into(), Value::Bool(m.is_ok()));
                if let Err(e) = m {
                    obj.insert("error".into(), Value::from(e.as_str()));
                }
            }
        }
        let mut cert = file(&self.cert_file, &self.cert_path);
        if let (Some(obj), Some(c)) = (cert.as_object_mut(), &self.cert) {
            match c {
                Ok(s) => {
                    if let Some(fields) = s.to_json(now).as_object() {
                        obj.extend(fields.clone());
                    }
                }
                Err(e) => {
                    obj.insert("error".into(), Value::from(e.as_str()));
                }
            }
        }
        json!({"mtls_dir": self.dir, "certificate": cert, "key": key})
    }
}

/// Reads and checks the pair in `dir` (blocking; small files). Never fails: what is wrong is in
/// the result.
pub fn inspect(dir: &Path) -> Inspection {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let (cert_file, cert_pem) = read_file(&cert_path);
    let (key_file, key_pem) = read_file(&key_path);
    let chain = cert_pem.map(|pem| {
        CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM: {e}"))
            .and_then(|chain| {
                if chain.is_empty() {
                    Err("no PEM CERTIFICATE block".to_owned())
                } else {
                    Ok(chain)
                }
            })
    });
    let cert = chain.as_ref().map(|c| match c {
        Ok(chain) => CertSummary::from_der(&chain[0]),
        Err(e) => Err(e.clone()),
    });
    let key_match = match (&chain, key_pem) {
        (Some(Ok(chain)), Some(pem)) => Some(
            PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|_| "no readable PEM private key (PKCS#8, SEC1 or PKCS#1)".to_owned())
                .and_then(|key| key_matches(chain, &key)),
        ),
        _ => None,
    };
    Inspection {
        dir: dir.to_owned(),
        cert_path,
        key_path,
        cert_file,
        key_file,
        cert,
        key_match,
    }
}

fn read_file(path: &Path) -> (FileState, Option<Vec<u8>>) {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (FileState::Missing, None),
        Err(e) => return (FileState::Unreadable(e.to_string()), None),
    };
    match std::fs::read(path) {
        Ok(bytes) => (FileState::Present { mode }, Some(bytes)),
        Err(e) => (FileState::Unreadable(e.to_string()), None),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate with `cn` valid from `from` to `to` (Unix seconds) and its key.
    pub(crate) fn pair(cn: &str, from: i64, to: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("time");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).expect("time");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("pem")
    }

    fn key(pem: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key")
    }

    #[test]
    fn validity_windows_and_the_expiry_warning() {
        let now = 1_800_000_000;
        let (c, _) = pair("d", now - DAY, now + 100 * DAY);
        let s = CertSummary::from_der(&chain(&c)[0]).expect("summary");
        assert_eq!(s.cn, "d");
        assert_eq!(s.validity(now), Validity::Valid { days_left: 100 });
        assert_eq!(
            s.validity(now + 80 * DAY),
            Validity::Expiring { days_left: 20 }
        );
        assert_eq!(s.validity(now + 101 * DAY), Validity::Expired);
        assert_eq!(s.validity(now - 2 * DAY), Validity::NotYetValid);
        let v = s.to_json(now + 80 * DAY);
        assert_eq!(v["state"], "expiring");
        assert_eq!(v["days_left"], 20);
    }

    #[test]
    fn a_pair_is_verified_key_cn_and_validity() {
        let now = crate::timefmt::now_unix();
        let (c, k) = pair("dev-1", now - DAY, now + 10 * DAY);
        let (_, other) = pair("dev-1", now - DAY, now + 10 * DAY);
        let s = verify_pair(&chain(&c), &key(&k), Some(now)).expect("good pair");
        assert_eq!(s.cn, "dev-1");
        let e = verify_pair(&chain(&c), &key(&other), Some(now)).expect_err("wrong key");
        assert!(e.contains("does not belong"), "{e}");
        let (old, old_key) = pair("dev-1", now - 10 * DAY, now - DAY);
        let e = verify_pair(&chain(&old), &key(&old_key), Some(now)).expect_err("expired");
        assert!(e.contains("expired on"), "{e}");
        // Without a clock check (the first load) an expired pair is still a pair.
        assert!(verify_pair(&chain(&old), &key(&old_key), None).is_ok());
        assert!(!e.contains("PRIVATE"));
    }

    #[test]
    fn inspection_reports_modes_and_a_mismatched_key_without_key_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = crate::timefmt::now_unix();
        let ins = inspect(dir.path());
        assert_eq!(ins.cert_file, FileState::Missing);
        assert!(ins.cert.is_none() && ins.key_match.is_none());
        let (c, k) = pair("dev-2", now - DAY, now + 365 * DAY);
        let (_, other) = pair("x", now - DAY, now + DAY);
        std::fs::write(dir.path().join(CERT_FILE), &c).expect("write");
        std::fs::write(dir.path().join(KEY_FILE), &other).expect("write");
        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let ins = inspect(dir.path());
        assert_eq!(ins.key_too_open(), Some(0o644));
        assert!(ins.key_match.as_ref().is_some_and(Result::is_err));
        let text = ins.to_json(now).to_string();
        assert!(!text.contains("PRIVATE") && !text.contains(other.lines().nth(1).expect("b64")));
        assert!(text.contains("\"matches_certificate\":false"), "{text}");
        std::fs::write(dir.path().join(KEY_FILE), &k).expect("write");
        let ins = inspect(dir.path());
        assert_eq!(ins.key_match, Some(Ok(())));
        assert_eq!(ins.cert.expect("cert").expect("parsed").cn, "dev-2");
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_warns_while_the_agent_stays_connected() {
        let now = crate::timefmt::now_unix();
        let (c, _) = pair("dev-4", now - DAY, now + 12 * DAY);
        let in_use = InUse::default();
        in_use.set(CertSummary::from_der(&chain(&c)[0]).expect("summary"));
        let (guard, warn) = crate::logging::capture::at(tracing::Level::WARN);
        spawn_expiry_watch(in_use);
        tokio::time::sleep(EXPIRY_CHECK_EVERY / 2).await;
        assert!(warn.text().is_empty(), "{}", warn.text());
        tokio::time::sleep(EXPIRY_CHECK_EVERY).await;
        drop(guard);
        let text = warn.text();
        assert!(text.contains("the client certificate expires in"), "{text}");
        assert!(text.contains("dev-4"), "{text}");
    }

    #[test]
    fn in_use_reports_the_refused_replacement_until_the_next_good_one() {
        let now = crate::timefmt::now_unix();
        let (c, _) = pair("dev-3", now - DAY, now + 5 * DAY);
        let s = CertSummary::from_der(&chain(&c)[0]).expect("summary");
        let in_use = InUse::default();
        assert_eq!(in_use.to_json(now)["state"], "not_loaded");
        in_use.set(s.clone());
        in_use.refused("it expired on 2020-01-01T00:00:00Z".into());
        let v = in_use.to_json(now);
        assert_eq!(v["state"], "expiring");
        assert_eq!(v["cn"], "dev-3");
        assert!(v["refused_replacement"].is_string());
        in_use.set(s);
        assert!(in_use.to_json(now).get("refused_replacement").is_none());
    }
}
