//! Service-account tokens: JWTs (compact JWS, ES256) signed with the cluster's service-account
//! key, as upstream issues them.
//!
//! - [`TokenIssuer`] signs and verifies. Tokens name the issuer (`iss`), the audiences (`aud`),
//!   the account (`sub` = `system:serviceaccount:NS:NAME`) and, under `kubernetes.io`, the
//!   namespace, the account's name and uid and the object the token is bound to (a Pod or a
//!   Secret). Legacy tokens of `kubernetes.io/service-account-token` Secrets carry upstream's
//!   `kubernetes.io/serviceaccount/*` claims and issuer `kubernetes/serviceaccount`.
//! - [`ServiceAccountAuthenticator`] accepts a token whose signature, issuer, audience and
//!   validity period check out, and whose account and bound object still exist with the same
//!   uids: a bound token stops working when its pod is deleted.
//! - The TokenRequest API (`POST …/serviceaccounts/NAME/token`) and the token Secrets are
//!   served by the API server with the issuer in its [`crate::Config`].
//!
//! The JWS parser takes untrusted input: three base64url parts, a JSON header naming `ES256`
//! (and our key id, if any), a P-256 signature checked by ring before the claims are parsed.
//!
//! ```
//! use bosun_apiserver::serviceaccount::TokenIssuer;
//! let key = rcgen::KeyPair::generate().unwrap();
//! let issuer = TokenIssuer::from_pkcs8_pem(&key.serialize_pem(), "https://kubernetes.default.svc.cluster.local").unwrap();
//! let token = issuer.sign(&serde_json::json!({"sub": "system:serviceaccount:default:builder"})).unwrap();
//! let claims = issuer.verify(&token).unwrap();
//! assert_eq!(claims["sub"], "system:serviceaccount:default:builder");
//! let mut forged = token.clone();
//! forged.push('A');
//! assert!(issuer.verify(&forged).is_err());
//! ```

use crate::auth::{Authenticator, Credentials, UserInfo};
use crate::error::ApiError;
use base64::Engine;
use ring::signature::{EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use std::sync::Arc;

/// The issuer of bound tokens (kubeadm's default `--service-account-issuer`).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// Longest token accepted (bytes); anything longer is not ours.
const MAX_TOKEN: usize = 16 * 1024;

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a compact JWS, or a part is not base64url/JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Signed with another algorithm or key.
    #[error("token signed with an unexpected algorithm or key")]
    WrongKey,
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// Signs and verifies service-account tokens with one P-256 key.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    kid: String,
    issuer: String,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(part: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("a part is not base64url"))
}

impl TokenIssuer {
    /// The issuer for a PKCS#8 PEM P-256 key (as `Pki` writes `sa.key`), naming itself `issuer`.
    pub fn from_pkcs8_pem(pem: &str, issuer: &str) -> Result<Self, String> {
        let der = rustls_pemfile::private_key(&mut pem.as_bytes())
            .map_err(|e| format!("service-account key: {e}"))?
            .ok_or_else(|| "service-account key: no PEM private key".to_owned())?;
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_der(),
            &rng,
        )
        .map_err(|e| format!("service-account key: not a P-256 PKCS#8 key: {e}"))?;
        // The key id: a digest of the public key, as upstream's (stable across restarts).
        let kid =
            b64(ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref()).as_ref());
        Ok(TokenIssuer {
            key,
            kid,
            issuer: issuer.to_owned(),
            rng,
        })
    }

    /// The `iss` this issuer writes and accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A compact JWS of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| TokenError::Signing)?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }

    /// The claims of `token` if this key signed it (nothing else is checked here).
    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three parts"));
        };
        let header: Value = serde_json::from_slice(&unb64(h)?)
            .map_err(|_| TokenError::Malformed("the header is not JSON"))?;
        if header["alg"] != "ES256" {
            return Err(TokenError::WrongKey);
        }
        if let Some(kid) = header.get("kid") {
            if kid.as_str() != Some(self.kid.as_str()) {
                return Err(TokenError::WrongKey);
            }
        }
        let sig = unb64(s)?;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = &token[..h.len() + 1 + p.len()];
        public
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Value = serde_json::from_slice(&unb64(p)?)
            .map_err(|_| TokenError::Malformed("the claims are not JSON"))?;
        if !claims.is_object() {
            return Err(TokenError::Malformed("the claims are not an object"));
        }
        Ok(claims)
    }

    /// Claims of a bound token for account `sa` (`uid`) in `namespace`, bound to `bound` (kind,
    /// name, uid), for `audiences`, valid `seconds` from now.
    pub fn bound_claims(
        &self,
        namespace: &str,
        sa: (&str, &str),
        bound: Option<(&str, &str, &str)>,
        audiences: &[String],
        seconds: i64,
    ) -> Value {
        let now = now_secs();
        let mut k8s = json!({
            "namespace": namespace,
            "serviceaccount": {"name": sa.0, "uid": sa.1},
        });
        if let Some((kind, name, uid)) = bound {
            k8s[kind.to_ascii_lowercase()] = json!({"name": name, "uid": uid});
        }
        json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "sub": format!("system:serviceaccount:{namespace}:{}", sa.0),
        })
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Claims of a legacy token for the token Secret `secret` of account `sa` (`uid`).
pub fn legacy_claims(namespace: &str, secret: &str, sa: &str, sa_uid: &str) -> Value {
    json!({
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
    })
}

