//! runc vs youki's libcontainer: create + start + kill + delete of one busybox container,
//! N times each, on a bundle made here from Debian's busybox-static.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CGROUP: &str = "bosun-peer-oci";

fn bundle(dir: &Path) {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep")).unwrap();
    assert!(Command::new("runc").arg("spec").current_dir(dir).status().unwrap().success());
    let p = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["sleep", "3600"]);
    c["linux"]["cgroupsPath"] = format!("/{CGROUP}/c").into();
    std::fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
}

fn runc(root: &Path, args: &[&str]) {
    let ok = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "runc {args:?}");
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("bosun-peer-oci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    bundle(&dir);
    let b = dir.display().to_string();

    let root = dir.join("runc-root");
    let t = Instant::now();
    for i in 0..n {
        let id = format!("r{i}");
        runc(&root, &["create", "--bundle", &b, &id]);
        runc(&root, &["start", &id]);
        runc(&root, &["kill", &id, "KILL"]);
        runc(&root, &["delete", "--force", &id]);
    }
    let runc_each = t.elapsed() / n;

    let root = dir.join("youki-root");
    std::fs::create_dir_all(&root).unwrap();
    let mut total = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        let mut c = ContainerBuilder::new(format!("y{i}"), SyscallType::default())
            .with_executor(DefaultExecutor {})
            .with_root_path(&root)
            .unwrap()
            .as_init(&dir)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .unwrap();
        c.start().unwrap();
        c.kill(Signal::try_from(9).unwrap(), true).unwrap();
        c.delete(true).unwrap();
        total += t.elapsed();
    }
    let youki_each = total / n;
    println!("runc (binary): {runc_each:?} per container; libcontainer 0.5 (in process): {youki_each:?} per container; {n} runs each");
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(hs) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hs.flatten() {
            let _ = std::fs::remove_dir(h.path().join(CGROUP).join("c"));
            let _ = std::fs::remove_dir(h.path().join(CGROUP));
        }
    }
}
