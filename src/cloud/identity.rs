//! The agent's identity: its client certificate and key from the mTLS directory, and its id (the
//! certificate subject's CN).
//!
//! This module reads files and parses PEM/X.509; it never logs, prints or formats key material
//! (the key type's `Debug` is redacted), and never writes anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Error;

/// File name of the client certificate (PEM, leaf first, optional intermediates) in the mTLS dir.
pub const CERT_FILE: &str = "client.crt";
/// File name of the client private key (PEM: PKCS#8, SEC1 or PKCS#1) in the mTLS dir.
pub const KEY_FILE: &str = "client.key";

/// A loaded client identity.
pub struct Identity {
    /// The subject CN of the leaf certificate: the agent id the cloud knows this device by.
    pub agent_id: String,
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key. Never logged.
    pub key: PrivateKeyDer<'static>,
    /// The key file's permission bits when group or others may read it (a warning, not an error).
    pub key_mode_too_open: Option<u32>,
    /// Where the key was read from, for messages.
    pub key_path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.agent_id)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .field("key_mode_too_open", &self.key_mode_too_open)
            .finish()
    }
}

/// Reads `client.crt` and `client.key` from `dir`. Re-read on every connection attempt, so a
/// certificate written (or replaced) after start-up is picked up without a restart.
pub async fn load(dir: &Path) -> Result<Identity, Error> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert_pem = read(&cert_path).await?;
    let key_pem = read(&key_path).await?;
    let key_mode_too_open = match tokio::fs::metadata(&key_path).await {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then_some(mode)
        }
        Err(_) => None,
    };
    let identity = parse(&cert_pem, &key_pem, &cert_path, &key_path)?;
    Ok(Identity {
        key_mode_too_open,
        key_path,
        ..identity
    })
}

async fn read(path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::IdentityMissing {
                path: path.to_owned(),
            }
        } else {
            Error::IdentityUnreadable {
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Parses a PEM certificate chain and key (pure; used by [`load`]).
pub fn parse(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Identity, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(Error::BadCertificate {
            path: cert_path.to_owned(),
            reason: "no PEM CERTIFICATE block".into(),
        });
    };
    let agent_id = common_name(leaf).map_err(|reason| Error::BadCertificate {
        path: cert_path.to_owned(),
        reason,
    })?;
    // The parse error's text never contains key bytes (it names the PEM section problem only),
    // but keep the message generic anyway.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| Error::BadKey {
        path: key_path.to_owned(),
        reason: "no readable PEM private key (PKCS#8, SEC1 or PKCS#1)".into(),
    })?;
    Ok(Identity {
        agent_id,
        chain,
        key,
        key_mode_too_open: None,
        key_path: key_path.to_owned(),
    })
}

/// The first CN of the certificate's subject.
pub fn common_name(der: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| "the certificate subject has no CN (the agent id)".to_owned())?;
    let cn = cn
        .as_str()
        .map_err(|e| format!("the subject CN is not a string: {e}"))?;
    if cn.is_empty() {
        return Err("the subject CN (the agent id) is empty".to_owned());
    }
    Ok(cn.to_owned())
}

/// Reads the extra trusted roots of `--ca-file` (PEM, one or more certificates).
pub async fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|source| Error::CaFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCaFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::BadCaFile {
            path: path.to_owned(),
            reason: "no PEM CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_and_key(cn: Option<&str>) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["device.local".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Test");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[tokio::test]
    async fn agent_id_is_the_subject_cn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = cert_and_key(Some("device-0042"));
        write(dir.path(), CERT_FILE, &cert, 0o644);
        write(dir.path(), KEY_FILE, &key, 0o600);
        let id = load(dir.path()).await.expect("identity");
        assert_eq!(id.agent_id, "device-0042");
        assert_eq!(id.chain.len(), 1);
        assert_eq!(id.key_mode_too_open, None);
        let dbg = format!("{id:?}");
        assert!(
            dbg.contains("<redacted>") && !dbg.contains("PRIVATE"),
            "{dbg}"
        );
    }

    #[tokio::test]
    async fn a_missing_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(dir.path()).await.expect_err("no files");
        assert!(err.is_identity_missing(), "{err}");
        assert!(err.to_string().contains("client.crt"), "{err}");
        let (cert, _) = cert_and_key(Some("x"));
        write(dir.path(), CERT_FILE, &cert, 0o644);
        let err = load(dir.path()).await.expect_err("no key");
        assert!(
            err.is_identity_missing() && err.to_string().contains("client.key"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_key_readable_by_others_is_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = cert_and_key(Some("device-1"));
        write(dir.path(), CERT_FILE, &cert, 0o644);
        write(dir.path(), KEY_FILE, &key, 0o644);
        let id = load(dir.path()).await.expect("identity");
        assert_eq!(id.key_mode_too_open, Some(0o644));
    }

    #[tokio::test]
    async fn a_ca_file_may_hold_several_certificates_and_must_hold_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, _) = cert_and_key(Some("ca-a"));
        let (b, _) = cert_and_key(Some("ca-b"));
        let both = dir.path().join("both.pem");
        std::fs::write(&both, format!("{a}{b}")).expect("write");
        assert_eq!(load_ca_file(&both).await.expect("two roots").len(), 2);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here").expect("write");
        let err = load_ca_file(&empty).await.expect_err("no roots");
        assert!(matches!(err, Error::BadCaFile { .. }), "{err}");
        let err = load_ca_file(&dir.path().join("missing.pem"))
            .await
            .expect_err("missing");
        assert!(matches!(err, Error::CaFileUnreadable { .. }), "{err}");
    }

    #[test]
    fn garbage_and_cn_less_certificates_are_refused() {
        let p = Path::new("x");
        let (cert, key) = cert_and_key(None);
        let err = parse(cert.as_bytes(), key.as_bytes(), p, p).expect_err("no CN");
        assert!(err.to_string().contains("no CN"), "{err}");
        let err = parse(b"hello", key.as_bytes(), p, p).expect_err("not PEM");
        assert!(matches!(err, Error::BadCertificate { .. }), "{err}");
        let (cert, _) = cert_and_key(Some("a"));
        let err = parse(cert.as_bytes(), b"nope", p, p).expect_err("bad key");
        assert!(matches!(err, Error::BadKey { .. }), "{err}");
        assert!(!err.to_string().contains("nope"));
    }

    #[test]
    fn pkcs8_sec1_and_pkcs1_pem_labels_are_recognised() {
        let p = Path::new("x");
        let (cert, _) = cert_and_key(Some("a"));
        // rcgen (ring) writes PKCS#8 only; the loader picks the key format from the PEM label, which
        // is what this checks (the TLS handshake tests use real keys).
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec key");
        let pkcs8 = ec.serialize_pem();
        assert!(parse(cert.as_bytes(), pkcs8.as_bytes(), p, p).is_ok());
        for label in ["EC PRIVATE KEY", "RSA PRIVATE KEY"] {
            let body = pkcs8
                .replace("BEGIN PRIVATE KEY", &format!("BEGIN {label}"))
                .replace("END PRIVATE KEY", &format!("END {label}"));
            let id = parse(cert.as_bytes(), body.as_bytes(), p, p).expect("key with label");
            let want_sec1 = label.starts_with("EC");
            assert_eq!(matches!(id.key, PrivateKeyDer::Sec1(_)), want_sec1);
            assert_eq!(matches!(id.key, PrivateKeyDer::Pkcs1(_)), !want_sec1);
        }
    }
}
