//! The link's TLS credentials across connection attempts: the client identity, the extra roots of
//! `--ca-file` and the rustls [`ClientConfig`] built from them, kept until one of those files
//! changes.
//!
//! Reusing one `ClientConfig` keeps its session cache (TLS 1.3 tickets, TLS 1.2 session ids), so a
//! reconnect resumes the previous session instead of running a full mutual-TLS handshake: what a
//! recovering cloud facing a whole fleet needs. Every attempt checks the files cheaply by their
//! metadata (device, inode, size, mtime and ctime to the nanosecond, following symlinks, so a
//! replaced file, a rewritten one and a swapped symlink all count as changes); only a change reads
//! and parses them again. A certificate that appears or is renewed is therefore picked up on the
//! next attempt without a restart, as before; and while connected, [`Credentials::replacement_ready`]
//! looks every 10–20 s and ends the session for a reconnect once a changed pair verifies, so a
//! renewed certificate is in use within seconds, not at the next disconnect.
//!
//! A changed pair is verified before it is used (`certs::verify_pair`: the key belongs to the
//! certificate, the CN is there, and a replacement must be inside its validity window). A bad
//! replacement (wrong key, expired, half-written, removed) is refused with a WARN and the pair in
//! use is kept, so a botched renewal does not cut a working device off its cloud; the refusal is
//! also in the `__orchestrator__` status. The first pair is only refused when it cannot work at
//! all (no key match, no CN): an expired one is still offered, since the cloud's clock is the
//! judge, and logged as an ERROR; likewise a replacement of a pair that is itself expired (or not
//! yet valid) by the local clock is not held to the clock either.
//!
//! Never logs key material (see `identity`).

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use tracing::{info, warn};

use super::identity::{self, CERT_FILE, Identity, KEY_FILE};
use super::{Error, LinkConfig, tls};
use crate::certs::{self, CertSummary, InUse};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of the credential files, in a fixed order; `None` for a file that cannot be
/// stat'ed (missing, unreadable directory).
type Stamps = Vec<Option<FileStamp>>;

/// How often a connected link looks for renewed credential files (plus up to as much jitter).
pub(crate) const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The credentials in use, with the stamps of the files they were read from.
struct Loaded {
    stamps: Stamps,
    identity: Arc<Identity>,
    config: Arc<ClientConfig>,
    summary: CertSummary,
}

/// The credentials for one connection attempt.
pub(crate) struct Current {
    pub(crate) identity: Arc<Identity>,
    pub(crate) config: Arc<ClientConfig>,
}

/// Credentials cached across the attempts of one link.
pub(crate) struct Credentials {
    files: Arc<[PathBuf]>,
    mtls_dir: PathBuf,
    ca_file: Option<PathBuf>,
    loaded: Option<Loaded>,
    /// The stamps of a replacement that was refused: not read again until the files change.
    refused: Option<Stamps>,
    in_use: InUse,
    warned_key_mode: bool,
    /// How many configurations were built: for tests and the reload log line.
    builds: u64,
}

impl Credentials {
    pub(crate) fn new(config: &LinkConfig) -> Self {
        let mut files = vec![
            config.mtls_dir.join(CERT_FILE),
            config.mtls_dir.join(KEY_FILE),
        ];
        files.extend(config.ca_file.clone());
        Self {
            files: files.into(),
            mtls_dir: config.mtls_dir.clone(),
            ca_file: config.ca_file.clone(),
            loaded: None,
            refused: None,
            in_use: config.certificate.clone(),
            warned_key_mode: false,
            builds: 0,
        }
    }

