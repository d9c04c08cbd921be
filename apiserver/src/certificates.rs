//! Joining nodes: bootstrap tokens and the certificates.k8s.io/v1 CSR flow, as kubeadm sets
//! them up.
//!
//! - [`BootstrapTokens`] authenticates `Authorization: Bearer ID.SECRET` against the
//!   `bootstrap-token-ID` Secrets (type `bootstrap.kubernetes.io/token`) in `kube-system`, as
//!   `system:bootstrap:ID` in `system:bootstrappers` (plus the Secret's `auth-extra-groups`),
//!   until its `expiration`.
//! - [`CsrRequestor`] stamps each new CSR with who asked (`spec.username`, `spec.groups`), as
//!   upstream's CSR strategy does.
//! - [`run_signer`] approves and signs. A CSR for `kubernetes.io/kube-apiserver-client-kubelet`
//!   asking for `CN=system:node:NAME, O=system:nodes` with client-auth usages is approved when
//!   its requestor may `create certificatesigningrequests/nodeclient` (bootstrappers) or is that
//!   very node renewing and may `create …/selfnodeclient`, as upstream's approver decides with
//!   a SubjectAccessReview. Approved CSRs of that signer and of
//!   `kubernetes.io/kube-apiserver-client` are signed by the cluster CA for a year (or
//!   `spec.expirationSeconds`). A node may also get `CN=system:kube-proxy` from the latter
//!   signer, for the service proxy and DNS its agent runs (bosun's rule, as k3s's).
//! - A node's own `kubernetes.io/kubelet-serving` CSR (`CN=system:node:NAME`,
//!   `O=system:nodes`, asked for by that node, server-auth usages, only host names and IP
//!   addresses as subject alternative names) is approved and signed too, so the API server can
//!   check the kubelet it talks to. Upstream leaves these to an external approver because a
//!   node could name addresses not its own; bosun approves them as k3s does (a node already
//!   reports its own addresses), and an administrator who wants to vet them can deny the CSR
//!   before the signer sees it by running without this approver.

use crate::auth::{
    AdmissionPlugin, AdmissionRequest, Authenticator, Authorizer, Credentials, Decision, Operation,
    RequestInfo, UserInfo,
};
use crate::error::ApiError;
use crate::object::Object;
use crate::pki::Pki;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;
use x509_parser::prelude::FromDer;

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other API client certificates (approved by an administrator).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of kubelets' serving certificates (the kubelet's HTTPS server).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Whether `token` has a bootstrap token's shape (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn is_bootstrap_token(token: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(token.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// A new random bootstrap token, `ID.SECRET`.
pub fn new_bootstrap_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut bytes).is_err() {
        // No system randomness: fall back on v4 UUIDs (themselves from the OS generator).
        bytes.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..].repeat(2)[..22]);
    }
    let c: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{}.{}", &c[..6], &c[6..])
}

/// The `kube-system` Secret that makes `token` a bootstrap token for joining nodes (upstream's
/// format; the groups are kubeadm's).
pub fn bootstrap_token_secret(token: &str, description: &str) -> Option<Value> {
    let (id, secret) = token.split_once('.')?;
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Some(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "data": {
            "description": enc(description),
            "token-id": enc(id),
            "token-secret": enc(secret),
            "usage-bootstrap-authentication": enc("true"),
            "usage-bootstrap-signing": enc("true"),
            "auth-extra-groups": enc("system:bootstrappers:kubeadm:default-node-token"),
        },
    }))
}

