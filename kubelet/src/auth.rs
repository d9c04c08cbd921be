//! Who may use the kubelet's server, decided the way upstream's kubelet does with
//! `--client-ca-file`, webhook authentication and webhook authorization:
//!
//! - **TLS**: [`server_config`] serves a [`ServingCertificate`] (replaceable while the server
//!   runs, for renewal) and checks a client certificate, when one is presented, against the
//!   cluster CA during the handshake.
//! - **Authentication**: a verified client certificate names the user (CN) and groups (O);
//!   otherwise a bearer token is checked with a TokenReview; otherwise 401.
//! - **Authorization**: a SubjectAccessReview asks whether the user may `VERB nodes/SUB` on
//!   this node: the verb from the method (`GET` get, `POST` create, `PUT` update, `PATCH`
//!   patch, `DELETE` delete), the subresource from the path (`/stats/…` stats, `/metrics/…`
//!   metrics, `/logs/…` log, `/spec/…` spec, `/checkpoint/…` checkpoint, everything else —
//!   exec, attach, port-forward, container logs, pods — proxy). Refused: 403
//!   `Forbidden (user=…, verb=…, resource=nodes, subresource=…)`.
//!
//! Answers are cached as upstream's defaults: token reviews 2 min, allowed decisions 5 min,
//! refusals 30 s.
//!
//! ```no_run
//! # async fn f(client: bosun_client::Client, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<(), bosun_kubelet::auth::TlsError> {
//! use bosun_kubelet::auth::{server_config, KubeletAuth, ServingCertificate};
//! let serving = std::sync::Arc::new(ServingCertificate::new(cert, key)?);
//! let tls = server_config(ca, serving.clone())?;
//! let auth = KubeletAuth::new(client, "node-a");
//! # let _ = (tls, auth); Ok(()) }
//! ```

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use x509_parser::prelude::FromDer;

/// How long answers are kept.
const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// At most this many cached answers of each kind (the cache is emptied beyond).
const CACHE_LIMIT: usize = 4096;

/// A TLS setting that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM certificate or key did not parse.
    #[error("{what}: {message}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// rustls refused the setting.
    #[error("TLS: {0}")]
    Tls(String),
}

