//! Where the cluster is and who the client is: kubeconfig files (with upstream's merge rules)
//! and in-cluster service account configuration.
//!
//! Merging follows client-go's loading rules: the files of `KUBECONFIG` (or `~/.kube/config`)
//! are read in order, and for every named cluster, user and context, and for
//! `current-context`, the first file to set it wins. Relative paths in a file are relative to
//! that file.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Directory of the in-cluster service account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A kubeconfig file's contents (what the client uses of it).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// Named clusters.
    #[serde(default, deserialize_with = "null_default")]
    pub clusters: Vec<NamedCluster>,
    /// Named users.
    #[serde(default, deserialize_with = "null_default")]
    pub users: Vec<NamedUser>,
    /// Named contexts.
    #[serde(default, deserialize_with = "null_default")]
    pub contexts: Vec<NamedContext>,
    /// The context used unless another is asked for.
    #[serde(default)]
    pub current_context: Option<String>,
}

fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A cluster entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// The cluster.
    #[serde(default)]
    pub cluster: Cluster,
}

/// How to reach a cluster.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// `https://host:port` (or `http://` for a local server).
    #[serde(default)]
    pub server: String,
    /// CA bundle file.
    #[serde(default)]
    pub certificate_authority: Option<PathBuf>,
    /// CA bundle, base64.
    #[serde(default)]
    pub certificate_authority_data: Option<String>,
    /// Skip server certificate checks.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Name to check the server certificate against.
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

/// A user entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// The credentials.
    #[serde(default)]
    pub user: User,
}

/// Credentials.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding a bearer token (re-read when it changes).
    #[serde(default, rename = "tokenFile")]
    pub token_file: Option<PathBuf>,
    /// Basic auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic auth password.
    #[serde(default)]
    pub password: Option<String>,
    /// Client certificate file.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// Client certificate, base64.
    #[serde(default)]
    pub client_certificate_data: Option<String>,
    /// Client key file.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Client key, base64.
    #[serde(default)]
    pub client_key_data: Option<String>,
    /// A credential plugin to run for a token.
    #[serde(default)]
    pub exec: Option<ExecConfig>,
}

/// A credential plugin (`users[].user.exec`): a command that prints an `ExecCredential`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    /// `client.authentication.k8s.io/v1` (or `v1beta1`).
    #[serde(default)]
    pub api_version: String,
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<ExecEnv>,
}

/// One environment variable of a credential plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ExecEnv {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A context entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// The context.
    #[serde(default)]
    pub context: Context,
}

