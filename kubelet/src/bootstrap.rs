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

/// The signer of kubelets' serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// A certificate to ask the CSR API for.
#[derive(Clone, Debug, Default)]
pub struct CertificateRequest {
    /// The subject's common name: the user a client certificate names.
    pub user: String,
    /// The subject's organization: the user's group.
    pub group: Option<String>,
    /// The signer (`spec.signerName`).
    pub signer: String,
    /// Host names and IP addresses the certificate is for (serving certificates).
    pub names: Vec<String>,
    /// Ask for a serving certificate (`server auth`) rather than a client one.
    pub serving: bool,
    /// Approve the request with the client's own credentials, when they may (an administrator
    /// running an agent with its kubeconfig); otherwise the cluster's approver decides.
    pub approve: bool,
}

impl CertificateRequest {
    /// A client certificate naming `user` in `group` from `signer`.
    pub fn client(user: &str, group: Option<&str>, signer: &str) -> Self {
        CertificateRequest {
            user: user.to_owned(),
            group: group.map(str::to_owned),
            signer: signer.to_owned(),
            ..Default::default()
        }
    }

    /// Node `node`'s kubelet serving certificate for `names` (its addresses and host names).
    pub fn kubelet_serving(node: &str, names: Vec<String>) -> Self {
        CertificateRequest {
            user: format!("system:node:{node}"),
            group: Some("system:nodes".to_owned()),
            signer: SERVING_SIGNER.to_owned(),
            names,
            serving: true,
            approve: false,
        }
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
    request_certificate(
        client,
        &CertificateRequest::client(user, group, signer),
        wait,
    )
    .await
}

/// Asks for the certificate `want` describes through `client` (whose credentials are the
/// requestor), with a key made here, and waits up to `wait` for it to be approved and signed.
pub async fn request_certificate(
    client: &bosun_client::Client,
    want: &CertificateRequest,
    wait: Duration,
) -> Result<Issued, Error> {
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Request(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(want.names.clone())
        .map_err(|e| Error::Request(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(g) = &want.group {
        dn.push(rcgen::DnType::OrganizationName, g.as_str());
    }
    dn.push(rcgen::DnType::CommonName, want.user.as_str());
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Error::Request(e.to_string()))?;
    let suffix = uuid_like();
    let name = format!(
        "{}{}-{suffix}",
        want.user.replace(':', "-").trim_start_matches("system-"),
        if want.serving { "-serving" } else { "" }
    );
    let usages = if want.serving {
        json!(["digital signature", "server auth"])
    } else {
        json!(["digital signature", "client auth"])
    };
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr),
            "signerName": want.signer,
            "usages": usages,
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
    let created: Value = client.request(req).await.map_err(api)?;
    if want.approve {
        approve(client, path, &name, created).await;
    }
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

/// Approves CSR `name` with the client's credentials, as `kubectl certificate approve`; a
/// refusal is only logged (the cluster's approver, or a person, may still approve it).
async fn approve(client: &bosun_client::Client, path: &str, name: &str, mut csr: Value) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    csr["status"]["conditions"] = json!([{
        "type": "Approved", "status": "True", "reason": "AgentApproved",
        "message": "Approved by the agent with its own credentials.",
        "lastUpdateTime": now, "lastTransitionTime": now,
    }]);
    let req = http::Request::put(format!("{path}/{name}/approval"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(csr.to_string())));
    let Ok(req) = req else { return };
    if let Err(e) = client.request::<Value>(req).await {
        tracing::info!(csr = name, error = %e, "not approving the certificate request myself; waiting for an approver");
    }
}

/// When a certificate should be renewed: once 80% of its lifetime has passed (upstream's
/// kubelet picks a moment between 70% and 90%). `None` if the PEM does not parse.
pub fn renewal_time(cert_pem: &str) -> Option<std::time::SystemTime> {
    let (not_before, not_after) = validity(cert_pem)?;
    let life = not_after.duration_since(not_before).ok()?;
    Some(not_before + life.mul_f64(0.8))
}

/// A certificate's validity period (not before, not after).
pub fn validity(cert_pem: &str) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    use x509_parser::prelude::FromDer;
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).ok()?;
        Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
    };
    Some((
        at(cert.validity().not_before)?,
        at(cert.validity().not_after)?,
    ))
}

/// Keeps a certificate current: sleeps until [`renewal_time`] of `current`, asks for `want`
/// again through `client` (a node renews with its current certificate), hands the new one to
/// `renewed` (which stores it and puts it to use) and starts over. A failed attempt is retried
/// a minute later. Runs until `renewed` fails.
pub async fn keep_renewed(
    client: bosun_client::Client,
    want: CertificateRequest,
    mut current: String,
    mut renewed: impl FnMut(&Issued) -> Result<(), String> + Send,
) {
    loop {
        let due = renewal_time(&current).unwrap_or_else(std::time::SystemTime::now);
        if let Ok(wait) = due.duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        match request_certificate(&client, &want, Duration::from_secs(300)).await {
            Ok(issued) => {
                if let Err(e) = renewed(&issued) {
                    tracing::error!(user = want.user, error = %e, "could not keep the renewed certificate");
                    return;
                }
                tracing::info!(
                    user = want.user,
                    signer = want.signer,
                    "certificate renewed"
                );
                current = issued.cert_pem;
            }
            Err(e) => {
                tracing::warn!(user = want.user, error = %e, "renewing the certificate failed; trying again in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
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
