//! A simulated node agent: binds unscheduled pods to live nodes round-robin, reports them
//! Running and Ready, and finishes graceful deletions at once. No container runtime.

use bosun_api_types::coordination::v1::Lease;
use bosun_api_types::core::v1::{Node, Pod, PodCondition, PodStatus};
use bosun_api_types::Time;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, Client, DeleteParams, PostParams};
use bosun_controllers::{Action, Controller, Reconciler};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The agent's nodes; those in `alive` get pods.
#[derive(Clone)]
pub struct Agent {
    client: Client,
    pub alive: Arc<Mutex<Vec<String>>>,
    next: Arc<AtomicUsize>,
}

/// Writes `node`'s status over the stored node's, again on a conflict (node IPAM may have
/// just given it a pod CIDR).
async fn set_status(api: &Api<Node>, name: &str, node: &Node) {
    loop {
        let mut current = api.get(name).await.unwrap();
        current.status = node.status.clone();
        match api
            .replace_status(name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => return,
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => panic!("writing {name}'s status: {e}"),
        }
    }
}

impl Agent {
    /// Registers `nodes` (Ready) and starts the agent.
    pub async fn start(client: Client, nodes: &[&str]) -> Agent {
        let api: Api<Node> = Api::all(client.clone());
        for n in nodes {
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                "status": {
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True",
                        "lastHeartbeatTime": Time::now(), "lastTransitionTime": Time::now(),
                        "reason": "KubeletReady", "message": "simulated"}]
                }
            }))
            .unwrap();
            api.create(&PostParams::default(), &node).await.unwrap();
            set_status(&api, n, &node).await;
        }
        let agent = Agent {
            client: client.clone(),
            alive: Arc::new(Mutex::new(nodes.iter().map(|s| s.to_string()).collect())),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let factory = Arc::new(InformerFactory::new(client));
        let controller = Controller::<Pod>::new(factory, None).concurrency(8);
        tokio::spawn(controller.run(agent.clone()));
        tokio::spawn(agent.clone().heartbeat());
        agent
    }

    /// Registers one more node (Ready, with `labels`) and brings it up.
    pub async fn add_node(&self, name: &str, labels: serde_json::Value) {
        let api: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": Time::now(), "lastTransitionTime": Time::now()}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &node).await.unwrap();
        set_status(&api, name, &node).await;
        self.alive.lock().unwrap().push(name.into());
    }

    /// Renews each live node's Lease (and reports it Ready again after an outage), as a
    /// kubelet does, every 200 ms.
    async fn heartbeat(self) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(self.client.clone());
        loop {
            let alive = self.alive.lock().unwrap().clone();
            for n in alive {
                let lease: Lease = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": n},
                    "spec": {"holderIdentity": n, "leaseDurationSeconds": 40,
                        "renewTime": bosun_api_types::MicroTime::now()}
                }))
                .unwrap();
                match leases.get_opt(&n).await {
                    Ok(Some(mut old)) => {
                        old.spec = lease.spec;
                        let _ = leases.replace(&n, &PostParams::default(), &old).await;
                    }
                    Ok(None) => {
                        let _ = leases.create(&PostParams::default(), &lease).await;
                    }
                    Err(_) => {}
                }
                if let Ok(mut node) = nodes.get(&n).await {
                    let status = node.status.get_or_insert_with(Default::default);
                    if let Some(c) = status.conditions.iter_mut().find(|c| c.r#type == "Ready") {
                        if c.status != "True" {
                            c.status = "True".into();
                            c.reason = Some("KubeletReady".into());
                            c.last_heartbeat_time = Some(Time::now());
                            c.last_transition_time = Some(Time::now());
                            let _ = nodes
                                .replace_status(&n, &PostParams::default(), &node)
                                .await;
                        }
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<Pod> for Agent {
    type Error = bosun_client::Error;

    async fn reconcile(&self, pod: Arc<Pod>) -> Result<Action, Self::Error> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            // Only a live node's kubelet finishes a deletion.
            if node
                .as_ref()
                .is_some_and(|n| self.alive.lock().unwrap().contains(n))
            {
                let now = DeleteParams {
                    grace_period_seconds: Some(0),
                    precondition_uid: pod.metadata.uid.clone(),
                    ..Default::default()
                };
                match api.delete(&name, &now).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Action::Done);
        }
        let Some(node) = node else {
            // A pod pinned to a node by affinity on its name (DaemonSet pods) goes there.
            let pinned = pod
                .spec
                .as_ref()
                .and_then(|s| {
                    s.affinity
                        .as_ref()?
                        .node_affinity
                        .as_ref()?
                        .required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .and_then(|r| {
                    r.node_selector_terms
                        .iter()
                        .flat_map(|t| t.match_fields.iter())
                        .find(|f| f.key == "metadata.name")
                        .and_then(|f| f.values.first().cloned())
                });
            let target = {
                let alive = self.alive.lock().unwrap();
                if alive.is_empty() {
                    return Ok(Action::Done);
                }
                match pinned {
                    Some(n) if alive.contains(&n) => n,
                    Some(_) => return Ok(Action::Done),
                    None => alive[self.next.fetch_add(1, Ordering::Relaxed) % alive.len()].clone(),
                }
            };
            match api.bind(&name, &target).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            return Ok(Action::Done);
        };
        if !self.alive.lock().unwrap().contains(&node) {
            return Ok(Action::Done);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let restart = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        // Pods that run to completion finish with the exit code their annotation names (0 by
        // default; "never" keeps them running).
        let exit = pod
            .metadata
            .annotations
            .get("simulated/exit-code")
            .cloned()
            .unwrap_or_else(|| "0".into());
        if phase == Some("Running") && restart != "Always" && exit != "never" {
            let code: i32 = exit.parse().unwrap_or(1);
            let mut done = (*pod).clone();
            let now = Time::now();
            let status = done.status.get_or_insert_with(Default::default);
            status.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.into());
            for c in status.conditions.iter_mut() {
                if c.r#type == "Ready" || c.r#type == "ContainersReady" {
                    c.status = "False".into();
                    c.last_transition_time = Some(now);
                }
            }
            status.container_statuses = vec![serde_json::from_value(serde_json::json!({
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "finishedAt": now,
                    "reason": if code == 0 { "Completed" } else { "Error" }}}
            }))
            .unwrap()];
            return match api
                .replace_status(&name, &PostParams::default(), &done)
                .await
            {
                Ok(_) => Ok(Action::Done),
                Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::Done),
                Err(e) => Err(e),
            };
        }
        if phase.is_some_and(|p| p != "Pending") {
            return Ok(Action::Done);
        }
        let mut running = (*pod).clone();
        let now = Time::now();
        running.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some({
                let n = self.next.fetch_add(1, Ordering::Relaxed) as u32 + 2;
                format!("10.244.{}.{}", n / 250, n % 250 + 2)
            }),
            host_ip: Some("192.168.0.1".into()),
            start_time: Some(now),
            conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
                .iter()
                .map(|t| PodCondition {
                    r#type: (*t).into(),
                    status: "True".into(),
                    last_transition_time: Some(now),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        match api
            .replace_status(&name, &PostParams::default(), &running)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::Done),
            Err(e) => Err(e),
        }
    }
}