/// A cluster, a user and a default namespace.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Context {
    /// Cluster name.
    #[serde(default)]
    pub cluster: String,
    /// User name.
    #[serde(default)]
    pub user: String,
    /// Default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl Kubeconfig {
    /// Parses a kubeconfig (YAML or JSON); relative paths in it are made relative to `dir`.
    pub fn parse(text: &[u8], dir: Option<&Path>) -> Result<Self> {
        let value = bosun_api_types::yaml::to_json(text)
            .map_err(|e| Error::Config(format!("kubeconfig: {e}")))?;
        let mut k: Kubeconfig =
            serde_json::from_value(value).map_err(|e| Error::Config(format!("kubeconfig: {e}")))?;
        if let Some(dir) = dir {
            let fix = |p: &mut Option<PathBuf>| {
                if let Some(path) = p.as_mut().filter(|p| p.is_relative()) {
                    *path = dir.join(&*path);
                }
            };
            for c in &mut k.clusters {
                fix(&mut c.cluster.certificate_authority);
            }
            for u in &mut k.users {
                fix(&mut u.user.token_file);
                fix(&mut u.user.client_certificate);
                fix(&mut u.user.client_key);
                // A plugin path with a separator is relative to the file too.
                if let Some(exec) = u.user.exec.as_mut() {
                    let p = Path::new(&exec.command);
                    if p.is_relative() && exec.command.contains('/') {
                        exec.command = dir.join(p).to_string_lossy().into_owned();
                    }
                }
            }
        }
        Ok(k)
    }

    /// Reads one kubeconfig file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path)
            .map_err(|e| Error::Config(format!("reading kubeconfig {}: {e}", path.display())))?;
        Self::parse(&text, path.parent())
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Merges `other` under `self`: what `self` already names or sets wins.
    pub fn merge(mut self, other: Kubeconfig) -> Self {
        fn add<T, F: Fn(&T) -> &str>(into: &mut Vec<T>, from: Vec<T>, name: F) {
            for item in from {
                if !into.iter().any(|x| name(x) == name(&item)) {
                    into.push(item);
                }
            }
        }
        add(&mut self.clusters, other.clusters, |c| &c.name);
        add(&mut self.users, other.users, |u| &u.name);
        add(&mut self.contexts, other.contexts, |c| &c.name);
        if self.current_context.as_deref().is_none_or(str::is_empty) {
            self.current_context = other.current_context;
        }
        self
    }

    /// The kubeconfig a client-go tool would load: the files of `KUBECONFIG` (separated by
    /// `:`; missing ones skipped), else `~/.kube/config`.
    pub fn load_default() -> Result<Self> {
        let paths: Vec<PathBuf> = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(list) => std::env::split_paths(&list).collect(),
            None => {
                let home = std::env::var_os("HOME")
                    .ok_or_else(|| Error::Config("no KUBECONFIG and no HOME".into()))?;
                vec![Path::new(&home).join(".kube").join("config")]
            }
        };
        let mut merged: Option<Kubeconfig> = None;
        for p in &paths {
            if !p.exists() {
                continue;
            }
            let k = Self::read(p)?;
            merged = Some(match merged {
                None => k,
                Some(m) => m.merge(k),
            });
        }
        merged.ok_or_else(|| {
            Error::Config(format!(
                "no kubeconfig found (looked at {})",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// Which context, cluster and user to take from a kubeconfig (each overrides the context's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeconfigOptions {
    /// Context instead of `current-context`.
    pub context: Option<String>,
    /// Cluster instead of the context's.
    pub cluster: Option<String>,
    /// User instead of the context's.
    pub user: Option<String>,
}

/// How the client authenticates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// A bearer token read from a file (re-read every minute, as client-go does).
    TokenFile(PathBuf),
    /// A bearer token from a credential plugin (run again when its token expires).
    Exec(ExecConfig),
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

/// TLS settings (used once the client speaks TLS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA bundle (PEM).
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key (PEM).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Skip server certificate checks.
    pub insecure: bool,
    /// Name to check the server certificate against.
    pub server_name: Option<String>,
    /// A client certificate that may be replaced while the client runs (a kubelet's rotated
    /// certificate); used instead of `identity` when set.
    pub rotating: Option<crate::tls::RotatingIdentity>,
}

/// Everything a [`crate::Client`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the API server.
    pub cluster_url: http::Uri,
    /// Namespace for `Api::default_namespaced`.
    pub default_namespace: String,
    /// Credentials.
    pub auth: Auth,
    /// TLS settings.
    pub tls: Tls,
    /// Client-side rate limit: requests per second (none if `None`; client-go tools use 5).
    pub qps: Option<u32>,
    /// Requests allowed at once above the rate (client-go tools use 10).
    pub burst: u32,
    /// Retries of 429 and unavailable answers (0 to turn retrying off).
    pub max_retries: u32,
}

fn decode_b64(what: &str, data: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| Error::Config(format!("{what}: invalid base64: {e}")))
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
}

impl Config {
    /// A config for `url` with no credentials and namespace `default`.
    pub fn new(url: http::Uri) -> Self {
        Config {
            cluster_url: url,
            default_namespace: "default".into(),
            auth: Auth::None,
            tls: Tls::default(),
            qps: None,
            burst: 10,
            max_retries: 10,
        }
    }

