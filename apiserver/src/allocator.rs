//! Service cluster IPs and node ports.
//!
//! Each allocated IP or port is a key in the store (`/registry/bosun/serviceips/{ip}`,
//! `/registry/bosun/nodeports/{port}`, valued with the owning `namespace/name`), claimed with
//! the store's create-if-absent, so concurrent API servers on one store never hand out the same
//! one and the allocation survives restarts. [`repair`] reconciles the keys with the Services at
//! start-up (claims what Services hold, frees what no Service holds).

use crate::error::ApiError;
use crate::object::Object;
use bosun_api_types::validation::{FieldError, FieldPath};
use bosun_store::{RangeRequest, Store};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

const IP_PREFIX: &str = "/registry/bosun/serviceips/";
const PORT_PREFIX: &str = "/registry/bosun/nodeports/";

/// The ranges services allocate from.
#[derive(Clone, Debug)]
pub struct Ranges {
    base: u32,
    size: u32,
    /// The CIDR as given (`10.96.0.0/12`).
    pub cidr: String,
    /// Inclusive node port range.
    pub node_ports: (u16, u16),
}

impl Ranges {
    /// Parses a service CIDR (`10.96.0.0/12`) and a node port range.
    pub fn new(cidr: &str, node_ports: (u16, u16)) -> Result<Self, String> {
        let (ip, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?} has no prefix length"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| format!("service CIDR {cidr:?}: {e}"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("service CIDR {cidr:?}: prefix length must be 8 to 30"))?;
        let size = 1u32 << (32 - bits);
        let base = u32::from(ip) & !(size - 1);
        if node_ports.0 > node_ports.1 {
            return Err(format!("node port range {node_ports:?} is empty"));
        }
        Ok(Ranges {
            base,
            size,
            cidr: cidr.to_owned(),
            node_ports,
        })
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size - 1
    }
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            base: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            size: 1 << 20,
            cidr: "10.96.0.0/12".into(),
            node_ports: (30000, 32767),
        }
    }
}

fn owner(svc: &Object) -> String {
    let meta = svc.get("metadata");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{ns}/{name}")
}

/// A random offset into a range of `size` addresses for a Service that asks for none. As
/// upstream (KEP-3070), the first 64 attempts take the upper band, keeping the lower one
/// (size/16, between 16 and 256 addresses) for Services that ask for a fixed address, such as
/// kube-dns's; later attempts take any. Offset 1 is the kubernetes Service's, the last address
/// the broadcast.
fn dynamic_offset(size: u32, attempt: u32) -> u32 {
    let band = (size / 16).clamp(16, 256);
    let lo = if attempt < 64 && size > band + 8 {
        band
    } else {
        2
    };
    lo + random_u32() % (size - 1).saturating_sub(lo).max(1)
}

fn random_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

async fn taken(store: &Arc<dyn Store>, prefix: &str) -> Result<HashSet<String>, ApiError> {
    let page = store
        .range(RangeRequest::prefix(prefix))
        .await
        .map_err(ApiError::internal)?;
    Ok(page
        .kvs
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(prefix).map(str::to_owned))
        .collect())
}

