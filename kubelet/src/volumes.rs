//! Pod volumes on the node, under `<root>/<pod uid>/volumes/<plugin>/<name>` as upstream lays
//! them out, and the bind mounts that put them into containers:
//!
//! - `emptyDir`: a directory, or with `medium: Memory` a tmpfs (sized by `sizeLimit`);
//! - `hostPath`: the node's path, checked or created as its `type` says;
//! - `configMap`, `secret`, `downwardAPI` and `projected` (those three plus service-account
//!   tokens): files written atomically, as upstream's atomic writer does — the payload goes
//!   into a fresh timestamped directory, a `..data` symlink is swapped to it in one rename,
//!   and each visible name is a symlink through `..data`; so a container sees either the old
//!   or the new contents, never a mix, and a changed configMap reaches running pods;
//! - `persistentVolumeClaim`: the bound PersistentVolume's `hostPath` or `local` path.
//!
//! Environment from configMaps, secrets and resources (`configMapKeyRef`, `secretKeyRef`,
//! `resourceFieldRef`, `envFrom`) reads through the same lookups.

use crate::{Error, Result};
use base64::Engine;
use bosun_api_types::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret};
use bosun_api_types::Quantity;
use bosun_client::{Api, Client};
use bosun_cri::v1::Mount;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

/// The relative path of each file of a volume, with its contents and mode.
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn vol(what: impl std::fmt::Display) -> Error {
    Error::Volume(what.to_string())
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Volume(format!("{}: {e}", path.display()))
}

/// Whether `p` is a relative path that stays inside its directory.
fn contained(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.starts_with("..")
}

/// Sets up and tears down the volumes of the node's pods.
pub struct VolumeManager {
    client: Client,
    root: Option<PathBuf>,
    /// Service-account tokens by (pod uid, audience, lifetime): the token, when it was issued
    /// and for how long. Refreshed after 80 % of the lifetime (or 24 h), as upstream's kubelet.
    tokens: std::sync::Mutex<HashMap<TokenKey, (String, std::time::Instant)>>,
}

/// A pod's uid, a token's audience and its requested lifetime in seconds.
type TokenKey = (String, String, i64);

impl VolumeManager {
    /// Volumes under `root` (`/var/lib/bosun/pods`), objects read through `client`. Without
    /// a root no volume is set up (environment lookups still work): a simulated node's pods
    /// have no files.
    pub fn new(client: Client, root: Option<PathBuf>) -> Self {
        VolumeManager {
            client,
            root,
            tokens: std::sync::Mutex::default(),
        }
    }

    /// Whether volumes are set up.
    pub fn enabled(&self) -> bool {
        self.root.is_some()
    }

