//! The cluster's certificates: a CA made on first start, the API server's serving certificate,
//! client certificates (CN = user, O = groups, as upstream's x509 authenticator reads them),
//! the service-account signing key, and the rustls configuration that serves with them.
//!
//! Everything lives in one directory, files mode 0600 (the directory 0700), as kubeadm's
//! `/etc/kubernetes/pki`: `ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key`, `admin.crt`,
//! `admin.key`, `sa.key`. The CA and the signing key are made once and kept; leaf
//! certificates are issued again on every start (they are cheap, and new addresses are
//! covered at once), always by the same CA, so copies of older ones stay valid until they
//! expire.
//!
//! ```no_run
//! # fn main() -> Result<(), bosun_apiserver::pki::PkiError> {
//! use bosun_apiserver::pki::Pki;
//! let pki = Pki::load_or_create(std::path::Path::new("/var/lib/bosun/pki"))?;
//! let serving = pki.issue_serving("kube-apiserver", &["127.0.0.1".into(), "localhost".into()])?;
//! let tls = pki.server_config(&serving)?;
//! let alice = pki.issue_client("alice", &["developers".into()])?;
//! # let _ = (tls, alice); Ok(()) }
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_parser::prelude::FromDer;

/// What went wrong making, reading or using the cluster's certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate or key could not be made or parsed.
    #[error("{what}: {source}")]
    Cert {
        /// Which certificate or key.
        what: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The certificate asked for cannot be made.
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster's CA, able to issue certificates.
///
/// ```
/// use bosun_apiserver::pki::Pki;
/// # let dir = tempfile::tempdir()?;
/// let pki = Pki::load_or_create(dir.path())?; // ca.crt/ca.key made once, 0600
/// let admin = pki.issue_client("alice", &["system:masters".into()])?;
/// assert!(admin.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// let serving = pki.issue_serving("kube-apiserver", &["127.0.0.1".into(), "localhost".into()])?;
/// let tls = pki.server_config(&serving)?; // rustls, asking for client certificates
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

const DAY: time::Duration = time::Duration::days(1);

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_owned(),
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A random positive 128-bit serial number.
fn serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Writes `data` to `path` with mode 0600, atomically (a temporary file renamed over it).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

impl Pki {
    /// The CA in `dir`, made (with the service-account signing key) if the directory has none.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let pki = match (read(&cert_path)?, read(&key_path)?) {
            (Some(ca_pem), Some(key_pem)) => {
                let ca_key = KeyPair::from_pem(&key_pem).map_err(cert_err("ca.key"))?;
                // The issuer's name and key identifier come from the certificate on disk, so
                // what is issued now chains to it.
                let params =
                    CertificateParams::from_ca_cert_pem(&ca_pem).map_err(cert_err("ca.crt"))?;
                let ca_cert = params.self_signed(&ca_key).map_err(cert_err("ca.crt"))?;
                Pki {
                    dir: dir.to_owned(),
                    ca_pem,
                    ca_key,
                    ca_cert,
                }
            }
            _ => {
                let ca_key = KeyPair::generate().map_err(cert_err("ca.key"))?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "bosun-ca");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - DAY;
                params.not_after = now + DAY * 3650;
                params.serial_number = Some(serial());
                let ca_cert = params.self_signed(&ca_key).map_err(cert_err("ca.crt"))?;
                let ca_pem = ca_cert.pem();
                write_private(&key_path, ca_key.serialize_pem().as_bytes())?;
                write_private(&cert_path, ca_pem.as_bytes())?;
                tracing::info!(dir = %dir.display(), "created the cluster CA");
                Pki {
                    dir: dir.to_owned(),
                    ca_pem,
                    ca_key,
                    ca_cert,
                }
            }
        };
        let sa_path = dir.join("sa.key");
        if read(&sa_path)?.is_none() {
            let key = KeyPair::generate().map_err(cert_err("sa.key"))?;
            write_private(&sa_path, key.serialize_pem().as_bytes())?;
        }
        Ok(pki)
    }

    /// The directory the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM), for kubeconfigs and service-account volumes.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The service-account signing key (PKCS#8 PEM), made with the CA.
    pub fn service_account_key_pem(&self) -> Result<String, PkiError> {
        let path = self.dir.join("sa.key");
        std::fs::read_to_string(&path).map_err(io_err(&path))
    }

    fn issue(
        &self,
        what: &str,
        common_name: &str,
        organizations: &[String],
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(cert_err(what))?;
        let mut params = CertificateParams::new(sans.to_vec()).map_err(cert_err(what))?;
        let mut dn = DistinguishedName::new();
        for o in organizations {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + DAY * 365;
        params.serial_number = Some(serial());
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .map_err(cert_err(what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user` in `group` (CN and O), valid for a year. One group at
    /// most: the certificate library writes one value per name attribute (a CSR may carry
    /// several O values, and [`certificate_user`] reads them all).
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<Issued, PkiError> {
        if groups.len() > 1 {
            return Err(PkiError::Invalid(format!(
                "a client certificate for {user}: one group (O) at most, not {groups:?}"
            )));
        }
        self.issue(
            &format!("client certificate for {user}"),
            user,
            groups,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A serving certificate with these subject alternative names (IP addresses and DNS names),
    /// valid for a year.
    pub fn issue_serving(&self, common_name: &str, sans: &[String]) -> Result<Issued, PkiError> {
        self.issue(
            "serving certificate",
            common_name,
            &[],
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// Signs a PEM certificate signing request as a client certificate (the subject as asked,
    /// client-auth usage), valid `seconds` (default and at most a year, at least ten minutes).
    /// The request's own signature must verify (the requester holds the key).
    pub fn sign_client_csr(&self, csr_pem: &str, seconds: Option<i64>) -> Result<String, PkiError> {
        self.sign_csr(csr_pem, seconds, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Signs a PEM certificate signing request as a serving certificate (server auth) for the
    /// host names and addresses it asks for, valid for `seconds` (a year if `None`; at least
    /// ten minutes, at most a year), as the `kubernetes.io/kubelet-serving` signer does.
    pub fn sign_serving_csr(
        &self,
        csr_pem: &str,
        seconds: Option<i64>,
    ) -> Result<String, PkiError> {
        self.sign_csr(csr_pem, seconds, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn sign_csr(
        &self,
        csr_pem: &str,
        seconds: Option<i64>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<String, PkiError> {
        let der = rustls_pemfile::csr(&mut csr_pem.as_bytes())
            .map_err(|e| PkiError::Invalid(format!("the request is not PEM: {e}")))?
            .ok_or_else(|| PkiError::Invalid("no CERTIFICATE REQUEST in the request".into()))?;
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .map_err(|e| PkiError::Invalid(format!("the request does not parse: {e}")))?;
        parsed
            .verify_signature()
            .map_err(|e| PkiError::Invalid(format!("the request's signature: {e}")))?;
        let mut csr = rcgen::CertificateSigningRequestParams::from_der(&der)
            .map_err(cert_err("certificate signing request"))?;
        let seconds = seconds.unwrap_or(365 * 86400).clamp(600, 365 * 86400);
        let now = time::OffsetDateTime::now_utc();
        let p = &mut csr.params;
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::seconds(seconds);
        p.is_ca = IsCa::NoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if usage == ExtendedKeyUsagePurpose::ServerAuth && p.subject_alt_names.is_empty() {
            return Err(PkiError::Invalid(
                "a serving certificate needs at least one host name or address".into(),
            ));
        }
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(serial());
        let cert = csr
            .signed_by(&self.ca_cert, &self.ca_key)
            .map_err(cert_err("certificate signing request"))?;
        Ok(cert.pem())
    }

    /// Issues a certificate and keeps it as `NAME.crt`/`NAME.key` in the CA's directory.
    pub fn issue_to_files(&self, name: &str, issued: &Issued) -> Result<(), PkiError> {
        write_private(
            &self.dir.join(format!("{name}.key")),
            issued.key_pem.as_bytes(),
        )?;
        write_private(
            &self.dir.join(format!("{name}.crt")),
            issued.cert_pem.as_bytes(),
        )
    }

    /// The rustls configuration the API server reaches kubelets with: their serving
    /// certificates must chain to this CA, and the server presents `client` (upstream's
    /// `apiserver-kubelet-client`: CN `kube-apiserver-kubelet-client`, O `system:masters`).
    /// HTTP/1.1 only: exec, attach and port-forward upgrade the connection.
    pub fn kubelet_client_config(
        &self,
        client: &Issued,
    ) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
        }
        let chain = rustls_pemfile::certs(&mut client.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(&e))?;
        let key = rustls_pemfile::private_key(&mut client.key_pem.as_bytes())
            .map_err(|e| tls(&e))?
            .ok_or_else(|| PkiError::Tls("the kubelet client key is not PEM".into()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The rustls configuration to serve `serving` with: HTTP/2 and HTTP/1.1 by ALPN, client
    /// certificates asked for and, when presented, checked against this CA (requests without
    /// one go on to the other authenticators).
    pub fn server_config(&self, serving: &Issued) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        server_config(
            self.ca_pem.as_bytes(),
            serving.cert_pem.as_bytes(),
            serving.key_pem.as_bytes(),
        )
    }
}

/// A new key and a PEM certificate signing request for a client certificate naming `user`
/// (CN) in `group` (O), as a joining node sends to the CSR API. Returns (request, key).
pub fn client_csr(user: &str, group: Option<&str>) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(cert_err("client key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(g) = group {
        dn.push(DnType::OrganizationName, g);
    }
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(cert_err("certificate signing request"))?;
    let pem = csr.pem().map_err(cert_err("certificate signing request"))?;
    Ok((pem, key.serialize_pem()))
}

/// A rustls server configuration from PEM: the client CA bundle, the serving certificate chain
/// and its key. HTTP/2 and HTTP/1.1 by ALPN; client certificates optional but, when presented,
/// verified against `client_ca_pem`.
pub fn server_config(
    client_ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut &client_ca_pem[..]) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| tls(&e))?
        .ok_or_else(|| PkiError::Tls("no private key in the serving key file".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a client certificate names: CN is the user, each O a group (upstream's x509
/// authenticator). `None` when the certificate cannot be parsed or has no CN.
pub fn certificate_user(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if user.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ca_persists_and_issues_certificates_naming_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let ca = pki.ca_pem().to_owned();
        for f in ["ca.crt", "ca.key", "sa.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // Loaded again: the same CA, still able to issue.
        let again = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca_pem(), ca);
        assert!(again
            .issue_client("alice", &["dev".into(), "ops".into()])
            .is_err());
        let alice = again.issue_client("alice", &["dev".into()]).unwrap();
        let der = rustls_pemfile::certs(&mut alice.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            certificate_user(&der).unwrap(),
            ("alice".to_owned(), vec!["dev".to_owned()])
        );
        // The issued certificate chains to the CA on disk, as a TLS client verifier sees it.
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        let serving = again
            .issue_serving("kube-apiserver", &["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        again.server_config(&serving).unwrap();
    }

    #[test]
    fn garbage_is_no_user() {
        assert_eq!(certificate_user(b"not a certificate"), None);
        assert_eq!(certificate_user(&[]), None);
    }
}