    /// The config a kubeconfig selects.
    pub fn from_kubeconfig(k: &Kubeconfig, options: &KubeconfigOptions) -> Result<Self> {
        let context_name = options
            .context
            .clone()
            .or_else(|| k.current_context.clone())
            .filter(|c| !c.is_empty());
        let context = match &context_name {
            Some(name) => k
                .contexts
                .iter()
                .find(|c| &c.name == name)
                .map(|c| c.context.clone())
                .ok_or_else(|| {
                    Error::Config(format!("context {name:?} is not in the kubeconfig"))
                })?,
            None if options.cluster.is_some() => Context::default(),
            None => {
                return Err(Error::Config(
                    "the kubeconfig has no current context".into(),
                ))
            }
        };
        let cluster_name = options.cluster.clone().unwrap_or(context.cluster.clone());
        let cluster = k
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .map(|c| c.cluster.clone())
            .ok_or_else(|| {
                Error::Config(format!("cluster {cluster_name:?} is not in the kubeconfig"))
            })?;
        let user_name = options.user.clone().unwrap_or(context.user.clone());
        let user = k
            .users
            .iter()
            .find(|u| u.name == user_name)
            .map(|u| u.user.clone())
            .unwrap_or_default();
        let cluster_url: http::Uri = cluster.server.parse().map_err(|e| {
            Error::Config(format!(
                "cluster {cluster_name:?}: server {:?}: {e}",
                cluster.server
            ))
        })?;
        let ca = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(d), _) => Some(decode_b64("certificate-authority-data", d)?),
            (None, Some(p)) => Some(read_file("certificate-authority", p)?),
            _ => None,
        };
        let cert = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(d), _) => Some(decode_b64("client-certificate-data", d)?),
            (None, Some(p)) => Some(read_file("client-certificate", p)?),
            _ => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(d), _) => Some(decode_b64("client-key-data", d)?),
            (None, Some(p)) => Some(read_file("client-key", p)?),
            _ => None,
        };
        let auth = if let Some(t) = user.token.filter(|t| !t.is_empty()) {
            Auth::Bearer(t)
        } else if let Some(f) = user.token_file {
            Auth::TokenFile(f)
        } else if let Some(exec) = user.exec {
            Auth::Exec(exec)
        } else if let (Some(u), Some(p)) = (user.username, user.password) {
            Auth::Basic {
                username: u,
                password: p,
            }
        } else {
            Auth::None
        };
        Ok(Config {
            cluster_url,
            default_namespace: context
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            auth,
            tls: Tls {
                ca,
                identity: cert.zip(key),
                insecure: cluster.insecure_skip_tls_verify,
                server_name: cluster.tls_server_name,
                rotating: None,
            },
            ..Config::new(http::Uri::default())
        })
    }

    /// The in-cluster config of a pod: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account
    /// token (as a reloaded token file), CA and namespace under [`SERVICE_ACCOUNT_DIR`].
    pub fn incluster() -> Result<Self> {
        Self::incluster_from(Path::new(SERVICE_ACCOUNT_DIR), |k| std::env::var(k).ok())
    }

    /// [`Config::incluster`] with another credentials directory and environment (for tests).
    pub fn incluster_from(dir: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let host = env("KUBERNETES_SERVICE_HOST")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::Config("not in a cluster: KUBERNETES_SERVICE_HOST is unset".into())
            })?;
        let port = env("KUBERNETES_SERVICE_PORT")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                Error::Config("not in a cluster: KUBERNETES_SERVICE_PORT is unset".into())
            })?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let url: http::Uri = format!("https://{host}:{port}")
            .parse()
            .map_err(|e| Error::Config(format!("in-cluster server address: {e}")))?;
        let token = dir.join("token");
        if !token.exists() {
            return Err(Error::Config(format!(
                "not in a cluster: no service account token at {}",
                token.display()
            )));
        }
        let ca = read_file("service account CA", &dir.join("ca.crt"))?;
        let namespace = std::fs::read_to_string(dir.join("namespace"))
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        Ok(Config {
            cluster_url: url,
            default_namespace: namespace,
            auth: Auth::TokenFile(token),
            tls: Tls {
                ca: Some(ca),
                ..Tls::default()
            },
            ..Config::new(http::Uri::default())
        })
    }

    /// The config a client-go tool would use: the default kubeconfig if there is one, else
    /// the in-cluster config.
    pub fn infer() -> Result<Self> {
        match Kubeconfig::load_default() {
            Ok(k) => Self::from_kubeconfig(&k, &KubeconfigOptions::default()),
            Err(kube_err) => Self::incluster()
                .map_err(|in_err| Error::Config(format!("no configuration: {kube_err}; {in_err}"))),
        }
    }
}

