//! `remote` against Debian's containerd 1.6 (CRI plugin), started by the test with its own
//! root, state and socket in a temporary directory, `restrict_oom_score_adj`, a locally
//! imported sandbox image and CNI from Debian's containernetworking-plugins. As root only; in
//! CI (`CI=true`) a missing containerd, runc, busybox-static or CNI plugin fails the test.

use super::image::{busybox_archive, BUSYBOX};
use bosun_cri::remote::RemoteRuntime;
use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BRIDGE: &str = "bosuncri0";
const SUBNET: &str = "10.88.7.0/24";
const IMAGE: &str = "docker.io/bosun/busybox:1";
const PAUSE: &str = "docker.io/bosun/pause:1";

/// Whether the test can run; panics in CI when something is missing.
fn available() -> bool {
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// What existed before, so that only what the test created is removed.
    before: Before,
}

struct Before {
    cni_state: bool,
    run_dir: bool,
    hostport_chains: bool,
}

const CGROUP_PARENT: &str = "bosun-cri-test";
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
fn remove_cgroup(dir: &Path) {
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
    fn start() -> Containerd {
        let before = Before {
            cni_state: Path::new("/var/lib/cni").exists(),
            run_dir: Path::new("/run/containerd").exists(),
            hostport_chains: hostport_chains(),
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd; they are started with our socket's address.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.socket.display().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(200));
        // Mounts under our root (rootfs, shm) and our bridge.
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let root = self.dir.path().display().to_string();
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
        if !self.before.cni_state {
            let _ = std::fs::remove_dir_all("/var/lib/cni");
        }
        if !self.before.run_dir {
            let _ = std::fs::remove_dir_all("/run/containerd");
        }
    }
}

fn sandbox_config(name: &str, logs: &Path, ports: Vec<PortMapping>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bosun-cri-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.display().to_string(),
        port_mappings: ports,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{CGROUP_PARENT}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(
    name: &str,
    cmd: &[&str],
    resources: Option<LinuxContainerResources>,
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run(rt: &RemoteRuntime, sb: &str, sbc: &PodSandboxConfig, c: ContainerConfig) -> String {
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(c),
            sandbox_config: Some(sbc.clone()),
        })
        .await
        .unwrap()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    id
}

async fn exec(rt: &RemoteRuntime, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr),
    )
}

async fn status(rt: &RemoteRuntime, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .status
    .unwrap()
}

/// Retries `f` for up to 10 s.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_basics_against_containerd() {
    if !available() {
        return;
    }
    let cd = Containerd::start();
    let rt = RemoteRuntime::connect(&cd.socket).await.unwrap();
    let v = rt
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("containerd", "v1")
    );
    let image = rt
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(image.image.is_some(), "the imported image is known");

    // A sandbox with a hostPort, on the test bridge.
    let logs = cd.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ports = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 18080,
        host_ip: String::new(),
    }];
    let sbc = sandbox_config("web", &logs, ports);
    let sb = match rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sbc.clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => r.pod_sandbox_id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", cd.log()),
    };
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let ip = st.network.unwrap().ip;
    assert!(ip.starts_with("10.88.7."), "{ip}");

    // Two containers in one sandbox talk over localhost; logs are written.
    let web = run(
        &rt,
        &sb,
        &sbc,
        container(
            "web",
            &["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
            None,
        ),
    )
    .await;
    let client = run(
        &rt,
        &sb,
        &sbc,
        container("client", &["sleep", "3600"], None),
    )
    .await;
    let body = eventually("httpd answers on localhost", async || {
        let (code, out) = exec(&rt, &client, &["wget", "-qO-", "http://127.0.0.1:8080/"]).await;
        (code == 0).then_some(out)
    })
    .await;
    assert_eq!(body, "hello from bosun\n");
    let log = std::fs::read_to_string(logs.join("web.log")).unwrap_or_default();
    assert!(
        log.contains(" stderr F ") || log.contains(" stdout F "),
        "CRI log format: {log:?}"
    );

    // The hostPort reaches it through portmap, from the node's own address.
    let host_ip =
        String::from_utf8(Command::new("hostname").arg("-I").output().unwrap().stdout).unwrap();
    let host_ip = host_ip.split_whitespace().next().unwrap().to_string();
    let url = format!("http://{host_ip}:18080/");
    let via_port = eventually("the hostPort", async || {
        let out = Command::new("wget")
            .args(["-qO-", "-T", "2", &url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert_eq!(via_port, "hello from bosun\n");

    // CPU and memory limits are visible in the container's cgroup.
    let limited = run(
        &rt,
        &sb,
        &sbc,
        container(
            "limited",
            &["sleep", "3600"],
            Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                ..Default::default()
            }),
        ),
    )
    .await;
    let (_, mem) = exec(
        &rt,
        &limited,
        &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
    )
    .await;
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let (_, quota) = exec(
        &rt,
        &limited,
        &["cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"],
    )
    .await;
    assert_eq!(quota.trim(), "50000");

    // An OOM kill is reported as OOMKilled with exit code 137.
    let hog = run(
        &rt,
        &sb,
        &sbc,
        container(
            "hog",
            &["sh", "-c", "head -c 200000000 /dev/zero | tail"],
            Some(LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
        ),
    )
    .await;
    let st = eventually("the hog to be killed", async || {
        let s = status(&rt, &hog).await;
        (s.state == ContainerState::ContainerExited as i32).then_some(s)
    })
    .await;
    assert_eq!((st.reason.as_str(), st.exit_code), ("OOMKilled", 137));

    // Stop and remove everything; nothing is left.
    for id in [&web, &client, &limited, &hog] {
        rt.stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: 2,
        })
        .await
        .unwrap();
        rt.remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap();
    }
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .unwrap();
    assert!(rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .containers
        .is_empty());
    let images = rt
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .images;
    assert!(images
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == IMAGE)));
}