/// Stores the Secret of bootstrap token `token` in `store` unless it is there already.
pub async fn store_bootstrap_token(
    store: &dyn bosun_store::Store,
    token: &str,
    description: &str,
) -> Result<(), bosun_store::Error> {
    let Some(mut secret) = bootstrap_token_secret(token, description) else {
        return Err(bosun_store::Error::Backend("not a bootstrap token".into()));
    };
    let name = secret["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    secret["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    secret["metadata"]["creationTimestamp"] =
        serde_json::to_value(bosun_api_types::Time::now()).unwrap_or_default();
    let bytes =
        serde_json::to_vec(&secret).map_err(|e| bosun_store::Error::Backend(e.to_string()))?;
    let key = format!("/registry/core/secrets/kube-system/{name}");
    match store.create(&key, bytes.into()).await {
        Ok(_) | Err(bosun_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Authenticates bootstrap tokens against their Secrets in `store`.
pub struct BootstrapTokens {
    store: Arc<dyn bosun_store::Store>,
}

impl BootstrapTokens {
    /// Tokens checked against the Secrets in `store`.
    pub fn new(store: Arc<dyn bosun_store::Store>) -> Self {
        BootstrapTokens { store }
    }
}

#[async_trait::async_trait]
impl Authenticator for BootstrapTokens {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        let Some(token) = req.bearer_token().filter(|t| is_bootstrap_token(t)) else {
            return Ok(None);
        };
        let (id, secret) = token.split_once('.').unwrap_or_default();
        let key = format!("/registry/core/secrets/kube-system/bootstrap-token-{id}");
        let Some(kv) = self
            .store
            .get(&key, None)
            .await
            .map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
            return Ok(None);
        };
        if obj["type"] != "bootstrap.kubernetes.io/token"
            || obj["metadata"]["deletionTimestamp"].is_string()
        {
            return Ok(None);
        }
        let field = |k: &str| {
            obj["data"][k]
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|v| String::from_utf8(v).ok())
                .unwrap_or_default()
        };
        // Compared in constant time: the secret is a password.
        let held = field("token-secret");
        let equal = held.len() == secret.len()
            && held
                .bytes()
                .zip(secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !equal || field("token-id") != id || field("usage-bootstrap-authentication") != "true" {
            return Ok(None);
        }
        let expiration = field("expiration");
        if !expiration.is_empty() {
            match expiration.parse::<jiff::Timestamp>() {
                Ok(t) if t > jiff::Timestamp::now() => {}
                _ => return Ok(None),
            }
        }
        let mut groups = vec!["system:bootstrappers".to_owned()];
        groups.extend(
            field("auth-extra-groups")
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_owned),
        );
        groups.push("system:authenticated".into());
        Ok(Some(UserInfo {
            name: format!("system:bootstrap:{id}"),
            groups,
            ..Default::default()
        }))
    }
}

/// Stamps new CSRs with their requestor (`spec.username`, `spec.groups`; whatever the client
/// sent there is replaced).
#[derive(Clone, Copy, Debug, Default)]
pub struct CsrRequestor;

#[async_trait::async_trait]
impl AdmissionPlugin for CsrRequestor {
    fn name(&self) -> &str {
        "CertificateSigningRequestRequestor"
    }

    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if req.resource.group != "certificates.k8s.io"
            || req.resource.plural != "certificatesigningrequests"
            || req.operation != Operation::Create
            || req.subresource.is_some()
        {
            return Ok(());
        }
        let spec = obj.entry("spec").or_insert_with(|| json!({}));
        if let Value::Object(spec) = spec {
            spec.insert("username".into(), json!(req.user.name));
            spec.insert("groups".into(), json!(req.user.groups));
            spec.remove("uid");
            spec.remove("extra");
        }
        Ok(())
    }
}

/// The subject a CSR asks for (CN, O values), if its request parses.
fn requested(csr: &Value) -> Option<(String, Vec<String>)> {
    requested_names(csr).map(|(cn, orgs, _)| (cn, orgs))
}

/// The subject a CSR asks for and whether its subject alternative names are all host names
/// or IP addresses (and there is at least one), if its request parses.
fn requested_names(csr: &Value) -> Option<(String, Vec<String>, bool)> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(csr["spec"]["request"].as_str()?)
        .ok()?;
    let pem = String::from_utf8(pem).ok()?;
    let der = rustls_pemfile::csr(&mut pem.as_bytes()).ok()??;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .ok()?;
    let subject = &req.certification_request_info.subject;
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let orgs = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    let mut names = 0;
    let mut hosts_only = true;
    for ext in req.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                names += 1;
                hosts_only &= matches!(
                    name,
                    x509_parser::extensions::GeneralName::DNSName(_)
                        | x509_parser::extensions::GeneralName::IPAddress(_)
                );
            }
        }
    }
    Some((cn, orgs, hosts_only && names > 0))
}

/// Whether a kubelet-serving CSR is a node asking for its own serving certificate.
fn serving_approvable(csr: &Value) -> bool {
    let Some((cn, orgs, hosts_only)) = requested_names(csr) else {
        return false;
    };
    let usages_ok = usages(csr).contains(&"server auth")
        && usages(csr)
            .iter()
            .all(|u| ["digital signature", "key encipherment", "server auth"].contains(u));
    let requestor = requestor(csr);
    cn.starts_with("system:node:")
        && orgs == ["system:nodes"]
        && hosts_only
        && usages_ok
        && requestor.name == cn
        && requestor.groups.iter().any(|g| g == "system:nodes")
}

