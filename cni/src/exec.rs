//! [`CniNetwork`]: runs plugin binaries per the CNI spec, with ADD results cached on disk.

use crate::config::{parse_version, NetworkConfigList, PluginConf};
use crate::{Attachment, CniResult, Error, NetworkPlugin, Result};
use async_trait::async_trait;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The exec-based network: a configuration list, the directories holding plugin binaries
/// (`CNI_PATH`), and a directory for cached results.
#[derive(Clone, Debug)]
pub struct CniNetwork {
    list: NetworkConfigList,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
}

/// What is cached per attachment after a successful ADD (libcni's `cniCacheV1` layout, plus
/// the namespace path so GC can detach it).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    container_id: String,
    if_name: String,
    network_name: String,
    #[serde(default)]
    netns: PathBuf,
    #[serde(default)]
    cni_args: Vec<(String, String)>,
    #[serde(default)]
    capability_args: Map<String, Value>,
    result: Value,
}

impl CniNetwork {
    /// A network from a parsed configuration list.
    pub fn new(
        list: NetworkConfigList,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        CniNetwork {
            list,
            bin_dirs,
            cache_dir: cache_dir.into(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The network configured first in `conf_dir` (see [`NetworkConfigList::load_dir`]).
    pub fn from_dir(
        conf_dir: impl AsRef<Path>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        Ok(Self::new(
            NetworkConfigList::load_dir(conf_dir.as_ref())?,
            bin_dirs,
            cache_dir,
        ))
    }

    /// How long one plugin invocation may take (default 60 s) before it is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configuration list.
    pub fn config(&self) -> &NetworkConfigList {
        &self.list
    }

    fn version_at_least(&self, v: (u32, u32, u32)) -> bool {
        parse_version(&self.list.cni_version).is_some_and(|have| have >= v)
    }

    fn find(&self, plugin: &str) -> Result<PathBuf> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self.bin_dirs.clone(),
            })
    }

    fn cache_path(&self, att: &Attachment) -> PathBuf {
        self.cache_dir.join("results").join(format!(
            "{}-{}-{}",
            self.list.name, att.container_id, att.ifname
        ))
    }

