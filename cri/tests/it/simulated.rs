//! The gRPC client against the simulated runtime served over a unix socket: the CRI basics
//! critest checks, end to end through the wire format.

use crate::support::container_status;
use bosun_cri::remote::RemoteRuntime;
use bosun_cri::simulated::{SimulatedRuntime, EXIT_CODE, RUN_SECONDS};
use bosun_cri::v1::*;
use bosun_cri::{Error, ImageService, RuntimeService};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn served() -> (
    RemoteRuntime,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let path = socket.clone();
    tokio::spawn(async move {
        bosun_cri::server::serve(Arc::new(SimulatedRuntime::default()), &path, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rt = RemoteRuntime::connect(format!("unix://{}", socket.display()))
        .await
        .unwrap();
    (rt, dir, tx)
}

fn sandbox_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        labels: HashMap::from([("app".into(), name.into())]),
        log_directory: format!("/var/log/pods/default_{name}"),
        ..Default::default()
    }
}

fn container_config(name: &str, annotations: HashMap<String, String>) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}/0.log"),
        annotations,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_and_container_lifecycle_over_grpc() {
    let (rt, _dir, _stop) = served().await;
    let v = rt
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("bosun-simulated", "v1")
    );
    let st = rt.status(StatusRequest { verbose: false }).await.unwrap();
    assert!(st.status.unwrap().conditions.iter().all(|c| c.status));

    // Images.
    let pulled = rt
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(pulled.image_ref.starts_with("sha256:"));
    let images = rt
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .images;
    assert_eq!(images.len(), 1);

    // A sandbox: Ready, with an IP; a second one with the same metadata is refused.
    let sb = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config("web")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    assert_eq!(sb.len(), 64);
    let again = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config("web")),
            runtime_handler: String::new(),
        })
        .await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert!(status.network.unwrap().ip.starts_with("10.244.0."));

    // A container: created, running, exec, stopped, removed.
    let c = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(container_config("main", HashMap::new())),
            sandbox_config: Some(sandbox_config("web")),
        })
        .await
        .unwrap()
        .container_id;
    assert_eq!(
        container_status(&rt, &c).await.state,
        ContainerState::ContainerCreated as i32
    );
    assert_eq!(
        container_status(&rt, &c).await.log_path,
        "/var/log/pods/default_web/main/0.log"
    );
    rt.start_container(StartContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        container_status(&rt, &c).await.state,
        ContainerState::ContainerRunning as i32
    );
    let again = rt
        .start_container(StartContainerRequest {
            container_id: c.clone(),
        })
        .await;
    assert!(
        matches!(again, Err(Error::FailedPrecondition(_))),
        "{again:?}"
    );
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec!["true".into()],
            timeout: 5,
        })
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let running = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .containers;
    assert_eq!(running.len(), 1);
    let removing_running = rt
        .remove_container(RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await;
    assert!(matches!(
        removing_running,
        Err(Error::FailedPrecondition(_))
    ));
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let s = container_status(&rt, &c).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert!(s.finished_at >= s.started_at && s.started_at >= s.created_at);
    rt.remove_container(RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    // Idempotent, as the CRI requires.
    rt.remove_container(RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    let gone = rt
        .container_status(ContainerStatusRequest {
            container_id: c,
            verbose: false,
        })
        .await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");

    // Sandbox teardown leaves nothing.
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_containers_exit_on_schedule() {
    let (rt, _dir, _stop) = served().await;
    let sb = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config("job")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let annotations = HashMap::from([
        (RUN_SECONDS.to_string(), "0.2".to_string()),
        (EXIT_CODE.to_string(), "3".to_string()),
    ]);
    let c = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sb,
            config: Some(container_config("task", annotations)),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        container_status(&rt, &c).await.state,
        ContainerState::ContainerRunning as i32
    );
    // It exits on its own after its scheduled 0.2 s (waited for with a deadline).
    for _ in 0..100 {
        if container_status(&rt, &c).await.state == ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = container_status(&rt, &c).await;
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (ContainerState::ContainerExited as i32, 3, "Error")
    );
}

#[tokio::test]
async fn an_absent_socket_is_a_clear_error() {
    let err = RemoteRuntime::connect("/nonexistent/cri.sock")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("/nonexistent/cri.sock")),
        "{err}"
    );
}