/// Named lookup helper for tests and tools: the names of the contexts in a kubeconfig.
pub fn context_names(k: &Kubeconfig) -> BTreeMap<String, String> {
    k.contexts
        .iter()
        .map(|c| (c.name.clone(), c.context.cluster.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: one
  cluster: {server: 'http://127.0.0.1:1', certificate-authority: ca.pem}
contexts:
- name: a
  context: {cluster: one, user: alice, namespace: team-a}
- name: shared
  context: {cluster: one, user: alice}
users:
- name: alice
  user: {token: secret}
";
    const B: &str = "
current-context: b
clusters:
- name: two
  cluster: {server: 'http://127.0.0.1:2'}
contexts:
- name: b
  context: {cluster: two, user: bob}
- name: shared
  context: {cluster: two, user: bob}
users:
- name: bob
  user: {tokenFile: token}
";

    #[test]
    fn first_file_wins_and_contexts_select() {
        let dir = Path::new("/etc/kube");
        let a = Kubeconfig::parse(A.as_bytes(), Some(dir)).unwrap();
        let b = Kubeconfig::parse(B.as_bytes(), Some(Path::new("/other"))).unwrap();
        assert_eq!(
            a.clusters[0].cluster.certificate_authority.as_deref(),
            Some(Path::new("/etc/kube/ca.pem"))
        );
        let merged = a.merge(b);
        assert_eq!(merged.current_context.as_deref(), Some("a"));
        assert_eq!(context_names(&merged)["shared"], "one");
        assert_eq!(merged.clusters.len(), 2);

        let mut no_ca = merged.clone();
        no_ca.clusters[0].cluster.certificate_authority = None;
        let c = Config::from_kubeconfig(&no_ca, &KubeconfigOptions::default()).unwrap();
        assert_eq!(c.cluster_url, "http://127.0.0.1:1/");
        assert_eq!(c.default_namespace, "team-a");
        assert_eq!(c.auth, Auth::Bearer("secret".into()));
        let c = Config::from_kubeconfig(
            &no_ca,
            &KubeconfigOptions {
                context: Some("b".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.default_namespace, "default");
        assert_eq!(c.auth, Auth::TokenFile("/other/token".into()));
        let err = Config::from_kubeconfig(
            &no_ca,
            &KubeconfigOptions {
                context: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
        // A missing CA file is a clear error.
        let err = Config::from_kubeconfig(&merged, &KubeconfigOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/etc/kube/ca.pem"), "{err}");
    }

    #[test]
    fn in_cluster_reads_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        std::fs::write(dir.path().join("ca.crt"), "pem").unwrap();
        std::fs::write(dir.path().join("namespace"), "kube-system\n").unwrap();
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
            _ => None,
        };
        let c = Config::incluster_from(dir.path(), env).unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://10.96.0.1:443/");
        assert_eq!(c.default_namespace, "kube-system");
        assert_eq!(c.auth, Auth::TokenFile(dir.path().join("token")));
        assert!(Config::incluster_from(dir.path(), |_| None).is_err());
    }
}
