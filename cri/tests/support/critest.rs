//! The basics upstream's critest covers, as one scenario any CRI implementation must pass:
//! a sandbox with a hostPort; two containers talking over localhost; CRI-format logs; exec;
//! CPU and memory limits in the cgroup; an OOM kill reported as OOMKilled/137; stop and
//! remove leaving nothing listed.

use super::container_status;
use bosun_cri::streaming::{client, TerminalSize};
use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the scenario runs.
pub struct Env {
    /// The sandboxes' log directory.
    pub logs: PathBuf,
    /// The busybox test image's name.
    pub image: String,
    /// The pod network's address prefix (`10.88.7.`).
    pub ip_prefix: String,
    /// The hostPort to map to the web container.
    pub host_port: i32,
    /// The sandboxes' cgroup parent.
    pub cgroup_parent: String,
    /// What to print when the sandbox cannot start (the runtime's log).
    pub diagnostics: Box<dyn Fn() -> String + Send + Sync>,
}

pub fn sandbox_config(env: &Env, name: &str, ports: Vec<PortMapping>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "critest".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: env.logs.display().to_string(),
        port_mappings: ports,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: env.cgroup_parent.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container(
    env: &Env,
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
            image: env.image.clone(),
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

pub async fn run(
    rt: &dyn RuntimeService,
    sb: &str,
    sbc: &PodSandboxConfig,
    c: ContainerConfig,
) -> String {
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

pub async fn exec(rt: &dyn RuntimeService, id: &str, cmd: &[&str]) -> (i32, String) {
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
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out: {what}");
}

/// Runs the scenario against `rt`.
pub async fn basics<R: RuntimeService + ImageService>(rt: &R, env: &Env) {
    // A sandbox with a hostPort, on the test bridge.
    std::fs::create_dir_all(&env.logs).unwrap();
    let ports = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: env.host_port,
        host_ip: String::new(),
    }];
    let sbc = sandbox_config(env, "web", ports);
    let sb = match rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sbc.clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => r.pod_sandbox_id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", (env.diagnostics)()),
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
    assert!(ip.starts_with(&env.ip_prefix), "{ip}");

    // Two containers in one sandbox talk over localhost; logs are written.
    let web = run(
        rt,
        &sb,
        &sbc,
        container(
            env,
            "web",
            &["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
            None,
        ),
    )
    .await;
    let client = run(
        rt,
        &sb,
        &sbc,
        container(env, "client", &["sleep", "3600"], None),
    )
    .await;
    let body = eventually("httpd answers on localhost", async || {
        let (code, out) = exec(rt, &client, &["wget", "-qO-", "http://127.0.0.1:8080/"]).await;
        (code == 0).then_some(out)
    })
    .await;
    assert_eq!(body, "hello from bosun\n");
    let log = std::fs::read_to_string(env.logs.join("web.log")).unwrap_or_default();
    assert!(
        log.contains(" stderr F ") || log.contains(" stdout F "),
        "CRI log format: {log:?}"
    );

    // Rotation: the kubelet renames the log, then asks the runtime to reopen it; the next
    // lines (httpd -v logs each request) go to a new file at the old path.
    let web_log = env.logs.join("web.log");
    std::fs::rename(&web_log, env.logs.join("web.log.1")).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: web.clone(),
    })
    .await
    .unwrap();
    let reopened = eventually(
        "the reopened log gets the next request's line",
        async || {
            let _ = exec(rt, &client, &["wget", "-qO-", "http://127.0.0.1:8080/"]).await;
            std::fs::read_to_string(&web_log)
                .ok()
                .filter(|t| !t.is_empty())
        },
    )
    .await;
    assert!(
        reopened.contains(" stderr F ") || reopened.contains(" stdout F "),
        "{reopened:?}"
    );

    // Exec over the streaming protocol: both streams and the exit code.
    let exec_url = async |cmd: &[&str], stdin: bool, tty: bool| {
        rt.exec(ExecRequest {
            container_id: client.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .unwrap()
        .url
    };
    let url = exec_url(
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    let out = client::remote_command(&url, None, None).await.unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3),
        "{:?}",
        out.status
    );
    // Its input.
    let url = exec_url(&["head", "-c", "5"], true, false).await;
    let out = client::remote_command(&url, Some(b"hello"), None)
        .await
        .unwrap();
    assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"hello"[..], 0));
    // A terminal, with its size.
    // The size travels beside the input; a runtime may apply it a moment later, so the
    // command looks again (up to 2 s) until it is there.
    let script = "read x; for i in $(seq 20); do s=$(stty size 2>/dev/null); \
                  [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.1; done; echo $s; tty";
    let url = exec_url(&["sh", "-c", script], true, true).await;
    let size = TerminalSize {
        width: 100,
        height: 30,
    };
    let out = client::remote_command(&url, Some(b"go\n"), Some(size))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("30 100") && text.contains("/dev/pts/"),
        "{text:?} {:?}",
        out.status
    );
    // A used URL does not work twice.
    assert!(client::remote_command(&url, None, None).await.is_err());

    // Attach to a container's main process: its output, and input to its stdin.
    let mut echo = container(
        env,
        "echo",
        &["sh", "-c", "echo ready; while read l; do echo got $l; done"],
        None,
    );
    echo.stdin = true;
    let echo = run(rt, &sb, &sbc, echo).await;
    let url = rt
        .attach(AttachRequest {
            container_id: echo.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
        .await
        .unwrap()
        .url;
    let mut session = client::Session::open(&url).await.unwrap();
    session.stdin(b"hi\n").await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains("got hi") {
            match session.next().await.unwrap() {
                Some(client::Event::Stdout(d)) => seen.extend_from_slice(&d),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await
    .expect("the attached container answers");
    assert!(
        String::from_utf8_lossy(&seen).contains("got hi"),
        "{seen:?}"
    );
    drop(session);

    // Port-forward into the sandbox's network namespace.
    let url = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: sb.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .url;
    let mut conn = client::port_forward(&url, 8080).await.unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("port-forward answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.ends_with("hello from bosun\n"), "{answer:?}");

    // The hostPort reaches it through portmap, from the node's own address.
    let host_ip =
        String::from_utf8(Command::new("hostname").arg("-I").output().unwrap().stdout).unwrap();
    let host_ip = host_ip.split_whitespace().next().unwrap().to_string();
    let url = format!("http://{host_ip}:{}/", env.host_port);
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
        rt,
        &sb,
        &sbc,
        container(
            env,
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
        rt,
        &limited,
        &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
    )
    .await;
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let (_, quota) = exec(
        rt,
        &limited,
        &["cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"],
    )
    .await;
    assert_eq!(quota.trim(), "50000");

    // An OOM kill is reported as OOMKilled with exit code 137.
    let hog = run(
        rt,
        &sb,
        &sbc,
        container(
            env,
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
        let s = container_status(rt, &hog).await;
        (s.state == ContainerState::ContainerExited as i32).then_some(s)
    })
    .await;
    assert_eq!((st.reason.as_str(), st.exit_code), ("OOMKilled", 137));

    // Stop and remove everything; nothing is left.
    for id in [&web, &client, &echo, &limited, &hog] {
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
    assert!(images.iter().any(|i| i.repo_tags.contains(&env.image)));
}
