//! Encryption at rest, as upstream's `--encryption-provider-config`: an
//! `apiserver.config.k8s.io/v1` `EncryptionConfiguration` names resources and, for each, an
//! ordered list of providers. The first provider encrypts every write; reads use the provider
//! the stored value's prefix names, so keys can be rotated by adding a new key first and
//! rewriting the objects (`kubectl get secrets -A -o json | kubectl replace -f -`).
//!
//! Providers: `aesgcm` (AES-GCM with 16- or 32-byte keys, a random 12-byte nonce per write,
//! the storage key as authenticated data), `secretbox` (XSalsa20-Poly1305 with 32-byte keys
//! and a random 24-byte nonce) and `identity` (plaintext). Stored values read
//! `k8s:enc:aesgcm:v1:KEYNAME:` + nonce + ciphertext, as upstream's.
//!
//! [`EncryptingStore`] applies a configuration to any [`Store`]: the API server above it sees
//! plaintext, the store below only ciphertext.
//!
//! ```
//! use bosun_apiserver::encryption::{EncryptingStore, EncryptionConfig};
//! use bosun_store::{memory::MemoryStore, Store};
//! use std::sync::Arc;
//! # tokio_test_block_on(async {
//! let config = EncryptionConfig::parse(br#"
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//! - resources: [secrets]
//!   providers:
//!   - aesgcm: {keys: [{name: key1, secret: "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8="}]}
//!   - identity: {}
//! "#).unwrap();
//! let inner = Arc::new(MemoryStore::new());
//! let store = EncryptingStore::new(inner.clone(), config);
//! store.create("/registry/core/secrets/default/s", "hush".into()).await.unwrap();
//! let raw = inner.get("/registry/core/secrets/default/s", None).await.unwrap().unwrap();
//! assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
//! let plain = store.get("/registry/core/secrets/default/s", None).await.unwrap().unwrap();
//! assert_eq!(&plain.value[..], b"hush");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use bosun_store::{
    Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch,
};
use bytes::Bytes;
use std::sync::Arc;

/// One encryption provider.
enum Provider {
    /// Plaintext.
    Identity,
    /// AES-GCM keys, by name; the first encrypts.
    AesGcm(Vec<(String, ring::aead::LessSafeKey)>),
    /// XSalsa20-Poly1305 keys, by name; the first encrypts.
    Secretbox(Vec<(String, crypto_secretbox::XSalsa20Poly1305)>),
}

impl Provider {
    fn kind(&self) -> &'static str {
        match self {
            Provider::Identity => "identity",
            Provider::AesGcm(_) => "aesgcm",
            Provider::Secretbox(_) => "secretbox",
        }
    }
}

/// Which stored keys a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    /// `secrets` or `deployments.apps`: that resource of that group (empty: core).
    Resource { group: String, plural: String },
    /// `*.apps` (every resource of a group; `*.` is the core group).
    Group(String),
    /// `*.*`: everything.
    All,
}

impl Match {
    fn parse(s: &str) -> Self {
        match s.split_once('.') {
            _ if s == "*.*" => Match::All,
            Some(("*", group)) => Match::Group(group.to_owned()),
            Some((plural, group)) => Match::Resource {
                group: group.to_owned(),
                plural: plural.to_owned(),
            },
            None => Match::Resource {
                group: String::new(),
                plural: s.to_owned(),
            },
        }
    }

    /// Whether the storage key `/registry/GROUP/PLURAL/…` (`core` for the core group) is
    /// covered.
    fn covers(&self, key: &str) -> bool {
        if *self == Match::All {
            return true;
        }
        let mut parts = key.trim_start_matches("/registry/").splitn(3, '/');
        let (Some(group), Some(plural)) = (parts.next(), parts.next()) else {
            return false;
        };
        let group = if group == "core" { "" } else { group };
        match self {
            Match::All => true,
            Match::Group(g) => g == group,
            Match::Resource {
                group: g,
                plural: p,
            } => g == group && p == plural,
        }
    }
}

