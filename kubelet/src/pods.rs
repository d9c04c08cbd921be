//! Running the pods bound to this node through the CRI, level-triggered: every pass compares
//! the pods the API server has for the node with the sandboxes the runtime has, and closes
//! the gap — a sandbox and its containers for a new pod (images pulled when missing), the
//! pod's status written back (phase, IPs, conditions, container states), a graceful stop and
//! removal for a pod being deleted (then the object is deleted for good), and removal of
//! sandboxes whose pod is gone.
//!
//! This first slice runs each container once (restart policies, probes, volumes and env from
//! references come next).

use crate::{Error, Result};
use bosun_api_types::core::v1::Pod;
use bosun_api_types::Time;
use bosun_client::{Api, Client, DeleteParams, ListParams, Patch, PatchParams};
use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The labels the kubelet puts on sandboxes and containers (upstream's names).
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The pod's name label.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace label.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The container's name label.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Runs the node's pods.
pub struct PodWorker<R> {
    client: Client,
    pods: Api<Pod>,
    node: String,
    host_ip: String,
    rt: Arc<R>,
    log_root: PathBuf,
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

/// A CRI time (nanoseconds) as an API time.
fn time_of(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    json!(Time::from_unix(nanos.div_euclid(1_000_000_000), 0))
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
            client,
            node,
            host_ip,
            rt,
            log_root,
        }
    }

    /// One pass over the node's pods.
    pub async fn sync(&self) -> Result<()> {
        let list = self
            .pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(|e| api("listing the node's pods", e))?;
        let sandboxes = self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map_err(|e| cri("listing sandboxes", e))?
            .items;
        let mut by_uid: HashMap<String, Vec<PodSandbox>> = HashMap::new();
        for sb in sandboxes {
            let uid = sb.labels.get(POD_UID).cloned().unwrap_or_default();
            by_uid.entry(uid).or_default().push(sb);
        }
        for pod in list.items {
            let v = serde_json::to_value(&pod).map_err(|e| Error::Api(e.to_string()))?;
            let uid = s(&v["metadata"]["uid"]);
            let mine = by_uid.remove(&uid).unwrap_or_default();
            let result = if !v["metadata"]["deletionTimestamp"].is_null() {
                self.terminate(&v, &mine).await
            } else if let Some(sb) = mine
                .iter()
                .find(|s| s.state == PodSandboxState::SandboxReady as i32)
            {
                self.report(&v, &sb.id).await
            } else if mine.is_empty()
                && !matches!(s(&v["status"]["phase"]).as_str(), "Succeeded" | "Failed")
            {
                match self.start(&v).await {
                    Ok(()) => Ok(()),
                    // Say why in the pod's status; the next pass tries again.
                    Err(e) => self.report_failure(&v, &e).await.and(Err(e)),
                }
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::warn!(pod = %s(&v["metadata"]["name"]), error = %e, "pod sync failed");
            }
        }
        // Sandboxes whose pod is gone.
        for sb in by_uid.into_values().flatten() {
            self.remove_sandbox(&sb.id, 0).await?;
        }
        Ok(())
    }

    /// Runs `sync` every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "pod sync pass failed");
            }
        }
    }

    async fn start(&self, pod: &Value) -> Result<()> {
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
        // The simulated runtime's schedule travels to each container.
        let simulated: HashMap<String, String> = annotations
            .iter()
            .filter(|(k, _)| k.starts_with("simulated.bosun.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
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
        let sbc = PodSandboxConfig {
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
            labels: labels.clone(),
            annotations: annotations.clone(),
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
        };
        // Images first, so a missing one leaves nothing half made.
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            self.ensure_image(c).await.map_err(|e| match e {
                Error::Runtime(m) => Error::Image(m),
                other => other,
            })?;
        }
        let sb = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sbc.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| cri("running the sandbox", e))?
            .pod_sandbox_id;
        if let Err(e) = self
            .start_containers(pod, &sb, &sbc, &labels, &simulated)
            .await
        {
            // Nothing half made stays: the next pass starts over.
            let _ = self.remove_sandbox(&sb, 0).await;
            return Err(e);
        }
        tracing::info!(pod = %format!("{ns}/{name}"), sandbox = %sb, "pod started");
        self.report(pod, &sb).await
    }

    /// A pod that could not start: Pending, each container waiting with upstream's reason
    /// (`ErrImagePull` or `CreateContainerError`) and the error as the message.
    async fn report_failure(&self, pod: &Value, e: &Error) -> Result<()> {
        let reason = match e {
            Error::Image(m) if m.contains("pull policy is Never") => "ErrImageNeverPull",
            Error::Image(_) => "ErrImagePull",
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
        let status =
            json!({"phase": "Pending", "hostIP": self.host_ip, "containerStatuses": statuses});
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

    async fn start_containers(
        &self,
        pod: &Value,
        sb: &str,
        sbc: &PodSandboxConfig,
        labels: &HashMap<String, String>,
        simulated: &HashMap<String, String>,
    ) -> Result<()> {
        let sb = sb.to_string();
        let sb_ip = self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sb.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.status?.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| self.host_ip.clone());
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let cname = s(&c["name"]);
            let mut clabels = labels.clone();
            clabels.insert(CONTAINER_NAME.into(), cname.clone());
            // Env in order: literal values (expanded against the earlier ones) and the
            // pod's own fields; then $(VAR) in command and args.
            let mut env: Vec<(String, String)> = Vec::new();
            for e in c["env"].as_array().into_iter().flatten() {
                let value = if let Some(v) = e["value"].as_str() {
                    expand(v, &env)
                } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    field_ref(pod, path, &sb_ip, &self.host_ip).unwrap_or_default()
                } else if e["valueFrom"].is_null() {
                    String::new()
                } else {
                    // configMapKeyRef, secretKeyRef, resourceFieldRef: not yet.
                    continue;
                };
                env.push((s(&e["name"]), value));
            }
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| expand(x.as_str().unwrap_or_default(), &env))
                    .collect()
            };
            let env: Vec<KeyValue> = env
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: cname.clone(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: s(&c["image"]),
                    ..Default::default()
                }),
                command: strings(&c["command"]),
                args: strings(&c["args"]),
                working_dir: s(&c["workingDir"]),
                envs: env,
                labels: clabels,
                annotations: simulated.clone(),
                log_path: format!("{cname}/0.log"),
                stdin: c["stdin"].as_bool().unwrap_or(false),
                stdin_once: c["stdinOnce"].as_bool().unwrap_or(false),
                tty: c["tty"].as_bool().unwrap_or(false),
                ..Default::default()
            };
            let id = self
                .rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: sb.clone(),
                    config: Some(config),
                    sandbox_config: Some(sbc.clone()),
                })
                .await
                .map_err(|e| cri(&format!("creating container {cname}"), e))?
                .container_id;
            self.rt
                .start_container(StartContainerRequest { container_id: id })
                .await
                .map_err(|e| cri(&format!("starting container {cname}"), e))?;
        }
        Ok(())
    }

    async fn ensure_image(&self, c: &Value) -> Result<()> {
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
        self.rt
            .pull_image(PullImageRequest {
                image: spec,
                ..Default::default()
            })
            .await
            .map_err(|e| cri(&format!("pulling {image}"), e))?;
        Ok(())
    }

    /// Writes the pod's status from the runtime's view of its sandbox and containers.
    async fn report(&self, pod: &Value, sandbox: &str) -> Result<()> {
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
        let containers = self.containers_of(sandbox).await?;
        let mut statuses = Vec::new();
        let (mut running, mut failed, mut exited) = (0, 0, 0);
        for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let cname = s(&spec["name"]);
            let Some(c) = containers
                .iter()
                .find(|c| c.labels.get(CONTAINER_NAME) == Some(&cname))
            else {
                continue;
            };
            let st = self
                .rt
                .container_status(ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|e| cri("container status", e))?
                .status
                .unwrap_or_default();
            let state = if st.state == ContainerState::ContainerRunning as i32 {
                running += 1;
                json!({"running": {"startedAt": time_of(st.started_at)}})
            } else if st.state == ContainerState::ContainerExited as i32 {
                exited += 1;
                if st.exit_code != 0 {
                    failed += 1;
                }
                json!({"terminated": {"exitCode": st.exit_code, "reason": st.reason,
                    "startedAt": time_of(st.started_at), "finishedAt": time_of(st.finished_at),
                    "containerID": format!("bosun://{}", c.id)}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            let is_running = st.state == ContainerState::ContainerRunning as i32;
            statuses.push(json!({
                "name": cname, "state": state, "ready": is_running, "started": is_running,
                "restartCount": 0, "image": s(&spec["image"]), "imageID": st.image_ref,
                "containerID": format!("bosun://{}", c.id),
            }));
        }
        let total = statuses.len();
        let phase = if total > 0 && exited == total {
            if failed > 0 {
                "Failed"
            } else {
                "Succeeded"
            }
        } else if running > 0 || exited > 0 {
            "Running"
        } else {
            "Pending"
        };
        let now = Time::now();
        let all_ready = total > 0 && running == total;
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now});
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
                cond("PodReadyToStartContainers", true),
                cond("Initialized", true),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
                cond("PodScheduled", true),
            ],
            "containerStatuses": statuses,
            "qosClass": pod["status"]["qosClass"].as_str().unwrap_or("BestEffort"),
        });
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
        let unchanged = ["phase", "podIP", "containerStatuses"]
            .iter()
            .all(|k| pod["status"][k] == status[k])
            && pod["status"]["conditions"] == status["conditions"];
        if unchanged {
            return Ok(());
        }
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

    /// The runtime's containers of one sandbox.
    async fn containers_of(&self, sandbox: &str) -> Result<Vec<bosun_cri::v1::Container>> {
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

    fn in_namespace(&self, pod: &Value) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &s(&pod["metadata"]["namespace"]))
    }

    async fn remove_sandbox(&self, id: &str, grace: i64) -> Result<()> {
        let containers = self.containers_of(id).await?;
        for c in containers {
            self.rt
                .stop_container(StopContainerRequest {
                    container_id: c.id.clone(),
                    timeout: grace,
                })
                .await
                .map_err(|e| cri("stopping a container", e))?;
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
            self.remove_sandbox(&sb.id, grace).await?;
        }
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
