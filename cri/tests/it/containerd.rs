//! `remote` against Debian's containerd 1.6 (CRI plugin), started by the test with its own
//! root, state and socket in a temporary directory, `restrict_oom_score_adj`, a locally
//! imported sandbox image and CNI from Debian's containernetworking-plugins. As root only; in
//! CI (`CI=true`) a missing containerd, runc, busybox-static or CNI plugin fails the test.

use crate::support::containerd::{available, Containerd, CGROUP_PARENT, IMAGE};
use crate::support::critest;
use bosun_cri::remote::RemoteRuntime;
use bosun_cri::v1::*;
use bosun_cri::{ImageService, RuntimeService};

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
    let log = cd.dir.path().join("containerd.log");
    let env = critest::Env {
        logs: cd.dir.path().join("logs"),
        image: IMAGE.into(),
        ip_prefix: "10.88.7.".into(),
        host_port: 18080,
        cgroup_parent: format!("/{CGROUP_PARENT}"),
        diagnostics: Box::new(move || std::fs::read_to_string(&log).unwrap_or_default()),
    };
    critest::basics(&rt, &env).await;
}