/// What the kubelet signers sign whoever approved it, as upstream's signer checks: only a
/// node's subject (`CN=system:node:…`, `O=system:nodes`), and for serving certificates only
/// host names and addresses. The kube-apiserver-client signer signs any approved subject.
fn signer_accepts(csr: &Value) -> Result<(), String> {
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
    if signer != KUBELET_CLIENT_SIGNER && signer != KUBELET_SERVING_SIGNER {
        return Ok(());
    }
    let (cn, orgs, hosts_only) = requested_names(csr).ok_or("the request does not parse")?;
    if !cn.starts_with("system:node:") || orgs != ["system:nodes"] {
        return Err(format!(
            "{signer} signs only node subjects (CN=system:node:NAME, O=system:nodes), not CN={cn:?} O={orgs:?}"
        ));
    }
    if signer == KUBELET_SERVING_SIGNER && !hosts_only {
        return Err("a kubelet serving certificate names host names and IP addresses only".into());
    }
    Ok(())
}

fn usages(csr: &Value) -> Vec<&str> {
    csr["spec"]["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Who asked for a CSR (its `spec.username` and `spec.groups`).
fn requestor(csr: &Value) -> UserInfo {
    UserInfo {
        name: csr["spec"]["username"].as_str().unwrap_or("").to_owned(),
        groups: csr["spec"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        ..Default::default()
    }
}

fn condition(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] != "False")
}

/// Whether upstream's approver would approve this CSR: a kubelet client certificate for a
/// node, asked for by someone allowed to ask for it.
async fn auto_approvable(csr: &Value, authorizer: &dyn Authorizer) -> bool {
    if csr["spec"]["signerName"] == KUBELET_SERVING_SIGNER {
        return serving_approvable(csr);
    }
    let Some((cn, orgs)) = requested(csr) else {
        return false;
    };
    // bosun's own rule (k3s has the like): a node may get the service proxy's identity,
    // `system:kube-proxy`, for the proxy and DNS it runs beside its kubelet.
    if csr["spec"]["signerName"] == CLIENT_SIGNER {
        let requestor = requestor(csr);
        let usages_ok = csr["spec"]["usages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .all(|u| ["digital signature", "key encipherment", "client auth"].contains(&u));
        return cn == "system:kube-proxy"
            && orgs.is_empty()
            && usages_ok
            && crate::node::node_of(&requestor).is_some();
    }
    if csr["spec"]["signerName"] != KUBELET_CLIENT_SIGNER {
        return false;
    }
    if !cn.starts_with("system:node:") || orgs != ["system:nodes"] {
        return false;
    }
    let usages: Vec<&str> = csr["spec"]["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !usages.contains(&"client auth")
        || usages
            .iter()
            .any(|u| !["digital signature", "key encipherment", "client auth"].contains(u))
    {
        return false;
    }
    let user = requestor(csr);
    let sub = if user.name == cn {
        "selfnodeclient"
    } else {
        "nodeclient"
    };
    let info = RequestInfo {
        verb: "create",
        group: "certificates.k8s.io",
        version: "v1",
        resource: "certificatesigningrequests",
        subresource: Some(sub),
        namespace: None,
        name: None,
        path: None,
    };
    authorizer.authorize(&user, &info).await == Decision::Allow
}

/// Approves what may be approved and signs what is approved, for one CSR.
async fn reconcile(
    server: &crate::ApiServer,
    pki: &Pki,
    authorizer: &dyn Authorizer,
    csr: &Value,
) -> Result<(), ApiError> {
    let name = csr["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if condition(csr, "Denied") || condition(csr, "Failed") {
        return Ok(());
    }
    let mut status = csr["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let now = bosun_api_types::Time::now();
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
    if !condition(csr, "Approved") {
        if !auto_approvable(csr, authorizer).await {
            return Ok(());
        }
        let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        conditions.push(json!({
            "type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": if signer == KUBELET_SERVING_SIGNER {
                "Auto approving the node's own kubelet serving certificate."
            } else {
                "Auto approving kubelet client certificate after SubjectAccessReview."
            },
            "lastUpdateTime": now, "lastTransitionTime": now,
        }));
        status["conditions"] = Value::Array(conditions);
    }
    if status["certificate"].as_str().is_none_or(str::is_empty)
        && [KUBELET_CLIENT_SIGNER, CLIENT_SIGNER, KUBELET_SERVING_SIGNER].contains(&signer)
    {
        let request = csr["spec"]["request"]
            .as_str()
            .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
            .and_then(|r| String::from_utf8(r).ok())
            .unwrap_or_default();
        let seconds = csr["spec"]["expirationSeconds"].as_i64();
        let signed = if let Err(why) = signer_accepts(csr) {
            Err(crate::pki::PkiError::Invalid(why))
        } else if signer == KUBELET_SERVING_SIGNER {
            pki.sign_serving_csr(&request, seconds)
        } else {
            pki.sign_client_csr(&request, seconds)
        };
        match signed {
            Ok(cert) => {
                status["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(cert));
            }
            Err(e) => {
                let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
                conditions.push(json!({
                    "type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                    "message": e.to_string(), "lastUpdateTime": now, "lastTransitionTime": now,
                }));
                status["conditions"] = Value::Array(conditions);
            }
        }
    }
    if status == csr["status"] {
        return Ok(());
    }
    server
        .set_status(
            "certificates.k8s.io",
            "certificatesigningrequests",
            None,
            &name,
            status,
        )
        .await
}

/// Approves and signs CSRs as they come (and those already there), until the server's store
/// closes. Runs in the process that holds the CA key.
pub fn run_signer(server: crate::ApiServer, pki: Arc<Pki>, authorizer: Arc<dyn Authorizer>) {
    const PREFIX: &str = "/registry/certificates.k8s.io/certificatesigningrequests/";
    tokio::spawn(async move {
        let store = Arc::clone(server.store());
        let mut from = 0;
        loop {
            // A full pass, then changes; a failed watch leads to another full pass.
            if let Ok(page) = store.range(bosun_store::RangeRequest::prefix(PREFIX)).await {
                from = page.revision;
                for kv in page.kvs {
                    if let Ok(csr) = serde_json::from_slice::<Value>(&kv.value) {
                        if let Err(e) = reconcile(&server, &pki, authorizer.as_ref(), &csr).await {
                            tracing::debug!(error = %e.message, "CSR not signed yet");
                        }
                    }
                }
            }
            let Ok(mut watch) = store.watch(PREFIX, from).await else {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            };
            while let Some(Ok(ev)) = watch.next().await {
                if ev.kind == bosun_store::EventKind::Delete {
                    continue;
                }
                let Ok(csr) = serde_json::from_slice::<Value>(&ev.kv.value) else {
                    continue;
                };
                // RBAC may lag the CSR by a moment (a binding made just before): retry briefly.
                for attempt in 0..3 {
                    match reconcile(&server, &pki, authorizer.as_ref(), &csr).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::debug!(error = %e.message, attempt, "CSR update failed");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bootstrap_tokens_have_kubeadms_shape() {
        for _ in 0..50 {
            let t = new_bootstrap_token();
            assert!(is_bootstrap_token(&t), "{t}");
        }
        assert!(!is_bootstrap_token("abcdef.0123456789abcdeF"));
        assert!(!is_bootstrap_token("abcde.0123456789abcdef0"));
        assert!(!is_bootstrap_token("abcdef0123456789abcdef"));
        let s = bootstrap_token_secret("abcdef.0123456789abcdef", "x").unwrap();
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
    }

    fn serving_csr(cn: &str, sans: Vec<rcgen::SanType>, requestor: &str, usages: Value) -> Value {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "system:nodes");
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        json!({"spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": KUBELET_SERVING_SIGNER,
            "usages": usages,
            "username": requestor,
            "groups": ["system:nodes", "system:authenticated"],
        }})
    }

    #[test]
    fn a_node_gets_its_own_serving_certificate_and_nothing_else() {
        let ip = || rcgen::SanType::IpAddress([192, 0, 2, 7].into());
        let dns = || rcgen::SanType::DnsName("n1".try_into().unwrap());
        let server = json!(["digital signature", "server auth"]);
        let own = serving_csr(
            "system:node:n1",
            vec![ip(), dns()],
            "system:node:n1",
            server.clone(),
        );
        assert!(serving_approvable(&own));
        // Another node's name, another requestor, an e-mail name, no names, client usages.
        let other = serving_csr(
            "system:node:n2",
            vec![ip()],
            "system:node:n1",
            server.clone(),
        );
        assert!(!serving_approvable(&other));
        let by_user = serving_csr("system:node:n1", vec![ip()], "alice", server.clone());
        assert!(!serving_approvable(&by_user));
        let email = serving_csr(
            "system:node:n1",
            vec![
                ip(),
                rcgen::SanType::Rfc822Name("a@b.c".try_into().unwrap()),
            ],
            "system:node:n1",
            server.clone(),
        );
        assert!(!serving_approvable(&email));
        let bare = serving_csr("system:node:n1", vec![], "system:node:n1", server);
        assert!(!serving_approvable(&bare));
        let client = serving_csr(
            "system:node:n1",
            vec![ip()],
            "system:node:n1",
            json!(["digital signature", "client auth"]),
        );
        assert!(!serving_approvable(&client));
    }
}