/// Claims one key; `Ok(false)` when someone holds it.
async fn claim(store: &Arc<dyn Store>, key: &str, owner: &str) -> Result<bool, ApiError> {
    match store.create(key, Bytes::from(owner.to_owned())).await {
        Ok(_) => Ok(true),
        Err(bosun_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Frees claimed keys (best effort: a leftover key is fixed by the next repair).
pub(crate) async fn release(store: &Arc<dyn Store>, keys: &[String]) {
    for k in keys {
        match store.delete(k, None).await {
            Ok(_) | Err(bosun_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key = %k, error = %e, "releasing an allocation failed"),
        }
    }
}

fn invalid(errs: Vec<FieldError>, name: &str) -> ApiError {
    let r = crate::resources::ApiResource::from_info(
        &<bosun_api_types::core::v1::Service as bosun_api_types::Resource>::INFO,
    );
    ApiError::invalid(&r, name, &errs)
}

fn service_type(svc: &Object) -> &str {
    svc.get("spec")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn uses_node_ports(svc: &Object) -> bool {
    matches!(service_type(svc), "NodePort" | "LoadBalancer")
}

/// Allocates a new Service's cluster IP and node ports (what the client asked for, or free
/// ones), writing them into `svc`. Returns the claimed keys, to release if the create fails.
/// A dry run picks free values without claiming them.
pub(crate) async fn allocate(
    store: &Arc<dyn Store>,
    ranges: &Ranges,
    svc: &mut Object,
    old: Option<&Object>,
    dry_run: bool,
) -> Result<Vec<String>, ApiError> {
    let who = owner(svc);
    let name = who.split_once('/').map(|(_, n)| n).unwrap_or("").to_owned();
    let mut claimed = Vec::new();
    let result = allocate_inner(store, ranges, svc, old, dry_run, &who, &name, &mut claimed).await;
    if result.is_err() {
        release(store, &claimed).await;
    }
    result.map(|()| claimed)
}

#[allow(clippy::too_many_arguments)]
async fn allocate_inner(
    store: &Arc<dyn Store>,
    ranges: &Ranges,
    svc: &mut Object,
    old: Option<&Object>,
    dry_run: bool,
    who: &str,
    name: &str,
    claimed: &mut Vec<String>,
) -> Result<(), ApiError> {
    let ty = service_type(svc).to_owned();
    let Some(Value::Object(spec)) = svc.get_mut("spec") else {
        return Ok(());
    };
    // The cluster IP: kept from the old object on update, else allocated.
    if ty != "ExternalName" {
        let old_ip = old
            .and_then(|o| o.get("spec"))
            .and_then(|s| s.get("clusterIP"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let asked = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                spec.get("clusterIPs")
                    .and_then(|a| a.get(0))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let ip = match (old_ip, asked) {
            (Some(old), Some(new)) if old != new => {
                return Err(invalid(
                    vec![FieldError::invalid(
                        &FieldPath::new("spec").child("clusterIPs").index(0),
                        vec![new],
                        "may not change once set",
                    )],
                    name,
                ))
            }
            (Some(old), _) => old,
            (None, Some(ip)) if ip == "None" => ip,
            (None, Some(ip)) => {
                let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                    invalid(
                        vec![FieldError::invalid(
                            &FieldPath::new("spec").child("clusterIPs").index(0),
                            &ip,
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        )],
                        name,
                    )
                })?;
                if !ranges.contains(parsed) {
                    return Err(invalid(
                        vec![FieldError::invalid(
                            &FieldPath::new("spec").child("clusterIPs"),
                            vec![ip.clone()],
                            &format!(
                                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                                ranges.cidr
                            ),
                        )],
                        name,
                    ));
                }
                let key = format!("{IP_PREFIX}{ip}");
                if dry_run {
                    if store
                        .get(&key, None)
                        .await
                        .map_err(ApiError::internal)?
                        .is_some()
                    {
                        return Err(ip_taken(&ip, name));
                    }
                } else if claim(store, &key, who).await? {
                    claimed.push(key);
                } else {
                    return Err(ip_taken(&ip, name));
                }
                ip
            }
            (None, None) => {
                let used = taken(store, IP_PREFIX).await?;
                let mut chosen = None;
                for attempt in 0..96 {
                    let offset = dynamic_offset(ranges.size, attempt);
                    let ip = Ipv4Addr::from(ranges.base + offset).to_string();
                    if used.contains(&ip) {
                        continue;
                    }
                    let key = format!("{IP_PREFIX}{ip}");
                    if dry_run {
                        chosen = Some(ip);
                        break;
                    }
                    if claim(store, &key, who).await? {
                        claimed.push(key);
                        chosen = Some(ip);
                        break;
                    }
                }
                chosen.ok_or_else(|| ApiError {
                    code: 500,
                    reason: "InternalError",
                    message: format!(
                        "Internal error occurred: failed to allocate a serviceIP: range is full ({})",
                        ranges.cidr
                    ),
                    details: None,
                })?
            }
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    }

    // Node ports.
    let old_ports: Vec<Value> = old
        .and_then(|o| o.get("spec"))
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let wants_ports = ty == "NodePort" || ty == "LoadBalancer";
    let Some(Value::Array(ports)) = spec.get_mut("ports") else {
        return Ok(());
    };
    if !wants_ports {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.shift_remove("nodePort");
        }
        return Ok(());
    }
    let mut used: Option<HashSet<String>> = None;
    for (i, p) in ports.iter_mut().enumerate() {
        let Some(p) = p.as_object_mut() else { continue };
        let asked = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0);
        // An update keeps the node port of the same port (by name, else by number).
        let previous = old_ports
            .iter()
            .find(|o| {
                let same_name = o.get("name").is_some() && o.get("name") == p.get("name");
                same_name
                    || (o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"))
            })
            .and_then(|o| o.get("nodePort"))
            .and_then(Value::as_i64)
            .filter(|n| *n > 0);
        let port = match (asked, previous) {
            (Some(a), Some(prev)) if a == prev => a,
            (None, Some(prev)) => prev,
            (Some(a), _) => {
                let path = FieldPath::new("spec")
                    .child("ports")
                    .index(i)
                    .child("nodePort");
                let (lo, hi) = ranges.node_ports;
                if a < i64::from(lo) || a > i64::from(hi) {
                    return Err(invalid(
                        vec![FieldError::invalid(
                            &path,
                            a,
                            &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        )],
                        name,
                    ));
                }
                let key = format!("{PORT_PREFIX}{a}");
                let free = if dry_run {
                    store
                        .get(&key, None)
                        .await
                        .map_err(ApiError::internal)?
                        .is_none()
                } else {
                    let ok = claim(store, &key, who).await?;
                    if ok {
                        claimed.push(key);
                    }
                    ok
                };
                if !free {
                    return Err(invalid(
                        vec![FieldError::invalid(
                            &path,
                            a,
                            "provided port is already allocated",
                        )],
                        name,
                    ));
                }
                a
            }
            (None, None) => {
                if used.is_none() {
                    used = Some(taken(store, PORT_PREFIX).await?);
                }
                let (lo, hi) = ranges.node_ports;
                let span = u32::from(hi - lo) + 1;
                let start = random_u32() % span;
                let mut chosen = None;
                for k in 0..span {
                    let candidate = i64::from(lo) + i64::from((start + k) % span);
                    if used
                        .as_ref()
                        .is_some_and(|u| u.contains(&candidate.to_string()))
                    {
                        continue;
                    }
                    let key = format!("{PORT_PREFIX}{candidate}");
                    if dry_run || claim(store, &key, who).await? {
                        if !dry_run {
                            claimed.push(key);
                        }
                        if let Some(u) = used.as_mut() {
                            u.insert(candidate.to_string());
                        }
                        chosen = Some(candidate);
                        break;
                    }
                }
                chosen.ok_or_else(|| ApiError {
                    code: 500,
                    reason: "InternalError",
                    message:
                        "Internal error occurred: failed to allocate a nodePort: range is full"
                            .into(),
                    details: None,
                })?
            }
        };
        p.insert("nodePort".into(), json!(port));
    }
    Ok(())
}

fn ip_taken(ip: &str, name: &str) -> ApiError {
    invalid(
        vec![FieldError::invalid(
            &FieldPath::new("spec").child("clusterIPs"),
            vec![ip.to_owned()],
            &format!("failed to allocate IP {ip}: provided IP is already allocated"),
        )],
        name,
    )
}

/// The allocation keys a Service holds.
pub(crate) fn keys_of(svc: &Object) -> Vec<String> {
    let mut keys = Vec::new();
    let spec = svc.get("spec");
    if let Some(ip) = spec
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
    {
        keys.push(format!("{IP_PREFIX}{ip}"));
    }
    if uses_node_ports(svc) {
        for p in spec
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                keys.push(format!("{PORT_PREFIX}{n}"));
            }
        }
    }
    keys
}

/// Frees what a deleted Service held; on update, what the old one held and the new one does not.
pub(crate) async fn release_service(store: &Arc<dyn Store>, old: &Object, new: Option<&Object>) {
    let keep: HashSet<String> = new.map(keys_of).unwrap_or_default().into_iter().collect();
    let free: Vec<String> = keys_of(old)
        .into_iter()
        .filter(|k| !keep.contains(k))
        .collect();
    release(store, &free).await;
}

/// Reconciles allocation keys with the Services in the store: every held IP and port is
/// claimed, every key no Service holds is freed.
pub(crate) async fn repair(store: &Arc<dyn Store>) -> Result<(), ApiError> {
    let page = store
        .range(RangeRequest::prefix("/registry/core/services/"))
        .await
        .map_err(ApiError::internal)?;
    let mut held = HashSet::new();
    for kv in &page.kvs {
        let Ok(svc) = crate::object::from_stored(&kv.value) else {
            continue;
        };
        let who = owner(&svc);
        for key in keys_of(&svc) {
            claim(store, &key, &who).await?;
            held.insert(key);
        }
    }
    for prefix in [IP_PREFIX, PORT_PREFIX] {
        for k in taken(store, prefix).await? {
            let key = format!("{prefix}{k}");
            if !held.contains(&key) {
                tracing::info!(%key, "freeing an allocation no Service holds");
                release(store, &[key]).await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_ips_keep_off_the_static_band() {
        let size = 1 << 20;
        for _ in 0..1000 {
            let o = dynamic_offset(size, 0);
            assert!((256..size - 1).contains(&o), "{o}");
        }
        // A /24: a band of 16; once the upper band is exhausted, anything from 2.
        assert!((0..200).all(|_| (16..255).contains(&dynamic_offset(256, 0))));
        assert!((0..200).all(|_| (2..255).contains(&dynamic_offset(256, 90))));
        assert!((0..200).any(|_| dynamic_offset(256, 90) < 16));
        // Tiny ranges still work.
        assert_eq!(dynamic_offset(4, 0), 2);
    }

    #[test]
    fn ranges_parse_and_bound() {
        let r = Ranges::new("10.96.0.0/12", (30000, 32767)).unwrap();
        assert_eq!(r.first_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(!r.contains(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(Ranges::new("10.96.0.0", (1, 2)).is_err());
        assert!(Ranges::new("10.96.0.0/40", (1, 2)).is_err());
    }
}
