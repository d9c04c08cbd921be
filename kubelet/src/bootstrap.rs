//! Joining a cluster: a node that holds only a bootstrap token asks the certificates.k8s.io/v1
//! API for a client certificate (a CSR with a key made here), waits for the cluster to approve
//! and sign it, and from then on is `system:node:NAME`, as upstream's kubelet TLS bootstrap.
//!
//! ```no_run
//! # async fn f(bootstrap: bosun_client::Client) -> Result<(), bosun_kubelet::bootstrap::Error> {
//! use bosun_kubelet::bootstrap::{request_client_certificate, KUBELET_SIGNER};
//! let issued = request_client_certificate(
//!     &bootstrap, "system:node:n1", Some("system:nodes"), KUBELET_SIGNER,
//!     std::time::Duration::from_secs(300),
//! ).await?;
//! # let _ = issued; Ok(()) }
//! ```

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;

/// The signer of kubelet client certificates (approved automatically for joining nodes).
pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other API client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// Why no certificate came.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key or request could not be made.
    #[error("making the certificate request: {0}")]
    Request(String),
    /// The API refused or failed.
    #[error("certificate signing request {name}: {source}")]
    Api {
        /// The CSR's name.
        name: String,
        /// The cause.
        source: bosun_client::Error,
    },
    /// The CSR was denied or failed.
    #[error("certificate signing request {name} was {outcome}: {message}")]
    Refused {
        /// The CSR's name.
        name: String,
        /// `Denied` or `Failed`.
        outcome: String,
        /// The condition's message.
        message: String,
    },
    /// Nobody approved or signed it in time.
    #[error("certificate signing request {0} was not approved and signed in time")]
    Timeout(String),
}

/// A signed client certificate and its key (PEM).
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish()
    }
}

/// Asks for a client certificate naming `user` (CN) in `group` (O) from `signer`, through
/// `client` (whose credentials are the requestor), and waits up to `wait` for it.
pub async fn request_client_certificate(
    client: &bosun_client::Client,
    user: &str,
    group: Option<&str>,
    signer: &str,
    wait: Duration,
) -> Result<Issued, Error> {
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Request(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(g) = group {
        dn.push(rcgen::DnType::OrganizationName, g);
    }
    dn.push(rcgen::DnType::CommonName, user);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Error::Request(e.to_string()))?;
    let suffix = uuid_like();
    let name = format!(
        "{}-{suffix}",
        user.replace(':', "-").trim_start_matches("system-")
    );
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr),
            "signerName": signer,
            "usages": ["digital signature", "client auth"],
        },
    });
    let api = |e| Error::Api {
        name: name.clone(),
        source: e,
    };
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| Error::Request(e.to_string()))?;
    let _: Value = client.request(req).await.map_err(api)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let req = http::Request::get(format!("{path}/{name}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Request(e.to_string()))?;
        let csr: Value = client.request(req).await.map_err(api)?;
        for c in csr["status"]["conditions"].as_array().into_iter().flatten() {
            let kind = c["type"].as_str().unwrap_or("");
            if (kind == "Denied" || kind == "Failed") && c["status"] != "False" {
                return Err(Error::Refused {
                    name,
                    outcome: kind.to_owned(),
                    message: c["message"].as_str().unwrap_or("").to_owned(),
                });
            }
        }
        if let Some(cert) = csr["status"]["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .and_then(|c| String::from_utf8(c).ok())
        {
            return Ok(Issued {
                cert_pem: cert,
                key_pem: key.serialize_pem(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(name));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Eight hex digits from the clock and the process, to keep CSR names apart.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}
