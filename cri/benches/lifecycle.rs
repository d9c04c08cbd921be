//! A pod's runtime lifecycle through the CRI: run a sandbox, create and start a container,
//! stop and remove both — against the simulated runtime (in process, and over gRPC on a unix
//! socket: the CRI plumbing itself) and against containerd 1.6 with runc (as root, when
//! installed; the test harness starts it). The built-in runtime joins as it lands.
//! `cargo bench -p bosun-cri --bench lifecycle`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

#[path = "../tests/support/mod.rs"]
mod support;

use bosun_cri::remote::RemoteRuntime;
use bosun_cri::simulated::SimulatedRuntime;
use bosun_cri::v1::*;
use bosun_cri::RuntimeService;
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

static N: AtomicU64 = AtomicU64::new(0);

async fn lifecycle(rt: &dyn RuntimeService) {
    lifecycle_with(rt, "busybox", Vec::new()).await
}

async fn lifecycle_with(rt: &dyn RuntimeService, image: &str, command: Vec<String>) {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("p{n}"),
            uid: format!("u{n}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: "/var/log/pods/x".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}", support::containerd::CGROUP_PARENT),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sb = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let c = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command,
                ..Default::default()
            }),
            // containerd requires the sandbox's config here.
            sandbox_config: Some(config),
        })
        .await
        .unwrap()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: c })
        .await
        .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let path = socket.clone();
    rt.spawn(async move {
        bosun_cri::server::serve(
            Arc::new(SimulatedRuntime::default()),
            &path,
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    let remote = rt.block_on(async {
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        RemoteRuntime::connect(&socket).await.unwrap()
    });
    let local = SimulatedRuntime::default();
    let mut g = c.benchmark_group("pod_lifecycle");
    g.bench_function("simulated_in_process", |b| {
        b.iter(|| rt.block_on(lifecycle(&local)))
    });
    g.bench_function("simulated_over_grpc", |b| {
        b.iter(|| rt.block_on(lifecycle(&remote)))
    });
    g.finish();
    if !support::containerd::available() {
        eprintln!("containerd not available: its figure is skipped");
        return;
    }
    let cd = support::containerd::Containerd::start();
    let containerd = rt.block_on(RemoteRuntime::connect(&cd.socket)).unwrap();
    let mut g = c.benchmark_group("pod_lifecycle_real");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("containerd_1.6_runc", |b| {
        b.iter(|| {
            rt.block_on(lifecycle_with(
                &containerd,
                support::containerd::IMAGE,
                vec!["sleep".into(), "3600".into()],
            ))
        })
    });
    g.finish();
    drop(cd);
}

criterion_group!(benches, bench);
criterion_main!(benches);
