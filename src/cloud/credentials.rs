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
//! next attempt without a restart, as before.
//!
//! Never logs key material (see `identity`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use tracing::{info, warn};

use super::identity::{self, CERT_FILE, Identity, KEY_FILE};
use super::{Error, LinkConfig, tls};

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

/// The credentials in use, with the stamps of the files they were read from.
struct Loaded {
    stamps: Stamps,
    identity: Arc<Identity>,
    config: Arc<ClientConfig>,
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
            && loaded.stamps == stamps
        {
            return Ok(Current {
                identity: Arc::clone(&loaded.identity),
                config: Arc::clone(&loaded.config),
            });
        }
        let changed = self.loaded.take().is_some();
        let identity = identity::load(&self.mtls_dir).await?;
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
        self.builds += 1;
        if changed {
            info!(
                agent_id = %identity.agent_id,
                configuration = self.builds,
                "the client certificate, key or CA file changed: reloaded (new TLS sessions from now on)"
            );
        }
        let identity = Arc::new(identity);
        self.loaded = Some(Loaded {
            stamps,
            identity: Arc::clone(&identity),
            config: Arc::clone(&config),
        });
        Ok(Current { identity, config })
    }

    /// How many TLS configurations were built so far.
    #[cfg(test)]
    pub(crate) fn builds(&self) -> u64 {
        self.builds
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
        // Removing a file afterwards is a change like any other: the next attempt reports it.
        std::fs::remove_file(empty.path().join(KEY_FILE)).expect("rm");
        let err = creds.current().await.err().expect("key gone");
        assert!(err.is_identity_missing(), "{err}");
    }
}
