//! The built-in runtime in a temporary directory, with a CNI bridge network of its own and
//! the busybox test image imported; on drop, everything it made (processes, cgroups, mounts,
//! the bridge, NAT rules) is removed even when the test failed halfway.

use super::containerd::{kill_and_remove_cgroup, unmount_under, IMAGE};
use super::image::{busybox_archive, BUSYBOX};
use bosun_cni::{CniNetwork, NetworkConfigList};
use bosun_cri::builtin::images::ImageStore;
use bosun_cri::builtin::runtime::{BuiltinConfig, BuiltinRuntime};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

pub const BRIDGE: &str = "bosuncri1";
pub const NETWORK: &str = "bosun-builtin-test";
pub const CGROUP_PARENT: &str = "bosun-builtin-test";

/// Whether the test can run; panics in CI when something is missing.
pub fn available() -> bool {
    let needed = [
        "/usr/sbin/runc",
        BUSYBOX,
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/portmap",
    ];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let root = super::containerd::is_root();
    if missing.is_empty() && root {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "built-in runtime test cannot run in CI: root={root}, missing {missing:?}"
    );
    eprintln!("skipping the built-in runtime test: root={root}, missing {missing:?}");
    false
}

pub struct Builtin {
    pub dir: tempfile::TempDir,
    pub config: BuiltinConfig,
    /// Held until everything is cleaned up (the last field drops last): see [`exclusive`].
    _exclusive: std::sync::Arc<std::fs::File>,
}

/// One built-in runtime test at a time, whether the tests run as threads of one process
/// (`cargo test`) or as processes (nextest): they share the bridge, the subnet, the NAT rules'
/// network name and the cgroup parent, and each one's cleanup removes all of them. The lock
/// is a `flock` (which excludes other open files of it, in this process or another); a test
/// that makes a second runtime while it holds one shares its lock.
fn exclusive() -> std::sync::Arc<std::fs::File> {
    thread_local! {
        static HELD: std::cell::RefCell<std::sync::Weak<std::fs::File>> =
            const { std::cell::RefCell::new(std::sync::Weak::new()) };
    }
    HELD.with(|held| {
        if let Some(file) = held.borrow().upgrade() {
            return file;
        }
        let path = std::env::temp_dir().join("bosun-builtin-runtime-test.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        file.lock().unwrap();
        let file = std::sync::Arc::new(file);
        *held.borrow_mut() = std::sync::Arc::downgrade(&file);
        file
    })
}

impl Builtin {
    /// A fresh runtime directory with the test image imported and the network configured.
    pub fn new() -> Builtin {
        let exclusive = exclusive();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": d.join("ipam"),
                      "ranges": [[{"subnet": "10.88.8.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        let list = NetworkConfigList::parse(conf.to_string().as_bytes(), "test").unwrap();
        let net = CniNetwork::new(list, vec!["/usr/lib/cni".into()], d.join("cni-cache"));
        let mut config = BuiltinConfig::new(d.join("root"), d.join("state"));
        config.runc = "/usr/sbin/runc".into();
        config.shim = vec![env!("CARGO_BIN_EXE_bosun-cri-shim").into()];
        config.cgroup_parent = format!("/{CGROUP_PARENT}");
        config.network = Some(Arc::new(net));
        ImageStore::open(d.join("root/images"))
            .unwrap()
            .import(&busybox_archive(d, IMAGE, &["sh"]))
            .unwrap();
        Builtin {
            dir,
            config,
            _exclusive: exclusive,
        }
    }

    /// Opens (or reopens, as after a restart) the runtime, with its streaming server on a
    /// loopback port.
    pub async fn open(&self) -> Arc<BuiltinRuntime> {
        let rt = Arc::new(BuiltinRuntime::open(self.config.clone()).unwrap());
        rt.serve_streaming(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        rt
    }
}

impl Drop for Builtin {
    fn drop(&mut self) {
        kill_and_remove_cgroup(CGROUP_PARENT);
        // Shims left by a failed test.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.dir.path().display().to_string()])
            .stderr(Stdio::null())
            .status();
        let runc_root = self.config.state.join("runc");
        if let Ok(out) = Command::new("/usr/sbin/runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("/usr/sbin/runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "-f", id])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        unmount_under(self.dir.path());
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
        bosun_cni::cleanup::remove_network_nat_rules(NETWORK);
        kill_and_remove_cgroup(CGROUP_PARENT);
    }
}
