//! The EndpointSlice and Endpoints controllers: for every Service with a selector, the pods it
//! selects as network endpoints.
//!
//! Each pod with an IP becomes an endpoint with upstream's conditions (`ready`: Ready and not
//! terminating, or always with `publishNotReadyAddresses`; `serving`: Ready; `terminating`),
//! its node and a reference to it. The Service's ports resolve against each pod's container
//! ports (a named `targetPort` can differ between pods), and pods with the same resolved ports
//! share EndpointSlices of at most 100 endpoints, labelled `kubernetes.io/service-name` and
//! owned by the Service. The legacy `Endpoints` object of the same name carries the same
//! addresses in subsets (ready and not-ready).

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{
    EndpointAddress, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use bosun_api_types::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::IntOrString;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's default `--max-endpoints-per-slice`).
pub const MAX_PER_SLICE: usize = 100;

/// The EndpointSlice and Endpoints controllers' logic.
pub struct EndpointControllers {
    client: Client,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
}

fn selector_of(svc: &Service) -> Option<BTreeMap<String, String>> {
    let sel = svc.spec.as_ref()?.selector.clone();
    (!sel.is_empty()).then_some(sel)
}

/// A pod's port for a Service port (`None`: the pod has no port of that name).
fn resolve(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports.iter().find_map(|p| {
                (p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP")
                        == port.protocol.as_deref().unwrap_or("TCP"))
                .then_some(p.container_port)
            })
        }),
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// One pod as an endpoint, with the ports it resolves.
struct Member {
    endpoint: Endpoint,
    ports: Vec<EndpointPort>,
}

fn members(svc: &Service, pods: &[Arc<Pod>]) -> Vec<Member> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for pod in pods {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if matches!(super::pods::phase(pod), "Succeeded" | "Failed") {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = super::pods::is_ready(pod);
        let ports: Vec<EndpointPort> = spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: Some(p.name.clone().unwrap_or_default()),
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    port: Some(resolve(p, pod)?),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        let pod_spec = pod.spec.as_ref();
        let hostname = pod_spec
            .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
            .and_then(|s| s.hostname.clone());
        out.push(Member {
            endpoint: Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(publish_not_ready || (ready && !terminating)),
                    serving: Some(publish_not_ready || ready),
                    terminating: Some(terminating),
                }),
                hostname,
                target_ref: Some(pod_ref(pod)),
                node_name: pod_spec.and_then(|s| s.node_name.clone()),
                ..Default::default()
            },
            ports,
        });
    }
    out.sort_by(|a, b| a.endpoint.addresses.cmp(&b.endpoint.addresses));
    out
}

