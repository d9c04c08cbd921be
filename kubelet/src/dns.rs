//! A pod's DNS settings — the sandbox's `resolv.conf` — as upstream's kubelet computes them
//! from `dnsPolicy` and `dnsConfig`:
//!
//! - `ClusterFirst` (the default): the cluster DNS servers, the search path
//!   `NS.svc.DOMAIN svc.DOMAIN DOMAIN` then the host's, `options ndots:5`; without a cluster
//!   DNS configured, as `Default`. A host-network pod gets `Default` unless its policy is
//!   `ClusterFirstWithHostNet`;
//! - `Default`: the node's own `/etc/resolv.conf`;
//! - `None`: nothing but the pod's `dnsConfig`.
//!
//! `dnsConfig` then adds nameservers and searches (duplicates dropped) and options (a pod's
//! option replaces one of the same name); at most 3 nameservers and 32 search domains stay.

use bosun_cri::v1::DnsConfig;
use serde_json::Value;

/// The cluster's DNS, as `bosun agent --cluster-dns --cluster-domain` give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The DNS Service's addresses (empty: no cluster DNS).
    pub servers: Vec<String>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

impl Default for ClusterDns {
    fn default() -> Self {
        ClusterDns {
            servers: Vec::new(),
            domain: "cluster.local".into(),
        }
    }
}