    /// The credentials for the next attempt: the cached ones when no file changed since they were
    /// read, else freshly loaded ones (an error when the files are missing or unusable; the next
    /// attempt tries again).
    pub(crate) async fn current(&mut self) -> Result<Current, Error> {
        // Stamps first, then read: a file changed in between is read in its new version and
        // simply read again next time (its stamp no longer matches).
        let stamps = stamp_all(Arc::clone(&self.files)).await;
        if let Some(loaded) = &self.loaded
            && (loaded.stamps == stamps || self.refused.as_ref() == Some(&stamps))
        {
            return Ok(loaded.current());
        }
        let replacing = self.loaded.is_some();
        // A replacement must be inside its validity window, unless the pair in use is not either
        // (then the new one cannot be worse, and the cloud's clock decides).
        let now = crate::timefmt::now_unix();
        let check_validity = self
            .loaded
            .as_ref()
            .is_some_and(|l| l.summary.validity(now).is_usable());
        match self.load(check_validity.then_some(now)).await {
            Ok((identity, config, summary)) => {
                self.builds += 1;
                if replacing {
                    info!(
                        agent_id = %identity.agent_id,
                        configuration = self.builds,
                        certificate = %summary.describe(),
                        "the client certificate, key or CA file changed: verified and reloaded (new TLS sessions from now on)"
                    );
                    if let Some(old) = &self.loaded
                        && old.identity.agent_id != identity.agent_id
                    {
                        warn!(
                            "the agent id changes with the new certificate: {} -> {} (the cloud sees another orchestrator)",
                            old.identity.agent_id, identity.agent_id
                        );
                    }
                } else {
                    info!(certificate = %summary.describe(), "client certificate loaded");
                }
                certs::log_expiry(&summary, crate::timefmt::now_unix());
                self.in_use.set(summary.clone());
                self.refused = None;
                let loaded = Loaded {
                    stamps,
                    identity: Arc::new(identity),
                    config,
                    summary,
                };
                let current = loaded.current();
                self.loaded = Some(loaded);
                Ok(current)
            }
            Err(e) => {
                let Some(loaded) = &self.loaded else {
                    return Err(e);
                };
                warn!(
                    "the changed client certificate, key or CA file (in {}) is refused and the one in use is kept ({}): {e}",
                    self.mtls_dir.display(),
                    loaded.summary.describe()
                );
                self.in_use.refused(e.to_string());
                self.refused = Some(stamps);
                Ok(loaded.current())
            }
        }
    }

    /// Resolves once the credential files changed since the pair in use was loaded and the new
    /// version verifies (key matches the certificate, CN, validity): the moment for the link to
    /// reconnect with it, so a renewed certificate is used within about [`RELOAD_CHECK`] and not
    /// only after the next disconnect. A version that does not verify is left for the next
    /// connection's load, which refuses and reports it; the link stays up. Never resolves before
    /// a pair is loaded.
    pub(crate) fn replacement_ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let files = Arc::clone(&self.files);
        let dir = self.mtls_dir.clone();
        let mut seen: Vec<Stamps> = self.refused.iter().cloned().collect();
        let loaded = self
            .loaded
            .as_ref()
            .map(|l| (l.stamps.clone(), l.summary.clone()));
        async move {
            let Some((stamps, summary)) = loaded else {
                return std::future::pending().await;
            };
            seen.push(stamps);
            loop {
                // Jittered, so devices whose certificates were renewed together do not all
                // reconnect in the same second.
                let jitter = RELOAD_CHECK.mul_f64(super::backoff::random_unit());
                tokio::time::sleep(RELOAD_CHECK + jitter).await;
                let stamps = stamp_all(Arc::clone(&files)).await;
                if seen.contains(&stamps) {
                    continue;
                }
                let now = crate::timefmt::now_unix();
                let check_validity = summary.validity(now).is_usable().then_some(now);
                let verified = match identity::load(&dir).await {
                    Ok(id) => certs::verify_pair(&id.chain, &id.key, check_validity).is_ok(),
                    Err(_) => false,
                };
                if verified {
                    return;
                }
                seen.push(stamps);
            }
        }
    }

    /// Reads and verifies the files; with `now`, the certificate must be valid then (see the
    /// module doc).
    async fn load(
        &mut self,
        now: Option<i64>,
    ) -> Result<(Identity, Arc<ClientConfig>, CertSummary), Error> {
        let identity = identity::load(&self.mtls_dir).await?;
        let summary =
            certs::verify_pair(&identity.chain, &identity.key, now).map_err(|reason| {
                Error::BadCertificate {
                    path: self.mtls_dir.join(CERT_FILE),
                    reason,
                }
            })?;
        if let (Some(mode), false) = (identity.key_mode_too_open, self.warned_key_mode) {
            self.warned_key_mode = true;
            warn!(
                "the client key {} is readable by group or others (mode {mode:o}); it should be 0600",
                identity.key_path.display()
            );
        }
        let extra_roots = match &self.ca_file {
            Some(path) => identity::load_ca_file(path).await?,
            None => Vec::new(),
        };
        let config = tls::client_config(&identity, &extra_roots)?;
        Ok((identity, config, summary))
    }

    /// How many TLS configurations were built so far.
    #[cfg(test)]
    pub(crate) fn builds(&self) -> u64 {
        self.builds
    }
}