/// The user a service account authenticates as.
pub fn account_user(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
        ..Default::default()
    }
}

/// The namespace and name of a service account's user name
/// (`system:serviceaccount:NAMESPACE:NAME`), if it is one.
pub fn split_username(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// Authenticates service-account tokens (bound and legacy) against the objects in `store`.
pub struct ServiceAccountAuthenticator {
    issuer: Arc<TokenIssuer>,
    audiences: Vec<String>,
    store: Arc<dyn bosun_store::Store>,
}

impl ServiceAccountAuthenticator {
    /// Tokens of `issuer` for one of `audiences` (upstream's `--api-audiences`, by default the
    /// issuer itself), checked against the objects in `store`.
    pub fn new(
        issuer: Arc<TokenIssuer>,
        audiences: Vec<String>,
        store: Arc<dyn bosun_store::Store>,
    ) -> Self {
        ServiceAccountAuthenticator {
            issuer,
            audiences,
            store,
        }
    }

    async fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = format!("/registry/core/{resource}/{namespace}/{name}");
        let kv = self.store.get(&key, None).await.ok().flatten()?;
        serde_json::from_slice(&kv.value).ok()
    }

    /// The user `claims` stand for, if everything they name still holds.
    async fn check(&self, token: &str, claims: &Value) -> Option<UserInfo> {
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let uid_of = |o: &Value| s(&o["metadata"]["uid"]);
        if claims["iss"] == LEGACY_ISSUER {
            let ns = s(&claims["kubernetes.io/serviceaccount/namespace"]);
            let sa = s(&claims["kubernetes.io/serviceaccount/service-account.name"]);
            let sa_uid = s(&claims["kubernetes.io/serviceaccount/service-account.uid"]);
            let secret = s(&claims["kubernetes.io/serviceaccount/secret.name"]);
            let account = self.object("serviceaccounts", &ns, &sa).await?;
            if uid_of(&account) != sa_uid {
                return None;
            }
            // The Secret must still exist and hold this very token.
            let stored = self.object("secrets", &ns, &secret).await?;
            let held = stored["data"]["token"]
                .as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())?;
            if held != token.as_bytes() {
                return None;
            }
            return Some(account_user(&ns, &sa));
        }
        if claims["iss"].as_str() != Some(self.issuer.issuer()) {
            return None;
        }
        let now = now_secs();
        if claims["exp"].as_i64().is_none_or(|exp| exp <= now)
            || claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 60)
        {
            return None;
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => self.audiences.contains(a),
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|w| w == a)),
            _ => false,
        };
        if !aud_ok {
            return None;
        }
        let k = &claims["kubernetes.io"];
        let ns = s(&k["namespace"]);
        let sa = s(&k["serviceaccount"]["name"]);
        if ns.is_empty() || sa.is_empty() {
            return None;
        }
        let account = self.object("serviceaccounts", &ns, &sa).await?;
        if uid_of(&account) != s(&k["serviceaccount"]["uid"]) {
            return None;
        }
        for (kind, resource) in [("pod", "pods"), ("secret", "secrets")] {
            if k[kind].is_object() {
                let bound = self.object(resource, &ns, &s(&k[kind]["name"])).await?;
                if uid_of(&bound) != s(&k[kind]["uid"]) {
                    return None;
                }
                // A pod being deleted takes its tokens with it.
                if bound["metadata"]["deletionTimestamp"].is_string() {
                    return None;
                }
            }
        }
        Some(account_user(&ns, &sa))
    }
}

