//! Running the pods bound to this node through the CRI, level-triggered: every pass compares
//! the pods the API server has for the node with the sandboxes the runtime has, and closes
//! the gap, one task per pod (a pod busy with a slow step — a pull, a graceful stop — does
//! not hold up the others):
//!
//! - a new pod gets a sandbox, then its init containers one at a time (each must succeed
//!   before the next starts), then its containers (images pulled per `imagePullPolicy`);
//! - an exited container is restarted as `restartPolicy` says, with crash-loop back-off
//!   ([`Backoff`]); a failed liveness or startup probe ([`Prober`]) gets it killed first;
//! - the pod's status is written back when it changes: phase (upstream's rules), IPs,
//!   conditions, init and regular container statuses with state, last state, restart count,
//!   readiness from the readiness probe, and the QoS class;
//! - a pod being deleted is stopped within its grace period, its sandbox removed and the
//!   object deleted for good; sandboxes whose pod is gone are removed;
//! - static pods from a manifest directory ([`crate::static_pods`]) run beside the API's,
//!   each with a mirror pod in the API server that carries its status;
//! - lifecycle hooks run as upstream runs them: `postStart` right after a container starts
//!   (a failure kills the container, which restarts as its policy says), `preStop` before a
//!   running container is stopped, out of its grace period (at least 2 s are left for the
//!   stop itself).

use crate::backoff::Backoff;
use crate::credentials;
use crate::probe::{run_action, Action, Prober};
use crate::static_pods;
use crate::volumes::{container_mounts, resource_field, VolumeManager};
use crate::{Error, Result};
use bosun_api_types::core::v1::Pod;
use bosun_api_types::Time;
use bosun_client::{Api, Client, DeleteParams, ListParams, Patch, PatchParams};
use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The labels the kubelet puts on sandboxes and containers (upstream's names).
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The pod's name label.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace label.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The container's name label.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Upstream's floor for a container's stop: at least this many seconds between SIGTERM and
/// SIGKILL, whatever the grace period or a preStop hook left.
const MIN_GRACE_SECONDS: i64 = 2;

/// The bound on a postStart hook (upstream has none; a hook that hangs would hold the pod).
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the node's pods.
///
/// ```no_run
/// use bosun_cri::simulated::SimulatedRuntime;
/// use bosun_kubelet::pods::PodWorker;
/// use std::{sync::Arc, time::Duration};
/// # async fn run(client: bosun_client::Client) {
/// let runtime = Arc::new(SimulatedRuntime::new([10, 244, 1]));
/// let worker = Arc::new(
///     PodWorker::new(client, "node-1".into(), "192.0.2.10".into(), runtime, "/var/log/pods".into())
///         .with_pods_dir("/var/lib/bosun/pods".into()),
/// );
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let passes = tokio::spawn(worker.clone().run(Duration::from_secs(1), async { let _ = stopped.await; }));
/// // … later, a node shutting down:
/// let _ = stop.send(());
/// let _ = passes.await;
/// let _ = worker.stop_all(Duration::from_secs(10)).await;
/// # }
/// ```
pub struct PodWorker<R> {
    client: Client,
    pods: Api<Pod>,
    node: String,
    host_ip: String,
    rt: Arc<R>,
    log_root: PathBuf,
    busy: Arc<Mutex<HashSet<String>>>,
    backoff: Mutex<Backoff>,
    prober: Prober,
    volumes: VolumeManager,
    allocatable: Option<(String, String)>,
    static_dir: Option<PathBuf>,
    node_uid: Mutex<Option<String>>,
    cluster_dns: crate::dns::ClusterDns,
}

fn api(what: &str, e: bosun_client::Error) -> Error {
    Error::Api(format!("{what}: {e}"))
}

fn cri(what: &str, e: bosun_cri::Error) -> Error {
    Error::Runtime(format!("{what}: {e}"))
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A CRI time (nanoseconds) as an API time.
fn time_of(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    json!(Time::from_unix(nanos.div_euclid(1_000_000_000), 0))
}

/// A CRI time (nanoseconds) as a system time.
fn system_time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64)
}

/// Holds a key in the busy set until dropped.
struct Claim {
    busy: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.busy).remove(&self.key);
    }
}

/// The instances of one container (by name) among a sandbox's, newest first.
fn instances<'a>(all: &'a [Container], name: &str) -> Vec<&'a Container> {
    let mut v: Vec<&Container> = all
        .iter()
        .filter(|c| c.labels.get(CONTAINER_NAME).map(String::as_str) == Some(name))
        .collect();
    v.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    v
}

fn attempt_of(c: &Container) -> u32 {
    c.metadata.as_ref().map_or(0, |m| m.attempt)
}

/// The attempt number of container `name`'s first instance in a new sandbox: 0 for a new
/// pod; after the pod ran in an earlier sandbox (the node stopped its pods, or the sandbox
/// died), one more than the restarts its status shows, as upstream counts a sandbox change
/// as a restart (and the earlier instance's log file stays).
fn first_attempt(pod: &Value, name: &str) -> u32 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|cs| cs["name"].as_str() == Some(name))
        .filter(|cs| cs["containerID"].as_str().is_some_and(|id| !id.is_empty()))
        .and_then(|cs| cs["restartCount"].as_u64())
        .map_or(0, |n| u32::try_from(n + 1).unwrap_or(u32::MAX))
}

