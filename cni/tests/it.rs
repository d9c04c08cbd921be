//! CniNetwork against fake plugins (shell scripts that record what they were given) and, as
//! root, against Debian's real bridge, host-local, loopback and portmap plugins.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bosun_cni::{Attachment, CniNetwork, Error, NetworkConfigList, NetworkPlugin};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fake plugin that logs `COMMAND stdin` lines to `log` and answers ADD with a result that
/// adds one IP to its prevResult (or fails when its config says `"fail": true`).
fn fake_plugin(dir: &Path, name: &str, log: &Path) {
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
printf '%s %s %s %s %s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_ARGS" "$input" >> {log}
case "$CNI_COMMAND $input" in ADD*'"fail":true'*) echo '{{"cniVersion":"1.0.0","code":7,"msg":"told to fail","details":"by the test"}}'; exit 1;; esac
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}}],"ips":[{{"address":"10.9.0.{name_ip}/24","interface":0}}]}}'
fi
if [ "$CNI_COMMAND" = VERSION ]; then echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}}'; fi
exit 0
"#,
        log = log.display(),
        name_ip = name.len()
    );
    let p = dir.join(name);
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn stdin_of(line: &str) -> Value {
    let start = line.find('{').unwrap();
    serde_json::from_str(&line[start..]).unwrap()
}

fn network(d: &Path, conf: Value) -> CniNetwork {
    let list = NetworkConfigList::parse(conf.to_string().as_bytes(), "test").unwrap();
    CniNetwork::new(list, vec![d.join("bin")], d.join("cache"))
}

#[tokio::test]
async fn add_chains_results_passes_capabilities_and_caches_for_del() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    std::fs::create_dir_all(d.join("bin")).unwrap();
    let log = d.join("log");
    fake_plugin(&d.join("bin"), "first", &log);
    fake_plugin(&d.join("bin"), "second", &log);
    let net = network(
        d,
        json!({"cniVersion":"1.0.0","name":"pods","plugins":[
            {"type":"first","mtu":1400},
            {"type":"second","capabilities":{"portMappings":true}}]}),
    );
    let att = Attachment::new("c1", "/run/netns/c1")
        .arg("K8S_POD_NAME", "web")
        .arg("K8S_POD_NAMESPACE", "default")
        .capability(
            "portMappings",
            json!([{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]),
        )
        .capability("bandwidth", json!({"ingressRate": 1}));
    let r = net.add(&att).await.unwrap();
    // The last plugin's result is the answer.
    assert_eq!(r.ips[0].address, "10.9.0.6/24");
    assert_eq!(r.pod_ips().len(), 1);
    let l = lines(&log);
    assert_eq!(l.len(), 2);
    assert!(
        l[0].starts_with("ADD c1 eth0 IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default ")
    );
    let first = stdin_of(&l[0]);
    assert_eq!(first["name"], "pods");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["mtu"], 1400);
    assert!(first.get("prevResult").is_none());
    assert!(
        first.get("runtimeConfig").is_none(),
        "no capability declared"
    );
    let second = stdin_of(&l[1]);
    assert_eq!(second["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
    assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    assert!(second["runtimeConfig"].get("bandwidth").is_none());

    // CHECK and DEL get the cached result, even from a fresh instance (a restarted runtime).
    let again = network(
        d,
        json!({"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"first"},{"type":"second","capabilities":{"portMappings":true}}]}),
    );
    assert_eq!(again.cached(&att).await.unwrap(), r);
    again.check(&att).await.unwrap();
    again.del(&att).await.unwrap();
    let l = lines(&log);
    assert!(l[2].starts_with("CHECK") && l[3].starts_with("CHECK"));
    // DEL runs in reverse order with the cached result.
    assert!(l[4].starts_with("DEL") && stdin_of(&l[4])["type"] == "second");
    assert_eq!(
        stdin_of(&l[5])["prevResult"]["ips"][0]["address"],
        "10.9.0.6/24"
    );
    assert!(again.cached(&att).await.is_none());
    // DEL of something never added still succeeds, without a prevResult.
    again.del(&att).await.unwrap();
    assert!(stdin_of(&lines(&log)[7]).get("prevResult").is_none());
    assert!(
        again.check(&att).await.is_err(),
        "CHECK needs a cached result"
    );
}

#[tokio::test]
async fn a_failed_add_reports_the_plugin_error_and_undoes_the_earlier_plugins() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    std::fs::create_dir_all(d.join("bin")).unwrap();
    let log = d.join("log");
    fake_plugin(&d.join("bin"), "first", &log);
    fake_plugin(&d.join("bin"), "second", &log);
    let net = network(
        d,
        json!({"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"first"},{"type":"second","fail":true}]}),
    );
    let att = Attachment::new("c2", "/run/netns/c2");
    match net.add(&att).await {
        Err(Error::Plugin {
            plugin,
            code,
            msg,
            details,
            command,
        }) => {
            assert_eq!(
                (
                    plugin.as_str(),
                    code,
                    msg.as_str(),
                    details.as_str(),
                    command.as_str()
                ),
                ("second", 7, "told to fail", "by the test", "ADD")
            );
        }
        other => panic!("{other:?}"),
    }
    let cmds: Vec<String> = lines(&log)
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(cmds, ["ADD", "ADD", "DEL", "DEL"]);
    assert!(net.cached(&att).await.is_none());

    let missing = network(
        d,
        json!({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"nope"}]}),
    );
    assert!(matches!(
        missing.add(&att).await,
        Err(Error::PluginNotFound { .. })
    ));
    assert!(missing.status().await.is_err());
}

#[tokio::test]
async fn status_gc_and_version_follow_the_spec_version() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    std::fs::create_dir_all(d.join("bin")).unwrap();
    let log = d.join("log");
    fake_plugin(&d.join("bin"), "first", &log);
    // 1.0.0 plugins have no STATUS or GC: nothing is run.
    let old = network(
        d,
        json!({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"first"}]}),
    );
    old.status().await.unwrap();
    assert!(lines(&log).is_empty());
    assert_eq!(
        old.plugin_versions("first").await.unwrap(),
        ["0.4.0", "1.0.0", "1.1.0"]
    );

    let net = network(
        d,
        json!({"cniVersion":"1.1.0","name":"n","plugins":[{"type":"first"}]}),
    );
    net.status().await.unwrap();
    let (keep, stale) = (
        Attachment::new("keep", "/x"),
        Attachment::new("stale", "/y"),
    );
    net.add(&keep).await.unwrap();
    net.add(&stale).await.unwrap();
    std::fs::remove_file(&log).unwrap();
    assert_eq!(
        net.gc(std::slice::from_ref(&keep)).await.unwrap(),
        ["stale"]
    );
    let l = lines(&log);
    assert!(l[0].starts_with("DEL stale"), "{l:?}");
    assert!(l[1].starts_with("GC"));
    assert_eq!(
        stdin_of(&l[1])["cni.dev/valid-attachments"],
        json!([{"containerID":"keep","ifname":"eth0"}])
    );
    assert!(net.cached(&keep).await.is_some());
}