/// The Endpoints subsets for `members` (ports grouped, ready and not ready split).
fn subsets(members: &[Member]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for m in members {
        let key = serde_json::to_string(&m.ports).unwrap_or_default();
        let subset = groups.entry(key).or_insert_with(|| EndpointSubset {
            ports: m
                .ports
                .iter()
                .map(|p| bosun_api_types::core::v1::EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: p.port.unwrap_or(0),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
            ..Default::default()
        });
        let c = m.endpoint.conditions.clone().unwrap_or_default();
        let address = EndpointAddress {
            ip: m.endpoint.addresses[0].clone(),
            hostname: m.endpoint.hostname.clone(),
            node_name: m.endpoint.node_name.clone(),
            target_ref: m.endpoint.target_ref.clone(),
        };
        if c.ready == Some(true) {
            subset.addresses.push(address);
        } else if c.terminating != Some(true) {
            subset.not_ready_addresses.push(address);
        }
    }
    groups
        .into_values()
        .filter(|s| !s.addresses.is_empty() || !s.not_ready_addresses.is_empty())
        .collect()
}

impl EndpointControllers {
    /// The controller (on `factory`'s informers) and its logic; run one with the other.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<Service>, Self) {
        let services = factory.informer::<Service>(None).store();
        let slices = factory.informer::<EndpointSlice>(None).store();
        let controller = Controller::<Service>::new(Arc::clone(factory), None)
            // A pod maps to every Service whose selector matches it.
            .watches_with::<Pod>(move |pod| {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                services
                    .by_index("namespace", ns)
                    .iter()
                    .filter(|s| {
                        selector_of(s).is_some_and(|sel| {
                            sel.iter()
                                .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
                        })
                    })
                    .map(|s| Key::of(&**s))
                    .collect()
            })
            // A slice changed by anyone else is put back.
            .watches_with::<EndpointSlice>(|slice| {
                match (
                    slice.metadata.labels.get(SERVICE_NAME),
                    slice.metadata.labels.get(MANAGED_BY),
                ) {
                    (Some(svc), Some(m)) if m == CONTROLLER_NAME => {
                        vec![Key::namespaced(
                            slice.metadata.namespace.as_deref().unwrap_or(""),
                            svc,
                        )]
                    }
                    _ => Vec::new(),
                }
            });
        let pods = factory.informer::<Pod>(None).store();
        (
            controller,
            EndpointControllers {
                client,
                pods,
                slices,
            },
        )
    }

    async fn sync_slices(
        &self,
        svc: &Service,
        key: &Key,
        members: &[Member],
    ) -> bosun_client::Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .by_index("namespace", &key.namespace)
            .into_iter()
            .filter(|s| {
                s.metadata.labels.get(SERVICE_NAME) == Some(&key.name)
                    && s.metadata.labels.get(MANAGED_BY).map(String::as_str)
                        == Some(CONTROLLER_NAME)
            })
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        // Desired slices: by port set, 100 endpoints each.
        let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
        for m in members {
            let k = serde_json::to_string(&m.ports).unwrap_or_default();
            groups
                .entry(k)
                .or_insert_with(|| (m.ports.clone(), Vec::new()))
                .1
                .push(m.endpoint.clone());
        }
        let mut desired: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
        for (_, (ports, endpoints)) in groups {
            for chunk in endpoints.chunks(MAX_PER_SLICE) {
                desired.push((ports.clone(), chunk.to_vec()));
            }
        }
        if desired.is_empty() {
            // A Service with no endpoints still has one (empty) slice, as upstream keeps.
            let ports = svc
                .spec
                .as_ref()
                .map(|s| {
                    s.ports
                        .iter()
                        .map(|p| EndpointPort {
                            name: Some(p.name.clone().unwrap_or_default()),
                            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                            port: None,
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            desired.push((ports, Vec::new()));
        }
        let owner = super::pods::owner_ref(svc, "Service", "v1");
        // Reuse slices with the same ports first, then any, then make new ones.
        let mut free: Vec<Arc<EndpointSlice>> = existing;
        for (ports, endpoints) in desired {
            let pos = free
                .iter()
                .position(|s| s.ports == ports)
                .or(if free.is_empty() { None } else { Some(0) });
            match pos.map(|i| free.remove(i)) {
                Some(current) => {
                    if current.ports == ports && current.endpoints == endpoints {
                        continue;
                    }
                    let mut updated = (*current).clone();
                    updated.ports = ports;
                    updated.endpoints = endpoints;
                    match api
                        .replace(
                            current.metadata.name.as_deref().unwrap_or_default(),
                            &PostParams::default(),
                            &updated,
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    let mut slice = EndpointSlice {
                        address_type: "IPv4".into(),
                        endpoints,
                        ports,
                        ..Default::default()
                    };
                    slice.metadata.generate_name = Some(format!("{}-", key.name));
                    slice
                        .metadata
                        .labels
                        .insert(SERVICE_NAME.into(), key.name.clone());
                    slice
                        .metadata
                        .labels
                        .insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
                    // The Service's own labels, as upstream copies them.
                    for (k, v) in &svc.metadata.labels {
                        slice
                            .metadata
                            .labels
                            .entry(k.clone())
                            .or_insert_with(|| v.clone());
                    }
                    slice.metadata.owner_references = vec![owner.clone()];
                    api.create(&PostParams::default(), &slice).await?;
                }
            }
        }
        for extra in free {
            let params = DeleteParams {
                precondition_uid: extra.metadata.uid.clone(),
                ..Default::default()
            };
            match api
                .delete(extra.metadata.name.as_deref().unwrap_or_default(), &params)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn sync_endpoints(
        &self,
        svc: &Service,
        key: &Key,
        members: &[Member],
    ) -> bosun_client::Result<()> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let subsets = subsets(members);
        let mut labels = svc.metadata.labels.clone();
        if svc
            .spec
            .as_ref()
            .is_some_and(|s| s.cluster_ip.as_deref() == Some("None"))
        {
            labels.insert("service.kubernetes.io/headless".into(), String::new());
        }
        match api.get_opt(&key.name).await? {
            Some(current) => {
                if current.subsets == subsets && current.metadata.labels == labels {
                    return Ok(());
                }
                let mut updated = current;
                updated.subsets = subsets;
                updated.metadata.labels = labels;
                match api
                    .replace(&key.name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                    Err(e) => Err(e),
                }
            }
            None => {
                let mut ep = Endpoints {
                    subsets,
                    ..Default::default()
                };
                ep.metadata.name = Some(key.name.clone());
                ep.metadata.labels = labels;
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some(409) || e.code() == Some(403) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<Service> for EndpointControllers {
    type Error = bosun_client::Error;

    async fn reconcile(&self, svc: Arc<Service>) -> Result<Action, Self::Error> {
        let key = Key::of(&*svc);
        let Some(selector) = selector_of(&svc) else {
            // No selector: endpoints are the user's.
            return Ok(Action::Done);
        };
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let sel = bosun_api_types::meta::v1::LabelSelector {
            match_labels: selector,
            ..Default::default()
        };
        let Ok(sel) = sel.to_selector() else {
            return Ok(Action::Done);
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .by_index("namespace", &key.namespace)
            .into_iter()
            .filter(|p| sel.matches(&p.metadata.labels))
            .collect();
        let members = members(&svc, &pods);
        self.sync_slices(&svc, &key, &members).await?;
        self.sync_endpoints(&svc, &key, &members).await?;
        Ok(Action::Done)
    }

    async fn deleted(&self, key: &Key) {
        // Slices go with their owner; the Endpoints object has none.
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(ep)) if ep.metadata.owner_references.is_empty() => {
                let params = DeleteParams {
                    precondition_uid: ep.metadata.uid.clone(),
                    ..Default::default()
                };
                if let Err(e) = api.delete(&key.name, &params).await {
                    tracing::debug!(%key, error = %e, "deleting the Endpoints of a deleted Service");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let port: ServicePort =
            serde_json::from_value(serde_json::json!({"port": 80, "targetPort": "http"}))
                .unwrap_or_default();
        let pod = |p: i32| -> Pod {
            serde_json::from_value(serde_json::json!({"spec": {"containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": p}]}]}}))
            .unwrap_or_default()
        };
        assert_eq!(resolve(&port, &pod(8080)), Some(8080));
        assert_eq!(resolve(&port, &Pod::default()), None);
        let numeric: ServicePort =
            serde_json::from_value(serde_json::json!({"port": 80})).unwrap_or_default();
        assert_eq!(resolve(&numeric, &Pod::default()), Some(80));
    }
}
