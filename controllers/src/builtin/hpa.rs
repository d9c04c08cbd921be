//! The HorizontalPodAutoscaler controller (autoscaling/v2, resource metrics).
//!
//! Every 15 s (and on changes) each autoscaler reads its target's `scale` subresource, the
//! selected pods and their usage from the resource metrics API (`metrics.k8s.io/v1beta1`
//! PodMetrics, when something serves it), and computes upstream's recommendation: for each
//! `Resource` metric, `ceil(ratio × ready pods)` where the ratio is utilization (of requests)
//! or average value over the target, ignored within a 10 % tolerance; the largest over metrics,
//! clamped to `[minReplicas, maxReplicas]`, and when scaling down the largest recommendation of
//! the stabilization window (300 s unless `behavior.scaleDown` says otherwise). Status and the
//! AbleToScale, ScalingActive and ScalingLimited conditions say what it found; without a
//! metrics API, ScalingActive is False with `FailedGetResourceMetric`, as upstream reports.

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use bosun_api_types::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricStatus,
};
use bosun_api_types::core::v1::{Pod, ReplicationController};
use bosun_api_types::{DynamicObject, Quantity, Time};
use bosun_client::discovery::ApiResource;
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::Key;
use bosun_client::{Api, Client, ListParams, PostParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often each autoscaler is evaluated (upstream's `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// Ratios this close to 1 change nothing.
const TOLERANCE: f64 = 0.1;

/// The HPA controller's logic.
pub struct Autoscalers {
    client: Client,
    recorder: Arc<Recorder>,
    /// Per autoscaler: recent recommendations (for the scale-down stabilization window).
    history: Mutex<HashMap<Key, Vec<(Instant, i32)>>>,
}

fn condition(t: &str, ok: bool, reason: &str, message: String) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        r#type: t.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(Time::now()),
        reason: Some(reason.into()),
        message: Some(message),
    }
}

/// Keeps the transition times of conditions whose status did not change.
fn merge_conditions(
    old: &[HorizontalPodAutoscalerCondition],
    new: Vec<HorizontalPodAutoscalerCondition>,
) -> Vec<HorizontalPodAutoscalerCondition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old
                .iter()
                .find(|o| o.r#type == c.r#type && o.status == c.status)
            {
                c.last_transition_time = o.last_transition_time;
            }
            c
        })
        .collect()
}

fn requests_of(pod: &Pod, resource: &str) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut total = 0;
    for c in &spec.containers {
        total += c.resources.as_ref()?.requests.get(resource)?.milli_value();
    }
    Some(total)
}

impl Autoscalers {
    /// The controller and its logic.
    pub fn new(
        client: Client,
        factory: &Arc<InformerFactory>,
    ) -> (Controller<HorizontalPodAutoscaler>, Self) {
        (
            Controller::<HorizontalPodAutoscaler>::new(Arc::clone(factory), None),
            Autoscalers {
                recorder: Arc::new(Recorder::core(
                    client.clone(),
                    "horizontal-pod-autoscaler",
                    "horizontal-pod-autoscaler",
                )),
                client,
                history: Mutex::new(HashMap::new()),
            },
        )
    }

