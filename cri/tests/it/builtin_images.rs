//! The built-in image store: imports, snapshots, whiteouts through a real overlay mount.

use crate::support::image::{busybox_archive, busybox_docker_archive, files_layer, oci_archive};
use bosun_cri::builtin::images::ImageStore;
use bosun_cri::v1::*;
use bosun_cri::ImageService;
use std::path::Path;
use std::process::Command;

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether busybox-static (the test images' content) is here; in CI its absence fails.
fn busybox() -> bool {
    let here = Path::new(crate::support::image::BUSYBOX).exists();
    assert!(
        here || std::env::var("CI").as_deref() != Ok("true"),
        "busybox-static is missing"
    );
    here
}

fn spec(name: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn oci_and_docker_archives_import_into_snapshots() {
    if !busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let oci = busybox_archive(dir.path(), "docker.io/bosun/busybox:1", &["sh"]);
    let imported = store.import(&oci).unwrap();
    assert_eq!(imported.len(), 1);
    let img = &imported[0];
    assert_eq!(img.repo_tags, ["docker.io/bosun/busybox:1"]);
    assert!(img.repo_digests[0].starts_with("docker.io/bosun/busybox@sha256:"));
    assert_eq!(img.config.cmd, ["sh"]);
    let lower = store.lower_dirs(img).unwrap();
    assert_eq!(lower.len(), 1);
    assert!(lower[0].join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(lower[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    // The same content as `docker save` output is the same image (same config digest).
    let docker = busybox_docker_archive(dir.path(), "bosun/busybox:2");
    let again = store.import(&docker).unwrap();
    assert_eq!(again[0].id, img.id);
    let status = store
        .image_status(ImageStatusRequest {
            image: spec("bosun/busybox:2"),
            verbose: false,
        })
        .await
        .unwrap();
    let cri = status.image.unwrap();
    assert!(cri
        .repo_tags
        .contains(&"docker.io/bosun/busybox:1".to_string()));
    assert!(cri
        .repo_tags
        .contains(&"docker.io/bosun/busybox:2".to_string()));

    // The index survives a restart; removal drops the snapshot.
    drop(store);
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    assert_eq!(
        store
            .list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .images
            .len(),
        1
    );
    store
        .remove_image(RemoveImageRequest {
            image: spec("docker.io/bosun/busybox:1"),
        })
        .await
        .unwrap();
    assert!(store.list().is_empty());
    assert!(!lower[0].exists());
    let missing = store
        .pull_image(PullImageRequest {
            image: spec("nope:1"),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(missing, Err(bosun_cri::Error::Unimplemented(m)) if m.contains("bosun images import"))
    );
}

#[tokio::test]
async fn whiteouts_and_opaque_directories_hide_lower_files_in_overlayfs() {
    if !root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the overlay test needs root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let bottom = files_layer(&[
        ("a/gone", "1"),
        ("a/kept", "2"),
        ("b/old", "3"),
        ("b/older", "4"),
    ]);
    let top = files_layer(&[
        ("a/.wh.gone", ""),
        ("b/.wh..wh..opq", ""),
        ("b/new", "5"),
        ("c", "6"),
    ]);
    let archive = oci_archive(
        dir.path(),
        "docker.io/bosun/layers:1",
        &["sh"],
        vec![bottom, top],
    );
    let img = store.import(&archive).unwrap().remove(0);
    let lower: Vec<String> = store
        .lower_dirs(&img)
        .unwrap()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("lowerdir={}", lower.join(":")),
        ])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting the overlay");
    let list = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(mnt.join(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (a, b) = (list("a"), list("b"));
    let c = std::fs::read_to_string(mnt.join("c")).unwrap();
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(a, ["kept"]);
    assert_eq!(b, ["new"]);
    assert_eq!(c, "6");
}

#[test]
fn a_corrupted_blob_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let layer = files_layer(&[("x", "1")]);
    let archive = oci_archive(dir.path(), "docker.io/bosun/x:1", &["sh"], vec![layer]);
    // Flip the file's contents inside the archive (same length, so the tar stays valid).
    let mut bytes = std::fs::read(&archive).unwrap();
    let pos = bytes.windows(2).position(|w| w == b"\x31\x00").unwrap();
    bytes[pos] = b'2';
    std::fs::write(&archive, bytes).unwrap();
    let err = store.import(&archive).unwrap_err();
    assert!(
        err.to_string().contains("does not match its digest")
            || err.to_string().contains("diff_ids"),
        "{err}"
    );
    assert!(store.list().is_empty());
}

/// A node's store and `bosun images import` are two processes on one directory: what one
/// imports the other sees at once, writers at the same moment lose nothing, and tarballs
/// dropped into the directory are imported once.
#[test]
fn stores_sharing_a_directory_see_each_others_images_and_lose_none() {
    if !busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let node = ImageStore::open(&root).unwrap();
    let cli = ImageStore::open(&root).unwrap();
    let first = busybox_archive(dir.path(), "docker.io/bosun/first:1", &["sh"]);
    cli.import(&first).unwrap();
    assert!(
        node.resolve("bosun/first:1").is_some(),
        "the running node does not see an import"
    );
    // Two writers at once, each with its own view of the index.
    let archives: Vec<_> = (0..12)
        .map(|i| {
            busybox_archive(
                dir.path(),
                &format!("docker.io/bosun/t{i}:1"),
                &["echo", &i.to_string()],
            )
        })
        .collect();
    std::thread::scope(|s| {
        for (k, store) in [&node, &cli].into_iter().enumerate() {
            let archives = &archives;
            s.spawn(move || {
                for a in archives.iter().skip(k).step_by(2) {
                    store.import(a).unwrap();
                }
            });
        }
    });
    let fresh = ImageStore::open(&root).unwrap();
    for i in 0..12 {
        let name = format!("bosun/t{i}:1");
        assert!(fresh.resolve(&name).is_some(), "{name} was lost");
        assert!(node.resolve(&name).is_some(), "{name} not seen by the node");
    }
    assert!(fresh.resolve("bosun/first:1").is_some());
    // The air-gap directory: a tarball put beside the store is imported, once.
    let dropped = busybox_archive(dir.path(), "docker.io/bosun/dropped:1", &["true"]);
    std::fs::copy(&dropped, root.join("dropped.tar")).unwrap();
    assert_eq!(fresh.import_dropped().len(), 1);
    assert!(node.resolve("bosun/dropped:1").is_some());
    assert_eq!(fresh.import_dropped().len(), 0, "imported again");
}