/// A parsed `EncryptionConfiguration`.
pub struct EncryptionConfig {
    rules: Vec<(Vec<Match>, Vec<Provider>)>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<(&Vec<Match>, Vec<&str>)> = self
            .rules
            .iter()
            .map(|(m, p)| (m, p.iter().map(Provider::kind).collect()))
            .collect();
        f.debug_struct("EncryptionConfig")
            .field("rules", &rules)
            .finish()
    }
}

fn keys(v: &serde_json::Value, what: &str) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
    use base64::Engine;
    let list = v["keys"]
        .as_array()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("{what}: keys: at least one key is required"))?;
    list.iter()
        .enumerate()
        .map(|(i, k)| {
            let name = k["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("{what}.keys[{i}].name: required"))?;
            let secret = k["secret"]
                .as_str()
                .ok_or_else(|| format!("{what}.keys[{i}].secret: required"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .map_err(|e| format!("{what}.keys[{i}].secret: not base64: {e}"))?;
            Ok((name.to_owned(), bytes))
        })
        .collect()
}

impl EncryptionConfig {
    /// Parses the configuration (YAML or JSON); the error names the offending field.
    pub fn parse(text: &[u8]) -> std::result::Result<Self, String> {
        use crypto_secretbox::KeyInit;
        let doc = bosun_api_types::yaml::to_json(text).map_err(|e| e.to_string())?;
        if doc["kind"] != "EncryptionConfiguration" {
            return Err(format!(
                "kind: want EncryptionConfiguration, got {}",
                doc["kind"]
            ));
        }
        let mut rules = Vec::new();
        for (i, rule) in doc["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("resources[{i}]");
            let matches: Vec<Match> = rule["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .map(Match::parse)
                .collect();
            if matches.is_empty() {
                return Err(format!("{at}.resources: at least one resource is required"));
            }
            let mut providers = Vec::new();
            for (j, p) in rule["providers"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("{at}.providers[{j}]");
                let provider = if p.get("identity").is_some() {
                    Provider::Identity
                } else if let Some(cfg) = p.get("aesgcm") {
                    let mut out = Vec::new();
                    for (name, key) in keys(cfg, &format!("{at}.aesgcm"))? {
                        let alg = match key.len() {
                            16 => &ring::aead::AES_128_GCM,
                            32 => &ring::aead::AES_256_GCM,
                            n => {
                                return Err(format!(
                                    "{at}.aesgcm key {name:?}: {n} bytes; use 16 or 32"
                                ))
                            }
                        };
                        let unbound = ring::aead::UnboundKey::new(alg, &key)
                            .map_err(|_| format!("{at}.aesgcm key {name:?}: refused"))?;
                        out.push((name, ring::aead::LessSafeKey::new(unbound)));
                    }
                    Provider::AesGcm(out)
                } else if let Some(cfg) = p.get("secretbox") {
                    let mut out = Vec::new();
                    for (name, key) in keys(cfg, &format!("{at}.secretbox"))? {
                        let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&key)
                            .map_err(|_| {
                                format!(
                                    "{at}.secretbox key {name:?}: {} bytes; must be 32",
                                    key.len()
                                )
                            })?;
                        out.push((name, cipher));
                    }
                    Provider::Secretbox(out)
                } else {
                    return Err(format!(
                        "{at}: one of aesgcm, secretbox or identity is required (kms is not supported)"
                    ));
                };
                providers.push(provider);
            }
            if providers.is_empty() {
                return Err(format!("{at}.providers: at least one provider is required"));
            }
            rules.push((matches, providers));
        }
        Ok(EncryptionConfig { rules })
    }

    /// The providers of the first rule covering `key` (as upstream: the first match wins).
    fn providers(&self, key: &str) -> Option<&[Provider]> {
        self.rules
            .iter()
            .find(|(m, _)| m.iter().any(|m| m.covers(key)))
            .map(|(_, p)| p.as_slice())
    }

    /// `plain` as stored under `key`: encrypted by the first provider of its rule.
    pub fn encrypt(&self, key: &str, plain: &[u8]) -> Result<Bytes> {
        let Some(first) = self.providers(key).and_then(|p| p.first()) else {
            return Ok(Bytes::copy_from_slice(plain));
        };
        let random = |n: usize| -> Result<Vec<u8>> {
            let mut b = vec![0u8; n];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                .map_err(|_| Error::Backend("no randomness for an encryption nonce".into()))?;
            Ok(b)
        };
        match first {
            Provider::Identity => Ok(Bytes::copy_from_slice(plain)),
            Provider::AesGcm(keys) => {
                let Some((name, k)) = keys.first() else {
                    return Err(Error::Backend("aesgcm provider without keys".into()));
                };
                let nonce = random(ring::aead::NONCE_LEN)?;
                let mut sealed = plain.to_vec();
                let n = ring::aead::Nonce::try_assume_unique_for_key(&nonce)
                    .map_err(|_| Error::Backend("bad nonce".into()))?;
                k.seal_in_place_append_tag(n, ring::aead::Aad::from(key.as_bytes()), &mut sealed)
                    .map_err(|_| Error::Backend(format!("encrypting {key}")))?;
                let mut out = format!("k8s:enc:aesgcm:v1:{name}:").into_bytes();
                out.extend(nonce);
                out.extend(sealed);
                Ok(out.into())
            }
            Provider::Secretbox(keys) => {
                use crypto_secretbox::aead::Aead;
                let Some((name, k)) = keys.first() else {
                    return Err(Error::Backend("secretbox provider without keys".into()));
                };
                let nonce = random(24)?;
                let sealed = k
                    .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plain)
                    .map_err(|_| Error::Backend(format!("encrypting {key}")))?;
                let mut out = format!("k8s:enc:secretbox:v1:{name}:").into_bytes();
                out.extend(nonce);
                out.extend(sealed);
                Ok(out.into())
            }
        }
    }

    /// The plaintext of `stored` (kept under `key`), by the provider its prefix names.
    pub fn decrypt(&self, key: &str, stored: &Bytes) -> Result<Bytes> {
        let Some(providers) = self.providers(key) else {
            return Ok(stored.clone());
        };
        let fail = |why: &str| Error::Backend(format!("decrypting {key}: {why}"));
        let Some(rest) = stored.strip_prefix(b"k8s:enc:") else {
            // Written before encryption was configured: readable while identity is listed.
            return if providers.iter().any(|p| matches!(p, Provider::Identity)) {
                Ok(stored.clone())
            } else {
                Err(fail(
                    "stored unencrypted and no identity provider is configured",
                ))
            };
        };
        let text = String::from_utf8_lossy(&rest[..rest.len().min(300)]).into_owned();
        let mut fields = text.splitn(4, ':');
        let (Some(kind), Some(_version), Some(name)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(fail("malformed prefix"));
        };
        let header = kind.len() + 1 + _version.len() + 1 + name.len() + 1;
        let body = rest.get(header..).ok_or_else(|| fail("truncated"))?;
        for p in providers {
            match (p, kind) {
                (Provider::AesGcm(keys), "aesgcm") => {
                    let Some((_, k)) = keys.iter().find(|(n, _)| n == name) else {
                        continue;
                    };
                    if body.len() < ring::aead::NONCE_LEN {
                        return Err(fail("truncated"));
                    }
                    let (nonce, sealed) = body.split_at(ring::aead::NONCE_LEN);
                    let n = ring::aead::Nonce::try_assume_unique_for_key(nonce)
                        .map_err(|_| fail("bad nonce"))?;
                    let mut buf = sealed.to_vec();
                    let plain = k
                        .open_in_place(n, ring::aead::Aad::from(key.as_bytes()), &mut buf)
                        .map_err(|_| fail("authentication failed"))?;
                    return Ok(Bytes::copy_from_slice(plain));
                }
                (Provider::Secretbox(keys), "secretbox") => {
                    use crypto_secretbox::aead::Aead;
                    let Some((_, k)) = keys.iter().find(|(n, _)| n == name) else {
                        continue;
                    };
                    if body.len() < 24 {
                        return Err(fail("truncated"));
                    }
                    let (nonce, sealed) = body.split_at(24);
                    let plain = k
                        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
                        .map_err(|_| fail("authentication failed"))?;
                    return Ok(plain.into());
                }
                _ => {}
            }
        }
        Err(fail(&format!("no configured {kind} key named {name:?}")))
    }
}

/// A [`Store`] that encrypts the values of configured resources on the way down and decrypts
/// them on the way up, watches included.
pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

impl EncryptingStore {
    /// `inner`, with `config` applied.
    pub fn new(inner: Arc<dyn Store>, config: EncryptionConfig) -> Self {
        EncryptingStore {
            inner,
            config: Arc::new(config),
        }
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue> {
        if !kv.value.is_empty() {
            kv.value = self.config.decrypt(&kv.key, &kv.value)?;
        }
        Ok(kv)
    }

    /// A conflict carries the current value for a retry: in plaintext, as every other read.
    fn open_error(&self, e: Error) -> Error {
        match e {
            Error::Conflict {
                key,
                expected,
                current,
            } => match self.open(*current) {
                Ok(current) => Error::Conflict {
                    key,
                    expected,
                    current: Box::new(current),
                },
                Err(e) => e,
            },
            other => other,
        }
    }
}

fn open_event(config: &EncryptionConfig, ev: &Event) -> Result<Event> {
    let open = |kv: &KeyValue| -> Result<KeyValue> {
        let mut kv = kv.clone();
        if !kv.value.is_empty() {
            kv.value = config.decrypt(&kv.key, &kv.value)?;
        }
        Ok(kv)
    };
    Ok(Event {
        kind: ev.kind,
        kv: open(&ev.kv)?,
        prev_kv: ev.prev_kv.as_ref().map(open).transpose()?,
    })
}

#[async_trait::async_trait]
impl Store for EncryptingStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        self.inner
            .get(key, revision)
            .await?
            .map(|kv| self.open(kv))
            .transpose()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let mut page = self.inner.range(request).await?;
        page.kvs = page
            .kvs
            .into_iter()
            .map(|kv| self.open(kv))
            .collect::<Result<_>>()?;
        Ok(page)
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        self.inner.count(prefix).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let sealed = self.config.encrypt(key, &value)?;
        self.inner.create(key, sealed).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let sealed = self.config.encrypt(key, &value)?;
        self.inner
            .update(key, sealed, expected)
            .await
            .map_err(|e| self.open_error(e))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (rev, kv) = self
            .inner
            .delete(key, expected)
            .await
            .map_err(|e| self.open_error(e))?;
        Ok((rev, self.open(kv)?))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let mut inner = self.inner.watch(prefix, after).await?;
        let (tx, watch) = bosun_store::watch_channel();
        let config = Arc::clone(&self.config);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    item = inner.next() => {
                        let Some(item) = item else { return };
                        let item = item.and_then(|ev| open_event(&config, &ev).map(Arc::new));
                        let failed = item.is_err();
                        if !tx.send(item) || failed {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(watch)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn db_size(&self) -> Result<u64> {
        self.inner.db_size().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    const AES: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8="; // 32 bytes
    const AES2: &str = "MTIzNDU2Nzg5MDEyMzQ1Ng=="; // 16 bytes
    const BOX: &str = "dGhpcnR5LXR3by1ieXRlLXNlY3JldGJveC1rZXkhISE="; // 32 bytes

    fn config(providers: &str) -> EncryptionConfig {
        EncryptionConfig::parse(
            format!(
                "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\nresources:\n- resources: [secrets, '*.apps']\n  providers:\n{providers}"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const KEY: &str = "/registry/core/secrets/default/s";

    #[test]
    fn providers_round_trip_and_rotate() {
        let aes = config(&format!(
            "  - aesgcm: {{keys: [{{name: k1, secret: {AES}}}]}}\n  - identity: {{}}\n"
        ));
        let sealed = aes.encrypt(KEY, b"hush").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(4).any(|w| w == b"hush"));
        assert_eq!(&aes.decrypt(KEY, &sealed).unwrap()[..], b"hush");
        // The storage key is authenticated: the value cannot be moved to another key.
        assert!(aes
            .decrypt("/registry/core/secrets/default/t", &sealed)
            .is_err());
        // Plaintext from before encryption still reads (identity is listed).
        assert_eq!(
            &aes.decrypt(KEY, &Bytes::from_static(b"old")).unwrap()[..],
            b"old"
        );
        // Other resources are untouched.
        assert_eq!(
            &aes.encrypt("/registry/core/configmaps/d/c", b"x").unwrap()[..],
            b"x"
        );
        assert!(aes
            .encrypt("/registry/apps/deployments/d/x", b"x")
            .unwrap()
            .starts_with(b"k8s:enc:aesgcm"));

        // Rotation: a new secretbox key first, the old aesgcm key still listed for reads.
        let rotated = config(&format!(
            "  - secretbox: {{keys: [{{name: b1, secret: {BOX}}}]}}\n  - aesgcm: {{keys: [{{name: k2, secret: {AES2}}}, {{name: k1, secret: {AES}}}]}}\n"
        ));
        assert_eq!(&rotated.decrypt(KEY, &sealed).unwrap()[..], b"hush");
        let resealed = rotated.encrypt(KEY, b"hush").unwrap();
        assert!(resealed.starts_with(b"k8s:enc:secretbox:v1:b1:"));
        assert_eq!(&rotated.decrypt(KEY, &resealed).unwrap()[..], b"hush");
        // Without identity, plaintext is an error, not silently accepted.
        assert!(rotated.decrypt(KEY, &Bytes::from_static(b"old")).is_err());
        // A key that is gone cannot read what it wrote.
        let new_only = config(&format!(
            "  - secretbox: {{keys: [{{name: b1, secret: {BOX}}}]}}\n"
        ));
        let err = new_only.decrypt(KEY, &sealed).unwrap_err().to_string();
        assert!(
            err.contains("no configured aesgcm key named \"k1\""),
            "{err}"
        );
    }

    #[test]
    fn bad_configurations_name_the_field() {
        for (text, want) in [
            ("kind: Other", "kind"),
            ("kind: EncryptionConfiguration\nresources:\n- resources: []\n  providers: [identity: {}]", "resources[0].resources"),
            ("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: []", "providers"),
            ("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {keys: [{name: a, secret: c2hvcnQ=}]}", "use 16 or 32"),
            ("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox: {keys: [{name: a, secret: '!!'}]}", "not base64"),
            ("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {name: x}", "kms is not supported"),
        ] {
            let err = EncryptionConfig::parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever bytes are stored, reading them fails cleanly or succeeds; never panics.
        #[test]
        fn decrypting_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), prefix in 0usize..3) {
            let c = config(&format!(
                "  - secretbox: {{keys: [{{name: b1, secret: {BOX}}}]}}\n  - aesgcm: {{keys: [{{name: k1, secret: {AES}}}]}}\n"
            ));
            let mut stored = match prefix {
                0 => b"k8s:enc:aesgcm:v1:k1:".to_vec(),
                1 => b"k8s:enc:secretbox:v1:b1:".to_vec(),
                _ => Vec::new(),
            };
            stored.extend(&data);
            let _ = c.decrypt(KEY, &Bytes::from(stored));
        }

        #[test]
        fn any_value_round_trips(data in proptest::collection::vec(any::<u8>(), 0..500)) {
            let c = config(&format!("  - aesgcm: {{keys: [{{name: k1, secret: {AES}}}]}}\n"));
            let sealed = c.encrypt(KEY, &data).unwrap();
            prop_assert_eq!(&c.decrypt(KEY, &sealed).unwrap()[..], &data[..]);
        }
    }
}