    /// The target's (spec replicas, label selector), through its `scale` subresource.
    async fn scale_of(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> bosun_client::Result<Option<(i32, String)>> {
        let scale = match kind {
            "Deployment" => {
                Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .get_scale(name)
                    .await
            }
            "ReplicaSet" => {
                Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                    .get_scale(name)
                    .await
            }
            "StatefulSet" => {
                Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                    .get_scale(name)
                    .await
            }
            "ReplicationController" => {
                Api::<ReplicationController>::namespaced(self.client.clone(), ns)
                    .get_scale(name)
                    .await
            }
            _ => return Ok(None),
        };
        match scale {
            Ok(s) => Ok(Some((
                s.spec.and_then(|s| s.replicas).unwrap_or(0),
                s.status
                    .map(|s| s.selector.unwrap_or_default())
                    .unwrap_or_default(),
            ))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_replicas(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        replicas: i32,
    ) -> bosun_client::Result<()> {
        match kind {
            "Deployment" => Api::<Deployment>::namespaced(self.client.clone(), ns)
                .scale(name, replicas)
                .await
                .map(|_| ()),
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                .scale(name, replicas)
                .await
                .map(|_| ()),
            "StatefulSet" => Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                .scale(name, replicas)
                .await
                .map(|_| ()),
            _ => Api::<ReplicationController>::namespaced(self.client.clone(), ns)
                .scale(name, replicas)
                .await
                .map(|_| ()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<HorizontalPodAutoscaler> for Autoscalers {
    type Error = bosun_client::Error;

    async fn reconcile(&self, hpa: Arc<HorizontalPodAutoscaler>) -> Result<Action, Self::Error> {
        let key = Key::of(&*hpa);
        let Some(spec) = hpa.spec.clone() else {
            return Ok(Action::Done);
        };
        let target = spec.scale_target_ref.clone();
        let old = hpa.status.clone().unwrap_or_default();
        let mut status = HorizontalPodAutoscalerStatus {
            observed_generation: hpa.metadata.generation,
            last_scale_time: old.last_scale_time,
            current_replicas: old.current_replicas,
            desired_replicas: old.desired_replicas,
            current_metrics: Vec::new(),
            conditions: Vec::new(),
        };
        let write = |mut status: HorizontalPodAutoscalerStatus| {
            let (client, hpa) = (self.client.clone(), Arc::clone(&hpa));
            async move {
                status.conditions = merge_conditions(&old.conditions, status.conditions);
                if hpa.status.as_ref() == Some(&status) {
                    return Ok(());
                }
                let mut updated = (*hpa).clone();
                updated.status = Some(status);
                let api: Api<HorizontalPodAutoscaler> =
                    Api::namespaced(client, hpa.metadata.namespace.as_deref().unwrap_or(""));
                match api
                    .replace_status(
                        hpa.metadata.name.as_deref().unwrap_or_default(),
                        &PostParams::default(),
                        &updated,
                    )
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        let Some((current, selector)) = self
            .scale_of(&key.namespace, &target.kind, &target.name)
            .await?
        else {
            status.conditions = vec![condition("AbleToScale", false, "FailedGetScale", format!(
                "the HPA controller was unable to get the target's current scale: {} {:?} not found", target.kind, target.name))];
            write(status).await?;
            return Ok(Action::Requeue(SYNC_PERIOD));
        };
        status.current_replicas = Some(current);
        if current == 0 {
            status.desired_replicas = 0;
            status.conditions = vec![
                condition(
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale".into(),
                ),
                condition(
                    "ScalingActive",
                    false,
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero".into(),
                ),
            ];
            write(status).await?;
            return Ok(Action::Requeue(SYNC_PERIOD));
        }
        // The selected pods and their usage.
        let pods: Vec<Pod> = Api::<Pod>::namespaced(self.client.clone(), &key.namespace)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| {
                super::pods::phase(p) == "Running" && p.metadata.deletion_timestamp.is_none()
            })
            .collect();
        let metrics_res = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
            namespaced: true,
            ..Default::default()
        };
        let usage: Result<Vec<DynamicObject>, _> = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &metrics_res,
        )
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items);
        let usage = match usage {
            Ok(u) => u,
            Err(e) => {
                let resource = spec
                    .metrics
                    .iter()
                    .find_map(|m| m.resource.as_ref().map(|r| r.name.clone()))
                    .unwrap_or_else(|| "cpu".into());
                status.desired_replicas = current;
                status.conditions = vec![
                    condition("AbleToScale", true, "SucceededGetScale", "the HPA controller was able to get the target's current scale".into()),
                    condition("ScalingActive", false, "FailedGetResourceMetric", format!(
                        "the HPA was unable to compute the replica count: unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}")),
                ];
                write(status).await?;
                return Ok(Action::Requeue(SYNC_PERIOD));
            }
        };
        // Usage per pod and resource, in milli-units.
        let pod_usage = |pod: &Pod, resource: &str| -> Option<i64> {
            let m = usage
                .iter()
                .find(|m| m.metadata.name == pod.metadata.name)?;
            let containers = m.data.get("containers")?.as_array()?;
            let mut total = 0;
            for c in containers {
                total += Quantity::parse(c.get("usage")?.get(resource)?.as_str()?)
                    .ok()?
                    .milli_value();
            }
            Some(total)
        };
        let mut desired = 0;
        let mut failures = Vec::new();
        for m in spec.metrics.iter().filter(|m| m.r#type == "Resource") {
            let Some(r) = &m.resource else { continue };
            let with_usage: Vec<(&Pod, i64)> = pods
                .iter()
                .filter_map(|p| Some((p, pod_usage(p, &r.name)?)))
                .collect();
            if with_usage.is_empty() {
                failures.push(format!("unable to get metrics for resource {}: no metrics returned from resource metrics API", r.name));
                continue;
            }
            let used: i64 = with_usage.iter().map(|(_, u)| u).sum();
            let n = i64::try_from(with_usage.len()).unwrap_or(1);
            let (ratio, current_metric) = match (
                r.target.average_utilization,
                &r.target.average_value,
            ) {
                (Some(pct), _) => {
                    let requested: Option<i64> = with_usage
                        .iter()
                        .map(|(p, _)| requests_of(p, &r.name))
                        .sum();
                    let Some(requested) = requested.filter(|r| *r > 0) else {
                        failures.push(format!("missing request for {}", r.name));
                        continue;
                    };
                    #[allow(clippy::cast_precision_loss)]
                    let utilization = used as f64 * 100.0 / requested as f64;
                    #[allow(clippy::cast_possible_truncation)]
                    let util_i = utilization.round() as i32;
                    (
                        utilization / f64::from(pct.max(1)),
                        serde_json::json!({"averageUtilization": util_i, "averageValue": Quantity::from_milli(used / n).to_canonical()}),
                    )
                }
                (None, Some(v)) => {
                    #[allow(clippy::cast_precision_loss)]
                    let ratio = (used / n) as f64 / (v.milli_value().max(1)) as f64;
                    (
                        ratio,
                        serde_json::json!({"averageValue": Quantity::from_milli(used / n).to_canonical()}),
                    )
                }
                _ => continue,
            };
            status.current_metrics.push(
                serde_json::from_value::<MetricStatus>(serde_json::json!({
                    "type": "Resource", "resource": {"name": r.name, "current": current_metric}
                }))
                .unwrap_or_default(),
            );
            let proposal = if (ratio - 1.0).abs() <= TOLERANCE {
                current
            } else {
                #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
                let p = (ratio * with_usage.len() as f64).ceil() as i32;
                p
            };
            desired = desired.max(proposal);
        }
        if desired == 0 {
            status.desired_replicas = current;
            status.conditions = vec![
                condition(
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale".into(),
                ),
                condition(
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        failures.join("; ")
                    ),
                ),
            ];
            write(status).await?;
            return Ok(Action::Requeue(SYNC_PERIOD));
        }
        let min = spec.min_replicas.unwrap_or(1).max(1);
        let max = spec.max_replicas.max(min);
        let mut limited = (
            "DesiredWithinRange",
            "the desired count is within the acceptable range".to_string(),
            false,
        );
        if desired < min {
            desired = min;
            limited = (
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count".into(),
                true,
            );
        } else if desired > max {
            desired = max;
            limited = (
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count".into(),
                true,
            );
        }
        // Scale-down stabilization: the highest recommendation of the window.
        let window = spec
            .behavior
            .as_ref()
            .and_then(|b| b.scale_down.as_ref())
            .and_then(|s| s.stabilization_window_seconds)
            .unwrap_or(300);
        let window = Duration::from_secs(u64::try_from(window.max(0)).unwrap_or(300));
        let stabilized = {
            let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            let list = h.entry(key.clone()).or_default();
            list.retain(|(t, _)| t.elapsed() <= window);
            list.push((Instant::now(), desired));
            if desired < current {
                list.iter()
                    .map(|(_, d)| *d)
                    .max()
                    .unwrap_or(desired)
                    .min(current)
            } else {
                desired
            }
        };
        status.desired_replicas = stabilized;
        let able = if stabilized != current {
            self.set_replicas(&key.namespace, &target.kind, &target.name, stabilized)
                .await?;
            status.last_scale_time = Some(Time::now());
            status.current_replicas = Some(current);
            let reason = if stabilized > current {
                "above target"
            } else {
                "below target"
            };
            let name = spec
                .metrics
                .first()
                .and_then(|m| m.resource.as_ref())
                .map(|r| r.name.clone())
                .unwrap_or_default();
            super::pods::emit(&self.recorder, &*hpa, EventType::Normal, "SuccessfulRescale",
                format!("New size: {stabilized}; reason: {name} resource utilization (percentage of request) {reason}"));
            condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {stabilized}"),
            )
        } else if desired < current {
            condition("AbleToScale", true, "ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation".into())
        } else {
            condition(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            )
        };
        let name = spec
            .metrics
            .first()
            .and_then(|m| m.resource.as_ref())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        status.conditions = vec![
            able,
            condition("ScalingActive", true, "ValidMetricFound", format!("the HPA was able to successfully calculate a replica count from {name} resource utilization (percentage of request)")),
            condition("ScalingLimited", limited.2, limited.0, limited.1),
        ];
        write(status).await?;
        Ok(Action::Requeue(SYNC_PERIOD))
    }

    async fn deleted(&self, key: &Key) {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}