fn pem_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> TlsError {
    move |e| TlsError::Pem {
        what,
        message: e.to_string(),
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("serving certificate")(&e))?;
    if chain.is_empty() {
        return Err(pem_err("serving certificate")(&"no PEM certificate found"));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| pem_err("serving key")(&e))?
        .ok_or_else(|| pem_err("serving key")(&"no PEM private key found"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| pem_err("serving key")(&e))?;
    Ok(rustls::sign::CertifiedKey::new(chain, signing))
}

/// The kubelet's serving certificate, replaceable while the server runs: each new connection
/// is served with the current one.
#[derive(Debug)]
pub struct ServingCertificate(RwLock<Arc<rustls::sign::CertifiedKey>>);

impl ServingCertificate {
    /// Starts with a certificate chain and its key (PEM).
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(ServingCertificate(RwLock::new(Arc::new(certified_key(
            cert_pem, key_pem,
        )?))))
    }

    /// Serves this certificate from the next connection on.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(cert_pem, key_pem)?);
        match self.0.write() {
            Ok(mut g) => *g = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        match self.0.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl rustls::server::ResolvesServerCert for ServingCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

/// The kubelet server's TLS: `serving`, HTTP/1.1 (exec, attach and port-forward upgrade the
/// connection), client certificates optional but, when presented, verified against
/// `client_ca_pem` (the cluster CA).
pub fn server_config(
    client_ca_pem: &[u8],
    serving: Arc<ServingCertificate>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let tls = |e: &dyn std::fmt::Display| TlsError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut &client_ca_pem[..]) {
        roots
            .add(ca.map_err(|e| pem_err("client CA")(&e))?)
            .map_err(|e| tls(&e))?;
    }
    if roots.is_empty() {
        return Err(pem_err("client CA")(&"no PEM certificate found"));
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An authenticated user of the kubelet's server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The user's UID, when the authenticator gave one.
    pub uid: String,
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials nobody vouches for: 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// The user may not do this: 403.
    #[error("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})")]
    Forbidden {
        /// The user.
        user: String,
        /// The verb asked for.
        verb: String,
        /// The nodes subresource asked for.
        subresource: String,
    },
    /// The API server could not be asked: 500.
    #[error("{0}")]
    Failed(String),
}

/// The verb and `nodes` subresource a request to the kubelet's server needs.
pub fn attributes(method: &http::Method, path: &str) -> (String, &'static str) {
    let verb = match *method {
        http::Method::GET | http::Method::HEAD => "get".to_owned(),
        http::Method::POST => "create".to_owned(),
        http::Method::PUT => "update".to_owned(),
        http::Method::PATCH => "patch".to_owned(),
        http::Method::DELETE => "delete".to_owned(),
        ref other => other.as_str().to_ascii_lowercase(),
    };
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else if under("/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    };
    (verb, subresource)
}

/// The user a verified client certificate names: CN the name, each O a group.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if name.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    groups.push("system:authenticated".to_owned());
    Some(User {
        name,
        groups,
        uid: String::new(),
    })
}

type Cached<T> = Mutex<HashMap<String, (T, Instant)>>;

fn cached<T: Clone>(cache: &Cached<T>, key: &str) -> Option<T> {
    let g = cache.lock().ok()?;
    g.get(key)
        .filter(|(_, until)| *until > Instant::now())
        .map(|(v, _)| v.clone())
}

fn remember<T>(cache: &Cached<T>, key: String, value: T, ttl: Duration) {
    if let Ok(mut g) = cache.lock() {
        if g.len() >= CACHE_LIMIT {
            g.clear();
        }
        g.insert(key, (value, Instant::now() + ttl));
    }
}

/// Authenticates and authorizes requests to one node's kubelet server through the API server
/// (TokenReview, SubjectAccessReview) with the kubelet's own client.
pub struct KubeletAuth {
    client: bosun_client::Client,
    node: String,
    tokens: Cached<Option<User>>,
    decisions: Cached<bool>,
}

impl std::fmt::Debug for KubeletAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletAuth")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl KubeletAuth {
    /// Checks requests to `node`'s kubelet, asking the API server through `client`.
    pub fn new(client: bosun_client::Client, node: &str) -> Arc<Self> {
        Arc::new(KubeletAuth {
            client,
            node: node.to_owned(),
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Refusal> {
        let req = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        self.client
            .request(req)
            .await
            .map_err(|e| Refusal::Failed(format!("asking the API server: {e}")))
    }

    /// Who sent a request: the user of the client certificate the handshake verified (`peer`,
    /// see [`certificate_user`]), else the bearer token's, by TokenReview.
    pub async fn authenticate(
        &self,
        peer: Option<&User>,
        authorization: Option<&str>,
    ) -> Result<User, Refusal> {
        if let Some(user) = peer {
            return Ok(user.clone());
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthorized)?;
        let key = hex(&sha256(token.as_bytes()));
        if let Some(known) = cached(&self.tokens, &key) {
            return known.ok_or(Refusal::Unauthorized);
        }
        let review = self
            .post(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": token},
                }),
            )
            .await?;
        let status = &review["status"];
        let user = (status["authenticated"] == true)
            .then(|| User {
                name: status["user"]["username"].as_str().unwrap_or("").to_owned(),
                groups: status["user"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                uid: status["user"]["uid"].as_str().unwrap_or("").to_owned(),
            })
            .filter(|u| !u.name.is_empty());
        remember(&self.tokens, key, user.clone(), TOKEN_TTL);
        user.ok_or(Refusal::Unauthorized)
    }

    /// Whether `user` may `verb nodes/subresource` on this node, by SubjectAccessReview.
    pub async fn authorize(
        &self,
        user: &User,
        verb: &str,
        subresource: &str,
    ) -> Result<(), Refusal> {
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{verb}\u{0}{subresource}",
            user.name,
            user.uid,
            user.groups.join("\u{1}")
        );
        let allowed = match cached(&self.decisions, &key) {
            Some(known) => known,
            None => {
                let review = self
                    .post(
                        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                        json!({
                            "apiVersion": "authorization.k8s.io/v1",
                            "kind": "SubjectAccessReview",
                            "spec": {
                                "user": user.name, "groups": user.groups, "uid": user.uid,
                                "resourceAttributes": {
                                    "verb": verb, "group": "", "version": "v1",
                                    "resource": "nodes", "subresource": subresource,
                                    "name": self.node,
                                },
                            },
                        }),
                    )
                    .await?;
                let allowed = review["status"]["allowed"] == true;
                let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                remember(&self.decisions, key, allowed, ttl);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden {
                user: user.name.clone(),
                verb: verb.to_owned(),
                subresource: subresource.to_owned(),
            })
        }
    }

    /// Authenticates and authorizes one request.
    pub async fn check<B>(
        &self,
        peer: Option<&User>,
        req: &http::Request<B>,
    ) -> Result<User, Refusal> {
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let user = self.authenticate(peer, authorization).await?;
        let (verb, subresource) = attributes(req.method(), req.uri().path());
        self.authorize(&user, &verb, subresource).await?;
        Ok(user)
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstreams_node_subresources() {
        let get = http::Method::GET;
        assert_eq!(attributes(&get, "/stats/summary"), ("get".into(), "stats"));
        assert_eq!(attributes(&get, "/metrics"), ("get".into(), "metrics"));
        assert_eq!(
            attributes(&get, "/metrics/resource"),
            ("get".into(), "metrics")
        );
        assert_eq!(attributes(&get, "/logs/syslog"), ("get".into(), "log"));
        assert_eq!(attributes(&get, "/spec/"), ("get".into(), "spec"));
        assert_eq!(
            attributes(&get, "/containerLogs/default/p/c"),
            ("get".into(), "proxy")
        );
        assert_eq!(
            attributes(&http::Method::POST, "/exec/default/p/c"),
            ("create".into(), "proxy")
        );
        // A look-alike prefix is not the subresource.
        assert_eq!(attributes(&get, "/statsfoo"), ("get".into(), "proxy"));
    }

    #[test]
    fn a_certificate_names_the_user_and_groups() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "system:masters");
        dn.push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let user = certificate_user(cert.der()).unwrap();
        assert_eq!(user.name, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
        assert!(certificate_user(b"not a certificate").is_none());
    }

    #[test]
    fn refusals_read_as_upstreams() {
        let r = Refusal::Forbidden {
            user: "alice".into(),
            verb: "get".into(),
            subresource: "proxy".into(),
        };
        assert_eq!(
            r.to_string(),
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)"
        );
    }
}