    /// The stdin configuration for one plugin: its object, with the list's name and version,
    /// the previous result, and `runtimeConfig` for the capabilities it declares.
    fn plugin_conf(&self, p: &PluginConf, prev: Option<&Value>, att: Option<&Attachment>) -> Value {
        let mut conf = p.raw.clone();
        conf.insert("name".into(), Value::String(self.list.name.clone()));
        conf.insert(
            "cniVersion".into(),
            Value::String(self.list.cni_version.clone()),
        );
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        if let Some(att) = att {
            let rc: Map<String, Value> = p
                .capabilities
                .iter()
                .filter_map(|c| Some((c.clone(), att.capability_args.get(c)?.clone())))
                .collect();
            if !rc.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(rc));
            }
        }
        Value::Object(conf)
    }

    /// Runs one plugin; `Ok(None)` when it printed nothing.
    async fn invoke(
        &self,
        p: &PluginConf,
        command: &str,
        att: Option<&Attachment>,
        stdin: &Value,
    ) -> Result<Option<Value>> {
        let bin = self.find(&p.plugin_type)?;
        let path = std::env::join_paths(&self.bin_dirs).map_err(|e| Error::Config {
            path: "CNI_PATH".into(),
            msg: e.to_string(),
        })?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(att) = att {
            let mut args: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            // As container runtimes do: plugins must not fail on arguments meant for others.
            if !args.is_empty() && !att.args.iter().any(|(k, _)| k == "IgnoreUnknown") {
                args.insert(0, "IgnoreUnknown=1".into());
            }
            cmd.env("CNI_CONTAINERID", &att.container_id)
                .env("CNI_NETNS", &att.netns)
                .env("CNI_IFNAME", &att.ifname)
                .env("CNI_ARGS", args.join(";"));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        let input = serde_json::to_vec(stdin).map_err(|e| Error::Protocol {
            plugin: p.plugin_type.clone(),
            command: command.into(),
            msg: e.to_string(),
        })?;
        if let Some(mut w) = child.stdin.take() {
            // A plugin may exit without reading its input; that is its business.
            let _ = w.write_all(&input).await;
        }
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| Error::io(format!("running {}", bin.display()), e))?,
            Err(_) => {
                return Err(Error::Timeout {
                    plugin: p.plugin_type.clone(),
                    command: command.into(),
                })
            }
        };
        tracing::debug!(plugin = %p.plugin_type, command, status = %out.status, "CNI plugin ran");
        if !out.status.success() {
            let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
            let field = |k: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut msg = field("msg");
            if msg.is_empty() {
                msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
            if msg.is_empty() {
                msg = format!("exited with {}", out.status);
            }
            return Err(Error::Plugin {
                plugin: p.plugin_type.clone(),
                command: command.into(),
                code: parsed
                    .as_ref()
                    .and_then(|v| v.get("code"))
                    .and_then(Value::as_u64)
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(999),
                msg,
                details: field("details"),
            });
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| Error::Protocol {
                plugin: p.plugin_type.clone(),
                command: command.into(),
                msg: format!("invalid JSON output: {e}"),
            })
    }

    async fn read_cache(&self, att: &Attachment) -> Option<CacheEntry> {
        let bytes = tokio::fs::read(self.cache_path(att)).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    async fn write_cache(&self, att: &Attachment, result: &Value) -> Result<()> {
        let path = self.cache_path(att);
        let dir = self.cache_dir.join("results");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let entry = CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: att.container_id.clone(),
            if_name: att.ifname.clone(),
            network_name: self.list.name.clone(),
            netns: att.netns.clone(),
            cni_args: att.args.clone(),
            capability_args: att.capability_args.clone(),
            result: result.clone(),
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| Error::io("encoding the result cache", e.into()))?;
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| Error::io(format!("renaming into {}", path.display()), e))
    }

    async fn remove_cache(&self, att: &Attachment) -> Result<()> {
        match tokio::fs::remove_file(self.cache_path(att)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing the result cache", e)),
        }
    }

    async fn del_with(&self, att: &Attachment, prev: Option<&Value>) -> Result<()> {
        for p in self.list.plugins.iter().rev() {
            let conf = self.plugin_conf(p, prev, Some(att));
            self.invoke(p, "DEL", Some(att), &conf).await?;
        }
        self.remove_cache(att).await
    }

    /// The versions of the spec a plugin binary supports (CNI VERSION).
    pub async fn plugin_versions(&self, plugin_type: &str) -> Result<Vec<String>> {
        let p = PluginConf {
            plugin_type: plugin_type.into(),
            capabilities: Vec::new(),
            raw: Map::new(),
        };
        let out = self
            .invoke(
                &p,
                "VERSION",
                None,
                &json!({"cniVersion": self.list.cni_version}),
            )
            .await?;
        Ok(out
            .as_ref()
            .and_then(|v| v.get("supportedVersions"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Detaches every cached attachment that is not in `valid` (by container ID and
    /// interface), then, for spec 1.1 networks, runs the plugins' GC with the valid list so
    /// they release what they still hold (IP leases, rules). Returns the detached IDs.
    pub async fn gc(&self, valid: &[Attachment]) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let dir = self.cache_dir.join("results");
        let prefix = format!("{}-", self.list.name);
        if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with(&prefix) || name.ends_with(".tmp") {
                    continue;
                }
                let Some(entry) = tokio::fs::read(e.path())
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
                else {
                    continue;
                };
                if entry.network_name != self.list.name
                    || valid
                        .iter()
                        .any(|v| v.container_id == entry.container_id && v.ifname == entry.if_name)
                {
                    continue;
                }
                let att = Attachment {
                    container_id: entry.container_id.clone(),
                    netns: entry.netns.clone(),
                    ifname: entry.if_name.clone(),
                    args: entry.cni_args.clone(),
                    capability_args: entry.capability_args.clone(),
                };
                self.del_with(&att, Some(&entry.result)).await?;
                removed.push(entry.container_id);
            }
        }
        if self.version_at_least((1, 1, 0)) && !self.list.disable_gc {
            let list: Vec<Value> = valid
                .iter()
                .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
                .collect();
            for p in &self.list.plugins {
                let mut conf = self.plugin_conf(p, None, None);
                if let Value::Object(m) = &mut conf {
                    m.insert(
                        "cni.dev/valid-attachments".into(),
                        Value::Array(list.clone()),
                    );
                }
                self.invoke(p, "GC", None, &conf).await?;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl NetworkPlugin for CniNetwork {
    fn name(&self) -> &str {
        &self.list.name
    }

    async fn add(&self, att: &Attachment) -> Result<CniResult> {
        let mut prev: Option<Value> = None;
        for p in &self.list.plugins {
            let conf = self.plugin_conf(p, prev.as_ref(), Some(att));
            match self.invoke(p, "ADD", Some(att), &conf).await {
                Ok(Some(r)) => prev = Some(r),
                Ok(None) => {}
                Err(e) => {
                    // Undo what the earlier plugins did, so nothing stays half attached.
                    if let Err(undo) = self.del_with(att, prev.as_ref()).await {
                        tracing::warn!(error = %undo, container = %att.container_id, "cleaning up after a failed CNI ADD");
                    }
                    return Err(e);
                }
            }
        }
        let Some(result) = prev else {
            return Err(Error::Protocol {
                plugin: self
                    .list
                    .plugins
                    .last()
                    .map(|p| p.plugin_type.clone())
                    .unwrap_or_default(),
                command: "ADD".into(),
                msg: "no plugin returned a result".into(),
            });
        };
        let parsed =
            CniResult::from_json(result.to_string().as_bytes()).map_err(|e| Error::Protocol {
                plugin: self.list.name.clone(),
                command: "ADD".into(),
                msg: format!("invalid result: {e}"),
            })?;
        if let Err(e) = self.write_cache(att, &result).await {
            let _ = self.del_with(att, Some(&result)).await;
            return Err(e);
        }
        Ok(parsed)
    }

    async fn del(&self, att: &Attachment) -> Result<()> {
        let cached = self.read_cache(att).await;
        self.del_with(att, cached.as_ref().map(|c| &c.result)).await
    }

    async fn check(&self, att: &Attachment) -> Result<()> {
        if self.list.disable_check || !self.version_at_least((0, 4, 0)) {
            return Ok(());
        }
        let Some(cached) = self.read_cache(att).await else {
            return Err(Error::Protocol {
                plugin: self.list.name.clone(),
                command: "CHECK".into(),
                msg: format!("no cached result for {}", att.container_id),
            });
        };
        for p in &self.list.plugins {
            let conf = self.plugin_conf(p, Some(&cached.result), Some(att));
            self.invoke(p, "CHECK", Some(att), &conf).await?;
        }
        Ok(())
    }

    async fn status(&self) -> Result<()> {
        for p in &self.list.plugins {
            self.find(&p.plugin_type)?;
        }
        if !self.version_at_least((1, 1, 0)) {
            // Plugins before 1.1 have no STATUS: present means ready.
            return Ok(());
        }
        for p in &self.list.plugins {
            let conf = self.plugin_conf(p, None, None);
            self.invoke(p, "STATUS", None, &conf).await?;
        }
        Ok(())
    }

    async fn cached(&self, att: &Attachment) -> Option<CniResult> {
        let c = self.read_cache(att).await?;
        CniResult::from_json(c.result.to_string().as_bytes()).ok()
    }
}
