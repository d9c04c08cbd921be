//! The built-in image service pulling from Debian's docker-registry on loopback: an image
//! index resolved to this platform's manifest, gzip layers checked and unpacked, the image run,
//! and the errors for a missing tag and an unreachable registry.

use crate::support::builtin::{available as builtin_available, Builtin};
use crate::support::containerd::is_root;
use crate::support::critest;
use crate::support::image::{busybox_parts, digest, files_layer, gzip};
use crate::support::registry::{available, Registry};
use bosun_cri::v1::*;
use bosun_cri::{Error, ImageService, RuntimeService};
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn manifest(config: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn pull_request(image: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_an_image_index_from_a_registry_and_runs_it() {
    if !available() || !is_root() || !builtin_available() {
        return;
    }
    let reg = Registry::start();
    // linux/amd64: busybox; linux/arm64: a layer without it (picking it would break the run).
    let (config, layers) = busybox_parts(&["sh"]);
    let gz = gzip(&layers[0]);
    let amd64 = manifest(&config, std::slice::from_ref(&gz));
    let amd64_digest = reg
        .push(
            "bosun/busybox:amd64",
            &[config.clone(), gz.clone()],
            &amd64,
            OCI_MANIFEST,
        )
        .await;
    let other_layer = gzip(&files_layer(&[("etc/arch", "arm64\n")]));
    let mut other_config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    other_config["architecture"] = json!("arm64");
    other_config["rootfs"]["diff_ids"] = json!([digest(&files_layer(&[("etc/arch", "arm64\n")]))]);
    let other_config = serde_json::to_vec(&other_config).unwrap();
    let arm64 = manifest(&other_config, std::slice::from_ref(&other_layer));
    let arm64_digest = reg
        .push(
            "bosun/busybox:arm64",
            &[other_config, other_layer],
            &arm64,
            OCI_MANIFEST,
        )
        .await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": arm64_digest, "size": arm64.len(), "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": amd64_digest, "size": amd64.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let index_digest = reg
        .push("bosun/busybox:multi", &[], &index, OCI_INDEX)
        .await;

    let mut b = Builtin::new();
    b.config.registry.insecure = vec![reg.addr.clone()];
    let rt = b.open().await;
    let name = format!("{}/bosun/busybox:multi", reg.addr);
    let pulled = rt.pull_image(pull_request(&name)).await.unwrap();
    assert_eq!(
        pulled.image_ref,
        digest(&config),
        "the amd64 image's config"
    );
    let status = rt
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .image
        .expect("the pulled image is known");
    assert!(status.repo_tags.contains(&name), "{:?}", status.repo_tags);
    let repo_digest = format!("{}/bosun/busybox@{index_digest}", reg.addr);
    assert!(
        status.repo_digests.contains(&repo_digest),
        "{:?}",
        status.repo_digests
    );
    // Pulling again is fine (the stored layers are reused).
    assert_eq!(
        rt.pull_image(pull_request(&name)).await.unwrap().image_ref,
        pulled.image_ref
    );

    // It runs.
    let env = critest::Env {
        logs: b.dir.path().join("logs"),
        image: name.clone(),
        ip_prefix: "10.88.8.".into(),
        host_port: 18084,
        cgroup_parent: format!("/{}", crate::support::builtin::CGROUP_PARENT),
        diagnostics: Box::new(String::new),
    };
    std::fs::create_dir_all(&env.logs).unwrap();
    let sbc = critest::sandbox_config(&env, "pulled", Vec::new());
    let sb = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sbc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let c = critest::run(
        &*rt,
        &sb,
        &sbc,
        critest::container(&env, "c", &["sleep", "3600"], None),
    )
    .await;
    let (code, out) = critest::exec(&*rt, &c, &["cat", "/www/index.html"]).await;
    assert_eq!((code, out.as_str()), (0, "hello from bosun\n"));
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .unwrap();

    // A tag the registry does not have, and a registry that is not there.
    let missing = rt
        .pull_image(pull_request(&format!("{}/bosun/busybox:nope", reg.addr)))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing}");
    let mut b2 = Builtin::new();
    b2.config.registry.insecure = vec!["127.0.0.1:1".into()];
    let rt2 = b2.open().await;
    let down = rt2
        .pull_image(pull_request("127.0.0.1:1/bosun/busybox:1"))
        .await
        .unwrap_err();
    assert!(matches!(down, Error::Unavailable(_)), "{down}");
}
