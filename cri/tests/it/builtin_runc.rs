//! The built-in pieces together with runc: an imported image's snapshots as an overlay rootfs,
//! sandbox namespaces held by bind mounts, and a generated OCI spec that runc runs.

use crate::support::image::{busybox_archive, BUSYBOX};
use bosun_cri::builtin::images::ImageStore;
use bosun_cri::builtin::sandbox::Namespaces;
use bosun_cri::builtin::spec;
use bosun_cri::v1::*;
use std::process::Command;

#[test]
fn runc_runs_a_container_from_the_generated_spec_in_the_sandbox() {
    let ready = crate::support::containerd::is_root()
        && std::path::Path::new("/usr/sbin/runc").exists()
        && std::path::Path::new(BUSYBOX).exists();
    if !ready {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "runc test needs root, runc and busybox-static"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = ImageStore::open(d.join("images")).unwrap();
    let img = store
        .import(&busybox_archive(d, "docker.io/bosun/busybox:1", &["sh"]))
        .unwrap()
        .remove(0);
    let ns = Namespaces::create(&d.join("sandbox"), "web-0").unwrap();
    // The container's root: the image's layers read-only, a writable layer on top.
    let bundle = d.join("bundle");
    let (rootfs, upper, work) = (bundle.join("rootfs"), d.join("upper"), d.join("work"));
    for p in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(p).unwrap();
    }
    let lower: Vec<String> = store
        .lower_dirs(&img)
        .unwrap()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    assert!(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&rootfs)
        .status()
        .unwrap()
        .success());
    let sb = PodSandboxConfig {
        hostname: "web-0".into(),
        ..Default::default()
    };
    let c = ContainerConfig {
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hello > /tmp/f; cat /tmp/f; hostname; cat /sys/fs/cgroup/memory/memory.limit_in_bytes".into()],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources { memory_limit_in_bytes: 32 << 20, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cgroup = format!("/bosun-runc-test/{}", std::process::id());
    let s = spec::generate(&sb, &ns, &c, &img.config, &rootfs, &cgroup).unwrap();
    s.save(bundle.join("config.json")).unwrap();
    let id = format!("bosun-runc-test-{}", std::process::id());
    let out = Command::new("/usr/sbin/runc")
        .arg("--root")
        .arg(d.join("runc"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("/usr/sbin/runc")
        .arg("--root")
        .arg(d.join("runc"))
        .args(["delete", "-f", &id])
        .output();
    let _ = Command::new("umount").arg(&rootfs).status();
    ns.remove().unwrap();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(cgroup.trim_start_matches('/')));
        let _ = std::fs::remove_dir(h.path().join("bosun-runc-test"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["hello", "web-0", &(32u64 << 20).to_string()]
    );
    // The container wrote to its upper layer, not to the image's snapshot.
    assert!(upper.join("tmp/f").exists());
    assert!(!store.lower_dirs(&img).unwrap()[0].join("tmp/f").exists());
}
