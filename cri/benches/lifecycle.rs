//! A pod's runtime lifecycle through the CRI: run a sandbox, create and start a container,
//! stop and remove both — against the simulated runtime (in process, and over gRPC on a unix
//! socket: the CRI plumbing itself), and, as root with the Debian packages, against the
//! built-in runtime (runc, shim, CNI bridge) and containerd 1.6 with runc side by side, each
//! timed as "up" (sandbox, create, start) and "down" (stop and remove both).
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
use std::time::{Duration, Instant};

static N: AtomicU64 = AtomicU64::new(0);

async fn lifecycle(rt: &dyn RuntimeService) {
    lifecycle_with(rt, "busybox", Vec::new()).await;
}

/// Benchmarks the up and down halves of the lifecycle against one runtime.
fn halves(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    runtime: &dyn RuntimeService,
) {
    let cmd = || vec!["sleep".to_string(), "3600".to_string()];
    for (half, pick) in [("up", 0usize), ("down", 1)] {
        g.bench_function(format!("{name}/{half}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (up, down) =
                        rt.block_on(lifecycle_with(runtime, support::containerd::IMAGE, cmd()));
                    total += if pick == 0 { up } else { down };
                }
                total
            })
        });
    }
}

/// One pod's lifecycle; returns the time to bring it up (sandbox, create, start) and to take
/// it down (stop and remove both).
async fn lifecycle_with(
    rt: &dyn RuntimeService,
    image: &str,
    command: Vec<String>,
) -> (Duration, Duration) {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t0 = Instant::now();
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
    let up = t0.elapsed();
    let t1 = Instant::now();
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
    (up, t1.elapsed())
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
    let mut g = c.benchmark_group("pod_lifecycle_real");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    if support::builtin::available() {
        let b = support::builtin::Builtin::new();
        let builtin = rt.block_on(b.open());
        halves(&mut g, &rt, "builtin_runc", &*builtin);
        drop(builtin);
        drop(b);
    } else {
        eprintln!("the built-in runtime cannot run here: its figure is skipped");
    }
    if support::containerd::available() {
        let cd = support::containerd::Containerd::start();
        let containerd = rt.block_on(RemoteRuntime::connect(&cd.socket)).unwrap();
        halves(&mut g, &rt, "containerd_1.6_runc", &containerd);
        drop(containerd);
        drop(cd);
    } else {
        eprintln!("containerd not available: its figure is skipped");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
