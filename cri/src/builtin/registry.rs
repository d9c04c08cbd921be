//! Pulls from OCI distribution registries (Docker Hub, GHCR, a local `docker-registry`, …)
//! with the `oci-client` crate: the manifest (the platform's from an index), the config and
//! the layers, each checked against its digest, then stored and unpacked by the
//! [`ImageStore`] like an imported archive.

use super::images::{normalize, ImageRecord, ImageStore};
use crate::v1::AuthConfig;
use crate::{Error, Result};
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Where and how to pull.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registries (`host:port`) spoken to over plain HTTP instead of HTTPS.
    pub insecure: Vec<String>,
}

/// The credentials in a CRI `AuthConfig`: username and password, the `auth` field
/// (base64 of `user:password`), or a registry token.
pub fn registry_auth(auth: Option<&AuthConfig>) -> Result<RegistryAuth> {
    let Some(a) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !a.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
    }
    if !a.username.is_empty() {
        return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| Error::InvalidArgument(format!("auth is not base64: {e}")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Error::InvalidArgument("auth is not UTF-8".into()))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Error::InvalidArgument("auth is not user:password".into()))?;
        return Ok(RegistryAuth::Basic(u.into(), p.into()));
    }
    Ok(RegistryAuth::Anonymous)
}

fn pull_error(what: &str, name: &str, e: oci_client::errors::OciDistributionError) -> Error {
    use oci_client::errors::OciDistributionError as E;
    match &e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            Error::FailedPrecondition(format!("pulling {name}: {what}: not authorized: {e}"))
        }
        E::ImageManifestNotFoundError(_) => Error::NotFound(format!("pulling {name}: {what}: {e}")),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            Error::NotFound(format!("pulling {name}: {what}: {e}"))
        }
        _ => Error::Unavailable(format!("pulling {name}: {what}: {e}")),
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Pulls `name` into `store` and returns the stored image.
pub async fn pull(
    store: &Arc<ImageStore>,
    config: &RegistryConfig,
    name: &str,
    auth: Option<&AuthConfig>,
) -> Result<ImageRecord> {
    let full = normalize(name);
    let reference: Reference = full
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("image reference {name:?}: {e}")))?;
    // reqwest (under oci-client) takes the process's default TLS provider: ring, unless the
    // embedding program installed another first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
        ..Default::default()
    });
    let auth = registry_auth(auth)?;
    let (manifest, manifest_digest, list_digest) = client
        .pull_image_manifest_and_list_digest(&reference, &auth)
        .await
        .map_err(|e| pull_error("manifest", &full, e))?;
    let fetch = async |desc: &oci_client::manifest::OciDescriptor| -> Result<Vec<u8>> {
        // Layers shared with an image already here are not fetched again.
        if let Some(bytes) = store.read_blob(&desc.digest) {
            return Ok(bytes);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        client
            .pull_blob(&reference, desc, &mut bytes)
            .await
            .map_err(|e| pull_error(&format!("blob {}", desc.digest), &full, e))?;
        if digest_of(&bytes) != desc.digest {
            return Err(Error::InvalidArgument(format!(
                "pulling {full}: blob {} does not match its digest",
                desc.digest
            )));
        }
        Ok(bytes)
    };
    let config_bytes = fetch(&manifest.config).await?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for l in &manifest.layers {
        layers.push(fetch(l).await?);
    }
    tracing::info!(image = %full, layers = layers.len(), digest = %manifest_digest, "pulled");
    // The repo digest is the index's when the name pointed at one, as containerd records it.
    let repo_digest = list_digest.unwrap_or(manifest_digest);
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        store.add_pulled(&full, &repo_digest, &config_bytes, &layers)
    })
    .await
    .map_err(|e| Error::Internal(format!("storing the pulled image: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_any_auth_config_form() {
        assert!(matches!(
            registry_auth(None).unwrap(),
            RegistryAuth::Anonymous
        ));
        let basic = |u: &str, p: &str, auth: &str, token: &str| AuthConfig {
            username: u.into(),
            password: p.into(),
            auth: auth.into(),
            registry_token: token.into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&basic("u", "p", "", ""))).unwrap(),
            RegistryAuth::Basic(u, p) if u == "u" && p == "p"
        ));
        // `auth` is base64("user:password"); a password may hold colons.
        let encoded = base64::engine::general_purpose::STANDARD.encode("me:se:cret");
        assert!(matches!(
            registry_auth(Some(&basic("", "", &encoded, ""))).unwrap(),
            RegistryAuth::Basic(u, p) if u == "me" && p == "se:cret"
        ));
        assert!(matches!(
            registry_auth(Some(&basic("", "", "", "tok"))).unwrap(),
            RegistryAuth::Bearer(t) if t == "tok"
        ));
        assert!(registry_auth(Some(&basic("", "", "!!!", ""))).is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(registry_auth(Some(&basic("", "", &no_colon, ""))).is_err());
    }
}