#[async_trait::async_trait]
impl Authenticator for ServiceAccountAuthenticator {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        let Some(token) = req.bearer_token() else {
            return Ok(None);
        };
        // Only JWS-shaped tokens are ours; others are for the other authenticators.
        if token.split('.').count() != 3 {
            return Ok(None);
        }
        let Ok(claims) = self.issuer.verify(token) else {
            return Ok(None);
        };
        Ok(self.check(token, &claims).await)
    }
}

/// Fills `kubernetes.io/service-account-token` Secrets on create, as upstream's token
/// controller does: a legacy token for the account the `kubernetes.io/service-account.name`
/// annotation names (whose uid goes into `kubernetes.io/service-account.uid`), the namespace
/// and the cluster CA. A Secret for an account that does not exist is left empty. Needs the
/// server's [`crate::Config::service_account_issuer`]; without it, does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenSecrets;

#[async_trait::async_trait]
impl crate::auth::AdmissionPlugin for TokenSecrets {
    fn name(&self) -> &str {
        "ServiceAccountTokenSecrets"
    }

    async fn mutate(
        &self,
        req: &crate::auth::AdmissionRequest<'_>,
        obj: &mut crate::object::Object,
    ) -> Result<(), ApiError> {
        let r = req.resource;
        if !r.group.is_empty()
            || r.plural != "secrets"
            || req.subresource.is_some()
            || req.operation == crate::auth::Operation::Delete
            || obj.get("type").and_then(Value::as_str)
                != Some("kubernetes.io/service-account-token")
        {
            return Ok(());
        }
        let config = req.server.config();
        let Some(issuer) = config.service_account_issuer.clone() else {
            return Ok(());
        };
        if obj
            .get("data")
            .and_then(|d| d.get("token"))
            .is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty()))
        {
            return Ok(());
        }
        let ns = req.namespace.unwrap_or_default();
        let Some(sa) = obj
            .get("metadata")
            .and_then(|m| m["annotations"]["kubernetes.io/service-account.name"].as_str())
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let key = format!("/registry/core/serviceaccounts/{ns}/{sa}");
        let Some(account) = req
            .server
            .store()
            .get(&key, None)
            .await
            .map_err(ApiError::internal)?
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        else {
            return Ok(());
        };
        let uid = account["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let token = issuer
            .sign(&legacy_claims(ns, req.name, &sa, &uid))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let enc = |s: &str| Value::String(base64::engine::general_purpose::STANDARD.encode(s));
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        meta["annotations"]["kubernetes.io/service-account.uid"] = json!(uid);
        let data = obj.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        data["token"] = enc(&token);
        data["namespace"] = enc(ns);
        if let Some(ca) = &config.root_ca_pem {
            data["ca.crt"] = enc(ca);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn issuer() -> TokenIssuer {
        let key = rcgen::KeyPair::generate().unwrap();
        TokenIssuer::from_pkcs8_pem(&key.serialize_pem(), DEFAULT_ISSUER).unwrap()
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_intact() {
        let a = issuer();
        let b = issuer();
        let t = a.sign(&json!({"sub": "x"})).unwrap();
        assert_eq!(a.verify(&t).unwrap()["sub"], "x");
        assert_eq!(b.verify(&t), Err(TokenError::WrongKey));
        // Another payload under the same signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64(br#"{"sub":"admin"}"#), parts[2]);
        assert_eq!(a.verify(&forged), Err(TokenError::BadSignature));
        // alg none and friends.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(a.verify(&none), Err(TokenError::WrongKey));
        assert!(matches!(a.verify("a.b"), Err(TokenError::Malformed(_))));
        assert!(matches!(a.verify("a.b.c.d"), Err(TokenError::Malformed(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Arbitrary strings, and arbitrary three-part strings, never verify and never panic.
        #[test]
        fn arbitrary_tokens_are_refused(s in ".{0,300}", h in "[A-Za-z0-9_-]{0,80}", p in "[A-Za-z0-9_-]{0,80}", sig in "[A-Za-z0-9_-]{0,120}") {
            let i = issuer();
            prop_assert!(i.verify(&s).is_err());
            let token = format!("{h}.{p}.{sig}");
            prop_assert!(i.verify(&token).is_err());
        }

        /// Any claims object round-trips through sign and verify.
        #[test]
        fn claims_round_trip(sub in ".{0,50}", n in any::<i64>()) {
            let i = issuer();
            let claims = json!({"sub": sub, "n": n});
            prop_assert_eq!(i.verify(&i.sign(&claims).unwrap()).unwrap(), claims);
        }
    }
}