impl Loaded {
    fn current(&self) -> Current {
        Current {
            identity: Arc::clone(&self.identity),
            config: Arc::clone(&self.config),
        }
    }
}

async fn stamp_all(files: Arc<[PathBuf]>) -> Stamps {
    let stat = move || files.iter().map(|p| stamp(p)).collect::<Stamps>();
    // A stuck filesystem must not stall the runtime; a failed blocking task reads as "changed".
    tokio::task::spawn_blocking(stat).await.unwrap_or_default()
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use devcloud::pki::{self, PkiOptions};

    fn pki(dir: &Path, regenerate: bool) -> pki::PkiPaths {
        pki::generate(
            dir,
            &PkiOptions {
                agent_id: "creds-test".into(),
                regenerate,
                ..PkiOptions::default()
            },
        )
        .expect("dev PKI")
    }

    fn link_config(p: &pki::PkiPaths) -> LinkConfig {
        LinkConfig {
            server: "https://localhost:1".into(),
            ca_file: Some(p.ca_cert.clone()),
            mtls_dir: p.agent_dir.clone(),
            certificate: InUse::default(),
            status: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_config_is_reused_until_a_credential_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pki(dir.path(), false);
        let mut creds = Credentials::new(&link_config(&p));
        let first = creds.current().await.expect("credentials");
        for _ in 0..5 {
            let again = creds.current().await.expect("credentials");
            assert!(Arc::ptr_eq(&first.config, &again.config), "reused");
            assert!(Arc::ptr_eq(&first.identity, &again.identity));
        }
        assert_eq!(creds.builds(), 1);

        // Rewritten in place with the same bytes: the stamps change, so the files are read again.
        let cert = std::fs::read(&p.client_cert).expect("read");
        std::fs::write(&p.client_cert, &cert).expect("rewrite");
        let after_rewrite = creds.current().await.expect("credentials");
        assert!(!Arc::ptr_eq(&first.config, &after_rewrite.config));
        assert_eq!(creds.builds(), 2);
        let again = creds.current().await.expect("credentials");
        assert!(Arc::ptr_eq(&after_rewrite.config, &again.config));

        // A renewed certificate and key put in place by rename (a new inode), as tools do.
        let renewed = tempfile::tempdir().expect("tempdir");
        let q = pki(renewed.path(), true);
        std::fs::copy(&q.client_key, p.agent_dir.join("staged.key")).expect("copy");
        std::fs::rename(p.agent_dir.join("staged.key"), &p.client_key).expect("rename");
        std::fs::copy(&q.client_cert, p.agent_dir.join("staged.crt")).expect("copy");
        std::fs::rename(p.agent_dir.join("staged.crt"), &p.client_cert).expect("rename");
        let renewed_creds = creds.current().await.expect("credentials");
        assert!(!Arc::ptr_eq(&again.config, &renewed_creds.config));
        assert_eq!(creds.builds(), 3);

        // The CA file counts too.
        std::fs::copy(&q.ca_cert, &p.ca_cert).expect("new CA");
        let new_ca = creds.current().await.expect("credentials");
        assert!(!Arc::ptr_eq(&renewed_creds.config, &new_ca.config));
        assert_eq!(creds.builds(), 4);
    }

    #[tokio::test]
    async fn missing_files_are_an_error_until_they_appear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pki(dir.path(), false);
        let empty = tempfile::tempdir().expect("tempdir");
        let mut cfg = link_config(&p);
        cfg.mtls_dir = empty.path().to_owned();
        let mut creds = Credentials::new(&cfg);
        for _ in 0..2 {
            let err = creds.current().await.err().expect("no identity yet");
            assert!(err.is_identity_missing(), "{err}");
        }
        std::fs::copy(&p.client_cert, empty.path().join(CERT_FILE)).expect("copy");
        std::fs::copy(&p.client_key, empty.path().join(KEY_FILE)).expect("copy");
        let got = creds.current().await.expect("credentials");
        assert_eq!(got.identity.agent_id, "creds-test");
        // A removed file (a renewal half done) is refused: the pair in use stays.
        std::fs::remove_file(empty.path().join(KEY_FILE)).expect("rm");
        let kept = creds.current().await.expect("the old pair is kept");
        assert!(Arc::ptr_eq(&got.config, &kept.config));
        assert!(cfg.certificate.to_json(0)["refused_replacement"].is_string());
    }

    #[tokio::test]
    async fn a_bad_replacement_is_refused_and_the_pair_in_use_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pki(dir.path(), false);
        let cfg = link_config(&p);
        let mut creds = Credentials::new(&cfg);
        let first = creds.current().await.expect("credentials");
        assert_eq!(cfg.certificate.current().expect("in use").cn, "creds-test");

        // A key of another pair beside the same certificate.
        let other = tempfile::tempdir().expect("tempdir");
        let q = pki(other.path(), true);
        std::fs::copy(&q.client_key, &p.client_key).expect("wrong key");
        for _ in 0..3 {
            let kept = creds.current().await.expect("old pair kept");
            assert!(Arc::ptr_eq(&first.config, &kept.config));
        }
        // Refused once, not re-read on every attempt.
        assert_eq!(creds.builds(), 1);
        let status = cfg.certificate.to_json(crate::timefmt::now_unix());
        let reason = status["refused_replacement"].as_str().expect("reason");
        assert!(reason.contains("does not belong"), "{reason}");

        // An expired certificate with its own key, made by rcgen.
        let now = crate::timefmt::now_unix();
        let (cert, key) = crate::certs::tests::pair("creds-test", now - 90 * 86_400, now - 86_400);
        std::fs::write(&p.client_cert, cert).expect("write");
        std::fs::write(&p.client_key, key).expect("write");
        let kept = creds.current().await.expect("old pair kept");
        assert!(Arc::ptr_eq(&first.config, &kept.config));
        let status = cfg.certificate.to_json(now);
        let reason = status["refused_replacement"].as_str().expect("reason");
        assert!(reason.contains("expired on"), "{reason}");
        assert_eq!(status["state"], "ok", "the status shows the pair in use");

        // A good renewed pair: used, the refusal forgotten.
        std::fs::copy(&q.client_cert, &p.client_cert).expect("cert");
        std::fs::copy(&q.client_key, &p.client_key).expect("key");
        let renewed = creds.current().await.expect("renewed");
        assert!(!Arc::ptr_eq(&first.config, &renewed.config));
        assert_eq!(creds.builds(), 2);
        assert!(
            cfg.certificate
                .to_json(now)
                .get("refused_replacement")
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_expired_pair_in_use_does_not_hold_its_replacement_to_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pki(dir.path(), false);
        let cfg = link_config(&p);
        let now = crate::timefmt::now_unix();
        let write = |cn: &str, from: i64, to: i64| {
            let (cert, key) = crate::certs::tests::pair(cn, from, to);
            std::fs::write(&p.client_cert, cert).expect("write");
            std::fs::write(&p.client_key, key).expect("write");
        };
        // Expired by this clock: still used (the cloud's clock decides), and reported.
        write("old", now - 90 * 86_400, now - 86_400);
        let mut creds = Credentials::new(&cfg);
        creds
            .current()
            .await
            .expect("an expired first pair is offered");
        assert_eq!(cfg.certificate.to_json(now)["state"], "expired");
        // A replacement "not yet valid" by this (perhaps wrong) clock is no worse: taken.
        write("new", now + 86_400, now + 90 * 86_400);
        let got = creds.current().await.expect("replacement");
        assert_eq!(got.identity.agent_id, "new");
        assert_eq!(creds.builds(), 2);
    }
}
