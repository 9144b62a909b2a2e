//! Development PKI: a dev CA, a server certificate and an agent client certificate, written as PEM
//! files in one directory, in the layout the agent reads (`--ca-file <dir>/ca.crt`,
//! `--mtls-dir <dir>/agent` holding `client.crt` and `client.key`).
//!
//! Keys are ECDSA P-256: rcgen on the ring backend cannot generate RSA keys, and the agent and the
//! server accept EC keys. The same function makes a "rogue" PKI (an independent CA with its own server
//! and client certificates) when pointed at another directory: tests use one to check that a client
//! certificate or a server certificate from an untrusted CA is refused.
//!
//! This module owns only file generation and loading. It never deletes anything it did not write,
//! and it never logs key material.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

/// CN of the agent's client certificate unless told otherwise.
pub const DEFAULT_AGENT_ID: &str = "devcloud-agent-001";
/// CN of the dev CA unless told otherwise.
pub const DEFAULT_CA_NAME: &str = "devcloud dev CA";
/// CN of the CA that [`PkiOptions::rogue`] makes.
pub const ROGUE_CA_NAME: &str = "devcloud rogue CA";
/// Names the server certificate always carries.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Certificates are valid from an hour ago (clock skew between processes) for ten years:
/// long enough that a reused dev directory does not expire under a developer.
const VALID_BEFORE_NOW: Duration = Duration::hours(1);
const VALIDITY: Duration = Duration::days(3650);

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiOptions {
    /// CN of the agent's client certificate (the agent's identity on the cloud).
    pub agent_id: String,
    /// CN of the CA. Use a different one for a rogue CA so failures are easy to read.
    pub ca_name: String,
    /// Server certificate names beyond [`DEFAULT_SERVER_NAMES`]; IP literals become IP SANs.
    pub extra_server_names: Vec<String>,
    /// Regenerate everything even when the files exist.
    pub regenerate: bool,
}

impl Default for PkiOptions {
    fn default() -> Self {
        Self {
            agent_id: DEFAULT_AGENT_ID.to_owned(),
            ca_name: DEFAULT_CA_NAME.to_owned(),
            extra_server_names: Vec::new(),
            regenerate: false,
        }
    }
}

impl PkiOptions {
    /// Options for an independent "rogue" CA (generate it into its own directory).
    pub fn rogue() -> Self {
        Self {
            ca_name: ROGUE_CA_NAME.to_owned(),
            ..Self::default()
        }
    }
}

/// Where the files of one PKI directory live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The agent's `--mtls-dir`.
    pub agent_dir: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// CN of the client certificate actually on disk.
    pub agent_id: String,
}

impl PkiPaths {
    /// The layout under `dir` (no I/O; `agent_id` is the requested one).
    pub fn layout(dir: &Path, agent_id: &str) -> Self {
        let agent_dir = dir.join("agent");
        Self {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: agent_dir.join("client.crt"),
            client_key: agent_dir.join("client.key"),
            agent_dir,
            agent_id: agent_id.to_owned(),
        }
    }
}

/// Creates (or reuses) the dev CA, server certificate and agent client certificate under `dir`.
///
/// Existing files are reused unless `opts.regenerate` is set; a leaf certificate is remade when its
/// CA was remade, when the client CN differs from `opts.agent_id`, or when the server certificate
/// lacks a requested name. Private keys are written with mode 0600, atomically (temp file + rename).
///
/// This is blocking file I/O; async callers should use `spawn_blocking`.
pub fn generate(dir: &Path, opts: &PkiOptions) -> Result<PkiPaths> {
    let mut paths = PkiPaths::layout(dir, &opts.agent_id);
    fs::create_dir_all(&paths.agent_dir).map_err(|e| Error::file(&paths.agent_dir, e))?;

    // The CA: reuse when both halves exist.
    let reuse_ca = !opts.regenerate && paths.ca_cert.exists() && paths.ca_key.exists();
    let (ca_params, ca_key) = if reuse_ca {
        let key = read_key_pair(&paths.ca_key)?;
        let name = cert_info(&paths.ca_cert)?
            .cn
            .ok_or_else(|| Error::bad_pem(&paths.ca_cert, "CA certificate has no CN"))?;
        (ca_params(&name)?, key)
    } else {
        let key = KeyPair::generate()?;
        let params = ca_params(&opts.ca_name)?;
        let cert = params.self_signed(&key)?;
        write_file(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&paths.ca_cert, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(path = %paths.ca_cert.display(), ca = %opts.ca_name, "created dev CA");
        (params, key)
    };
    // The issuer is rebuilt from the same DN the CA was made with, so leaves chain to the file on disk.
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    // The server certificate.
    let mut server_names: Vec<String> =
        DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    for extra in &opts.extra_server_names {
        if !server_names.contains(extra) {
            server_names.push(extra.clone());
        }
    }
    let server_ok = reuse_ca
        && paths.server_key.exists()
        && paths.server_cert.exists()
        && cert_info(&paths.server_cert)?.covers(&server_names);
    if !server_ok {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(server_names.clone())?;
        params.distinguished_name = dn("devcloud server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&paths.server_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&paths.server_cert, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(path = %paths.server_cert.display(), names = ?server_names, "created server certificate");
    }

    // The agent's client certificate.
    let existing_cn = if reuse_ca && paths.client_key.exists() && paths.client_cert.exists() {
        cert_info(&paths.client_cert)?.cn
    } else {
        None
    };
    if existing_cn.as_deref() != Some(opts.agent_id.as_str()) {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(&opts.agent_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&paths.client_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&paths.client_cert, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(path = %paths.client_cert.display(), cn = %opts.agent_id, "created agent client certificate");
    }
    paths.agent_id = opts.agent_id.clone();
    Ok(paths)
}

/// Loads every certificate of a PEM file (a chain or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::bad_pem(path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::bad_pem(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::bad_pem(path, "no certificate in file"));
    }
    Ok(certs)
}

/// Loads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::bad_pem(path, e.to_string()))
}