    /// The pod's directory.
    pub fn pod_dir(&self, uid: &str) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(uid))
    }

    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<Value>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(o) => Ok(o.and_then(|o| serde_json::to_value(o).ok())),
            Err(e) => Err(Error::Api(format!("configmap {ns}/{name}: {e}"))),
        }
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Value>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(o) => Ok(o.and_then(|o| serde_json::to_value(o).ok())),
            Err(e) => Err(Error::Api(format!("secret {ns}/{name}: {e}"))),
        }
    }

    /// A configMap's or secret's keys and their bytes (`None`: it does not exist).
    async fn keys(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let mut out = BTreeMap::new();
        let b64 = base64::engine::general_purpose::STANDARD;
        match kind {
            "configMap" => {
                let Some(cm) = self.config_map(ns, name).await? else {
                    return Ok(None);
                };
                for (k, v) in cm["data"].as_object().into_iter().flatten() {
                    out.insert(k.clone(), s(v).into_bytes());
                }
                for (k, v) in cm["binaryData"].as_object().into_iter().flatten() {
                    out.insert(k.clone(), b64.decode(s(v)).map_err(vol)?);
                }
            }
            _ => {
                let Some(sec) = self.secret(ns, name).await? else {
                    return Ok(None);
                };
                for (k, v) in sec["data"].as_object().into_iter().flatten() {
                    out.insert(k.clone(), b64.decode(s(v)).map_err(vol)?);
                }
                for (k, v) in sec["stringData"].as_object().into_iter().flatten() {
                    out.insert(k.clone(), s(v).into_bytes());
                }
            }
        }
        Ok(Some(out))
    }

    /// The files of a configMap or secret volume source (`items` or every key).
    async fn object_payload(
        &self,
        ns: &str,
        kind: &str,
        src: &Value,
        default_mode: u32,
        out: &mut Payload,
        tolerate_missing: bool,
    ) -> Result<()> {
        let name = if kind == "configMap" {
            s(&src["name"])
        } else {
            src["secretName"]
                .as_str()
                .map_or_else(|| s(&src["name"]), str::to_string)
        };
        let optional = src["optional"].as_bool().unwrap_or(false);
        let what = if kind == "configMap" {
            "configmap"
        } else {
            "secret"
        };
        let Some(keys) = self.keys(ns, kind, &name).await? else {
            if optional || tolerate_missing {
                return Ok(());
            }
            return Err(vol(format!("{what} \"{name}\" not found")));
        };
        let mode = src["defaultMode"]
            .as_u64()
            .map_or(default_mode, |m| m as u32);
        match src["items"].as_array() {
            Some(items) => {
                for it in items {
                    let (key, path) = (s(&it["key"]), s(&it["path"]));
                    if !contained(&path) {
                        return Err(vol(format!("invalid path {path:?} for key {key:?}")));
                    }
                    let Some(data) = keys.get(&key) else {
                        if optional {
                            continue;
                        }
                        return Err(vol(format!(
                            "configuration key {key:?} not found in {what} \"{name}\""
                        )));
                    };
                    let m = it["mode"].as_u64().map_or(mode, |m| m as u32);
                    out.insert(path, (data.clone(), m));
                }
            }
            None => {
                for (k, data) in keys {
                    if contained(&k) {
                        out.insert(k, (data, mode));
                    }
                }
            }
        }
        Ok(())
    }

    /// The payload of a volume that is written as files, or `None` for other kinds.
    async fn payload(&self, pod: &Value, v: &Value) -> Result<Option<Payload>> {
        let ns = s(&pod["metadata"]["namespace"]);
        let mut out = Payload::new();
        if v["configMap"].is_object() {
            self.object_payload(&ns, "configMap", &v["configMap"], 0o644, &mut out, false)
                .await?;
        } else if v["secret"].is_object() {
            self.object_payload(&ns, "secret", &v["secret"], 0o644, &mut out, false)
                .await?;
        } else if v["downwardAPI"].is_object() {
            let mode = v["downwardAPI"]["defaultMode"]
                .as_u64()
                .map_or(0o644, |m| m as u32);
            downward_items(pod, &v["downwardAPI"]["items"], mode, &mut out)?;
        } else if v["projected"].is_object() {
            let p = &v["projected"];
            let mode = p["defaultMode"].as_u64().map_or(0o644, |m| m as u32);
            // The token volume every pod gets: until the API server issues tokens and
            // publishes its CA, what it cannot supply is left out rather than failing the pod.
            let lenient = s(&v["name"]).starts_with("kube-api-access-");
            for src in p["sources"].as_array().into_iter().flatten() {
                if src["configMap"].is_object() {
                    self.object_payload(
                        &ns,
                        "configMap",
                        &src["configMap"],
                        mode,
                        &mut out,
                        lenient,
                    )
                    .await?;
                } else if src["secret"].is_object() {
                    self.object_payload(&ns, "secret", &src["secret"], mode, &mut out, lenient)
                        .await?;
                } else if src["downwardAPI"].is_object() {
                    downward_items(pod, &src["downwardAPI"]["items"], mode, &mut out)?;
                } else if src["serviceAccountToken"].is_object() {
                    match self.token(pod, &src["serviceAccountToken"]).await {
                        Ok(t) => {
                            let path = s(&src["serviceAccountToken"]["path"]);
                            out.insert(path, (t.into_bytes(), mode));
                        }
                        Err(e) if lenient => {
                            tracing::debug!(error = %e, "no service-account token for the pod yet")
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        } else {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// A bound service-account token for the pod: the one issued before while it is fresh,
    /// else a new one (TokenRequest).
    async fn token(&self, pod: &Value, src: &Value) -> Result<String> {
        let seconds = src["expirationSeconds"].as_i64().unwrap_or(3607);
        let key = (s(&pod["metadata"]["uid"]), s(&src["audience"]), seconds);
        let refresh_after = std::time::Duration::from_secs(
            u64::try_from(seconds.saturating_mul(8) / 10)
                .unwrap_or(0)
                .min(24 * 3600),
        );
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            // Forget tokens no pass has asked for in a long time (pods gone).
            tokens.retain(|_, (_, at)| at.elapsed() < std::time::Duration::from_secs(48 * 3600));
            if let Some((t, at)) = tokens.get(&key) {
                if at.elapsed() < refresh_after {
                    return Ok(t.clone());
                }
            }
        }
        let token = self.request_token(pod, src).await?;
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (token.clone(), std::time::Instant::now()));
        Ok(token)
    }

    /// A new bound service-account token for the pod (TokenRequest).
    async fn request_token(&self, pod: &Value, src: &Value) -> Result<String> {
        let ns = s(&pod["metadata"]["namespace"]);
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let mut spec = json!({
            "expirationSeconds": src["expirationSeconds"].as_i64().unwrap_or(3607),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
        });
        if let Some(aud) = src["audience"].as_str().filter(|a| !a.is_empty()) {
            spec["audiences"] = json!([aud]);
        }
        let body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
        let req = http::Request::post(path.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .map_err(|e| Error::Api(e.to_string()))?;
        let resp: Value = self
            .client
            .request(req)
            .await
            .map_err(|e| Error::Api(format!("token for serviceaccount {ns}/{sa}: {e}")))?;
        resp["status"]["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Api("the TokenRequest answer has no token".into()))
    }

    /// Sets up (or refreshes) every volume of `pod`; the host path of each by name.
    pub async fn setup(&self, pod: &Value) -> Result<HashMap<String, PathBuf>> {
        let uid = s(&pod["metadata"]["uid"]);
        let ns = s(&pod["metadata"]["namespace"]);
        let mut paths = HashMap::new();
        let Some(dir) = self.pod_dir(&uid).map(|d| d.join("volumes")) else {
            return Ok(paths);
        };
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = s(&v["name"]);
            let path = if let Some(payload) = self.payload(pod, v).await? {
                let plugin = if v["configMap"].is_object() {
                    "kubernetes.io~configmap"
                } else if v["secret"].is_object() {
                    "kubernetes.io~secret"
                } else if v["downwardAPI"].is_object() {
                    "kubernetes.io~downward-api"
                } else {
                    "kubernetes.io~projected"
                };
                let target = dir.join(plugin).join(&name);
                // Secrets never touch the disk: a tmpfs holds them.
                let memory =
                    plugin != "kubernetes.io~configmap" && plugin != "kubernetes.io~downward-api";
                prepare_dir(&target, memory.then_some(None))?;
                write_atomically(&target, &payload)?;
                target
            } else if v["emptyDir"].is_object() {
                let target = dir.join("kubernetes.io~empty-dir").join(&name);
                let memory = v["emptyDir"]["medium"].as_str() == Some("Memory");
                let size = v["emptyDir"]["sizeLimit"]
                    .as_str()
                    .and_then(|q| Quantity::parse(q).ok())
                    .map(|q| q.value());
                prepare_dir(&target, memory.then_some(size))?;
                target
            } else if v["hostPath"].is_object() {
                host_path(&v["hostPath"])?
            } else if v["persistentVolumeClaim"].is_object() {
                self.claim_path(&ns, &s(&v["persistentVolumeClaim"]["claimName"]))
                    .await?
            } else {
                return Err(vol(format!(
                    "volume {name:?}: this volume type is not supported"
                )));
            };
            paths.insert(name, path);
        }
        Ok(paths)
    }

    /// The node path of a claim's bound volume (a `hostPath` or `local` PersistentVolume).
    async fn claim_path(&self, ns: &str, claim: &str) -> Result<PathBuf> {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pvc = pvcs
            .get_opt(claim)
            .await
            .map_err(|e| Error::Api(format!("persistentvolumeclaim {ns}/{claim}: {e}")))?
            .ok_or_else(|| vol(format!("persistentvolumeclaim \"{claim}\" not found")))?;
        let pvc = serde_json::to_value(pvc).map_err(vol)?;
        let pv_name = s(&pvc["spec"]["volumeName"]);
        if pv_name.is_empty() || pvc["status"]["phase"] != "Bound" {
            return Err(vol(format!(
                "persistentvolumeclaim \"{claim}\" is not bound"
            )));
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs
            .get_opt(&pv_name)
            .await
            .map_err(|e| Error::Api(format!("persistentvolume {pv_name}: {e}")))?
            .ok_or_else(|| vol(format!("persistentvolume \"{pv_name}\" not found")))?;
        let pv = serde_json::to_value(pv).map_err(vol)?;
        if let Some(p) = pv["spec"]["hostPath"]["path"].as_str() {
            host_path(
                &json!({"path": p, "type": pv["spec"]["hostPath"]["type"].as_str().unwrap_or("DirectoryOrCreate")}),
            )
        } else if let Some(p) = pv["spec"]["local"]["path"].as_str() {
            let p = PathBuf::from(p);
            if !p.exists() {
                return Err(vol(format!(
                    "local volume path {} does not exist",
                    p.display()
                )));
            }
            Ok(p)
        } else {
            Err(vol(format!(
                "persistentvolume \"{pv_name}\" is neither hostPath nor local; this node cannot mount it"
            )))
        }
    }

    /// Removes a pod's volumes (unmounting its tmpfs ones).
    pub fn teardown(&self, uid: &str) -> Result<()> {
        let Some(dir) = self.pod_dir(uid).filter(|d| d.exists()) else {
            return Ok(());
        };
        for v in volume_dirs(&dir) {
            let _ = rustix::mount::unmount(&v, rustix::mount::UnmountFlags::DETACH);
        }
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))
    }

    /// Unmounts the tmpfs volumes of every pod (Secrets, tokens, memory-backed emptyDirs),
    /// keeping the pods' directories: what a node that stops leaves behind holds nothing in
    /// memory and no mount. The next start mounts and fills them again. Returns how many
    /// were unmounted.
    pub fn unmount_all(&self) -> usize {
        let Some(root) = &self.root else {
            return 0;
        };
        let mut n = 0;
        for pod in std::fs::read_dir(root).into_iter().flatten().flatten() {
            for v in volume_dirs(&pod.path()) {
                if is_mount_point(&v) {
                    match rustix::mount::unmount(&v, rustix::mount::UnmountFlags::DETACH) {
                        Ok(()) => n += 1,
                        Err(e) => {
                            tracing::warn!(volume = %v.display(), error = %e, "unmounting a volume");
                        }
                    }
                }
            }
        }
        n
    }

    /// Removes the directories of pods other than `live` (pods that were deleted while the
    /// agent was down).
    pub fn teardown_others(&self, live: &[String]) {
        let Some(root) = &self.root else {
            return;
        };
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid) {
                if let Err(e) = self.teardown(&uid) {
                    tracing::warn!(pod = %uid, error = %e, "removing an old pod's volumes");
                }
            }
        }
    }

    /// The environment a container's `envFrom` and `env` references give (literal values
    /// and field references are the caller's; they are passed through in order).
    pub async fn env_source(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        match self.keys(ns, kind, name).await? {
            Some(k) => Ok(k),
            None if optional => Ok(BTreeMap::new()),
            None => Err(Error::Config(format!(
                "{} \"{name}\" not found",
                if kind == "configMap" {
                    "configmap"
                } else {
                    "secret"
                }
            ))),
        }
    }
}

/// The files of a downwardAPI source.
fn downward_items(pod: &Value, items: &Value, mode: u32, out: &mut Payload) -> Result<()> {
    for it in items.as_array().into_iter().flatten() {
        let path = s(&it["path"]);
        if !contained(&path) {
            return Err(vol(format!("invalid downwardAPI path {path:?}")));
        }
        let m = it["mode"].as_u64().map_or(mode, |m| m as u32);
        let value = if let Some(f) = it["fieldRef"]["fieldPath"].as_str() {
            match f {
                // Whole maps, one `key="value"` per line, sorted.
                "metadata.labels" | "metadata.annotations" => {
                    let field = f.trim_start_matches("metadata.");
                    let map = pod["metadata"][field]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    let mut lines: Vec<String> = map
                        .iter()
                        .map(|(k, v)| format!("{k}={}", json!(s(v))))
                        .collect();
                    lines.sort();
                    lines.join("\n")
                }
                _ => crate::pods::field_ref(
                    pod,
                    f,
                    pod["status"]["podIP"].as_str().unwrap_or_default(),
                    pod["status"]["hostIP"].as_str().unwrap_or_default(),
                )
                .ok_or_else(|| vol(format!("unsupported fieldPath {f:?}")))?,
            }
        } else if it["resourceFieldRef"].is_object() {
            resource_field(pod, &it["resourceFieldRef"], None)?
        } else {
            continue;
        };
        out.insert(path, (value.into_bytes(), m));
    }
    Ok(())
}

/// A `resourceFieldRef`'s value: the container's request or limit (a limit not set is the
/// node's allocatable, `allocatable` as (CPU, memory)), divided by `divisor` rounding up.
pub fn resource_field(pod: &Value, r: &Value, allocatable: Option<(&str, &str)>) -> Result<String> {
    let container = s(&r["containerName"]);
    let c = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| container.is_empty() || c["name"] == container.as_str())
        .ok_or_else(|| vol(format!("container {container:?} not found")))?;
    let resource = s(&r["resource"]);
    let (kind, res) = resource
        .split_once('.')
        .ok_or_else(|| vol(format!("unsupported resource {resource:?}")))?;
    let value = c["resources"][kind][res].as_str().map(str::to_string);
    let value = match (value, kind, res) {
        (Some(v), _, _) => v,
        (None, "limits", "cpu") => allocatable.map_or("1", |a| a.0).to_string(),
        (None, "limits", "memory") => allocatable.map_or("0", |a| a.1).to_string(),
        (None, "requests", _) => c["resources"]["limits"][res]
            .as_str()
            .unwrap_or("0")
            .to_string(),
        (None, _, _) => "0".to_string(),
    };
    let q = Quantity::parse(&value).map_err(vol)?;
    let divisor = r["divisor"]
        .as_str()
        .map(Quantity::parse)
        .transpose()
        .map_err(vol)?
        .filter(|d| !d.is_zero())
        .unwrap_or_else(|| Quantity::from_int(1, Default::default()));
    let (n, d) = (q.as_nanos(), divisor.as_nanos());
    let v = (n + d - 1).div_euclid(d);
    Ok(v.to_string())
}

