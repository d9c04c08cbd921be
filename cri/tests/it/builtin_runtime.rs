//! The built-in runtime (runc, the shim, CNI) through the same critest scenario as
//! containerd, plus what only it promises: running containers survive a runtime restart,
//! logs reopen after rotation. As root only; in CI a missing runc, busybox-static or CNI
//! plugin fails the test.

use crate::support::builtin::{available, Builtin, CGROUP_PARENT, NETWORK};
use crate::support::container_status;
use crate::support::containerd::IMAGE;
use crate::support::critest;
use bosun_cri::v1::*;
use bosun_cri::RuntimeService;

/// The scenario's environment in `b`'s directory, mapping `host_port`.
fn env(b: &Builtin, ip_prefix: &str, host_port: i32) -> critest::Env {
    critest::Env {
        logs: b.dir.path().join("logs"),
        image: IMAGE.into(),
        ip_prefix: ip_prefix.into(),
        host_port,
        cgroup_parent: format!("/{CGROUP_PARENT}"),
        diagnostics: Box::new(String::new),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_basics_against_the_builtin_runtime() {
    if !available() {
        return;
    }
    let b = Builtin::new();
    let rt = b.open().await;
    let v = rt
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap();
    assert_eq!(v.runtime_name, "bosun");
    let env = env(&b, "10.88.8.", 18081);
    critest::basics(&*rt, &env).await;
    assert_nothing_left(&b);
}

/// What a removed sandbox must not leave: mounts, cgroups, namespaces, records, NAT rules.
fn assert_nothing_left(b: &Builtin) {
    let root = b.dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(ours.is_empty(), "mounts left: {ours:?}");
    let cgroups: Vec<_> = std::fs::read_dir(format!("/sys/fs/cgroup/memory/{CGROUP_PARENT}"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    for d in [
        "state/sandboxes",
        "state/containers",
        "root/sandboxes",
        "root/containers",
    ] {
        let left: Vec<_> = std::fs::read_dir(b.dir.path().join(d))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
    let nat = String::from_utf8_lossy(
        &std::process::Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!nat.contains(NETWORK), "NAT rules left: {nat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_runtime_restart_and_logs_reopen_after_rotation() {
    if !available() {
        return;
    }
    let b = Builtin::new();
    let env = env(&b, "10.88.8.", 18082);
    std::fs::create_dir_all(&env.logs).unwrap();
    let sbc = critest::sandbox_config(&env, "ticker", Vec::new());
    let (sb, id) = {
        let rt = b.open().await;
        let sb = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sbc.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .pod_sandbox_id;
        let c = critest::container(
            &env,
            "ticker",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            ],
            None,
        );
        let id = critest::run(&*rt, &sb, &sbc, c).await;
        (sb, id)
        // The runtime is dropped here: a restart.
    };
    let rt = b.open().await;
    let st = container_status(&*rt, &id).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "found running again"
    );
    let (code, out) = critest::exec(&*rt, &id, &["echo", "still here"]).await;
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    let sandboxes = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0].state, PodSandboxState::SandboxReady as i32);

    // Stats from the container's cgroups and writable layer.
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .stats
        .unwrap();
    let cpu = stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    let mem = stats.memory.unwrap().working_set_bytes.unwrap().value;
    assert!(cpu > 0 && mem > 0, "cpu {cpu} ns, memory {mem} bytes");
    assert!(stats.writable_layer.unwrap().used_bytes.is_some());
    let pod = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .stats;
    assert_eq!(pod.len(), 1);
    assert_eq!(pod[0].linux.as_ref().unwrap().containers.len(), 1);

    // Rotation: the kubelet renames the file, then asks for a reopen.
    let log = env.logs.join("ticker.log");
    critest::eventually("ticks in the log", async || {
        (std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    let rotated = env.logs.join("ticker.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let fresh = critest::eventually("ticks in the reopened log", async || {
        let t = std::fs::read_to_string(&log).ok()?;
        (t.lines().count() >= 2).then_some(t)
    })
    .await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    let last_old: u64 = old
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let first_new: u64 = fresh
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_new > last_old,
        "no line lost or repeated: {last_old} then {first_new}"
    );
    for l in fresh.lines() {
        let parts: Vec<&str> = l.splitn(4, ' ').collect();
        assert_eq!(&parts[1..3], ["stdout", "F"], "{l}");
    }

    // sh as PID 1 ignores SIGTERM: stop kills it after the timeout.
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let st = container_status(&*rt, &id).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 137, "Error")
    );
    assert!(st.finished_at >= st.started_at && st.started_at > 0);
    // Stats and status calls on a stopped container still answer.
    rt.container_stats(ContainerStatsRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    // Idempotent.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .unwrap();
    assert!(rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .containers
        .is_empty());
    assert_nothing_left(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_leave_nothing() {
    if !available() {
        return;
    }
    let b = Builtin::new();
    let rt = b.open().await;
    let env = env(&b, "10.88.8.", 18083);
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, bosun_cri::Error::InvalidArgument(_)), "{err}");
    let sbc = critest::sandbox_config(&env, "bad", Vec::new());
    let sb = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sbc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    // An image that is not there.
    let mut c = critest::container(&env, "x", &["true"], None);
    c.image = Some(ImageSpec {
        image: "docker.io/library/nope:1".into(),
        ..Default::default()
    });
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(c),
            sandbox_config: Some(sbc.clone()),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, bosun_cri::Error::NotFound(_)), "{err}");
    // A command that does not exist fails at create (runc checks it) or start, with the reason.
    let c = critest::container(&env, "missing", &["/no/such/binary"], None);
    let created = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(c),
            sandbox_config: Some(sbc.clone()),
        })
        .await;
    match created {
        Err(e) => assert!(e.to_string().contains("no such file"), "{e}"),
        Ok(r) => {
            let e = rt
                .start_container(StartContainerRequest {
                    container_id: r.container_id,
                })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("no such file"), "{e}");
        }
    }
    // Unknown IDs.
    let e = rt
        .start_container(StartContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, bosun_cri::Error::NotFound(_)));
    let e = rt
        .exec_sync(ExecSyncRequest {
            container_id: "nope".into(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, bosun_cri::Error::NotFound(_)));
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .unwrap();
    assert_nothing_left(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_network_is_configured_from_the_pod_cidr_the_kubelet_hands_over() {
    if !available() {
        return;
    }
    let mut b = Builtin::new();
    let d = b.dir.path().to_path_buf();
    b.config.network = None;
    b.config.cni = Some(bosun_cri::builtin::runtime::CniSetup {
        conf_dir: d.join("net.d"),
        bin_dirs: vec!["/usr/lib/cni".into()],
        cache_dir: d.join("cni"),
        name: NETWORK.into(),
        bridge: crate::support::builtin::BRIDGE.into(),
    });
    let network_ready = async |rt: &bosun_cri::builtin::runtime::BuiltinRuntime| {
        let st = rt
            .status(StatusRequest::default())
            .await
            .unwrap()
            .status
            .unwrap();
        let c = st
            .conditions
            .into_iter()
            .find(|c| c.r#type == "NetworkReady")
            .unwrap();
        (c.status, c.message)
    };
    let rt = b.open().await;
    let (ok, why) = network_ready(&rt).await;
    assert!(!ok && why.contains("cni config uninitialized"), "{why}");
    rt.update_runtime_config(UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: "10.88.9.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();
    assert!(network_ready(&rt).await.0);
    let conflist = std::fs::read_to_string(d.join("net.d/10-bosun.conflist")).unwrap();
    assert!(conflist.contains("10.88.9.0/24"), "{conflist}");
    drop(rt);

    // After a restart the written network is used at once.
    let rt = b.open().await;
    assert!(network_ready(&rt).await.0);
    let env = env(&b, "10.88.9.", 18085);
    let sbc = critest::sandbox_config(&env, "cidr", Vec::new());
    let sb = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sbc),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .status
        .unwrap();
    let ip = st.network.unwrap().ip;
    assert!(ip.starts_with("10.88.9."), "{ip}");
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .unwrap();
    assert_nothing_left(&b);
}