/// Upstream's limits.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// A `resolv.conf` text as a CRI `DnsConfig`.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut d = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => d.servers.extend(words.next().map(String::from)),
            // The last search (or domain) line wins, as the resolver reads them.
            Some("search") | Some("domain") => d.searches = words.map(String::from).collect(),
            Some("options") => d.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    d
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The DNS settings for `pod`; `host` is the node's `/etc/resolv.conf`.
pub fn pod_dns(pod: &Value, cluster: &ClusterDns, host: &str) -> DnsConfig {
    let spec = &pod["spec"];
    let host_network = spec["hostNetwork"].as_bool() == Some(true);
    let policy = spec["dnsPolicy"].as_str().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut d = if policy == "None" {
        DnsConfig::default()
    } else if cluster_first && !cluster.servers.is_empty() {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let dom = &cluster.domain;
        let mut searches = vec![format!("{ns}.svc.{dom}"), format!("svc.{dom}"), dom.clone()];
        push_unique(&mut searches, parse_resolv_conf(host).searches);
        DnsConfig {
            servers: cluster.servers.clone(),
            searches,
            options: vec!["ndots:5".into()],
        }
    } else {
        parse_resolv_conf(host)
    };
    let cfg = &spec["dnsConfig"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    push_unique(&mut d.servers, strings(&cfg["nameservers"]));
    push_unique(&mut d.searches, strings(&cfg["searches"]));
    for o in cfg["options"].as_array().into_iter().flatten() {
        let Some(name) = o["name"].as_str() else {
            continue;
        };
        let text = match o["value"].as_str() {
            Some(v) => format!("{name}:{v}"),
            None => name.to_string(),
        };
        d.options.retain(|x| x.split(':').next() != Some(name));
        d.options.push(text);
    }
    d.servers.truncate(MAX_NAMESERVERS);
    d.searches.truncate(MAX_SEARCHES);
    d
}

/// The `/etc/hosts` the kubelet gives each container of `pod` (upstream's kubelet-managed
/// hosts file): localhost and the IPv6 names, the pod's own address under its host name (and
/// its FQDN with `spec.subdomain`), then `spec.hostAliases`. A `hostNetwork` pod gets the
/// node's hosts file (`node_hosts`) instead of the managed entries.
pub fn hosts_file(pod: &serde_json::Value, pod_ip: &str, domain: &str, node_hosts: &str) -> String {
    let spec = &pod["spec"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut out = String::new();
    if spec["hostNetwork"].as_bool() == Some(true) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(node_hosts);
        if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str(
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n",
        );
        let hostname = match text(&spec["hostname"]) {
            h if h.is_empty() => text(&pod["metadata"]["name"]),
            h => h,
        };
        if !pod_ip.is_empty() {
            match text(&spec["subdomain"]) {
                sub if sub.is_empty() => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
                sub => {
                    let ns = text(&pod["metadata"]["namespace"]);
                    out.push_str(&format!(
                        "{pod_ip}\t{hostname}.{sub}.{ns}.svc.{domain}\t{hostname}\n"
                    ));
                }
            }
        }
    }
    let aliases = spec["hostAliases"].as_array().into_iter().flatten();
    let mut added = false;
    for alias in aliases {
        if !added {
            out.push_str("\n# Entries added by HostAliases.\n");
            added = true;
        }
        let names: Vec<String> = alias["hostnames"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        out.push_str(&format!("{}\t{}\n", text(&alias["ip"]), names.join("\t")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions rotate\n";

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.96.0.10".into()],
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn hosts_files_as_upstream_writes_them() {
        let pod = serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}
        });
        let hosts = hosts_file(&pod, "10.244.0.7", "cluster.local", "");
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("\n10.244.0.7\tweb-1\n"), "{hosts}");
        assert!(
            hosts.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
        );
        let pod = serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "shop"},
            "spec": {"hostname": "db", "subdomain": "dbs"}
        });
        let hosts = hosts_file(&pod, "10.244.0.8", "cluster.local", "");
        assert!(hosts.ends_with("10.244.0.8\tdb.dbs.shop.svc.cluster.local\tdb\n"));
        let pod = serde_json::json!({"metadata": {"name": "h"}, "spec": {"hostNetwork": true}});
        assert_eq!(
            hosts_file(&pod, "192.168.1.5", "cluster.local", "127.0.0.1 localhost"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn follows_the_dns_policy() {
        let pod = json!({"metadata": {"namespace": "shop"}, "spec": {}});
        let d = pod_dns(&pod, &cluster(), HOST);
        assert_eq!(d.servers, ["10.96.0.10"]);
        assert_eq!(
            d.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(d.options, ["ndots:5"]);
        // Without a cluster DNS, and for host-network pods, the node's.
        assert_eq!(
            pod_dns(&pod, &ClusterDns::default(), HOST).servers,
            ["192.0.2.53", "192.0.2.54"]
        );
        let host_net = json!({"metadata": {"namespace": "shop"}, "spec": {"hostNetwork": true}});
        assert_eq!(pod_dns(&host_net, &cluster(), HOST).options, ["rotate"]);
        let with_net = json!({"metadata": {"namespace": "shop"},
                              "spec": {"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}});
        assert_eq!(pod_dns(&with_net, &cluster(), HOST).servers, ["10.96.0.10"]);
        let default = json!({"metadata": {"namespace": "shop"}, "spec": {"dnsPolicy": "Default"}});
        assert_eq!(
            pod_dns(&default, &cluster(), HOST).searches,
            ["corp.example"]
        );
    }

    #[test]
    fn merges_the_pods_dns_config() {
        let pod = json!({"metadata": {"namespace": "a"}, "spec": {"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8", "9.9.9.9", "8.8.4.4"],
            "searches": ["x.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}});
        let d = pod_dns(&pod, &cluster(), HOST);
        assert_eq!(
            d.servers,
            ["1.1.1.1", "8.8.8.8", "9.9.9.9"],
            "three at most, no duplicates"
        );
        assert_eq!(d.searches, ["x.example"]);
        assert_eq!(d.options, ["ndots:2", "edns0"]);
        // A pod's option replaces the policy's of the same name.
        let pod = json!({"metadata": {"namespace": "a"}, "spec": {"dnsConfig": {
            "options": [{"name": "ndots", "value": "1"}]}}});
        assert_eq!(pod_dns(&pod, &cluster(), HOST).options, ["ndots:1"]);
    }

    #[test]
    fn reads_resolv_conf() {
        let d = parse_resolv_conf("domain a.example\nsearch b.example c.example ; note\nnameserver ::1\noptions ndots:1 timeout:2\n");
        assert_eq!(d.searches, ["b.example", "c.example"]);
        assert_eq!(d.servers, ["::1"]);
        assert_eq!(d.options, ["ndots:1", "timeout:2"]);
    }
}