/// The directories of a pod's volumes (`POD_DIR/volumes/PLUGIN/NAME`).
fn volume_dirs(pod_dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(pod_dir.join("volumes"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|plugin| {
            std::fs::read_dir(plugin.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|v| v.path())
        })
}

/// Makes `dir`; `Some(size)` mounts a tmpfs on it first (once).
fn prepare_dir(dir: &Path, tmpfs: Option<Option<i64>>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let Some(size) = tmpfs else {
        return Ok(());
    };
    if is_mount_point(dir) {
        return Ok(());
    }
    let data = match size {
        Some(n) if n > 0 => format!("size={n},mode=0777"),
        _ => "mode=0777".to_string(),
    };
    let data = std::ffi::CString::new(data).map_err(vol)?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::NODEV | rustix::mount::MountFlags::NOSUID,
        Some(data.as_c_str()),
    )
    .map_err(|e| vol(format!("mounting a tmpfs on {}: {e}", dir.display())))
}

fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// A hostPath volume's path, checked or created per its `type`.
fn host_path(v: &Value) -> Result<PathBuf> {
    let path = PathBuf::from(s(&v["path"]));
    let ty = v["type"].as_str().unwrap_or("");
    let meta = std::fs::metadata(&path);
    let fail = |what: &str| {
        Err(vol(format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        )))
    };
    use std::os::unix::fs::FileTypeExt;
    match ty {
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
                set_mode(&path, 0o755)?;
            } else if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
                return fail("a directory");
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                std::fs::File::create(&path).map_err(|e| io(&path, e))?;
                set_mode(&path, 0o644)?;
            } else if !meta.as_ref().is_ok_and(|m| m.is_file()) {
                return fail("a file");
            }
        }
        "Directory" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => return fail("a directory"),
        "File" if !meta.as_ref().is_ok_and(|m| m.is_file()) => return fail("a file"),
        "Socket" if !meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => {
            return fail("a socket")
        }
        "CharDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => {
            return fail("a character device")
        }
        "BlockDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => {
            return fail("a block device")
        }
        "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {}
        other => return Err(vol(format!("unknown hostPath type {other:?}"))),
    }
    Ok(path)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(path, e))
}