/// A network namespace held by a bind mount, removed on drop.
struct Netns(PathBuf);

impl Netns {
    fn new(path: PathBuf) -> Self {
        std::fs::File::create(&path).unwrap();
        assert!(Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true")
            .status()
            .unwrap()
            .success());
        Netns(path)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.0.display()))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn real_plugins_ready() -> bool {
    let ok = rustix_is_root() && Path::new("/usr/lib/cni/bridge").exists();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CNI tests need root and containernetworking-plugins"
        );
    }
    ok
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

#[tokio::test]
async fn real_bridge_host_local_and_portmap_attach_and_detach_a_namespace() {
    if !real_plugins_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let bridge = format!("bosuncni{}", std::process::id() % 10000);
    let net = network_real(d, &bridge);
    let ns = Netns::new(d.join("ns"));
    let att = Attachment::new(format!("cni-it-{}", std::process::id()), &ns.0)
        .arg("K8S_POD_NAME", "web")
        .capability(
            "portMappings",
            json!([{"hostPort":18181,"containerPort":80,"protocol":"tcp"}]),
        );
    let _guard = Cleanup(bridge.clone());
    let r = net.add(&att).await.unwrap();
    let ip = r.pod_ips()[0].to_string();
    assert!(ip.starts_with("10.89.3."), "{ip}");
    let addr =
        String::from_utf8_lossy(&ns.run(&["ip", "-o", "addr", "show", "eth0"]).stdout).to_string();
    assert!(addr.contains(&ip), "{addr}");
    // The pod reaches its gateway on the bridge.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ping = ns.run(&["busybox", "ping", "-c1", "-W1", "10.89.3.1"]);
        if ping.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod cannot reach its gateway: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }
    // CHECK (bridge only: Debian's portmap 1.1.1 fails CHECK on IPv4-only pods, looking for
    // an ip6tables chain it never made).
    let mut bridge_only = net.config().clone();
    bridge_only.plugins.truncate(1);
    CniNetwork::new(bridge_only, vec!["/usr/lib/cni".into()], d.join("cache"))
        .check(&att)
        .await
        .unwrap();
    // The hostPort is DNATed to the pod.
    let nat = String::from_utf8_lossy(
        &Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        nat.contains("--dport 18181") && nat.contains(&format!("{ip}:80")),
        "{nat}"
    );
    net.del(&att).await.unwrap();
    let after = String::from_utf8_lossy(&ns.run(&["ip", "-o", "link"]).stdout).to_string();
    assert!(!after.contains("eth0"), "{after}");
    // host-local released the lease.
    let leases: Vec<_> = std::fs::read_dir(d.join("ipam").join("pods-it"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !leases.iter().any(|l| l.to_string_lossy() == ip),
        "{leases:?}"
    );
    // The portmap chains for this container are gone.
    let nat = String::from_utf8_lossy(
        &Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        !nat.contains(&att.container_id),
        "portmap rules left behind"
    );
}

/// Removes the test's bridge and any NAT rules of its network, even when the test fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        bosun_cni::cleanup::remove_network_nat_rules("pods-it");
    }
}

fn network_real(d: &Path, bridge: &str) -> CniNetwork {
    let conf = json!({"cniVersion":"1.0.0","name":"pods-it","plugins":[
        {"type":"bridge","bridge":bridge,"isGateway":true,"ipMasq":true,"hairpinMode":true,
         "ipam":{"type":"host-local","dataDir": d.join("ipam"),"ranges":[[{"subnet":"10.89.3.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
        {"type":"portmap","capabilities":{"portMappings":true}}]});
    let list = NetworkConfigList::parse(conf.to_string().as_bytes(), "test").unwrap();
    CniNetwork::new(list, vec!["/usr/lib/cni".into()], d.join("cache"))
}
