//! The result of an ADD (spec 1.0 shape; results of 0.3.x and 0.4.0 plugins read into it too,
//! and 0.1/0.2's `ip4`/`ip6` form is converted).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An interface a plugin created or configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The interface's name.
    pub name: String,
    /// Its hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Its MTU, when the plugin reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path it is in; empty for the host's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address assigned to an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with its prefix length (`10.1.0.5/24`).
    pub address: String,
    /// The gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

/// A route added inside the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination network.
    pub dst: String,
    /// The next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings a plugin suggests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// What an ADD returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The spec version the result is written in.
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Deserialize)]
struct LegacyIp {
    ip: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Legacy {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
}

impl CniResult {
    /// Reads a plugin's result in any spec version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let v: serde_json::Value = serde_json::from_slice(bytes)?;
        if v.get("ip4").is_some() || v.get("ip6").is_some() {
            let l: Legacy = serde_json::from_value(v)?;
            let ips = [l.ip4, l.ip6]
                .into_iter()
                .flatten()
                .map(|i| IpConfig {
                    address: i.ip,
                    gateway: i.gateway,
                    interface: None,
                })
                .collect();
            return Ok(CniResult {
                cni_version: l.cni_version,
                ips,
                dns: l.dns,
                ..Default::default()
            });
        }
        serde_json::from_value(v)
    }

    /// The addresses assigned inside the sandbox (those on a sandbox interface, or all when
    /// the plugin did not say which interface), in the plugin's order: the pod IPs.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                None => true,
                Some(i) => self
                    .interfaces
                    .get(i)
                    .is_none_or(|iface| !iface.sandbox.is_empty()),
            })
            .filter_map(IpConfig::ip)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bridge_result_and_finds_the_pod_ip() {
        let r = CniResult::from_json(br#"{"cniVersion":"1.0.0",
            "interfaces":[{"name":"cni0","mac":"aa"},{"name":"veth1","mac":"bb"},{"name":"eth0","mac":"cc","sandbox":"/run/netns/x"}],
            "ips":[{"interface":2,"address":"10.1.0.5/24","gateway":"10.1.0.1"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#).unwrap();
        assert_eq!(r.pod_ips(), ["10.1.0.5".parse::<IpAddr>().unwrap()]);
        // Written back without the empty parts.
        let back = serde_json::to_string(&r).unwrap();
        assert!(!back.contains("dns"), "{back}");
        assert!(back.contains(r#""gateway":"10.1.0.1""#));
    }

    #[test]
    fn reads_older_versions() {
        let r = CniResult::from_json(
            br#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/16"}]}"#,
        )
        .unwrap();
        assert_eq!(r.pod_ips().len(), 1);
        let r = CniResult::from_json(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.3/16","gateway":"10.0.0.1"}}"#,
        )
        .unwrap();
        assert_eq!(r.pod_ips(), ["10.0.0.3".parse::<IpAddr>().unwrap()]);
        assert!(CniResult::from_json(b"{").is_err());
    }
}
