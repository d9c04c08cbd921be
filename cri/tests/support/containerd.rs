//! A containerd 1.6 the tests start themselves (own root, state and socket in a temporary
//! directory), and cleanup of everything it and the CNI plugins create. Shared by the
//! integration tests and the lifecycle benchmark.

use super::image::{busybox_archive, BUSYBOX};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BRIDGE: &str = "bosuncri0";
pub const SUBNET: &str = "10.88.7.0/24";
pub const IMAGE: &str = "docker.io/bosun/busybox:1";
pub const PAUSE: &str = "docker.io/bosun/pause:1";

/// Whether the test can run; panics in CI when something is missing.
pub fn available() -> bool {
    let needed = [
        "/usr/bin/containerd",
        "/usr/bin/ctr",
        "/usr/sbin/runc",
        BUSYBOX,
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
        "/usr/lib/cni/portmap",
    ];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let root = std::env::var("USER").map(|u| u == "root").unwrap_or(true) && is_root();
    if missing.is_empty() && root {
        return true;
    }
    let why = if root {
        format!("missing {missing:?} (scripts/test-all installs containerd, runc, busybox-static and containernetworking-plugins)")
    } else {
        "not root".to_string()
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "containerd test cannot run in CI: {why}"
    );
    eprintln!("skipping the containerd test: {why}");
    false
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub struct Containerd {
    child: Child,
    /// The temporary directory holding its root, state, socket and log.
    pub dir: tempfile::TempDir,
    /// The CRI socket.
    pub socket: PathBuf,
    /// What existed before, so that only what the test created is removed.
    before: Before,
}

struct Before {
    cni_state: bool,
    run_dir: bool,
    hostport_chains: bool,
    netns: Vec<String>,
}

fn netns_names() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process in a cgroup directory and below.
pub fn cgroup_pids(dir: &Path, out: &mut Vec<String>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().map(String::from));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_pids(&e.path(), out);
            }
        }
    }
}

pub const CGROUP_PARENT: &str = "bosun-cri-test";
const HOSTPORT_RULES: &[&[&str]] = &[
    &[
        "-D",
        "PREROUTING",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ],
    &[
        "-D",
        "OUTPUT",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ],
    &[
        "-D",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ],
];

fn hostport_chains() -> bool {
    Command::new("iptables")
        .args(["-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes a cgroup directory and its children (deepest first).
pub fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Containerd {
    /// Starts containerd and imports the test images.
    pub fn start() -> Containerd {
        let before = Before {
            cni_state: Path::new("/var/lib/cni").exists(),
            run_dir: Path::new("/run/containerd").exists(),
            hostport_chains: hostport_chains(),
            netns: netns_names(),
        };
        let dir = tempfile::Builder::new()
            .prefix("bosun-containerd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        for sub in ["root", "state", "cni", "cni-ipam", "opt"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(
            d.join("cni/10-bosun.conflist"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "cniVersion": "0.4.0", "name": "bosun-cri-test",
                "plugins": [
                    {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": d.join("cni-ipam")}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            }))
            .unwrap(),
        )
        .unwrap();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
            cni = d.join("cni").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            child,
            dir,
            socket,
            before,
        };
        let started = Instant::now();
        while !c.socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for (name, cmd) in [
            (IMAGE, vec!["sh"]),
            (
                PAUSE,
                vec![
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done",
                ],
            ),
        ] {
            let archive = busybox_archive(c.dir.path(), name, &cmd);
            let out = Command::new("/usr/bin/ctr")
                .arg("--address")
                .arg(&c.socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&archive)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "importing {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Container processes (a failed test may leave some running) die first.
        let mut pids = Vec::new();
        cgroup_pids(
            &Path::new("/sys/fs/cgroup/memory").join(CGROUP_PARENT),
            &mut pids,
        );
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd; they are started with our socket's address.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.socket.display().to_string()])
            .status();
        // Wait (at most 5 s) until they are gone, so their mounts can be released.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && Command::new("pgrep")
                .args(["-f", &self.socket.display().to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Mounts under our root (rootfs, shm) and our bridge.
        unmount_under(self.dir.path());
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
        // The cgroup parent in every hierarchy.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                remove_cgroup(&h.path().join(CGROUP_PARENT));
            }
        }
        // What containerd and the CNI plugins write outside the configured root and state.
        if !self.before.hostport_chains {
            for rule in HOSTPORT_RULES {
                let _ = Command::new("iptables")
                    .args(["-t", "nat"])
                    .args(*rule)
                    .stderr(Stdio::null())
                    .status();
            }
            for chain in [
                "CNI-HOSTPORT-DNAT",
                "CNI-HOSTPORT-MASQ",
                "CNI-HOSTPORT-SETMARK",
            ] {
                for op in ["-F", "-X"] {
                    let _ = Command::new("iptables")
                        .args(["-t", "nat", op, chain])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // Network namespaces and per-sandbox NAT chains left by sandboxes not torn down: only
        // containerd's own (`cni-…`), as other tests make namespaces of their own meanwhile.
        for ns in netns_names()
            .into_iter()
            .filter(|n| n.starts_with("cni-") && !self.before.netns.contains(n))
        {
            let _ = Command::new("ip")
                .args(["netns", "delete", &ns])
                .stderr(Stdio::null())
                .status();
        }
        bosun_cni::cleanup::remove_network_nat_rules("bosun-cri-test");
        if !self.before.cni_state {
            let _ = std::fs::remove_dir_all("/var/lib/cni");
        }
        if !self.before.run_dir {
            let _ = std::fs::remove_dir_all("/run/containerd");
        }
    }
}

/// Lazily unmounts every mount under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        let root = dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// Kills every process in the cgroup `parent` (all hierarchies) and removes the cgroups.
pub fn kill_and_remove_cgroup(parent: &str) {
    let mut pids = Vec::new();
    for h in ["memory", "pids", "cpu,cpuacct"] {
        cgroup_pids(&Path::new("/sys/fs/cgroup").join(h).join(parent), &mut pids);
    }
    pids.sort();
    pids.dedup();
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            remove_cgroup(&h.path().join(parent));
        }
    }
}
