//! Host-gateway routing between nodes: each node reaches another node's pod CIDR through that
//! node's address (`ip route replace <podCIDR> via <node IP>`), as flannel's host-gw backend
//! does. The routes bosun installs carry their own routing protocol number ([`PROTO`]), so a
//! sync removes exactly the stale ones it made and nothing else; forwarding for the node's own
//! pod CIDR is allowed in the `FORWARD` chain (hosts whose policy drops forwarded traffic).
//!
//! ```no_run
//! # async fn demo() -> Result<(), bosun_cni::Error> {
//! use bosun_cni::routes::{sync, Route};
//! sync(&[Route { dst: "10.244.1.0/24".into(), via: "192.0.2.12".parse().unwrap() }]).await?;
//! # Ok(()) }
//! ```

use crate::Error;
use std::net::IpAddr;
use tokio::process::Command;

/// The routing protocol number on bosun's routes (`ip route … proto 181`).
pub const PROTO: &str = "181";

/// A route to another node's pods.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// The other node's pod CIDR.
    pub dst: String,
    /// The other node's address.
    pub via: IpAddr,
}

async fn run(args: &[&str]) -> Result<String, Error> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .await
        .map_err(|e| Error::io(format!("running {}", args[0]), e))?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The routes bosun installed (IPv4), from `ip -j route show proto 181`.
pub async fn installed() -> Result<Vec<Route>, Error> {
    let out = run(&["ip", "-j", "route", "show", "proto", PROTO]).await?;
    parse_routes(&out)
}

/// Parses `ip -j route` output into routes with a gateway.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, Error> {
    let v: serde_json::Value =
        serde_json::from_str(if json.trim().is_empty() { "[]" } else { json })
            .map_err(|e| Error::Command(format!("ip route output: {e}")))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Route {
                dst: r["dst"].as_str()?.to_string(),
                via: r["gateway"].as_str()?.parse().ok()?,
            })
        })
        .collect())
}

/// Makes bosun's routes exactly `want`: missing ones are added (or replaced), stale ones
/// removed.
pub async fn sync(want: &[Route]) -> Result<(), Error> {
    let have = installed().await?;
    for r in want {
        if !have.contains(r) {
            let via = r.via.to_string();
            run(&[
                "ip", "route", "replace", &r.dst, "via", &via, "proto", PROTO,
            ])
            .await?;
            tracing::info!(dst = %r.dst, via = %r.via, "route to another node's pods added");
        }
    }
    for r in have {
        if !want.iter().any(|w| w.dst == r.dst) {
            run(&["ip", "route", "del", &r.dst, "proto", PROTO]).await?;
            tracing::info!(dst = %r.dst, "route to a node that is gone removed");
        }
    }
    Ok(())
}

/// Lets forwarded traffic to and from `cidr` (this node's pods) through the `FORWARD` chain.
pub async fn allow_forwarding(cidr: &str) -> Result<(), Error> {
    for dir in ["-s", "-d"] {
        let rule = [
            dir,
            cidr,
            "-m",
            "comment",
            "--comment",
            "bosun pod traffic",
            "-j",
            "ACCEPT",
        ];
        let mut check = vec!["iptables", "-C", "FORWARD"];
        check.extend(rule);
        if run(&check).await.is_err() {
            let mut add = vec!["iptables", "-I", "FORWARD"];
            add.extend(rule);
            run(&add).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_route_json() {
        let out = r#"[{"dst":"10.244.1.0/24","gateway":"172.31.250.12","dev":"eth0","protocol":"181","flags":[]},
                      {"dst":"10.244.9.0/24","dev":"eth0","flags":[]}]"#;
        assert_eq!(
            parse_routes(out).unwrap(),
            vec![Route {
                dst: "10.244.1.0/24".into(),
                via: "172.31.250.12".parse().unwrap()
            }]
        );
        assert!(parse_routes("").unwrap().is_empty());
        assert!(parse_routes("nope").is_err());
    }
}