/// What `dir/..data` holds now.
fn current_payload(dir: &Path) -> Option<Payload> {
    let data = dir.join("..data");
    std::fs::symlink_metadata(&data).ok()?;
    let mut out = Payload::new();
    fn walk(base: &Path, rel: &Path, out: &mut Payload) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(base.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let m = e.metadata()?;
            if m.is_dir() {
                walk(base, &r, out)?;
            } else {
                let bytes = std::fs::read(base.join(&r))?;
                out.insert(
                    r.to_string_lossy().into_owned(),
                    (bytes, m.permissions().mode() & 0o7777),
                );
            }
        }
        Ok(())
    }
    walk(&data, Path::new(""), &mut out).ok()?;
    Some(out)
}

/// Writes `payload` into `dir` so that readers see all of the old or all of the new contents
/// (upstream's atomic writer layout); does nothing when the contents are unchanged.
pub fn write_atomically(dir: &Path, payload: &Payload) -> Result<()> {
    if current_payload(dir).as_ref() == Some(payload) {
        return Ok(());
    }
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh).map_err(|e| io(&fresh, e))?;
    for (rel, (bytes, mode)) in payload {
        let p = fresh.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
        set_mode(&p, *mode)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    // The switch: a new symlink renamed over `..data`.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(|e| io(dir, e))?;
    // Visible names: one symlink per top-level entry, through `..data`.
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link)
                .map_err(|e| io(&link, e))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || tops.contains(&name) {
            continue;
        }
        let _ = std::fs::remove_file(e.path());
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// The bind mounts of container `c` from its `volumeMounts` (`paths`: each volume's host
/// path). Volumes written by the kubelet are always read-only inside.
pub fn container_mounts(
    pod: &Value,
    c: &Value,
    paths: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = s(&m["name"]);
        let base = paths
            .get(&name)
            .ok_or_else(|| Error::Config(format!("volumeMount {name:?}: no such volume")))?;
        let spec = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name.as_str())
            .cloned()
            .unwrap_or_default();
        let written = ["configMap", "secret", "downwardAPI", "projected"]
            .iter()
            .any(|k| spec[*k].is_object());
        let sub = s(&m["subPath"]);
        let host = if sub.is_empty() {
            base.clone()
        } else {
            if !contained(&sub) {
                return Err(Error::Config(format!("invalid subPath {sub:?}")));
            }
            let p = base.join(&sub);
            if !p.exists() && !written {
                std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
            }
            // A subPath of a written volume is the file itself (it does not see updates,
            // as upstream's does not).
            std::fs::canonicalize(&p).map_err(|e| io(&p, e))?
        };
        out.push(Mount {
            container_path: s(&m["mountPath"]),
            host_path: host.display().to_string(),
            readonly: m["readOnly"].as_bool().unwrap_or(false) || written,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn writes_atomically_and_replaces_contents() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vol");
        std::fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, &payload(&[("a", "1"), ("sub/b", "2")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert!(std::fs::symlink_metadata(dir.join("a"))
            .unwrap()
            .file_type()
            .is_symlink());
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        // Unchanged: nothing rewritten.
        write_atomically(&dir, &payload(&[("a", "1"), ("sub/b", "2")])).unwrap();
        assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), first);
        // Changed: a new data directory, the old one and a dropped key gone.
        write_atomically(&dir, &payload(&[("a", "3")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("sub").exists());
        assert!(!dir.join(&first).exists());
        let entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 3, "{entries:?}"); // a, ..data, ..<stamp>
    }

    #[test]
    fn downward_api_files() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"b": "2", "a": "1"}},
                         "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}]}});
        let mut out = Payload::new();
        downward_items(
            &pod,
            &json!([
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "requests.cpu", "divisor": "1m"}},
            ]),
            0o644,
            &mut out,
        )
        .unwrap();
        assert_eq!(out["labels"].0, b"a=\"1\"\nb=\"2\"");
        assert_eq!(out["name"].0, b"p");
        assert_eq!(out["mem"].0, b"64");
        assert_eq!(out["cpu"].0, b"250");
        assert!(downward_items(
            &pod,
            &json!([{"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}]),
            0o644,
            &mut out
        )
        .is_err());
        // A CPU limit not set is the node's allocatable, rounded up to whole cores.
        let cpu = resource_field(
            &pod,
            &json!({"resource": "limits.cpu"}),
            Some(("1500m", "1Gi")),
        )
        .unwrap();
        assert_eq!(cpu, "2");
    }

    #[test]
    fn host_paths_are_checked_or_created() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("made/here");
        assert_eq!(
            host_path(&json!({"path": dir, "type": "DirectoryOrCreate"})).unwrap(),
            dir
        );
        assert!(dir.is_dir());
        let file = d.path().join("f/file");
        host_path(&json!({"path": file, "type": "FileOrCreate"})).unwrap();
        assert!(file.is_file());
        assert!(host_path(&json!({"path": file, "type": "Directory"})).is_err());
        assert!(host_path(&json!({"path": dir, "type": "File"})).is_err());
        assert!(host_path(&json!({"path": d.path().join("nope"), "type": "Directory"})).is_err());
        assert!(host_path(&json!({"path": dir, "type": "Weird"})).is_err());
        assert!(host_path(&json!({"path": d.path().join("nope")})).is_ok());
    }

    #[test]
    fn mounts_follow_volume_mounts() {
        let pod = json!({"spec": {"volumes": [{"name": "cfg", "configMap": {"name": "x"}}, {"name": "data", "emptyDir": {}}]}});
        let d = tempfile::tempdir().unwrap();
        let paths = HashMap::from([
            ("cfg".to_string(), d.path().join("cfg")),
            ("data".to_string(), d.path().join("data")),
        ]);
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        let c = json!({"volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"},
                                        {"name": "data", "mountPath": "/data", "subPath": "one"}]});
        let m = container_mounts(&pod, &c, &paths).unwrap();
        assert_eq!(m[0].container_path, "/etc/cfg");
        assert!(m[0].readonly, "configMap volumes are read-only");
        assert!(!m[1].readonly);
        assert!(m[1].host_path.ends_with("/data/one"));
        assert!(d.path().join("data/one").is_dir());
        let bad = json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]});
        assert!(container_mounts(&pod, &bad, &paths).is_err());
        let escape =
            json!({"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../.."}]});
        assert!(container_mounts(&pod, &escape, &paths).is_err());
    }
}
