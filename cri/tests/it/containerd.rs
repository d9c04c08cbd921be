//! `remote` against Debian's containerd 1.6 (CRI plugin), started by the test with its own
//! root, state and socket in a temporary directory, `restrict_oom_score_adj`, a locally
//! imported sandbox image and CNI from Debian's containernetworking-plugins. As root only; in
//! CI (`CI=true`) a missing containerd, runc, busybox-static or CNI plugin fails the test.

use crate::support::container_status;
use crate::support::containerd::{available, Containerd, CGROUP_PARENT, IMAGE};
use bosun_cri::remote::RemoteRuntime;
use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
        let s = container_status(&rt, &hog).await;
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