/// Whether an exited container restarts under the pod's `restartPolicy`.
fn restarts(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The pod's QoS class from its containers' requests and limits (upstream's rules).
pub fn qos_class(pod: &Value) -> &'static str {
    let all: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
        .collect();
    let (mut any, mut guaranteed) = (false, true);
    for c in &all {
        let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
        for r in ["cpu", "memory"] {
            let (q, l) = (&req[r], &lim[r]);
            if !q.is_null() || !l.is_null() {
                any = true;
            }
            // Requests default to limits; both must be set and equal.
            if l.is_null() || (!q.is_null() && q != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A container's Linux settings from its resources and security context (the pod's security
/// context under the container's), as upstream's kuberuntime computes them: CPU shares from
/// the request (the limit when no request, 2 for neither), a CFS quota over a 100 ms period
/// from the limit (at least 1 ms), the memory limit; user, group, supplemental groups,
/// read-only root, privileged, capabilities, and no_new_privs when privilege escalation is
/// refused.
pub fn linux_config(pod: &Value, c: &Value) -> LinuxContainerConfig {
    use bosun_api_types::Quantity;
    let q = |v: &Value| v.as_str().and_then(|s| Quantity::parse(s).ok());
    let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
    let cpu_req = q(&req["cpu"])
        .or_else(|| q(&lim["cpu"]))
        .map(|x| x.milli_value());
    let cpu_lim = q(&lim["cpu"]).map(|x| x.milli_value());
    let mut r = LinuxContainerResources {
        cpu_shares: cpu_req.map_or(2, |m| (m * 1024 / 1000).max(2)),
        ..Default::default()
    };
    if let Some(m) = cpu_lim {
        r.cpu_period = 100_000;
        r.cpu_quota = (m * 100_000 / 1000).max(1000);
    }
    if let Some(mem) = q(&lim["memory"]) {
        r.memory_limit_in_bytes = mem.value();
    }
    let (psc, csc) = (&pod["spec"]["securityContext"], &c["securityContext"]);
    let pick = |k: &str| -> Option<&Value> {
        Some(&csc[k])
            .filter(|v| !v.is_null())
            .or_else(|| Some(&psc[k]).filter(|v| !v.is_null()))
    };
    let id = |k: &str| {
        pick(k)
            .and_then(Value::as_i64)
            .map(|value| Int64Value { value })
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let caps = &csc["capabilities"];
    let sc = LinuxContainerSecurityContext {
        run_as_user: id("runAsUser"),
        run_as_group: id("runAsGroup"),
        readonly_rootfs: csc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        privileged: csc["privileged"].as_bool().unwrap_or(false),
        supplemental_groups: psc["supplementalGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .chain(psc["fsGroup"].as_i64())
            .collect(),
        capabilities: (!caps.is_null()).then(|| Capability {
            add_capabilities: names(&caps["add"]),
            drop_capabilities: names(&caps["drop"]),
            ..Default::default()
        }),
        no_new_privs: csc["allowPrivilegeEscalation"].as_bool() == Some(false),
        ..Default::default()
    };
    LinuxContainerConfig {
        resources: Some(r),
        security_context: Some(sc),
    }
}

/// What one pass decided for a container that is not running.
enum Waiting {
    /// Crash-loop back-off, with upstream's message.
    BackOff(String),
}

impl<R: RuntimeService + ImageService + 'static> PodWorker<R> {
    /// A worker for `node` (whose address is `host_ip`), with container logs under
    /// `log_root` (`/var/log/pods`).
    pub fn new(
        client: Client,
        node: String,
        host_ip: String,
        rt: Arc<R>,
        log_root: PathBuf,
    ) -> Self {
        PodWorker {
            pods: Api::all(client.clone()),
            node,
            host_ip,
            prober: Prober::new(rt.clone()),
            rt,
            log_root,
            busy: Arc::new(Mutex::new(HashSet::new())),
            volumes: VolumeManager::new(client.clone(), None),
            client,
            allocatable: None,
            static_dir: None,
            node_uid: Mutex::new(None),
            cluster_dns: Default::default(),
            backoff: Mutex::new(Backoff::new(
                Duration::from_secs(10),
                Duration::from_secs(300),
            )),
        }
    }

    /// Crash-loop back-off from `initial` doubling to `max` (upstream: 10 s and 5 min).
    pub fn with_backoff(self, initial: Duration, max: Duration) -> Self {
        PodWorker {
            backoff: Mutex::new(Backoff::new(initial, max)),
            ..self
        }
    }

    /// Keep pod volumes under `dir` (`/var/lib/bosun/pods`); without it volumes are not set
    /// up (a simulated node's pods have no files).
    pub fn with_pods_dir(self, dir: PathBuf) -> Self {
        PodWorker {
            volumes: VolumeManager::new(self.client.clone(), Some(dir)),
            ..self
        }
    }

    /// The cluster DNS pods with `dnsPolicy: ClusterFirst` use.
    pub fn with_cluster_dns(self, cluster_dns: crate::dns::ClusterDns) -> Self {
        PodWorker {
            cluster_dns,
            ..self
        }
    }

    /// Runs the static pods whose manifests are in `dir` (and keeps their mirror pods).
    pub fn with_static_pods(self, dir: PathBuf) -> Self {
        PodWorker {
            static_dir: Some(dir),
            ..self
        }
    }

    /// The node's allocatable CPU and memory (quantities), which `resourceFieldRef`s of
    /// unset limits report.
    pub fn with_allocatable(self, cpu: String, memory: String) -> Self {
        PodWorker {
            allocatable: Some((cpu, memory)),
            ..self
        }
    }

    fn claim(&self, key: &str) -> Option<Claim> {
        lock(&self.busy).insert(key.to_string()).then(|| Claim {
            busy: self.busy.clone(),
            key: key.to_string(),
        })
    }

    /// One pass over the node's pods: each pod not already being worked on gets a task;
    /// returns when this pass's tasks are done.
    pub async fn sync(self: &Arc<Self>) -> Result<()> {
        let mut tasks = self.pass().await?;
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Starts one pass: the tasks it spawned.
    async fn pass(self: &Arc<Self>) -> Result<tokio::task::JoinSet<()>> {
        let list = self
            .pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(|e| api("listing the node's pods", e))?;
        // Listed after the pods: a sandbox made for a pod of this list is never an orphan.
        let sandboxes = self.all_sandboxes().await?;
        let mut tasks = tokio::task::JoinSet::new();
        let mut uids = Vec::new();
        let mut pods = Vec::new();
        for pod in list.items {
            pods.push(serde_json::to_value(&pod).map_err(|e| Error::Api(e.to_string()))?);
        }
        // Mirror pods are not run: their static pods are, from the manifests.
        let (mirrors, api_pods): (Vec<Value>, Vec<Value>) =
            pods.into_iter().partition(static_pods::is_mirror);
        let statics = match &self.static_dir {
            Some(dir) => static_pods::read_dir(dir, &self.node),
            None => Vec::new(),
        };
        let same = |a: &Value, b: &Value| {
            a["metadata"]["name"] == b["metadata"]["name"]
                && a["metadata"]["namespace"] == b["metadata"]["namespace"]
        };
        for m in mirrors
            .iter()
            .filter(|m| !statics.iter().any(|p| same(p, m)))
        {
            // Its static pod is gone.
            let (me, m) = (self.clone(), m.clone());
            tasks.spawn(async move { me.delete_mirror(&m).await });
        }
        let work = api_pods
            .into_iter()
            .map(|p| (p, None))
            .chain(statics.into_iter().map(|p| {
                let mirror = mirrors.iter().find(|m| same(&p, m)).cloned();
                (p, Some(mirror))
            }));
        for (v, mirror) in work {
            let uid = s(&v["metadata"]["uid"]);
            uids.push(uid.clone());
            let Some(claim) = self.claim(&uid) else {
                continue;
            };
            let me = self.clone();
            tasks.spawn(async move {
                let _claim = claim;
                let done = match mirror {
                    Some(mirror) => me.sync_static(v.clone(), mirror).await,
                    None => me.sync_pod(&v).await,
                };
                if let Err(e) = done {
                    tracing::warn!(pod = %s(&v["metadata"]["name"]), error = %e, "pod sync failed");
                }
            });
        }
        // Sandboxes whose pod is gone.
        for sb in sandboxes {
            let uid = sb.labels.get(POD_UID).cloned().unwrap_or_default();
            if uids.contains(&uid) {
                continue;
            }
            let Some(claim) = self.claim(&uid) else {
                continue;
            };
            let me = self.clone();
            tasks.spawn(async move {
                let _claim = claim;
                if let Err(e) = me.remove_sandbox(&sb.id, 0, None).await {
                    tracing::warn!(sandbox = %sb.id, error = %e, "removing an orphaned sandbox failed");
                } else if let Err(e) = me.volumes.teardown(&uid) {
                    tracing::warn!(pod = %uid, error = %e, "removing an orphaned pod's volumes failed");
                }
            });
        }
        self.prober.retain_pods(&uids);
        // Volumes of pods that are gone (deleted while the agent was down, say); pods being
        // worked on are all in `uids`.
        let busy: Vec<String> = lock(&self.busy).iter().cloned().collect();
        let keep: Vec<String> = uids.iter().chain(busy.iter()).cloned().collect();
        self.volumes.teardown_others(&keep);
        lock(&self.backoff).retain(|k| uids.iter().any(|u| k.starts_with(u.as_str())));
        Ok(tasks)
    }

    /// Starts a pass every `interval`, and as soon as a pod of this node changes (a watch),
    /// until `shutdown`. Passes start one after the other; the work they start runs on (a
    /// slow pod does not delay the next pass, which skips it).
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let changed = Arc::new(tokio::sync::Notify::new());
        let watch = tokio::spawn({
            let (pods, changed) = (self.pods.clone(), changed.clone());
            let config = bosun_client::watcher::Config::default()
                .fields(&format!("spec.nodeName={}", self.node));
            async move {
                use futures_util::StreamExt;
                let events = bosun_client::watcher::watcher(pods, config);
                tokio::pin!(events);
                while let Some(e) = events.next().await {
                    match e {
                        Ok(_) => changed.notify_one(),
                        Err(e) => tracing::debug!(error = %e, "watching the node's pods"),
                    }
                }
            }
        });
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
                _ = changed.notified() => {}
            }
            match self.pass().await {
                Ok(mut tasks) => {
                    tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
                }
                Err(e) => tracing::warn!(error = %e, "pod sync pass failed"),
            }
        }
        watch.abort();
    }

    /// Stops every pod on this node, as a node shutting down does (upstream's graceful node
    /// shutdown): preStop hooks run and each pod gets its `terminationGracePeriodSeconds`,
    /// at most `max_grace`; then its sandbox goes (its network torn down). Pod objects stay
    /// as they are, so the next start runs them again in new sandboxes. Call it after
    /// [`Self::run`] returned; work already under way finishes first. Returns how many pods
    /// were stopped.
    pub async fn stop_all(&self, max_grace: Duration) -> Result<usize> {
        // Pods being started get a moment to finish (a pod being deleted may take its whole
        // grace period: it is stopped with the others, within the cap).
        let settle = tokio::time::Instant::now() + max_grace.min(Duration::from_secs(2));
        while !lock(&self.busy).is_empty() && tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Without the API server the pods still stop, within the cap and without hooks.
        let pods: Vec<Value> = match self
            .pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
        {
            Ok(list) => list
                .items
                .iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing the node's pods to stop them");
                Vec::new()
            }
        };
        let cap = i64::try_from(max_grace.as_secs()).unwrap_or(i64::MAX);
        let mut stopped = 0;
        // A second round catches a sandbox a start still under way made after the first.
        for round in 0..2 {
            let sandboxes = self.all_sandboxes().await?;
            let stops = sandboxes
                .iter()
                .filter(|sb| sb.state == PodSandboxState::SandboxReady as i32)
                .map(|sb| {
                    let uid = sb.labels.get(POD_UID).cloned().unwrap_or_default();
                    let pod = pods.iter().find(|p| s(&p["metadata"]["uid"]) == uid);
                    let grace = pod
                        .and_then(|p| p["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30)
                        .min(if round == 0 { cap } else { 0 });
                    async move {
                        let r = self.remove_sandbox(&sb.id, grace, pod).await;
                        if let Err(e) = &r {
                            tracing::warn!(sandbox = %sb.id, error = %e, "stopping a pod at shutdown");
                        }
                        r.is_ok()
                    }
                });
            stopped += futures_util::future::join_all(stops)
                .await
                .into_iter()
                .filter(|ok| *ok)
                .count();
        }
        let unmounted = self.volumes.unmount_all();
        tracing::info!(pods = stopped, unmounted, "the node's pods are stopped");
        Ok(stopped)
    }

    /// Evicts `pod` (the eviction manager's choice): once no task works on it, its containers
    /// stop (preStop hooks run; no grace beyond the minimum) and its sandbox stops; then its
    /// status says `Failed`, reason `Evicted`, with `message`, and a `DisruptionTarget`
    /// condition, as upstream. The object stays (its controller makes a replacement).
    pub async fn evict(&self, pod: &Value, message: &str) -> Result<()> {
        let uid = s(&pod["metadata"]["uid"]);
        let _claim = loop {
            if let Some(c) = self.claim(&uid) {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for sb in self.sandboxes_of(&uid).await? {
            let ip = self.sandbox_ip(pod, &sb.id).await;
            for c in self.containers_of(&sb.id).await? {
                if c.state != ContainerState::ContainerRunning as i32 {
                    continue;
                }
                let name = c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let spec = ["containers", "initContainers"]
                    .iter()
                    .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
                    .find(|x| x["name"].as_str() == Some(name.as_str()))
                    .cloned()
                    .unwrap_or_else(|| json!({"name": name}));
                self.stop(pod, &ip, &c.id, &spec, 0).await?;
            }
            self.rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await
                .map_err(|e| cri("stopping the sandbox", e))?;
        }
        self.prober.retain(&uid, &[]);
        let now = json!(Time::now());
        let mut conditions: Vec<Value> = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "DisruptionTarget")
            .map(|mut c| {
                if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady"))
                    && c["status"] == "True"
                {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodFailed");
                    c["lastTransitionTime"] = now.clone();
                }
                c
            })
            .collect();
        conditions.push(json!({"type": "DisruptionTarget", "status": "True",
            "reason": "TerminationByKubelet", "message": message, "lastTransitionTime": now}));
        tracing::info!(pod = %format!("{}/{}", s(&pod["metadata"]["namespace"]), s(&pod["metadata"]["name"])), %message, "evicted");
        self.write_status(
            pod,
            json!({"phase": "Failed", "reason": "Evicted", "message": message,
                   "conditions": conditions}),
        )
        .await
    }

    /// Every sandbox of the runtime.
    async fn all_sandboxes(&self) -> Result<Vec<PodSandbox>> {
        Ok(self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map_err(|e| cri("listing sandboxes", e))?
            .items)
    }

    /// The sandboxes of the pod with `uid`.
    async fn sandboxes_of(&self, uid: &str) -> Result<Vec<PodSandbox>> {
        Ok(self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: [(POD_UID.to_string(), uid.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| cri("listing sandboxes", e))?
            .items)
    }

    /// A static pod: its mirror made current first (a stale one — being deleted, or of an
    /// older manifest — is replaced), its status read from the mirror; then synced as any
    /// pod. The pod runs even when the mirror cannot be written.
    async fn sync_static(&self, mut pod: Value, mirror: Option<Value>) -> Result<()> {
        match mirror {
            Some(m) if static_pods::mirror_matches(&m, &pod) => {
                pod["status"] = m["status"].clone();
            }
            stale => {
                if let Some(m) = stale {
                    self.delete_mirror(&m).await;
                }
                if let Err(e) = self.create_mirror(&pod).await {
                    tracing::warn!(pod = %s(&pod["metadata"]["name"]), error = %e, "creating the mirror pod failed");
                }
            }
        }
        self.sync_pod(&pod).await
    }

    async fn create_mirror(&self, pod: &Value) -> Result<()> {
        let cached = lock(&self.node_uid).clone();
        let node_uid = match cached {
            Some(uid) => uid,
            None => {
                let node = Api::<bosun_api_types::core::v1::Node>::all(self.client.clone())
                    .get(&self.node)
                    .await
                    .map_err(|e| api("reading the Node", e))?;
                let uid = node.metadata.uid.unwrap_or_default();
                *lock(&self.node_uid) = Some(uid.clone());
                uid
            }
        };
        let mirror: Pod = serde_json::from_value(static_pods::mirror_of(pod, &node_uid))
            .map_err(|e| Error::Api(format!("building the mirror pod: {e}")))?;
        match self
            .in_namespace(pod)
            .create(&bosun_client::PostParams::default(), &mirror)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(api("creating the mirror pod", e)),
        }
    }

    /// Deletes a mirror pod at once (that very object: a newer one stays).
    async fn delete_mirror(&self, m: &Value) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: m["metadata"]["uid"].as_str().map(String::from),
            ..Default::default()
        };
        match self
            .in_namespace(m)
            .delete(&s(&m["metadata"]["name"]), &params)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => {
                tracing::warn!(pod = %s(&m["metadata"]["name"]), error = %e, "deleting the mirror pod failed")
            }
        }
    }

    async fn sync_pod(&self, pod: &Value) -> Result<()> {
        let mine = self.sandboxes_of(&s(&pod["metadata"]["uid"])).await?;
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            self.terminate(pod, &mine).await
        } else if let Some(sb) = mine
            .iter()
            .find(|s| s.state == PodSandboxState::SandboxReady as i32)
        {
            self.reconcile(pod, &sb.id).await
        } else if !matches!(s(&pod["status"]["phase"]).as_str(), "Succeeded" | "Failed") {
            // No sandbox, or only stopped ones (the node stopped its pods, or a sandbox
            // died): the pod runs again in a new sandbox, as upstream after a reboot.
            for sb in &mine {
                self.remove_sandbox(&sb.id, 0, None).await?;
            }
            match self.start(pod).await {
                Ok(()) => Ok(()),
                // Say why in the pod's status; the next pass tries again.
                Err(e) => self.report_failure(pod, &e).await.and(Err(e)),
            }
        } else {
            Ok(())
        }
    }

    /// The sandbox configuration of a pod (the same on every pass).
    fn sandbox_config(&self, pod: &Value) -> PodSandboxConfig {
        let meta = &pod["metadata"];
        let (name, ns, uid) = (s(&meta["name"]), s(&meta["namespace"]), s(&meta["uid"]));
        let labels = HashMap::from([
            (POD_UID.to_string(), uid.clone()),
            (POD_NAME.to_string(), name.clone()),
            (POD_NAMESPACE.to_string(), ns.clone()),
        ]);
        let annotations: HashMap<String, String> = meta["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let host_network = pod["spec"]["hostNetwork"].as_bool().unwrap_or(false);
        let mut port_mappings = Vec::new();
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            for p in c["ports"].as_array().into_iter().flatten() {
                let host_port = p["hostPort"].as_i64().unwrap_or(0);
                if host_port > 0 {
                    port_mappings.push(PortMapping {
                        protocol: match p["protocol"].as_str() {
                            Some("UDP") => Protocol::Udp as i32,
                            Some("SCTP") => Protocol::Sctp as i32,
                            _ => Protocol::Tcp as i32,
                        },
                        container_port: p["containerPort"].as_i64().unwrap_or(0) as i32,
                        host_port: host_port as i32,
                        host_ip: s(&p["hostIP"]),
                    });
                }
            }
        }
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: ns.clone(),
                attempt: 0,
            }),
            hostname: pod["spec"]["hostname"]
                .as_str()
                .unwrap_or(&name)
                .to_string(),
            log_directory: self
                .log_root
                .join(format!("{ns}_{name}_{uid}"))
                .display()
                .to_string(),
            port_mappings,
            labels,
            annotations,
            dns_config: Some(crate::dns::pod_dns(
                pod,
                &self.cluster_dns,
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            )),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: if host_network {
                            NamespaceMode::Node as i32
                        } else {
                            NamespaceMode::Pod as i32
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn start(&self, pod: &Value) -> Result<()> {
        let sbc = self.sandbox_config(pod);
        // Images first, so a missing one leaves nothing half made.
        for c in ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
        {
            self.ensure_image(pod, c).await.map_err(|e| match e {
                Error::Runtime(m) => Error::Image(m),
                other => other,
            })?;
        }
        self.volumes.setup(pod).await?;
        let sb = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sbc),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| cri("running the sandbox", e))?
            .pod_sandbox_id;
        if let Err(e) = self.reconcile(pod, &sb).await {
            // Nothing half made stays: the next pass starts over.
            let _ = self.remove_sandbox(&sb, 0, None).await;
            return Err(e);
        }
        tracing::info!(pod = %format!("{}/{}", s(&pod["metadata"]["namespace"]), s(&pod["metadata"]["name"])), sandbox = %sb, "pod started");
        Ok(())
    }

    /// Brings the sandbox's containers to what the pod asks (init containers in order, then
    /// the containers; restarts with back-off; kills for failed probes), then reports.
    async fn reconcile(&self, pod: &Value, sb: &str) -> Result<()> {
        let uid = s(&pod["metadata"]["uid"]);
        let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        let ip = self.sandbox_ip(pod, sb).await;
        // Volumes refresh on every pass (a changed configMap reaches running containers);
        // a failure only matters to a container that has to start.
        let paths = self.volumes.setup(pod).await.map_err(|e| {
            tracing::warn!(pod = %s(&pod["metadata"]["name"]), error = %e, "volume setup failed");
            e.to_string()
        });
        let paths = &paths;
        let all = self.containers_of(sb).await?;
        let mut waiting: HashMap<String, Waiting> = HashMap::new();
        let mut initialized = true;
        for spec in pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = s(&spec["name"]);
            let inst = instances(&all, &name);
            match inst.first() {
                None => {
                    self.start_container(pod, sb, &ip, spec, 0, paths).await?;
                    initialized = false;
                }
                Some(c) if c.state != ContainerState::ContainerExited as i32 => {
                    initialized = false;
                }
                Some(c) => {
                    let code = self.exit_code(&c.id).await?;
                    if code == 0 {
                        continue;
                    }
                    initialized = false;
                    // A failed init container runs again unless the pod never restarts.
                    if policy != "Never" {
                        if let Some(w) = self.restart(pod, sb, &ip, spec, &inst, paths).await? {
                            waiting.insert(name, w);
                        }
                    }
                }
            }
            break;
        }
        let mut running = Vec::new();
        if initialized {
            for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
                let name = s(&spec["name"]);
                let inst = instances(&all, &name);
                let Some(c) = inst.first() else {
                    let attempt = first_attempt(pod, &name);
                    self.start_container(pod, sb, &ip, spec, attempt, paths)
                        .await?;
                    continue;
                };
                if c.state == ContainerState::ContainerRunning as i32 {
                    running.push(c.id.clone());
                    self.prober.ensure(&uid, &c.id, spec, &ip);
                    if let Some((why, grace)) = self.prober.results(&c.id).and_then(|r| r.failed) {
                        let grace = grace
                            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
                            .unwrap_or(30);
                        tracing::info!(pod = %s(&pod["metadata"]["name"]), container = %name, %why, "killing the container; it will be restarted");
                        self.stop(pod, &ip, &c.id, spec, grace).await?;
                    }
                } else if c.state == ContainerState::ContainerExited as i32 {
                    let code = self.exit_code(&c.id).await?;
                    if restarts(policy, code) {
                        if let Some(w) = self.restart(pod, sb, &ip, spec, &inst, paths).await? {
                            waiting.insert(name, w);
                        }
                    }
                } else if c.state == ContainerState::ContainerCreated as i32 {
                    // Created but never started (the agent stopped in between): start it.
                    self.rt
                        .start_container(StartContainerRequest {
                            container_id: c.id.clone(),
                        })
                        .await
                        .map_err(|e| cri(&format!("starting container {name}"), e))?;
                }
            }
        }
        self.prober.retain(&uid, &running);
        self.report(pod, sb, &waiting).await
    }

    /// Restarts an exited container (newest instance first in `inst`) unless it is in
    /// back-off; then the reason it waits.
    async fn restart(
        &self,
        pod: &Value,
        sb: &str,
        ip: &str,
        spec: &Value,
        inst: &[&Container],
        paths: &std::result::Result<HashMap<String, PathBuf>, String>,
    ) -> Result<Option<Waiting>> {
        let Some(newest) = inst.first() else {
            return Ok(None);
        };
        let name = s(&spec["name"]);
        let meta = &pod["metadata"];
        let key = format!("{}/{name}", s(&meta["uid"]));
        let finished = self
            .status_of(&newest.id)
            .await?
            .map_or(0, |st| st.finished_at);
        let now = SystemTime::now();
        let remaining = lock(&self.backoff).remaining(&key, system_time(finished), now);
        if remaining.is_some() {
            let delay = lock(&self.backoff).current(&key).unwrap_or_default();
            return Ok(Some(Waiting::BackOff(format!(
                "back-off {} restarting failed container={name} pod={}_{}({})",
                go_duration(delay),
                s(&meta["name"]),
                s(&meta["namespace"]),
                s(&meta["uid"])
            ))));
        }
        lock(&self.backoff).restarted(&key, system_time(finished), now);
        // One dead instance stays (for lastState and `logs --previous`); older ones go.
        for old in inst.iter().skip(1) {
            let _ = self
                .rt
                .remove_container(RemoveContainerRequest {
                    container_id: old.id.clone(),
                })
                .await;
        }
        self.start_container(pod, sb, ip, spec, attempt_of(newest) + 1, paths)
            .await?;
        Ok(None)
    }

    async fn status_of(&self, id: &str) -> Result<Option<ContainerStatus>> {
        Ok(self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(|e| cri("container status", e))?
            .status)
    }

    async fn exit_code(&self, id: &str) -> Result<i32> {
        Ok(self.status_of(id).await?.map_or(0, |s| s.exit_code))
    }

    /// The pod's IP (the node's for host-network pods).
    async fn sandbox_ip(&self, pod: &Value, sb: &str) -> String {
        let ip = self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sb.to_string(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.status?.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        if ip.is_empty() || pod["spec"]["hostNetwork"].as_bool() == Some(true) {
            self.host_ip.clone()
        } else {
            ip
        }
    }

    /// A pod that could not start: Pending, each container waiting with upstream's reason
    /// (`ErrImagePull` or `CreateContainerError`) and the error as the message.
    async fn report_failure(&self, pod: &Value, e: &Error) -> Result<()> {
        let reason = match e {
            Error::Image(m) if m.contains("pull policy is Never") => "ErrImageNeverPull",
            Error::Image(_) => "ErrImagePull",
            Error::Volume(_) => "ContainerCreating",
            Error::Config(_) => "CreateContainerConfigError",
            _ => "CreateContainerError",
        };
        let statuses: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                       "started": false, "restartCount": 0,
                       "state": {"waiting": {"reason": reason, "message": e.to_string()}}})
            })
            .collect();
        if pod["status"]["containerStatuses"] == json!(statuses) {
            return Ok(());
        }
        let status = json!({"phase": "Pending", "hostIP": self.host_ip,
                            "qosClass": qos_class(pod), "containerStatuses": statuses});
        self.write_status(pod, status).await
    }

    /// Creates and starts instance `attempt` of the container `c`.
    async fn start_container(
        &self,
        pod: &Value,
        sb: &str,
        sb_ip: &str,
        c: &Value,
        attempt: u32,
        paths: &std::result::Result<HashMap<String, PathBuf>, String>,
    ) -> Result<()> {
        let sbc = self.sandbox_config(pod);
        let paths = paths.as_ref().map_err(|e| Error::Volume(e.clone()))?;
        let mut mounts = if self.volumes.enabled() {
            container_mounts(pod, c, paths)?
        } else {
            Vec::new()
        };
        // The kubelet-managed /etc/hosts, unless the container mounts its own.
        if let (Some(dir), false) = (
            self.volumes.pod_dir(&s(&pod["metadata"]["uid"])),
            mounts.iter().any(|m| m.container_path == "/etc/hosts"),
        ) {
            let node_hosts = if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
            } else {
                String::new()
            };
            let text = crate::dns::hosts_file(pod, sb_ip, &self.cluster_dns.domain, &node_hosts);
            let path = dir.join("etc-hosts");
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, text))
                .map_err(|e| Error::Volume(format!("writing {}: {e}", path.display())))?;
            mounts.push(Mount {
                container_path: "/etc/hosts".into(),
                host_path: path.display().to_string(),
                ..Default::default()
            });
        }
        let cname = s(&c["name"]);
        let mut clabels = sbc.labels.clone();
        clabels.insert(CONTAINER_NAME.into(), cname.clone());
        // The simulated runtime's schedule travels to each container.
        let simulated: HashMap<String, String> = sbc
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with("simulated.bosun.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.ensure_image(pod, c).await?;
        // Env: envFrom first, then env in order (values expanded against the earlier ones);
        // then $(VAR) in command and args.
        let env = self.container_env(pod, c, sb_ip).await?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|x| expand(x.as_str().unwrap_or_default(), &env))
                .collect()
        };
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: cname.clone(),
                attempt,
            }),
            image: Some(ImageSpec {
                image: s(&c["image"]),
                ..Default::default()
            }),
            command: strings(&c["command"]),
            args: strings(&c["args"]),
            working_dir: s(&c["workingDir"]),
            envs: env
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            labels: clabels,
            annotations: simulated,
            log_path: format!("{cname}/{attempt}.log"),
            mounts,
            stdin: c["stdin"].as_bool().unwrap_or(false),
            stdin_once: c["stdinOnce"].as_bool().unwrap_or(false),
            tty: c["tty"].as_bool().unwrap_or(false),
            linux: Some(linux_config(pod, c)),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sb.to_string(),
                config: Some(config),
                sandbox_config: Some(sbc),
            })
            .await
            .map_err(|e| cri(&format!("creating container {cname}"), e))?
            .container_id;
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|e| cri(&format!("starting container {cname}"), e))?;
        let hook = &c["lifecycle"]["postStart"];
        if !hook.is_null() {
            let outcome = match Action::from_handler(hook, c) {
                Ok(a) => run_action(&*self.rt, &id, sb_ip, &a, POST_START_TIMEOUT, false).await,
                Err(e) => Err(e),
            };
            if let Err(why) = outcome {
                // As upstream: the container is killed and restarts as its policy says.
                tracing::warn!(pod = %s(&pod["metadata"]["name"]), container = %cname, %why, "FailedPostStartHook");
                let grace = pod["spec"]["terminationGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(30);
                self.stop(pod, sb_ip, &id, c, grace).await?;
            }
        }
        Ok(())
    }

    /// Stops the running container `id` (its spec `c`) within `grace` seconds, running its
    /// preStop hook first: the hook's time comes out of the grace period, and the stop gets
    /// at least [`MIN_GRACE_SECONDS`], as upstream's `killContainer`.
    async fn stop(&self, pod: &Value, ip: &str, id: &str, c: &Value, grace: i64) -> Result<()> {
        let mut grace = grace;
        let hook = &c["lifecycle"]["preStop"];
        if !hook.is_null() && grace > 0 {
            let began = std::time::Instant::now();
            let outcome = match Action::from_handler(hook, c) {
                Ok(a) => {
                    let bound = Duration::from_secs(grace as u64);
                    run_action(&*self.rt, id, ip, &a, bound, false).await
                }
                Err(e) => Err(e),
            };
            if let Err(why) = outcome {
                tracing::warn!(pod = %s(&pod["metadata"]["name"]), container = %s(&c["name"]), %why, "FailedPreStopHook");
            }
            grace -= began.elapsed().as_secs() as i64;
        }
        self.rt
            .stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout: grace.max(MIN_GRACE_SECONDS),
            })
            .await
            .map_err(|e| cri(&format!("stopping container {}", s(&c["name"])), e))
            .map(drop)
    }

    /// A container's environment: `envFrom` sources, then `env` entries in order (a later
    /// name replaces an earlier one, in place).
    async fn container_env(
        &self,
        pod: &Value,
        c: &Value,
        ip: &str,
    ) -> Result<Vec<(String, String)>> {
        let ns = s(&pod["metadata"]["namespace"]);
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| match env
            .iter_mut()
            .find(|(n, _)| *n == k)
        {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        };
        for ef in c["envFrom"].as_array().into_iter().flatten() {
            let (kind, r) = if ef["configMapRef"].is_object() {
                ("configMap", &ef["configMapRef"])
            } else {
                ("secret", &ef["secretRef"])
            };
            let keys = self
                .volumes
                .env_source(
                    &ns,
                    kind,
                    &s(&r["name"]),
                    r["optional"].as_bool().unwrap_or(false),
                )
                .await?;
            let prefix = s(&ef["prefix"]);
            for (k, v) in keys {
                let name = format!("{prefix}{k}");
                // Names an environment cannot hold are skipped, as upstream skips them.
                if name.is_empty()
                    || name.contains('=')
                    || !name.bytes().all(|b| b.is_ascii_graphic())
                {
                    continue;
                }
                set(&mut env, name, String::from_utf8_lossy(&v).into_owned());
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let from = &e["valueFrom"];
            let value = if let Some(v) = e["value"].as_str() {
                expand(v, &env)
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                field_ref(pod, path, ip, &self.host_ip).unwrap_or_default()
            } else if from["resourceFieldRef"].is_object() {
                let mut r = from["resourceFieldRef"].clone();
                if s(&r["containerName"]).is_empty() {
                    r["containerName"] = c["name"].clone();
                }
                let alloc = self
                    .allocatable
                    .as_ref()
                    .map(|(c, m)| (c.as_str(), m.as_str()));
                resource_field(pod, &r, alloc).map_err(|e| Error::Config(e.to_string()))?
            } else if from["configMapKeyRef"].is_object() || from["secretKeyRef"].is_object() {
                let (kind, r, what) = if from["configMapKeyRef"].is_object() {
                    ("configMap", &from["configMapKeyRef"], "ConfigMap")
                } else {
                    ("secret", &from["secretKeyRef"], "Secret")
                };
                let optional = r["optional"].as_bool().unwrap_or(false);
                let (name, key) = (s(&r["name"]), s(&r["key"]));
                let keys = self.volumes.env_source(&ns, kind, &name, optional).await?;
                match keys.get(&key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(Error::Config(format!(
                            "couldn't find key {key} in {what} {ns}/{name}"
                        )))
                    }
                }
            } else {
                String::new()
            };
            set(&mut env, s(&e["name"]), value);
        }
        Ok(env)
    }

    /// The registry maps of the pod's `imagePullSecrets` (a missing or malformed secret is
    /// skipped, as upstream).
    async fn pull_secrets(&self, pod: &Value) -> Vec<Value> {
        let secrets: Api<bosun_api_types::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &s(&pod["metadata"]["namespace"]));
        let mut out = Vec::new();
        for r in pod["spec"]["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = s(&r["name"]);
            match secrets.get(&name).await {
                Ok(secret) => match serde_json::to_value(&secret)
                    .ok()
                    .as_ref()
                    .and_then(credentials::docker_config)
                {
                    Some(config) => out.push(config),
                    None => tracing::warn!(secret = %name, "not a docker config secret; skipped"),
                },
                Err(e) => tracing::warn!(secret = %name, error = %e, "pull secret skipped"),
            }
        }
        out
    }

    async fn ensure_image(&self, pod: &Value, c: &Value) -> Result<()> {
        let image = s(&c["image"]);
        let spec = Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        });
        let present = self
            .rt
            .image_status(ImageStatusRequest {
                image: spec.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| cri("image status", e))?
            .image
            .is_some();
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        if present && policy != "Always" {
            return Ok(());
        }
        if policy == "Never" {
            return Err(Error::Runtime(format!(
                "image {image} is not present and the pull policy is Never"
            )));
        }
        // Each matching credential of the pull secrets in turn, then none.
        let configs = if pod["spec"]["imagePullSecrets"].is_array() {
            self.pull_secrets(pod).await
        } else {
            Vec::new()
        };
        let mut auths: Vec<Option<AuthConfig>> = credentials::credentials_for(&image, &configs)
            .into_iter()
            .map(Some)
            .collect();
        if auths.is_empty() {
            auths.push(None);
        }
        let mut last = None;
        for auth in auths {
            match self
                .rt
                .pull_image(PullImageRequest {
                    image: spec.clone(),
                    auth,
                    ..Default::default()
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => cri(&format!("pulling {image}"), e),
            None => Error::Runtime(format!("pulling {image}")),
        })
    }

    /// The status of one container (init or regular) from its instances, with the runtime's
    /// status of its newest instance (`None` before it has one).
    async fn container_status(
        &self,
        spec: &Value,
        all: &[Container],
        waiting: Option<&Waiting>,
        init: bool,
    ) -> Result<(Value, Option<ContainerStatus>)> {
        let name = s(&spec["name"]);
        let inst = instances(all, &name);
        let mut v = json!({
            "name": name, "image": s(&spec["image"]), "imageID": "", "ready": false,
            "started": false, "restartCount": 0,
            "state": {"waiting": {"reason": if init { "PodInitializing" } else { "ContainerCreating" }}},
        });
        let Some(newest) = inst.first() else {
            return Ok((v, None));
        };
        let Some(st) = self.status_of(&newest.id).await? else {
            return Ok((v, None));
        };
        let terminated = |st: &ContainerStatus, id: &str| {
            let mut t = json!({"exitCode": st.exit_code, "reason": st.reason,
                "startedAt": time_of(st.started_at), "finishedAt": time_of(st.finished_at),
                "containerID": format!("bosun://{id}")});
            if !st.message.is_empty() {
                t["message"] = json!(st.message);
            }
            json!({"terminated": t})
        };
        v["restartCount"] = json!(attempt_of(newest));
        v["imageID"] = json!(st.image_ref);
        v["containerID"] = json!(format!("bosun://{}", newest.id));
        if let Some(prev) = inst.get(1) {
            if let Some(pst) = self.status_of(&prev.id).await? {
                v["lastState"] = terminated(&pst, &prev.id);
            }
        }
        if st.state == ContainerState::ContainerRunning as i32 {
            // Not probed yet: ready and started unless a probe has to say so first.
            let results = self
                .prober
                .results(&newest.id)
                .unwrap_or(crate::probe::Results {
                    ready: spec["readinessProbe"].is_null() && spec["startupProbe"].is_null(),
                    started: spec["startupProbe"].is_null(),
                    failed: None,
                });
            let ready = results.ready && results.started;
            let started = results.started;
            v["state"] = json!({"running": {"startedAt": time_of(st.started_at)}});
            v["ready"] = json!(!init && ready);
            v["started"] = json!(started);
        } else if st.state == ContainerState::ContainerExited as i32 {
            match waiting {
                Some(Waiting::BackOff(msg)) => {
                    v["lastState"] = terminated(&st, &newest.id);
                    v["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
                }
                None => {
                    v["state"] = terminated(&st, &newest.id);
                    v["ready"] = json!(init && st.exit_code == 0);
                }
            }
        }
        Ok((v, Some(st)))
    }

    /// Writes the pod's status from the runtime's view of its sandbox and containers.
    async fn report(
        &self,
        pod: &Value,
        sandbox: &str,
        waiting: &HashMap<String, Waiting>,
    ) -> Result<()> {
        let sb = self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.into(),
                verbose: false,
            })
            .await
            .map_err(|e| cri("sandbox status", e))?
            .status
            .unwrap_or_default();
        let all = self.containers_of(sandbox).await?;
        let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
        // Init containers: done when each exited 0; failed for good when one failed and the
        // pod never restarts.
        let mut init_statuses = Vec::new();
        let (mut initialized, mut init_failed) = (true, false);
        let mut pending_init = Vec::new();
        for spec in pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = s(&spec["name"]);
            let (v, st) = self
                .container_status(spec, &all, waiting.get(&name), true)
                .await?;
            let done = st.as_ref().is_some_and(|st| {
                st.state == ContainerState::ContainerExited as i32 && st.exit_code == 0
            });
            if !done {
                initialized = false;
                pending_init.push(name);
                if policy == "Never"
                    && st.as_ref().is_some_and(|st| {
                        st.state == ContainerState::ContainerExited as i32 && st.exit_code != 0
                    })
                {
                    init_failed = true;
                }
            }
            init_statuses.push(v);
        }
        let mut statuses = Vec::new();
        let (mut running, mut stopped, mut succeeded, mut waiting_n) = (0, 0, 0, 0);
        let mut unready = Vec::new();
        for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let name = s(&spec["name"]);
            let (v, _) = self
                .container_status(spec, &all, waiting.get(&name), false)
                .await?;
            if !v["state"]["running"].is_null() {
                running += 1;
            } else if let Some(code) = v["state"]["terminated"]["exitCode"].as_i64() {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            } else if v["lastState"]["terminated"].is_object() {
                stopped += 1;
            } else {
                waiting_n += 1;
            }
            if v["ready"] != json!(true) {
                unready.push(name);
            }
            statuses.push(v);
        }
        // Upstream's phase rules.
        let phase = if init_failed {
            "Failed"
        } else if !initialized || waiting_n > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            if policy == "Always" {
                "Running"
            } else if stopped == succeeded {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        } else {
            "Pending"
        };
        let now = Time::now();
        let all_ready = !statuses.is_empty() && unready.is_empty();
        let cond = |t: &str, ok: bool, why: Option<(&str, String)>| {
            let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now});
            if let (false, Some((reason, message))) = (ok, why) {
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            c
        };
        let unready_why = || {
            Some((
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            ))
        };
        let ip = sb.network.map(|n| n.ip).unwrap_or_default();
        let pod_ip = if ip.is_empty() && pod["spec"]["hostNetwork"].as_bool() == Some(true) {
            self.host_ip.clone()
        } else {
            ip
        };
        let mut status = json!({
            "phase": phase,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": pod["status"]["startTime"].as_str().map(|t| json!(t)).unwrap_or_else(|| time_of(sb.created_at)),
            "conditions": [
                cond("PodReadyToStartContainers", true, None),
                cond("Initialized", initialized, Some(("ContainersNotInitialized", format!("containers with incomplete status: [{}]", pending_init.join(" "))))),
                cond("Ready", all_ready, unready_why()),
                cond("ContainersReady", all_ready, unready_why()),
                cond("PodScheduled", true, None),
            ],
            "containerStatuses": statuses,
            "qosClass": pod["status"]["qosClass"].as_str().unwrap_or(qos_class(pod)),
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if !pod_ip.is_empty() {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        // Unchanged conditions keep their transition times.
        if let Some(prev) = pod["status"]["conditions"].as_array() {
            if let Some(conds) = status["conditions"].as_array_mut() {
                for c in conds {
                    if let Some(p) = prev
                        .iter()
                        .find(|p| p["type"] == c["type"] && p["status"] == c["status"])
                    {
                        c["lastTransitionTime"] = p["lastTransitionTime"].clone();
                    }
                }
            }
        }
        let unchanged = [
            "phase",
            "podIP",
            "containerStatuses",
            "initContainerStatuses",
            "conditions",
            "qosClass",
        ]
        .iter()
        .all(|k| pod["status"][k] == status[k]);
        if unchanged {
            return Ok(());
        }
        self.write_status(pod, status).await
    }

    /// The runtime's containers of one sandbox.
    async fn containers_of(&self, sandbox: &str) -> Result<Vec<Container>> {
        Ok(self
            .rt
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    pod_sandbox_id: sandbox.into(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| cri("listing containers", e))?
            .containers)
    }

    /// Writes `status` as a merge patch of the pod's status.
    async fn write_status(&self, pod: &Value, status: Value) -> Result<()> {
        self.in_namespace(pod)
            .patch_status(
                &s(&pod["metadata"]["name"]),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map_err(|e| api("writing the pod's status", e))?;
        Ok(())
    }

    fn in_namespace(&self, pod: &Value) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &s(&pod["metadata"]["namespace"]))
    }

    /// Stops the sandbox's containers and removes it. With the pod, running containers stop
    /// as [`Self::stop`] stops them (preStop hooks, the minimum grace); without (an orphan),
    /// within `grace`.
    async fn remove_sandbox(&self, id: &str, grace: i64, pod: Option<&Value>) -> Result<()> {
        let containers = self.containers_of(id).await?;
        let ip = match pod {
            Some(pod) => self.sandbox_ip(pod, id).await,
            None => String::new(),
        };
        // All containers stop together, each within the grace period.
        let stops = containers.iter().map(|c| {
            let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
            let running = c.state == ContainerState::ContainerRunning as i32;
            let spec = pod.and_then(|p| {
                ["containers", "initContainers"]
                    .iter()
                    .flat_map(|k| p["spec"][*k].as_array().into_iter().flatten())
                    .find(|x| x["name"].as_str() == Some(name))
            });
            let ip = &ip;
            async move {
                match (pod, spec) {
                    (Some(pod), Some(spec)) if running => {
                        self.stop(pod, ip, &c.id, spec, grace).await
                    }
                    _ => self
                        .rt
                        .stop_container(StopContainerRequest {
                            container_id: c.id.clone(),
                            timeout: grace,
                        })
                        .await
                        .map(drop)
                        .map_err(|e| cri("stopping a container", e)),
                }
            }
        });
        for r in futures_util::future::join_all(stops).await {
            r?;
        }
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map_err(|e| cri("stopping the sandbox", e))?;
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map_err(|e| cri("removing the sandbox", e))?;
        Ok(())
    }

    /// A pod being deleted: stop its containers within its grace period, remove its sandbox,
    /// then delete the object for good.
    async fn terminate(&self, pod: &Value, sandboxes: &[PodSandbox]) -> Result<()> {
        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        for sb in sandboxes {
            self.remove_sandbox(&sb.id, grace, Some(pod)).await?;
        }
        self.prober.retain(&s(&pod["metadata"]["uid"]), &[]);
        self.volumes.teardown(&s(&pod["metadata"]["uid"]))?;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match self
            .in_namespace(pod)
            .delete(&s(&pod["metadata"]["name"]), &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(api("deleting the pod", e)),
        }
    }
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`, `1h0m0s`), as upstream's back-off
/// message shows it.
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 && d.subsec_millis() > 0 {
        format!("{}ms", d.as_millis())
    } else if secs >= 3600 {
        format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`,
/// anything else (an undefined name, an unclosed reference) stays as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef` (the downward API's fields a kubelet knows at start).
pub fn field_ref(pod: &Value, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod["metadata"];
    let v = match path {
        "metadata.name" => s(&meta["name"]),
        "metadata.namespace" => s(&meta["namespace"]),
        "metadata.uid" => s(&meta["uid"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => {
            // metadata.labels['k'] / metadata.annotations['k']
            let (field, key) = path.strip_suffix("']")?.split_once("['")?;
            match field {
                "metadata.labels" => s(&meta["labels"][key]),
                "metadata.annotations" => s(&meta["annotations"][key]),
                _ => return None,
            }
        }
    };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_durations_like_go() {
        let s = Duration::from_secs;
        assert_eq!(go_duration(s(10)), "10s");
        assert_eq!(go_duration(s(80)), "1m20s");
        assert_eq!(go_duration(s(300)), "5m0s");
        assert_eq!(go_duration(s(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn classifies_qos_like_upstream() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "c", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(
                json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&pod(
                json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Burstable"
        );
    }

    #[test]
    fn linux_settings_follow_upstream() {
        let pod = json!({"spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}}});
        let c = json!({"resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
                       "securityContext": {"runAsUser": 2000, "readOnlyRootFilesystem": true,
                                           "allowPrivilegeEscalation": false,
                                           "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}});
        let l = linux_config(&pod, &c);
        let r = l.resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (256, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        let sc = l.security_context.unwrap();
        assert_eq!(
            sc.run_as_user.map(|v| v.value),
            Some(2000),
            "the container's wins"
        );
        assert_eq!(
            sc.run_as_group.map(|v| v.value),
            Some(3000),
            "the pod's applies"
        );
        assert_eq!(sc.supplemental_groups, vec![2000]);
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert_eq!(
            (caps.add_capabilities, caps.drop_capabilities),
            (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
        );
        // Nothing asked: BestEffort's 2 shares, no quota, no limit, no user.
        let none = linux_config(&json!({}), &json!({}));
        let r = none.resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        assert!(none.security_context.unwrap().run_as_user.is_none());
        // A limit alone is the request too.
        let r = linux_config(&json!({}), &json!({"resources": {"limits": {"cpu": "2"}}}))
            .resources
            .unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota), (2048, 200_000));
    }

    #[test]
    fn a_new_sandbox_counts_as_a_restart_of_a_pod_that_ran() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "web", "containerID": "bosun://abc", "restartCount": 2},
            {"name": "side", "containerID": "", "restartCount": 0},
        ]}});
        assert_eq!(first_attempt(&pod, "web"), 3);
        // Never started (no container ID), or no status at all: the first attempt.
        assert_eq!(first_attempt(&pod, "side"), 0);
        assert_eq!(first_attempt(&pod, "other"), 0);
        assert_eq!(first_attempt(&json!({}), "web"), 0);
    }

    #[test]
    fn restart_policies() {
        assert!(restarts("Always", 0) && restarts("Always", 1));
        assert!(!restarts("OnFailure", 0) && restarts("OnFailure", 2));
        assert!(!restarts("Never", 1));
    }

    #[test]
    fn expands_like_kubernetes() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        for (input, want) in [
            ("$(A)", "1"),
            ("a$(A)b$(B)", "a1bx y"),
            ("$$(A)", "$(A)"),
            ("$(C)", "$(C)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("cost $5", "cost $5"),
            ("", ""),
        ] {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }

    #[test]
    fn field_refs_read_the_pod() {
        let pod = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u",
                          "labels": {"app": "a"}, "annotations": {"k": "v"}},
                         "spec": {"nodeName": "n1", "serviceAccountName": "sa"}});
        let f = |p: &str| field_ref(&pod, p, "10.0.0.5", "192.0.2.2");
        assert_eq!(f("metadata.name").as_deref(), Some("web"));
        assert_eq!(f("metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(f("spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(f("status.podIP").as_deref(), Some("10.0.0.5"));
        assert_eq!(f("status.hostIP").as_deref(), Some("192.0.2.2"));
        assert_eq!(f("metadata.labels['app']").as_deref(), Some("a"));
        assert_eq!(f("metadata.annotations['k']").as_deref(), Some("v"));
        assert_eq!(f("spec.unknown"), None);
    }
}