/// The subject CN of a DER certificate, if it has one that is valid text.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// What generation needs to know about an existing certificate file.
struct CertInfo {
    cn: Option<String>,
    /// DNS names and IP addresses (as text) of the SAN extension.
    names: Vec<String>,
}

impl CertInfo {
    fn covers(&self, wanted: &[String]) -> bool {
        wanted.iter().all(|w| {
            // IP literals are compared as addresses so "::1" matches however it is spelt.
            match w.parse::<std::net::IpAddr>() {
                Ok(ip) => self
                    .names
                    .iter()
                    .any(|n| n.parse::<std::net::IpAddr>().ok() == Some(ip)),
                Err(_) => self.names.iter().any(|n| n.eq_ignore_ascii_case(w)),
            }
        })
    }
}

fn cert_info(path: &Path) -> Result<CertInfo> {
    use x509_parser::extensions::GeneralName;

    let cert = load_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::bad_pem(path, "no certificate in file"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| Error::bad_pem(path, format!("not an X.509 certificate: {e}")))?;
    let cn = common_name(&cert);
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    names.extend(ip);
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo { cn, names })
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - VALID_BEFORE_NOW;
    params.not_after = now + VALIDITY;
}

fn read_key_pair(path: &Path) -> Result<KeyPair> {
    let pem = fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    KeyPair::from_pem(&pem).map_err(|e| Error::bad_pem(path, e.to_string()))
}

/// Writes `data` to `path` atomically with `mode`: a temp file in the same directory, fsync, rename.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("devcloud-pki-")
            .tempdir()
            .expect("tempdir")
    }

    #[test]
    fn generate_writes_the_agent_layout_with_private_keys_0600() {
        let dir = tempdir();
        let p = generate(dir.path(), &PkiOptions::default()).expect("generate");
        for f in [&p.ca_cert, &p.server_cert, &p.client_cert] {
            assert!(f.is_file(), "{f:?}");
        }
        for k in [&p.ca_key, &p.server_key, &p.client_key] {
            let mode = fs::metadata(k).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{k:?}");
        }
        assert_eq!(p.client_cert, dir.path().join("agent/client.crt"));
        let client = load_certs(&p.client_cert).expect("client cert");
        assert_eq!(common_name(&client[0]).as_deref(), Some(DEFAULT_AGENT_ID));
        let info = cert_info(&p.server_cert).expect("server cert");
        assert!(info.covers(&["localhost".into(), "127.0.0.1".into(), "::1".into()]));
    }

    #[test]
    fn generate_reuses_existing_files_and_remakes_a_client_cert_for_another_agent_id() {
        let dir = tempdir();
        let first = generate(dir.path(), &PkiOptions::default()).expect("generate");
        let ca1 = fs::read(&first.ca_cert).expect("ca");
        let srv1 = fs::read(&first.server_cert).expect("server");
        let cli1 = fs::read(&first.client_cert).expect("client");

        generate(dir.path(), &PkiOptions::default()).expect("again");
        assert_eq!(fs::read(&first.ca_cert).expect("ca"), ca1);
        assert_eq!(fs::read(&first.server_cert).expect("server"), srv1);
        assert_eq!(fs::read(&first.client_cert).expect("client"), cli1);

        let opts = PkiOptions {
            agent_id: "other-agent".into(),
            extra_server_names: vec!["devcloud.test".into()],
            ..PkiOptions::default()
        };
        let p = generate(dir.path(), &opts).expect("other id");
        assert_eq!(fs::read(&p.ca_cert).expect("ca"), ca1);
        assert_ne!(fs::read(&p.server_cert).expect("server"), srv1);
        let client = load_certs(&p.client_cert).expect("client");
        assert_eq!(common_name(&client[0]).as_deref(), Some("other-agent"));
        assert!(
            cert_info(&p.server_cert)
                .expect("server")
                .covers(&["devcloud.test".into()])
        );

        let regen = PkiOptions {
            regenerate: true,
            ..opts
        };
        generate(dir.path(), &regen).expect("regenerate");
        assert_ne!(fs::read(&p.ca_cert).expect("ca"), ca1);
    }

    #[test]
    fn leaves_verify_against_their_own_ca_only() {
        use rustls::server::WebPkiClientVerifier;
        use std::sync::Arc;

        let good = tempdir();
        let rogue = tempdir();
        let g = generate(good.path(), &PkiOptions::default()).expect("good");
        let r = generate(rogue.path(), &PkiOptions::rogue()).expect("rogue");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&g.ca_cert).expect("ca") {
            roots.add(c).expect("add root");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        let good_leaf = load_certs(&g.client_cert).expect("good leaf");
        assert!(verifier.verify_client_cert(&good_leaf[0], &[], now).is_ok());
        let rogue_leaf = load_certs(&r.client_cert).expect("rogue leaf");
        assert!(
            verifier
                .verify_client_cert(&rogue_leaf[0], &[], now)
                .is_err()
        );
    }
}
