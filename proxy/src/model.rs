//! What the dataplane must do, computed from Services and EndpointSlices as upstream's
//! `ServicePortMap` and `EndpointsMap` are: one [`ServicePort`] per port of each Service with
//! a cluster IP, carrying the endpoints that serve it.
//!
//! Endpoint choice follows upstream's `CategorizeEndpoints`: ready endpoints; when none is
//! ready, the serving and terminating ones (so connections drain instead of failing); with
//! `internalTrafficPolicy: Local` only this node's.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// From the API's spelling (`TCP` when absent).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' name.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One backend of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: IpAddr,
    /// The target port.
    pub port: u16,
    /// Ready (or unknown, which counts as ready).
    pub ready: bool,
    /// Serving (ready, or ready-but-terminating).
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
    /// The node it runs on.
    pub node: Option<String>,
}

/// One port of one Service, with what the dataplane needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port_name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The cluster IPs.
    pub cluster_ips: Vec<IpAddr>,
    /// The Service port.
    pub port: u16,
    /// The node port (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `sessionAffinity: ClientIP`: the timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// Every endpoint of the port (ready or not), in a stable order.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/name:port`, as upstream names a service port.
    pub fn id(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }

    /// The endpoints traffic goes to: ready ones; if none, serving terminating ones;
    /// restricted to `node`'s when `local`.
    pub fn usable(&self, local: bool, node: &str) -> Vec<&Endpoint> {
        let mine = |e: &&Endpoint| !local || e.node.as_deref() == Some(node);
        let ready: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .filter(mine)
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        self.endpoints
            .iter()
            .filter(|e| e.serving && e.terminating)
            .filter(mine)
            .collect()
    }
}

/// The whole desired state: service ports sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyState {
    /// The service ports.
    pub services: Vec<ServicePort>,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn ips(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str()?.parse().ok())
        .collect()
}

/// The state for `services` and `slices` (API objects as JSON).
pub fn build(services: &[Value], slices: &[Value]) -> ProxyState {
    // Slices by owning Service: (namespace, service name).
    let mut by_service: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for sl in slices {
        let svc = s(&sl["metadata"]["labels"]["kubernetes.io/service-name"]);
        if svc.is_empty() {
            continue;
        }
        by_service
            .entry((s(&sl["metadata"]["namespace"]).to_string(), svc.to_string()))
            .or_default()
            .push(sl);
    }
    let mut out = Vec::new();
    for svc in services {
        let spec = &svc["spec"];
        if spec["type"] == "ExternalName" {
            continue;
        }
        let mut cluster_ips = ips(&spec["clusterIPs"]);
        if cluster_ips.is_empty() {
            cluster_ips = spec["clusterIP"]
                .as_str()
                .and_then(|x| x.parse().ok())
                .into_iter()
                .collect();
        }
        if cluster_ips.is_empty() {
            // Headless (`None`) or not allocated yet: nothing to proxy.
            continue;
        }
        let ns = s(&svc["metadata"]["namespace"]).to_string();
        let name = s(&svc["metadata"]["name"]).to_string();
        let own = by_service.get(&(ns.clone(), name.clone()));
        for p in spec["ports"].as_array().into_iter().flatten() {
            let Some(protocol) = Protocol::parse(p["protocol"].as_str()) else {
                continue;
            };
            let Some(port) = p["port"].as_u64().and_then(|x| u16::try_from(x).ok()) else {
                continue;
            };
            let port_name = s(&p["name"]).to_string();
            let mut endpoints = Vec::new();
            for sl in own.into_iter().flatten() {
                // The slice's port of the same name and protocol.
                let Some(target) = sl["ports"].as_array().into_iter().flatten().find(|sp| {
                    s(&sp["name"]) == port_name
                        && Protocol::parse(sp["protocol"].as_str()) == Some(protocol)
                }) else {
                    continue;
                };
                let Some(tport) = target["port"].as_u64().and_then(|x| u16::try_from(x).ok())
                else {
                    continue;
                };
                for e in sl["endpoints"].as_array().into_iter().flatten() {
                    let c = &e["conditions"];
                    let ready = c["ready"].as_bool().unwrap_or(true);
                    let endpoint = |ip: IpAddr| Endpoint {
                        ip,
                        port: tport,
                        ready,
                        serving: c["serving"].as_bool().unwrap_or(ready),
                        terminating: c["terminating"].as_bool().unwrap_or(false),
                        node: e["nodeName"].as_str().map(String::from),
                    };
                    // One address per endpoint in practice; the first counts, as upstream.
                    if let Some(ip) = ips(&e["addresses"]).into_iter().next() {
                        endpoints.push(endpoint(ip));
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
            let affinity = (spec["sessionAffinity"] == "ClientIP").then(|| {
                spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
                    .as_u64()
                    .unwrap_or(10800) as u32
            });
            out.push(ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
                cluster_ips: cluster_ips.clone(),
                port,
                node_port: p["nodePort"].as_u64().and_then(|x| u16::try_from(x).ok()),
                external_ips: ips(&spec["externalIPs"]),
                affinity_timeout: affinity,
                internal_local: spec["internalTrafficPolicy"] == "Local",
                external_local: spec["externalTrafficPolicy"] == "Local",
                endpoints,
            });
        }
    }
    out.sort_by_key(|a| (a.id(), a.protocol));
    ProxyState { services: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Value {
        json!({"metadata": {"namespace": "default", "name": "web"},
               "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                                  {"name": "dns", "port": 53, "protocol": "UDP"}],
                        "sessionAffinity": "ClientIP"}})
    }

    fn slice(endpoints: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": "web-abc",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": endpoints})
    }

    #[test]
    fn builds_service_ports_with_their_endpoints() {
        let st = build(
            &[
                svc(),
                json!({"metadata": {"namespace": "default", "name": "headless"},
                             "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}),
            ],
            &[slice(json!([
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "a"},
                {"addresses": ["10.244.1.5"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "b"},
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "a"},
            ]))],
        );
        assert_eq!(st.services.len(), 2, "headless Services are not proxied");
        let dns = &st.services[0];
        assert_eq!(
            (dns.id(), dns.protocol, dns.endpoints.len()),
            ("default/web:dns".into(), Protocol::Udp, 0)
        );
        let http = &st.services[1];
        assert_eq!(http.id(), "default/web:http");
        assert_eq!(http.port, 80);
        assert_eq!(http.affinity_timeout, Some(10800));
        assert_eq!(http.endpoints.len(), 2, "duplicates merge");
        let usable = http.usable(false, "a");
        assert_eq!(usable.len(), 1);
        assert_eq!(usable[0].port, 8080);
        assert!(
            http.usable(true, "b").iter().all(|e| e.terminating),
            "falls back to terminating"
        );
    }
}
