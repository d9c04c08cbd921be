//! TLS for the HTTP transport, with rustls: the cluster's CA (no system roots: a kubeconfig or
//! service account always names the CA), an optional client certificate, an optional server
//! name to check, and `insecure-skip-tls-verify` (handshake signatures are still checked; the
//! certificate chain and name are not).

use crate::config::Tls;
use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{what}: no PEM certificate found")));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| Error::Config(format!("client key: {e}")))?
        .ok_or_else(|| Error::Config("client key: no PEM private key found".into()))
}

/// Accepts any server certificate (the kubeconfig asked for it); still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration of `tls`.
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
    } else {
        let ca = tls.ca.as_deref().ok_or_else(|| {
            Error::Config(
                "https server without a CA: set certificate-authority(-data) or insecure-skip-tls-verify"
                    .into(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs("certificate authority", ca)? {
            roots
                .add(c)
                .map_err(|e| Error::Config(format!("certificate authority: {e}")))?;
        }
        builder.with_root_certificates(roots)
    };
    if let Some(rotating) = &tls.rotating {
        return Ok(builder.with_client_cert_resolver(Arc::new(rotating.clone())));
    }
    match &tls.identity {
        Some((cert, key_pem)) => builder
            .with_client_auth_cert(certs("client certificate", cert)?, key(key_pem)?)
            .map_err(|e| Error::Config(format!("client certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A client certificate that can be replaced while clients use it: each new TLS connection
/// presents the current one. A kubelet renewing its certificate before it expires replaces
/// it here; connections already open keep the one they started with.
///
/// ```
/// # fn f(cert: &[u8], key: &[u8], new_cert: &[u8], new_key: &[u8]) -> bosun_client::Result<()> {
/// let identity = bosun_client::tls::RotatingIdentity::new(cert, key)?;
/// let mut config = bosun_client::Config::new("https://127.0.0.1:6443".parse().unwrap());
/// config.tls.rotating = Some(identity.clone());
/// // … later, with a renewed certificate:
/// identity.replace(new_cert, new_key)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RotatingIdentity(Arc<std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>>);

impl RotatingIdentity {
    /// Starts with a certificate (chain) and its key, both PEM.
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        Ok(RotatingIdentity(Arc::new(std::sync::RwLock::new(
            certified_key(cert_pem, key_pem)?,
        ))))
    }

    /// Presents this certificate from the next connection on.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let key = certified_key(cert_pem, key_pem)?;
        match self.0.write() {
            Ok(mut g) => *g = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    /// The certificate presented now (DER, leaf first).
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        self.current().cert.first().cloned()
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        match self.0.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let signing = rustls::crypto::ring::sign::any_supported_type(&key(key_pem)?)
        .map_err(|e| Error::Config(format!("client key: {e}")))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        certs("client certificate", cert_pem)?,
        signing,
    )))
}

impl std::fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingIdentity").finish_non_exhaustive()
    }
}

/// Two handles are equal when they share the same slot.
impl PartialEq for RotatingIdentity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RotatingIdentity {}

impl rustls::client::ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
